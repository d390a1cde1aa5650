"""The servers bench/tree_reads.py compares, each started as one process on loopback."""

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography.fernet import Fernet

from common import create_token, free_port, npm_ci
from tree_queries import TASKS_PER_STAGE

BENCH_DIR = Path(__file__).resolve().parent
#: The pinned PostGraphile: its package.json and package-lock.json (every dependency's version
#: and integrity hash), tracked in git; installed with `npm ci` into POSTGRAPHILE_DIR (ignored).
POSTGRAPHILE_PINS = BENCH_DIR / "postgraphile"
POSTGRAPHILE_DIR = BENCH_DIR / ".postgraphile"
POSTGRAPHILE_BIN = POSTGRAPHILE_DIR / "node_modules" / ".bin" / "postgraphile"
PINNED_FILES = ("package.json", "package-lock.json")
START_TIMEOUT_SECONDS = 120.0
REQUEST_TIMEOUT_SECONDS = 120.0


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    path: str
    log_path: Path
    #: What every request sends besides its body: Conveyor's token; nothing for the others
    #: (PostGraphile refuses a bearer token it was not configured to verify).
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    async def wait_until_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log_path.read_text()}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            writer.close()
            return
        raise RuntimeError(f"{self.name} did not listen:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)


def ensure_postgraphile() -> str | None:
    """Install the pinned PostGraphile into bench/.postgraphile unless that very lockfile is
    installed there already; why it cannot run, or None."""
    pins = {name: (POSTGRAPHILE_PINS / name).read_bytes() for name in PINNED_FILES}
    installed = all(
        (POSTGRAPHILE_DIR / name).exists() and (POSTGRAPHILE_DIR / name).read_bytes() == pinned
        for name, pinned in pins.items()
    )
    if installed and POSTGRAPHILE_BIN.exists():
        return None
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node or npm is not installed: PostGraphile skipped"
    POSTGRAPHILE_DIR.mkdir(exist_ok=True)
    for name, pinned in pins.items():
        (POSTGRAPHILE_DIR / name).write_bytes(pinned)
    npm_ci(POSTGRAPHILE_DIR)
    return None


def postgraphile_version() -> str:
    """The version of the PostGraphile installed in bench/.postgraphile."""
    package = POSTGRAPHILE_DIR / "node_modules" / "postgraphile" / "package.json"
    version: str = json.loads(package.read_text())["version"]
    return version


def command_for(name: str, database_url: str, port: int) -> list[str]:
    if name == "conveyor":
        return [sys.executable, "-m", "conveyor", "serve", "--no-demo"]
    if name == "limit":
        return [sys.executable, str(BENCH_DIR / "tree_limit.py"), database_url, str(port)]
    return [
        str(POSTGRAPHILE_BIN),
        "--connection",
        database_url,
        "--schema",
        "public",
        "--simple-collections",
        "only",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--disable-query-log",
    ]


@contextlib.asynccontextmanager
async def running(
    names: list[str],
    database_url: str,
    work_dir: Path,
    conveyor_env: dict[str, str],
    conveyor_role: str = "VIEWER",
) -> AsyncIterator[dict[str, Server]]:
    """Each named server, started on a free loopback port and stopped at the end; Conveyor's
    requests carry a token of `conveyor_role`."""
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("CONVEYOR_")
    }
    servers: dict[str, Server] = {}
    try:
        for name in names:
            port = free_port()
            env = {**environment, "NODE_ENV": "production"}
            headers = {}
            if name == "conveyor":
                headers["Authorization"] = (
                    f"Bearer {await create_token(database_url, conveyor_role)}"
                )
                env.update(
                    CONVEYOR_DATABASE_URL=database_url,
                    CONVEYOR_SECRET_KEY=Fernet.generate_key().decode(),
                    CONVEYOR_DATA_DIR=str(work_dir / "conveyor-data"),
                    CONVEYOR_PORT=str(port),
                    CONVEYOR_LOG_LEVEL="warning",
                    CONVEYOR_RUN_WORKER="false",
                    # Measured here is the server, not the limits that protect it.
                    CONVEYOR_RATE_LIMIT_REQUESTS="0",
                    CONVEYOR_RATE_LIMIT_COST="0",
                    CONVEYOR_MAX_PAGE_SIZE=str(TASKS_PER_STAGE),
                    CONVEYOR_MAX_QUERY_COST="1000000",
                    **conveyor_env,
                )
            log_path = work_dir / f"{name}.log"
            with log_path.open("wb") as log:
                process = subprocess.Popen(
                    command_for(name, database_url, port),
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            path = "/" if name == "limit" else "/graphql"
            server = Server(name, process, port, path, log_path, headers)
            servers[name] = server
            await server.wait_until_listening()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


async def post(client: httpx.AsyncClient, server: Server, body: bytes) -> dict[str, Any]:
    response = await client.post(
        server.url, content=body, headers={"content-type": "application/json", **server.headers}
    )
    response.raise_for_status()
    document: dict[str, Any] = response.json()
    if document.get("errors"):
        raise RuntimeError(f"{server.name} answered errors: {document['errors']}")
    data: dict[str, Any] = document["data"]
    return data
