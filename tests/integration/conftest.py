"""Fixtures for tests that run tasks against real PostgreSQL targets."""

import asyncio
import contextlib
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import asyncpg
import pytest

from conveyor.crypto import PasswordCipher
from conveyor.db.embedded import EmbeddedPostgres
from conveyor.domain.targets import DatabaseIdentity
from conveyor.runner.worker import Worker, running_worker
from conveyor.settings import Settings
from tests.conftest import GraphQLClient, with_database

#: Conveyor's database for runner tests that have none: no server's system identifier is 0.
NOT_CONVEYOR = DatabaseIdentity(system_identifier=0, oid=0)


@dataclass(frozen=True)
class ServerAddress:
    host: str
    port: int
    user: str
    password: str


def address_of(url: str) -> ServerAddress:
    """Where a postgresql:// URL points, the Unix-socket form (?host=/dir) included."""
    parts = urlparse(url)
    host = parse_qs(parts.query).get("host", [parts.hostname or "127.0.0.1"])[0]
    return ServerAddress(
        host=host,
        port=parts.port or 5432,
        user=parts.username or "postgres",
        password=parts.password or "",
    )


@pytest.fixture
async def target_databases(server_url: str) -> AsyncIterator[Callable[[], Awaitable[str]]]:
    """Makes real databases on the test server for tasks to change; drops them afterwards."""
    made: list[str] = []

    async def make() -> str:
        name = f"conveyor_target_{uuid.uuid4().hex[:10]}"
        connection = await asyncpg.connect(server_url)
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()
        made.append(name)
        return name

    yield make
    connection = await asyncpg.connect(server_url)
    try:
        for name in made:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def target_fetch(server_url: str, database: str, query: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(with_database(server_url, database))
    try:
        return await connection.fetch(query)
    finally:
        await connection.close()


@pytest.fixture
def engine_settings(settings: Settings) -> Settings:
    """Settings with short leases and polls, so tests see the runner act quickly."""
    return settings.model_copy(
        update={"lease_seconds": 3.0, "poll_seconds": 0.2, "worker_concurrency": 4}
    )


@pytest.fixture
async def worker(db: object, engine_settings: Settings, database_url: str) -> AsyncIterator[Worker]:
    """A worker inside the test's process and event loop."""
    cipher = PasswordCipher(engine_settings.secret_key or "")
    async with running_worker(engine_settings, cipher, database_url) as running:
        yield running


async def eventually(
    check: Callable[[], Awaitable[Any]],
    *,
    within: float = 30,
    what: str = "condition",
) -> Any:
    """Poll `check` until it returns something truthy."""
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass(frozen=True)
class EngineCatalog:
    environments: dict[str, str]
    instance: str
    databases: dict[str, str]
    names: dict[str, str]


async def build_engine_catalog(
    graphql: GraphQLClient, server_url: str, database_names: dict[str, str], **instance: Any
) -> EngineCatalog:
    """Environments dev/test (automatic) and prod (manual), one instance on the test server,
    and the given target databases registered on it."""
    environments = {}
    for order, (name, policy) in enumerate(
        [("dev", "AUTOMATIC"), ("test", "AUTOMATIC"), ("prod", "MANUAL")]
    ):
        data = await graphql.ok(
            "mutation($i: CreateEnvironmentInput!) { createEnvironment(input: $i) { id } }",
            {"i": {"name": name, "order": order, "approvalPolicy": policy}},
        )
        environments[name] = data["createEnvironment"]["id"]
    address = address_of(server_url)
    fields = {
        "name": "local",
        "environmentId": environments["dev"],
        "host": address.host,
        "port": address.port,
        "username": address.user,
        "password": address.password,
        "maxRunningTasks": 4,
        **instance,
    }
    data = await graphql.ok(
        "mutation($i: CreateInstanceInput!) { createInstance(input: $i) { id } }", {"i": fields}
    )
    instance_id = data["createInstance"]["id"]
    databases = {}
    for key, name in database_names.items():
        data = await graphql.ok(
            "mutation($i: RegisterDatabaseInput!) { registerDatabase(input: $i) { id } }",
            {"i": {"instanceId": instance_id, "name": name}},
        )
        databases[key] = data["registerDatabase"]["id"]
    return EngineCatalog(environments, instance_id, databases, dict(database_names))


@contextlib.contextmanager
def private_embedded_postgres(prefix: str) -> Iterator[EmbeddedPostgres]:
    """An embedded PostgreSQL of the test's own: its data directory to edit, the server to
    stop and start."""
    with tempfile.TemporaryDirectory(prefix=prefix) as data_dir:
        server = EmbeddedPostgres(Path(data_dir))
        try:
            server.__enter__()
        except Exception as error:
            server.stop()
            pytest.skip(f"the embedded PostgreSQL could not start: {error!r}")
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def password_server() -> Iterator[EmbeddedPostgres]:
    """An embedded PostgreSQL of this test's own, its data directory ours to edit."""
    with private_embedded_postgres("conveyor-auth-pg-") as server:
        yield server


def require_password_for(pgdata: Path, role: str) -> None:
    hba = pgdata / "pg_hba.conf"
    # Rewritten in place: the file keeps the owner (the server's system user) and mode.
    hba.write_text(f"local all {role} scram-sha-256\n{hba.read_text()}")
