"""Outages of Conveyor's own database: connections terminated, the server stopped and started
again. Everything resumes by itself, the API answers 503 UNAVAILABLE meanwhile, and an outage
is logged once."""

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from cryptography.fernet import Fernet
from tortoise.context import TortoiseContext

from conveyor.db.config import tortoise_config
from conveyor.db.embedded import EmbeddedPostgres
from conveyor.db.migrate import migrate_database
from conveyor.db.models import Task
from conveyor.settings import Settings
from tests.conftest import GraphQLClient, conveyor_env, start_server
from tests.integration.conftest import (
    build_engine_catalog,
    private_embedded_postgres,
    target_fetch,
)
from tests.integration.subscribers import LiveSubscription, subscribed, websocket_url

TERMINATE_OTHERS = """
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
"""
CREATE_ISSUE = """
mutation($i: CreateIssueInput!) {
  createIssue(input: $i) { pipeline { id stages { tasks { id } } } }
}
"""
TASK_CHANGES = """
subscription($pipelineId: ID, $after: Int) {
  taskStatusChanged(pipelineId: $pipelineId, after: $after) {
    sequence
    ... on TaskStatusChange { taskId newStatus }
  }
}
"""
ENVIRONMENTS = "{ environments { totalCount } }"


@pytest.fixture
def private_server() -> Iterator[EmbeddedPostgres]:
    """An embedded PostgreSQL of this test's own, for it to stop and start."""
    with private_embedded_postgres("conveyor-outage-pg-") as server:
        yield server


@pytest.fixture
async def private_settings(private_server: EmbeddedPostgres, tmp_path: Path) -> Settings:
    """Settings of a Conveyor whose database is on the private server, migrated."""
    url = private_server.url()
    await migrate_database(url)
    return Settings(
        database_url=url,
        data_dir=tmp_path / "data",
        secret_key=Fernet.generate_key().decode(),
    )


@contextlib.asynccontextmanager
async def orm(url: str) -> AsyncIterator[None]:
    async with TortoiseContext() as context:
        await context.init(config=tortoise_config(url, pool_max_size=4))
        yield


async def terminate_every_other_backend(url: str) -> int:
    """pg_terminate_backend on every connection to the database of `url` but our own."""
    connection = await asyncpg.connect(url)
    try:
        terminated: int = await connection.fetchval(TERMINATE_OTHERS)
        return terminated
    finally:
        await connection.close()


async def fetch_when_up(url: str, query: str, within: float = 30) -> list[asyncpg.Record]:
    """`query` on a new connection, retried while the server is still starting."""
    deadline = time.monotonic() + within
    while True:
        try:
            connection = await asyncpg.connect(url)
        except (OSError, asyncpg.PostgresError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
            continue
        try:
            return await connection.fetch(query)
        finally:
            await connection.close()


async def task_statuses(url: str) -> dict[str, int]:
    rows = await fetch_when_up(url, "SELECT status, count(*) AS n FROM task GROUP BY status")
    return {row["status"]: row["n"] for row in rows}


async def wait_for(check: Callable[[], Awaitable[bool]], what: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.1)


async def done_task_ids(live: LiveSubscription, task_ids: set[str]) -> set[str]:
    """Read the subscription until every task of `task_ids` was seen becoming DONE."""
    done: set[str] = set()
    while done != task_ids:
        change = await live.next()
        if change.get("newStatus") == "DONE":
            done.add(change["taskId"])
    return done


def log_lines(log: str, pattern: str) -> list[str]:
    return [line for line in log.splitlines() if re.search(pattern, line)]


async def test_a_served_conveyor_rides_out_terminated_connections_and_a_stopped_database(
    private_server: EmbeddedPostgres,
    private_settings: Settings,
    server_url: str,
    target_databases: Callable[[], Awaitable[str]],
    tmp_path: Path,
) -> None:
    url = private_server.url()
    names = {f"db{n}": await target_databases() for n in range(4)}
    for name in names.values():
        await target_fetch(server_url, name, "CREATE TABLE applied (label text)")
    stages = 3
    async with orm(url):
        catalog = await build_engine_catalog(GraphQLClient(private_settings), server_url, names)
    plan = {
        "title": "through an outage",
        "stages": [
            {
                "environmentId": catalog.environments[("dev", "test")[stage % 2]],
                "tasks": [
                    {
                        "type": "DATA_UPDATE",
                        "instanceId": catalog.instance,
                        "databaseId": catalog.databases[key],
                        "statement": f"INSERT INTO applied VALUES ('s{stage}');"
                        "SELECT pg_sleep(1.5)",
                    }
                    for key in names
                ],
            }
            for stage in range(stages)
        ],
    }
    server = start_server(
        conveyor_env(private_settings, CONVEYOR_POLL_SECONDS="0.5"), tmp_path / "serve.log"
    )
    graphql_url = f"{server.url}/graphql"
    http = httpx.AsyncClient(headers=server.auth, timeout=10)
    try:
        created = (
            await http.post(graphql_url, json={"query": CREATE_ISSUE, "variables": {"i": plan}})
        ).json()["data"]["createIssue"]["pipeline"]
        task_ids = {task["id"] for stage in created["stages"] for task in stage["tasks"]}
        async with subscribed(
            websocket_url(server),
            TASK_CHANGES,
            {"pipelineId": created["id"], "after": 0},
            token=server.token,
        ) as live:

            async def first_stage_running() -> bool:
                return (await task_statuses(url)).get("RUNNING", 0) > 0

            await wait_for(first_stage_running, "the first stage to start")
            # Every pooled connection, the LISTEN connection and the worker's: gone at once.
            assert await terminate_every_other_backend(url) > 0
            await asyncio.sleep(0.5)

            private_server.stop()
            try:
                # The first stage's tasks finish on their targets meanwhile: their reports
                # wait for the database.
                await asyncio.sleep(2)
                refused = await http.post(graphql_url, json={"query": ENVIRONMENTS})
                await asyncio.sleep(1)
            finally:
                private_server.__enter__()

            seen_done = await done_task_ids(live, task_ids)

        async def all_settled() -> bool:
            statuses = await task_statuses(url)
            return "RUNNING" not in statuses and "PENDING" not in statuses

        await wait_for(all_settled, "every task to settle")
        answered = await http.post(graphql_url, json={"query": ENVIRONMENTS})
    finally:
        await http.aclose()
        server.stop()

    assert await task_statuses(url) == {"DONE": len(task_ids)}
    # Each task ran once, and the worker itself recorded how it ended: the reports that met
    # the outage were retried, not left for recovery to settle.
    runs = await fetch_when_up(url, "SELECT status, error_code FROM task_run")
    assert [(run["status"], run["error_code"]) for run in runs] == [("DONE", None)] * len(task_ids)
    assert "recovered as" not in server.log()
    assert seen_done == task_ids, "the live updates lost a change"
    for name in names.values():
        applied = await target_fetch(server_url, name, "SELECT label FROM applied ORDER BY 1")
        assert [row["label"] for row in applied] == [f"s{stage}" for stage in range(stages)]

    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"].isdigit()
    error = refused.json()["errors"][0]
    assert error["extensions"]["code"] == "UNAVAILABLE"
    assert "database" in error["message"]
    assert answered.status_code == 200, answered.text
    assert answered.json() == {"data": {"environments": {"totalCount": 3}}}

    log = server.log()
    assert "Traceback" not in log
    assert "Internal server error" not in log
    for who in ("worker-", "event listener", "event hub:", "event hub's token check"):
        started = log_lines(log, rf"WARNING .*{who}.*unavailable")
        ended = log_lines(log, rf"INFO .*{who}.*is back")
        # Two outages (the terminated connections, the stopped server), each logged once
        # when it starts and once when it ends, however many retries it took.
        assert 1 <= len(started) <= 2, (who, started)
        assert len(ended) == len(started), (who, started, ended)


async def test_a_query_whose_resolver_loses_the_database_is_answered_503_unavailable(
    private_server: EmbeddedPostgres, private_settings: Settings, tmp_path: Path
) -> None:
    url = private_server.url()
    server = start_server(
        conveyor_env(private_settings, CONVEYOR_RUN_WORKER="false"), tmp_path / "serve.log"
    )
    locker = await asyncpg.connect(url)
    try:
        # The token is found (its table is free); the resolver's read then waits on this
        # lock until the server goes away under it.
        await locker.execute("BEGIN; LOCK TABLE environment IN ACCESS EXCLUSIVE MODE")
        async with httpx.AsyncClient(headers=server.auth, timeout=30) as http:
            request = asyncio.create_task(
                http.post(f"{server.url}/graphql", json={"query": ENVIRONMENTS})
            )

            async def resolver_waiting() -> bool:
                return bool(
                    await locker.fetchval(
                        # While a statement is parsed (and its tables locked), the query
                        # column still shows the connection's previous statement.
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                )

            await wait_for(resolver_waiting, "the resolver to wait for the lock")
            private_server.stop()
            response = await request
    finally:
        server.stop()
        private_server.__enter__()

    assert response.status_code == 503, response.text
    assert response.headers["retry-after"].isdigit()
    body = response.json()
    assert body["data"] is None
    assert [error["extensions"]["code"] for error in body["errors"]] == ["UNAVAILABLE"]
    assert "Traceback" not in server.log()


async def test_a_read_right_after_every_connection_was_terminated_succeeds(
    db: TortoiseContext, database_url: str
) -> None:
    client = db.connections.get("default")
    for _ in range(3):
        # Several pooled connections, all idle and all about to be terminated.
        await asyncio.gather(*(client.execute_query("SELECT pg_sleep(0.01)") for _ in range(4)))
        assert await terminate_every_other_backend(database_url) > 0

        assert await Task.all().count() == 0


async def test_resolvers_answer_unavailable_while_the_database_is_stopped(
    private_server: EmbeddedPostgres, private_settings: Settings
) -> None:
    graphql = GraphQLClient(private_settings)
    async with orm(private_server.url()):
        assert (await graphql(ENVIRONMENTS)).errors == []
        private_server.stop()
        try:
            down = await graphql(ENVIRONMENTS)
        finally:
            private_server.__enter__()
        up = await graphql(ENVIRONMENTS)

    assert down.data is None
    assert down.error_codes == ["UNAVAILABLE"]
    assert "correlationId" not in down.errors[0]["extensions"]
    assert down.errors[0]["extensions"]["retryAfter"] > 0
    assert up.errors == []
