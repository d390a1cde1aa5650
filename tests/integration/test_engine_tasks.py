"""Each task type and the runner's controls, end to end: plans go in through the GraphQL API,
the in-process worker runs them against real PostgreSQL, and the API and the target show the
outcome. Database and instance tasks, cancel of a running task, failures that apply nothing,
retries, not-before times and the per-instance limit."""

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from strawberry import relay

from conveyor.crypto import PasswordCipher
from conveyor.runner.targets import quote_identifier
from conveyor.runner.worker import Worker, running_worker
from conveyor.settings import Settings
from tests.conftest import GraphQLClient, free_port, with_database
from tests.integration.conftest import (
    EngineCatalog,
    address_of,
    build_engine_catalog,
    eventually,
    target_fetch,
)

MakeDatabase = Callable[[], Awaitable[str]]

CREATE_ISSUE = """
mutation($input: CreateIssueInput!) {
  createIssue(input: $input) { id pipeline { stages { tasks { id name } } } }
}
"""
TASK = """
query($id: ID!) { node(id: $id) { ... on Task {
  id name status statusReason cancelRequested notBefore
  waitingReason { kind message notBefore limit }
  database { id name }
  runs { attempt status startedAt endedAt errorCode errorMessage result log }
} } }
"""
ISSUE_STATUS = "query($id: ID!) { node(id: $id) { ... on Issue { status } } }"
DATABASES = """
query($instanceId: ID!, $after: String) {
  databases(instanceId: $instanceId, first: 100, after: $after) {
    edges { node { id name } }
    pageInfo { hasNextPage endCursor }
  }
}
"""
TASK_ACTION = "mutation($i: TaskActionInput!) {{ {name}(input: $i) {{ status cancelRequested }} }}"
UPDATE_INSTANCE_OPTIONS = "mutation($i: UpdateInstanceInput!) { updateInstance(input: $i) { id } }"
STANDBY_ONLY = {"name": "target_session_attrs", "value": "standby"}

#: A cancel or a not-before time that comes due is noticed within about a heartbeat (a third of
#: the 3 s lease) or a poll (0.2 s); this leaves room for a busy machine, and none for a 30 s sleep.
PROMPTLY = 6.0


# --- Helpers ---------------------------------------------------------------------------------


async def create_issue(
    graphql: GraphQLClient, environment_id: str, *tasks: dict[str, Any]
) -> tuple[str, dict[str, str]]:
    """One issue with one stage holding `tasks`; its id and its task ids by task name."""
    plan = {"title": "engine tasks", "stages": [{"environmentId": environment_id, "tasks": tasks}]}
    created = (await graphql.ok(CREATE_ISSUE, {"input": plan}))["createIssue"]
    task_ids = {
        task["name"]: task["id"]
        for stage in created["pipeline"]["stages"]
        for task in stage["tasks"]
    }
    return created["id"], task_ids


def change(
    catalog: EngineCatalog, database: str, name: str, statement: str, **extra: Any
) -> dict[str, Any]:
    """A change task on one of the catalog's databases."""
    ddl = statement.lstrip().upper().startswith(("CREATE", "ALTER", "DROP"))
    return {
        "type": "SCHEMA_UPDATE" if ddl else "DATA_UPDATE",
        "name": name,
        "instanceId": catalog.instance,
        "databaseId": catalog.databases[database],
        "statement": statement,
        **extra,
    }


async def task_state(graphql: GraphQLClient, task_id: str) -> dict[str, Any]:
    node: dict[str, Any] = (await graphql.ok(TASK, {"id": task_id}))["node"]
    return node


async def wait_for_task(
    graphql: GraphQLClient, task_id: str, *statuses: str, within: float = 20
) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        task = await task_state(graphql, task_id)
        return task if task["status"] in statuses else None

    found: dict[str, Any] = await eventually(
        check, within=within, what=f"task {task_id} to be one of {statuses}"
    )
    return found


async def task_action(graphql: GraphQLClient, name: str, task_id: str) -> dict[str, Any]:
    data = await graphql.ok(TASK_ACTION.format(name=name), {"i": {"taskId": task_id}})
    result: dict[str, Any] = data[name]
    return result


async def registered_databases(graphql: GraphQLClient, instance_id: str) -> dict[str, str]:
    """Every Database registered on the instance, id by name, across all pages."""
    found: dict[str, str] = {}
    after: str | None = None
    while True:
        data = await graphql.ok(DATABASES, {"instanceId": instance_id, "after": after})
        page = data["databases"]
        found.update({edge["node"]["name"]: edge["node"]["id"] for edge in page["edges"]})
        if not page["pageInfo"]["hasNextPage"]:
            return found
        after = page["pageInfo"]["endCursor"]


async def target_execute(server_url: str, database: str, statement: str) -> None:
    connection = await asyncpg.connect(with_database(server_url, database))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def history_of(server_url: str, database: str, task_id: str) -> list[dict[str, Any]]:
    """The target's change-history rows of a task (none if the table is not there at all)."""
    exists = await target_fetch(
        server_url, database, "SELECT to_regclass('conveyor.change_history') IS NOT NULL AS e"
    )
    if not exists[0]["e"]:
        return []
    rows = await target_fetch(
        server_url,
        database,
        "SELECT task_id, attempt FROM conveyor.change_history ORDER BY task_id",
    )
    return [dict(row) for row in rows if row["task_id"] == key_of(task_id)]


def key_of(global_id: str) -> int:
    """The row id behind a global id: the target's history knows tasks by it."""
    return int(relay.GlobalID.from_id(global_id).node_id)


async def statement_is_running(server_url: str, database: str, text: str) -> bool:
    """Whether a session of Conveyor's runs a statement starting with `text` on `database`."""
    rows = await target_fetch(
        server_url,
        "postgres",
        f"""SELECT count(*) AS n FROM pg_stat_activity
            WHERE datname = {quote_literal(database)} AND state = 'active'
              AND application_name = 'conveyor' AND query LIKE {quote_literal(text + "%")}""",
    )
    return bool(rows[0]["n"])


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def moment(value: str) -> datetime:
    return datetime.fromisoformat(value)


@asynccontextmanager
async def tuned_worker(
    settings: Settings, database_url: str, **updates: Any
) -> AsyncIterator[Worker]:
    """A worker like the `worker` fixture's, with some settings changed."""
    tuned = settings.model_copy(update=updates)
    cipher = PasswordCipher(tuned.secret_key or "")
    async with running_worker(tuned, cipher, database_url) as running:
        yield running


@pytest.fixture
async def short_timeouts_worker(
    db: object, engine_settings: Settings, database_url: str
) -> AsyncIterator[Worker]:
    """A worker whose changes may wait 300 ms for a lock and run 300 ms in all."""
    async with tuned_worker(
        engine_settings, database_url, statement_timeout_ms=300, lock_timeout_ms=300
    ) as running:
        yield running


@pytest.fixture
async def short_lock_timeout_worker(
    db: object, engine_settings: Settings, database_url: str
) -> AsyncIterator[Worker]:
    """A worker whose changes may wait 300 ms for a lock but run for long.

    With both timeouts at 300 ms, PostgreSQL reports a statement blocked on a lock as a
    statement timeout: that timer started first (it runs from the statement's start, the lock
    timer only from the start of the wait), and when both fired the earlier one is reported.
    """
    async with tuned_worker(
        engine_settings, database_url, statement_timeout_ms=10_000, lock_timeout_ms=300
    ) as running:
        yield running


@pytest.fixture
async def created_database_name(server_url: str) -> AsyncIterator[str]:
    """A name no database has yet, awkward on purpose (a quote, spaces, a semicolon, a
    comment); dropped afterwards if it was made."""
    name = f'conveyor e2e "x"; -- {uuid.uuid4().hex[:8]}'
    yield name
    connection = await asyncpg.connect(server_url)
    try:
        await connection.execute(f"DROP DATABASE IF EXISTS {quote_identifier(name)} WITH (FORCE)")
    finally:
        await connection.close()


# --- Database and instance tasks -------------------------------------------------------------


async def test_database_create_makes_the_database_and_registers_it_on_the_instance(
    graphql: GraphQLClient, worker: Worker, server_url: str, created_database_name: str
) -> None:
    catalog = await build_engine_catalog(graphql, server_url, {})
    _, tasks = await create_issue(
        graphql,
        catalog.environments["dev"],
        {
            "type": "DATABASE_CREATE",
            "name": "create",
            "instanceId": catalog.instance,
            "databaseName": created_database_name,
        },
    )

    task = await wait_for_task(graphql, tasks["create"], "DONE", "FAILED")

    assert task["status"] == "DONE", task["statusReason"]
    assert [run["status"] for run in task["runs"]] == ["DONE"]
    rows = await target_fetch(
        server_url,
        "postgres",
        f"SELECT datname FROM pg_database WHERE datname = {quote_literal(created_database_name)}",
    )
    assert [row["datname"] for row in rows] == [created_database_name]
    registered = await registered_databases(graphql, catalog.instance)
    assert created_database_name in registered
    assert task["database"] == {
        "id": registered[created_database_name],
        "name": created_database_name,
    }


async def test_instance_sync_registers_the_databases_found_on_the_server(
    graphql: GraphQLClient,
    worker: Worker,
    server_url: str,
    target_databases: MakeDatabase,
) -> None:
    unregistered = await target_databases()
    catalog = await build_engine_catalog(graphql, server_url, {})
    assert unregistered not in await registered_databases(graphql, catalog.instance)
    _, tasks = await create_issue(
        graphql,
        catalog.environments["dev"],
        {"type": "INSTANCE_SYNC", "name": "sync", "instanceId": catalog.instance},
    )

    task = await wait_for_task(graphql, tasks["sync"], "DONE", "FAILED")

    assert task["status"] == "DONE", task["statusReason"]
    assert task["database"] is None
    (run,) = task["runs"]
    version = await target_fetch(server_url, "postgres", "SHOW server_version")
    assert run["result"]["serverVersion"] == version[0]["server_version"]
    assert unregistered in run["result"]["databases"]
    assert "postgres" in run["result"]["databases"]
    registered = await registered_databases(graphql, catalog.instance)
    assert unregistered in registered
    assert set(run["result"]["databases"]) <= set(registered)


# --- Cancel ----------------------------------------------------------------------------------


async def table_with_a_sleeping_insert(
    graphql: GraphQLClient, server_url: str, target_databases: MakeDatabase
) -> tuple[str, str, str]:
    """An issue whose one task inserts a row, then sleeps 30 s: its id, the task's, and the
    target database, once the sleep is running."""
    database = await target_databases()
    await target_execute(server_url, database, "CREATE TABLE t (id int)")
    catalog = await build_engine_catalog(graphql, server_url, {"db": database})
    issue_id, tasks = await create_issue(
        graphql,
        catalog.environments["dev"],
        change(catalog, "db", "slow", "INSERT INTO t VALUES (1); SELECT pg_sleep(30)"),
    )
    await wait_for_task(graphql, tasks["slow"], "RUNNING")
    await eventually(
        lambda: statement_is_running(server_url, database, "SELECT pg_sleep"),
        within=10,
        what="the sleep to run on the target",
    )
    return issue_id, tasks["slow"], database


async def test_cancel_task_aborts_the_running_statement_and_rolls_it_back(
    graphql: GraphQLClient,
    worker: Worker,
    server_url: str,
    target_databases: MakeDatabase,
) -> None:
    _, task_id, database = await table_with_a_sleeping_insert(graphql, server_url, target_databases)

    asked = time.monotonic()
    answer = await task_action(graphql, "cancelTask", task_id)
    # CANCELED only once the worker has aborted it; until then it is RUNNING, being canceled.
    assert answer == {"status": "RUNNING", "cancelRequested": True}
    task = await wait_for_task(graphql, task_id, "CANCELED", "DONE", "FAILED", within=PROMPTLY)
    took = time.monotonic() - asked

    assert task["status"] == "CANCELED", task["statusReason"]
    assert took < PROMPTLY
    assert not task["cancelRequested"]
    (run,) = task["runs"]
    assert run["status"] == "CANCELED"
    assert run["errorCode"] == "CANCELED"
    assert run["endedAt"] is not None
    assert await target_fetch(server_url, database, "SELECT id FROM t") == []
    assert await history_of(server_url, database, task_id) == []
    assert not await statement_is_running(server_url, database, "SELECT pg_sleep")


async def test_cancel_issue_aborts_its_running_task(
    graphql: GraphQLClient,
    worker: Worker,
    server_url: str,
    target_databases: MakeDatabase,
) -> None:
    issue_id, task_id, database = await table_with_a_sleeping_insert(
        graphql, server_url, target_databases
    )

    asked = time.monotonic()
    data = await graphql.ok(
        "mutation($i: IssueActionInput!) { cancelIssue(input: $i) { status } }",
        {"i": {"issueId": issue_id}},
    )
    assert data["cancelIssue"]["status"] == "CANCELED"
    task = await wait_for_task(graphql, task_id, "CANCELED", "DONE", "FAILED", within=PROMPTLY)

    assert task["status"] == "CANCELED", task["statusReason"]
    assert time.monotonic() - asked < PROMPTLY
    assert [run["status"] for run in task["runs"]] == ["CANCELED"]
    issue = await graphql.ok(ISSUE_STATUS, {"id": issue_id})
    assert issue["node"]["status"] == "CANCELED"
    assert await target_fetch(server_url, database, "SELECT id FROM t") == []
    assert await history_of(server_url, database, task_id) == []


# --- Failures --------------------------------------------------------------------------------


async def test_an_unreachable_instance_fails_the_task_with_the_reason(
    graphql: GraphQLClient, worker: Worker, server_url: str
) -> None:
    closed_port = free_port()  # bound for a moment, then closed: nothing listens there
    password = f"pw-{uuid.uuid4().hex}"
    catalog = await build_engine_catalog(
        graphql,
        server_url,
        {"db": "somewhere"},
        host="127.0.0.1",
        port=closed_port,
        password=password,
    )
    _, tasks = await create_issue(
        graphql,
        catalog.environments["dev"],
        change(catalog, "db", "ddl", "CREATE TABLE never (id int)"),
    )

    task = await wait_for_task(graphql, tasks["ddl"], "DONE", "FAILED")

    assert task["status"] == "FAILED"
    reason = task["statusReason"]
    assert "could not connect" in reason
    assert f"127.0.0.1:{closed_port}" in reason
    assert "connection refused" in reason
    (run,) = task["runs"]
    assert run["status"] == "FAILED"
    assert run["errorCode"] == "CONNECTION_FAILED"
    assert run["errorMessage"] == reason
    assert password not in str(task)


async def test_a_host_outside_the_instance_networks_fails_the_task_before_connecting(
    graphql: GraphQLClient, engine_settings: Settings, database_url: str, server_url: str
) -> None:
    # Saved while any host was allowed; the operator has restricted the networks since.
    catalog = await build_engine_catalog(graphql, server_url, {}, host="localhost")
    _, tasks = await create_issue(
        graphql,
        catalog.environments["dev"],
        {"type": "INSTANCE_SYNC", "name": "sync", "instanceId": catalog.instance},
    )

    async with tuned_worker(engine_settings, database_url, instance_networks=["10.0.0.0/8"]):
        task = await wait_for_task(graphql, tasks["sync"], "DONE", "FAILED")

    assert task["status"] == "FAILED"
    (run,) = task["runs"]
    assert run["errorCode"] == "HOST_NOT_ALLOWED"
    assert run["errorMessage"] == task["statusReason"]
    assert task["statusReason"].startswith("could not connect to the instance at localhost:")
    assert task["statusReason"].endswith(
        "/postgres: the host resolves to an address outside the instance networks"
    )
    assert "127.0.0.1" not in str(task)


async def test_an_instance_inside_the_networks_runs_with_its_connection_options(
    graphql: GraphQLClient, engine_settings: Settings, database_url: str, server_url: str
) -> None:
    address = address_of(server_url)
    assert not address.host.startswith("/"), "an instance needs the test server on TCP"
    catalog = await build_engine_catalog(
        graphql,
        server_url,
        {},
        host="127.0.0.1",
        connectionOptions=[{"name": "target_session_attrs", "value": "read-write"}],
    )
    sync = {"type": "INSTANCE_SYNC", "name": "sync", "instanceId": catalog.instance}

    async with tuned_worker(engine_settings, database_url, instance_networks=["127.0.0.0/8"]):
        _, first = await create_issue(graphql, catalog.environments["dev"], sync)
        done = await wait_for_task(graphql, first["sync"], "DONE", "FAILED")
        # A primary is no standby: the option reaches the connection the runner opens.
        await graphql.ok(
            UPDATE_INSTANCE_OPTIONS,
            {"i": {"id": catalog.instance, "connectionOptions": [STANDBY_ONLY]}},
        )
        _, second = await create_issue(graphql, catalog.environments["dev"], sync)
        failed = await wait_for_task(graphql, second["sync"], "DONE", "FAILED")

    assert done["status"] == "DONE", done["statusReason"]
    assert failed["status"] == "FAILED"
    assert failed["runs"][-1]["errorCode"] == "CONNECTION_FAILED"
    assert failed["statusReason"].endswith(": no server there is one target_session_attrs accepts")


async def test_a_statement_running_past_the_statement_timeout_fails_and_applies_nothing(
    graphql: GraphQLClient,
    short_timeouts_worker: Worker,
    server_url: str,
    target_databases: MakeDatabase,
) -> None:
    database = await target_databases()
    catalog = await build_engine_catalog(graphql, server_url, {"db": database})
    _, tasks = await create_issue(
        graphql,
        catalog.environments["dev"],
        change(catalog, "db", "slow", "CREATE TABLE made (id int); SELECT pg_sleep(5)"),
    )

    task = await wait_for_task(graphql, tasks["slow"], "DONE", "FAILED")

    assert task["status"] == "FAILED"
    assert "statement timeout" in task["statusReason"]
    (run,) = task["runs"]
    assert run["errorCode"] == "57014"
    assert run["result"]["durationMs"] < 3_000
    made = await target_fetch(server_url, database, "SELECT to_regclass('made') AS r")
    assert made[0]["r"] is None
    assert await history_of(server_url, database, tasks["slow"]) == []


async def test_a_change_waiting_past_the_lock_timeout_fails_and_applies_nothing(
    graphql: GraphQLClient,
    short_lock_timeout_worker: Worker,
    server_url: str,
    target_databases: MakeDatabase,
) -> None:
    database = await target_databases()
    await target_execute(server_url, database, "CREATE TABLE locked (id int)")
    catalog = await build_engine_catalog(graphql, server_url, {"db": database})
    holder = await asyncpg.connect(with_database(server_url, database))
    try:
        async with holder.transaction():
            await holder.execute("LOCK TABLE locked IN ACCESS EXCLUSIVE MODE")
            _, tasks = await create_issue(
                graphql,
                catalog.environments["dev"],
                change(catalog, "db", "alter", "ALTER TABLE locked ADD COLUMN extra int"),
            )
            task = await wait_for_task(graphql, tasks["alter"], "DONE", "FAILED")
    finally:
        await holder.close()

    assert task["status"] == "FAILED"
    assert "lock timeout" in task["statusReason"]
    (run,) = task["runs"]
    assert run["errorCode"] == "55P03"
    columns = await target_fetch(
        server_url,
        database,
        "SELECT attname FROM pg_attribute WHERE attrelid = 'locked'::regclass AND attnum > 0",
    )
    assert [row["attname"] for row in columns] == ["id"]
    assert await history_of(server_url, database, tasks["alter"]) == []


# --- Retry -----------------------------------------------------------------------------------


async def test_a_retry_after_a_failure_is_a_new_attempt(
    graphql: GraphQLClient,
    worker: Worker,
    server_url: str,
    target_databases: MakeDatabase,
) -> None:
    database = await target_databases()
    catalog = await build_engine_catalog(graphql, server_url, {"db": database})
    _, tasks = await create_issue(
        graphql,
        catalog.environments["dev"],
        change(catalog, "db", "seed", "INSERT INTO late VALUES (1)"),
    )
    failed = await wait_for_task(graphql, tasks["seed"], "DONE", "FAILED")
    assert failed["status"] == "FAILED"
    assert failed["runs"][0]["errorCode"] == "42P01"  # undefined_table

    await target_execute(server_url, database, "CREATE TABLE late (id int)")
    assert (await task_action(graphql, "retryTask", tasks["seed"]))["status"] == "PENDING"
    task = await wait_for_task(graphql, tasks["seed"], "DONE", "FAILED")

    assert task["status"] == "DONE", task["statusReason"]
    assert task["statusReason"] is None
    assert [(run["attempt"], run["status"]) for run in task["runs"]] == [
        (1, "FAILED"),
        (2, "DONE"),
    ]
    first, second = task["runs"]
    assert moment(first["endedAt"]) <= moment(second["startedAt"])
    assert second["result"]["rowsAffected"] == 1
    assert [
        dict(row) for row in await target_fetch(server_url, database, "SELECT id FROM late")
    ] == [{"id": 1}]
    assert await history_of(server_url, database, tasks["seed"]) == [
        {"task_id": key_of(tasks["seed"]), "attempt": 2}
    ]


# --- Scheduling ------------------------------------------------------------------------------


async def test_a_not_before_time_holds_a_task_until_it_comes_or_a_person_runs_it_now(
    graphql: GraphQLClient,
    worker: Worker,
    server_url: str,
    target_databases: MakeDatabase,
) -> None:
    soon_database, later_database = await target_databases(), await target_databases()
    catalog = await build_engine_catalog(
        graphql, server_url, {"soon": soon_database, "later": later_database}
    )
    now = datetime.now(UTC)
    soon, later = now + timedelta(seconds=2), now + timedelta(hours=1)
    _, tasks = await create_issue(
        graphql,
        catalog.environments["dev"],
        change(catalog, "soon", "soon", "CREATE TABLE soon (id int)", notBefore=soon.isoformat()),
        change(
            catalog, "later", "later", "CREATE TABLE later (id int)", notBefore=later.isoformat()
        ),
    )

    for name, when in (("soon", soon), ("later", later)):
        waiting = await task_state(graphql, tasks[name])
        assert waiting["status"] == "PENDING"
        assert waiting["runs"] == []
        assert waiting["waitingReason"]["kind"] == "NOT_BEFORE"
        assert moment(waiting["waitingReason"]["notBefore"]) == when

    asked = time.monotonic()
    assert (await task_action(graphql, "runTaskNow", tasks["later"]))["status"] == "PENDING"
    ran_now = await wait_for_task(graphql, tasks["later"], "DONE", "FAILED", within=PROMPTLY)
    assert ran_now["status"] == "DONE", ran_now["statusReason"]
    assert time.monotonic() - asked < PROMPTLY
    assert ran_now["notBefore"] is None

    came = await wait_for_task(graphql, tasks["soon"], "DONE", "FAILED", within=10)
    assert came["status"] == "DONE", came["statusReason"]
    (run,) = came["runs"]
    assert soon <= moment(run["startedAt"]) < soon + timedelta(seconds=PROMPTLY)


async def test_an_instance_at_its_limit_runs_its_tasks_one_after_the_other(
    graphql: GraphQLClient,
    worker: Worker,
    server_url: str,
    target_databases: MakeDatabase,
) -> None:
    databases = {"a": await target_databases(), "b": await target_databases()}
    for database in databases.values():
        await target_execute(server_url, database, "CREATE TABLE ran (at timestamptz)")
    catalog = await build_engine_catalog(graphql, server_url, databases, maxRunningTasks=1)
    statement = "SELECT pg_sleep(1); INSERT INTO ran VALUES (clock_timestamp())"
    _, tasks = await create_issue(
        graphql,
        catalog.environments["dev"],
        change(catalog, "a", "a", statement),
        change(catalog, "b", "b", statement),
    )

    async def one_waits_for_the_instance() -> dict[str, Any] | None:
        states = [await task_state(graphql, tasks[name]) for name in ("a", "b")]
        statuses = sorted(state["status"] for state in states)
        waiting = [state for state in states if state["status"] == "PENDING"]
        if statuses != ["PENDING", "RUNNING"] or waiting[0]["waitingReason"] is None:
            return None
        reason: dict[str, Any] = waiting[0]["waitingReason"]
        return reason

    reason = await eventually(
        one_waits_for_the_instance, within=10, what="one task to wait for the instance"
    )
    assert reason["kind"] == "INSTANCE_AT_LIMIT"
    assert reason["limit"] == 1

    done = [await wait_for_task(graphql, tasks[name], "DONE", "FAILED") for name in ("a", "b")]
    assert [task["status"] for task in done] == ["DONE", "DONE"]
    first, second = sorted(
        (
            (moment(run["startedAt"]), moment(run["endedAt"]))
            for task in done
            for run in task["runs"]
        ),
    )
    assert first[1] <= second[0], f"the runs overlap: {first} and {second}"
