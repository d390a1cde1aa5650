"""Operating Conveyor: readiness through an outage of its database, the metrics of a served
API and of a worker."""

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from conveyor.db.migrate import migrate_database
from conveyor.settings import Settings
from tests.conftest import ConveyorProcess, conveyor_env, free_port, launch, start_server
from tests.postgres_server import LoopbackPostgres


@pytest.fixture
def loopback_server() -> Iterator[LoopbackPostgres]:
    """A PostgreSQL of this test's own on a fixed port, for it to stop and start."""
    with (
        tempfile.TemporaryDirectory(prefix="conveyor-ops-pg-") as data_dir,
        LoopbackPostgres(Path(data_dir), free_port()) as server,
    ):
        yield server


@pytest.fixture
async def loopback_settings(loopback_server: LoopbackPostgres, tmp_path: Path) -> Settings:
    url = loopback_server.url()
    await migrate_database(url)
    return Settings(
        database_url=url, data_dir=tmp_path / "data", secret_key=Fernet.generate_key().decode()
    )


def start_worker(env: dict[str, str], log_path: Path) -> ConveyorProcess:
    """`conveyor worker` serving /healthz, /readyz and /metrics on a free port."""
    port = free_port()
    worker = launch(["worker"], {**env, "CONVEYOR_METRICS_PORT": str(port)}, log_path)
    worker.url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{worker.url}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    worker.wait_until(ready, "the worker to be ready")
    return worker


async def status_of(http: httpx.AsyncClient, url: str) -> int:
    try:
        return (await http.get(url, timeout=1.5)).status_code
    except httpx.TransportError:
        return 0


async def seconds_until(http: httpx.AsyncClient, url: str, status: int, within: float) -> float:
    """How long until `url` answers `status`, polled every 0.1 s."""
    started = time.monotonic()
    while (await status_of(http, url)) != status:
        if time.monotonic() - started > within:
            raise AssertionError(f"{url} did not answer {status} within {within} s")
        await asyncio.sleep(0.1)
    return time.monotonic() - started


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


async def test_readyz_follows_the_database_while_healthz_stays_up(
    loopback_server: LoopbackPostgres,
    loopback_settings: Settings,
    http: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    env = conveyor_env(loopback_settings)
    server = start_server(env, tmp_path / "serve.log")
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        for process in (server, worker):
            ready = await http.get(f"{process.url}/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"] == {
                "database": True,
                "migrations": True,
                "listener": True,
                "notDraining": True,
                "workerClaiming": True,
            }

        loopback_server.stop()
        try:
            for process in (server, worker):
                assert await seconds_until(http, f"{process.url}/readyz", 503, within=2) < 2
                unready = await http.get(f"{process.url}/readyz", timeout=3)
                assert unready.json()["status"] == "unready"
                assert unready.json()["checks"]["database"] is False
                assert (await http.get(f"{process.url}/healthz")).status_code == 200
        finally:
            loopback_server.start()

        for process in (server, worker):
            await seconds_until(http, f"{process.url}/readyz", 200, within=30)
            assert (await http.get(f"{process.url}/healthz")).status_code == 200
    finally:
        server.stop()
        worker.stop()
    for process in (server, worker):
        assert "Traceback" not in process.log()
