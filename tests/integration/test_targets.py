"""Running changes against real PostgreSQL targets: each task type's work, the history row
that keeps a change from applying twice, failures, timeouts, cancel, and unreachable targets."""

import asyncio
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from conveyor.db.embedded import EmbeddedPostgres
from conveyor.domain.attempts import Outcome
from conveyor.domain.statuses import TaskType
from conveyor.runner.targets import (
    Change,
    Target,
    TargetUnreachable,
    cancel_backend,
    change_was_applied,
    execute,
    quote_identifier,
)
from tests.conftest import free_port, with_database
from tests.integration.conftest import (
    NOT_CONVEYOR,
    address_of,
    eventually,
    require_password_for,
    target_fetch,
)

MakeDatabase = Callable[[], Awaitable[str]]


def target_of(url: str, database: str | None, **changes: Any) -> Target:
    address = address_of(url)
    fields: dict[str, Any] = {
        "host": address.host,
        "port": address.port,
        "user": address.user,
        "password": address.password,
        "database": database,
        "conveyor_database": NOT_CONVEYOR,
        **changes,
    }
    return Target(**fields)


#: The installation of Conveyor whose tasks these tests run.
INSTALLATION = uuid.UUID("00000000-0000-4000-8000-000000000001")


def change_of(
    statement: str | None = None,
    *,
    task_id: int = 1,
    installation: uuid.UUID = INSTALLATION,
    type: TaskType = TaskType.SCHEMA_UPDATE,
    database_name: str | None = None,
    lock_timeout_ms: int = 5_000,
    statement_timeout_ms: int = 30_000,
) -> Change:
    return Change(
        installation=installation,
        task_id=task_id,
        attempt=1,
        type=type,
        statement=statement,
        database_name=database_name,
        lock_timeout_ms=lock_timeout_ms,
        statement_timeout_ms=statement_timeout_ms,
    )


@pytest.fixture
async def database(target_databases: MakeDatabase) -> str:
    """A fresh, empty target database."""
    return await target_databases()


@pytest.fixture
def target(server_url: str, database: str) -> Target:
    return target_of(server_url, database)


async def fetch(server_url: str, database: str, query: str) -> list[asyncpg.Record]:
    return await target_fetch(server_url, database, query)


async def history(server_url: str, database: str) -> list[dict[str, Any]]:
    rows = await fetch(
        server_url,
        database,
        "SELECT task_id, attempt, checksum, transactional FROM conveyor.change_history",
    )
    return [dict(row) for row in rows]


async def table_exists(server_url: str, database: str, name: str) -> bool:
    rows = await fetch(server_url, database, f"SELECT to_regclass('{name}') IS NOT NULL AS e")
    return bool(rows[0]["e"])


def kinds(outcome: Outcome) -> list[str]:
    return [entry["kind"] for entry in outcome.log]


async def test_a_schema_update_applies_and_records_itself_in_one_transaction(
    server_url: str, database: str, target: Target
) -> None:
    change = change_of("CREATE TABLE orders (id int); CREATE INDEX orders_id ON orders (id)")

    outcome = await execute(target, change)

    assert outcome.succeeded, outcome
    assert outcome.transactional
    assert await table_exists(server_url, database, "orders_id")
    [row] = await history(server_url, database)
    assert row["task_id"] == 1
    assert row["transactional"] is True
    assert len(row["checksum"]) == 64
    statements = [entry["text"] for entry in outcome.log if entry["kind"] == "statement"]
    assert statements == [
        "SET LOCAL lock_timeout = '5000ms'",
        "SET LOCAL statement_timeout = '30000ms'",
        "CREATE TABLE orders (id int)",
        "CREATE INDEX orders_id ON orders (id)",
    ]
    assert outcome.result["durationMs"] >= 0
    assert await change_was_applied(target, change)
    assert not await change_was_applied(target, change_of("SELECT 1", task_id=2))


@pytest.mark.parametrize(
    ("statement", "tag", "rows"),
    [
        ("INSERT INTO items SELECT generate_series(1, 5)", "INSERT 0 5", 5),
        ("UPDATE items SET n = n + 1 WHERE n <= 3", "UPDATE 3", 3),
        ("DELETE FROM items WHERE n = 4; UPDATE items SET n = 0 WHERE n = 1", "UPDATE 1", 1),
        ("ALTER TABLE items ADD COLUMN note text", "ALTER TABLE", None),
    ],
)
async def test_a_data_update_counts_the_rows_of_its_last_statement(
    server_url: str, database: str, target: Target, statement: str, tag: str, rows: int | None
) -> None:
    await fetch(server_url, database, "CREATE TABLE items AS SELECT generate_series(1, 4) AS n")

    outcome = await execute(target, change_of(statement, type=TaskType.DATA_UPDATE))

    assert outcome.succeeded, outcome
    assert outcome.result["statusTag"] == tag
    assert outcome.result["rowsAffected"] == rows


async def test_an_applied_change_is_not_applied_again(
    server_url: str, database: str, target: Target
) -> None:
    await fetch(server_url, database, "CREATE TABLE notes (n int)")
    change = change_of("INSERT INTO notes VALUES (1)", type=TaskType.DATA_UPDATE)

    first = await execute(target, change)
    second = await execute(target, change)

    assert first.succeeded, first
    assert "alreadyApplied" not in first.result
    assert second.succeeded, second
    assert second.result["alreadyApplied"] is True
    assert second.result["appliedAttempt"] == 1
    assert second.result["sameStatement"] is True
    assert "statement" not in kinds(second)
    assert len(await fetch(server_url, database, "SELECT n FROM notes")) == 1


async def test_another_installations_task_of_the_same_id_is_applied(
    server_url: str, database: str, target: Target
) -> None:
    # A new Conveyor database numbers its tasks from 1 again: its task 1 is not the old one's.
    await fetch(server_url, database, "CREATE TABLE notes (n int)")
    first = await execute(target, change_of("INSERT INTO notes VALUES (1)"))
    elsewhere = change_of("INSERT INTO notes VALUES (2)", installation=uuid.uuid4())

    second = await execute(target, elsewhere)

    assert first.succeeded, first
    assert second.succeeded, second
    assert "alreadyApplied" not in second.result
    assert sorted(row["n"] for row in await fetch(server_url, database, "SELECT n FROM notes")) == [
        1,
        2,
    ]
    assert await change_was_applied(target, elsewhere)
    assert (await execute(target, elsewhere)).result["alreadyApplied"] is True


async def test_a_history_from_before_installations_is_upgraded_and_still_counts(
    server_url: str, database: str, target: Target
) -> None:
    # The table as earlier versions made it: one row per task id, no installation.
    for statement in (
        "CREATE SCHEMA conveyor",
        "CREATE TABLE conveyor.change_history (task_id bigint PRIMARY KEY, attempt int NOT NULL,"
        " checksum text NOT NULL, transactional boolean NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())",
        "INSERT INTO conveyor.change_history VALUES (1, 1, 'earlier', true)",
        "CREATE TABLE notes (n int)",
    ):
        await fetch(server_url, database, statement)
    applied_before = change_of("INSERT INTO notes VALUES (1)")
    # Asking does not change the table.
    assert await change_was_applied(target, applied_before)
    assert not await change_was_applied(target, change_of("SELECT 1", task_id=2))

    again = await execute(target, applied_before)
    new = await execute(target, change_of("INSERT INTO notes VALUES (2)", task_id=2))

    # The row without an installation was written by an earlier version of some installation:
    # as before, its task counts as applied.
    assert again.result["alreadyApplied"] is True
    assert new.succeeded, new
    assert "alreadyApplied" not in new.result
    assert [row["n"] for row in await fetch(server_url, database, "SELECT n FROM notes")] == [2]
    rows = await fetch(
        server_url,
        database,
        "SELECT installation, task_id FROM conveyor.change_history ORDER BY task_id",
    )
    assert [(row["installation"], row["task_id"]) for row in rows] == [
        (None, 1),
        (INSTALLATION, 2),
    ]


async def test_concurrent_attempts_of_one_change_apply_it_once(
    server_url: str, database: str, target: Target
) -> None:
    await fetch(server_url, database, "CREATE TABLE notes (n int)")
    # Created beforehand, so both attempts race on the history row itself.
    await execute(target, change_of("SELECT 1", task_id=99))
    change = change_of("INSERT INTO notes VALUES (1); SELECT pg_sleep(0.3)")

    outcomes = await asyncio.gather(execute(target, change), execute(target, change))

    assert all(outcome.succeeded for outcome in outcomes), outcomes
    assert sorted(bool(outcome.result.get("alreadyApplied")) for outcome in outcomes) == [
        False,
        True,
    ]
    assert len(await fetch(server_url, database, "SELECT n FROM notes")) == 1


async def test_a_script_that_cannot_run_in_a_transaction_runs_statement_by_statement(
    server_url: str, database: str, target: Target
) -> None:
    # Sent as one query string, PostgreSQL would refuse the CONCURRENTLY in its implicit block.
    change = change_of(
        "CREATE TABLE events (id int);\n-- build it without blocking writes\n"
        "CREATE INDEX CONCURRENTLY events_id ON events (id);"
    )

    outcome = await execute(target, change)
    again = await execute(target, change)

    assert outcome.succeeded, outcome
    assert not outcome.transactional
    assert "outside a transaction" in outcome.log[0]["text"]
    assert [entry["text"] for entry in outcome.log if entry["kind"] == "statement"] == [
        "SET lock_timeout = '5000ms'",
        "SET statement_timeout = '30000ms'",
        "CREATE TABLE events (id int)",
        "CREATE INDEX CONCURRENTLY events_id ON events (id)",
    ]
    assert await table_exists(server_url, database, "events_id")
    [row] = await history(server_url, database)
    assert row["transactional"] is False
    assert again.succeeded, again
    assert again.result["alreadyApplied"] is True
    assert await change_was_applied(target, change)


async def test_a_non_transactional_script_that_changes_its_role_is_still_recorded(
    server_url: str, database: str, target: Target
) -> None:
    role = f"owner_{uuid.uuid4().hex[:12]}"
    await fetch(server_url, database, f"CREATE ROLE {role}")
    await fetch(server_url, database, f"GRANT CREATE ON SCHEMA public TO {role}")
    try:
        change = change_of(
            f"SET ROLE {role}; CREATE TABLE public.owned (id int);"
            " CREATE INDEX CONCURRENTLY owned_id ON public.owned (id)"
        )
        outcome = await execute(target, change)
        assert outcome.succeeded, outcome.error_message
        assert not outcome.transactional
        [row] = await history(server_url, database)
        assert row["task_id"] == change.task_id
        [owner] = await fetch(
            server_url, database, "SELECT tableowner FROM pg_tables WHERE tablename = 'owned'"
        )
        assert owner["tableowner"] == role
    finally:
        await fetch(server_url, database, "DROP TABLE IF EXISTS public.owned")
        await fetch(server_url, database, f"REVOKE CREATE ON SCHEMA public FROM {role}")
        await fetch(server_url, database, f"DROP ROLE {role}")


async def test_a_second_attempt_of_a_running_non_transactional_change_is_refused(
    server_url: str, database: str, target: Target
) -> None:
    await fetch(server_url, database, "CREATE TABLE notes (n int)")
    await execute(target, change_of("SELECT 1", task_id=99))
    change = change_of("VACUUM notes; INSERT INTO notes VALUES (1); SELECT pg_sleep(0.3)")

    outcomes = await asyncio.gather(execute(target, change), execute(target, change))

    codes = sorted(str(outcome.error_code) for outcome in outcomes)
    assert codes == ["ALREADY_RUNNING", "None"], outcomes
    assert len(await fetch(server_url, database, "SELECT n FROM notes")) == 1


@pytest.mark.parametrize(
    ("statement", "sqlstate", "message"),
    [
        ("CREATE TABLE first (id int); CREAT TABLE second (id int)", "42601", "syntax error"),
        (
            "CREATE TABLE first (id int); INSERT INTO missing VALUES (1)",
            "42P01",
            'relation "missing" does not exist',
        ),
    ],
    ids=["syntax-error", "second-statement-fails"],
)
async def test_a_failing_script_applies_nothing(
    server_url: str, database: str, target: Target, statement: str, sqlstate: str, message: str
) -> None:
    change = change_of(statement)

    outcome = await execute(target, change)

    assert not outcome.succeeded
    assert outcome.error_code == sqlstate
    assert outcome.result["sqlstate"] == sqlstate
    assert outcome.error_message is not None
    assert message in outcome.error_message
    assert outcome.log[-1]["kind"] == "error"
    assert not await table_exists(server_url, database, "first")
    assert await history(server_url, database) == []
    assert not await change_was_applied(target, change)


async def test_a_lock_held_too_long_fails_the_change_with_lock_timeout(
    server_url: str, database: str, target: Target
) -> None:
    await fetch(server_url, database, "CREATE TABLE busy (id int)")
    holder = await asyncpg.connect(with_database(server_url, database))
    try:
        async with holder.transaction():
            await holder.execute("LOCK TABLE busy IN ACCESS SHARE MODE")
            outcome = await execute(
                target, change_of("ALTER TABLE busy ADD COLUMN note text", lock_timeout_ms=200)
            )
    finally:
        await holder.close()

    assert outcome.error_code == "55P03", outcome
    assert outcome.error_message == "canceling statement due to lock timeout"
    columns = await fetch(
        server_url, database, "SELECT 1 FROM information_schema.columns WHERE column_name = 'note'"
    )
    assert columns == []
    assert await history(server_url, database) == []


async def test_a_statement_running_too_long_fails_with_statement_timeout(target: Target) -> None:
    started = time.monotonic()

    outcome = await execute(
        target, change_of("SELECT pg_sleep(5)", type=TaskType.DATA_UPDATE, statement_timeout_ms=200)
    )

    assert outcome.error_code == "57014", outcome
    assert outcome.error_message == "canceling statement due to statement timeout"
    assert time.monotonic() - started < 3


async def test_cancel_backend_stops_the_running_statement_and_nothing_is_applied(
    server_url: str, database: str, target: Target
) -> None:
    await fetch(server_url, database, "CREATE TABLE notes (n int)")
    pids: asyncio.Queue[int] = asyncio.Queue()
    change = change_of(
        "INSERT INTO notes VALUES (1); SELECT pg_sleep(10)", type=TaskType.DATA_UPDATE
    )
    running = asyncio.create_task(execute(target, change, on_backend_pid=pids.put))
    pid = await asyncio.wait_for(pids.get(), timeout=5)

    async def sleeping() -> bool:
        query = f"SELECT 1 FROM pg_stat_activity WHERE pid = {pid} AND wait_event = 'PgSleep'"
        return bool(await fetch(server_url, "postgres", query))

    await eventually(sleeping, within=5, what="the statement to run")
    assert await cancel_backend(target, pid)
    outcome = await asyncio.wait_for(running, timeout=5)

    assert outcome.error_code == "CANCELED", outcome
    assert outcome.result["sqlstate"] == "57014"
    assert outcome.transactional
    assert await fetch(server_url, database, "SELECT n FROM notes") == []
    assert await history(server_url, database) == []
    assert not await cancel_backend(target, pid), "its session is gone"


async def test_server_notices_are_logged_in_order(target: Target) -> None:
    outcome = await execute(
        target,
        change_of(
            "DO $$ BEGIN RAISE NOTICE 'hello'; RAISE WARNING 'careful'; END $$; SELECT 1",
            type=TaskType.DATA_UPDATE,
        ),
    )

    assert outcome.succeeded, outcome
    assert [(entry["kind"], entry["text"], entry.get("severity")) for entry in outcome.log[2:]] == [
        ("statement", "DO $$ BEGIN RAISE NOTICE 'hello'; RAISE WARNING 'careful'; END $$", None),
        ("notice", "hello", "NOTICE"),
        ("notice", "careful", "WARNING"),
        ("statement", "SELECT 1", None),
    ]
    assert all(entry["at"].endswith("+00:00") for entry in outcome.log)


async def test_a_closed_port_fails_fast_with_connection_failed(server_url: str) -> None:
    target = target_of(server_url, "postgres", host="127.0.0.1", port=free_port())
    started = time.monotonic()

    outcome = await execute(target, change_of("SELECT 1"))

    assert time.monotonic() - started < 2
    assert not outcome.succeeded
    assert outcome.error_code == "CONNECTION_FAILED"
    assert outcome.error_message is not None
    assert outcome.error_message.startswith("could not connect to the instance at 127.0.0.1:")
    assert outcome.error_message.endswith(": connection refused")
    assert kinds(outcome) == ["error"]
    with pytest.raises(TargetUnreachable, match="connection refused"):
        await change_was_applied(target, change_of("SELECT 1"))
    assert not await cancel_backend(target, 12345)


async def test_a_silent_instance_fails_after_the_connect_timeout(server_url: str) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        target = target_of(server_url, None, host="127.0.0.1", port=port, connect_timeout=0.3)

        outcome = await execute(target, sync())

    assert outcome.error_code == "CONNECTION_FAILED"
    assert outcome.error_message is not None
    assert outcome.error_message.endswith(": no answer within 0.3 s")


async def test_a_missing_database_fails_with_its_sqlstate(server_url: str) -> None:
    target = target_of(server_url, f"conveyor_missing_{uuid.uuid4().hex[:8]}")

    outcome = await execute(target, change_of("SELECT 1"))

    assert outcome.error_code == "3D000", outcome
    assert outcome.error_message is not None
    assert outcome.error_message.startswith("could not connect to the instance at ")
    assert outcome.error_message.endswith("does not exist")
    assert not await change_was_applied(target, change_of("SELECT 1"))


async def test_a_wrong_password_fails_with_28P01_and_never_shows_the_password(
    password_server: EmbeddedPostgres,
) -> None:
    admin_url = password_server.url("postgres")
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute("CREATE ROLE app LOGIN PASSWORD 'the-right-one'")
        require_password_for(password_server.pgdata, "app")
        await admin.execute("SELECT pg_reload_conf()")
    finally:
        await admin.close()
    wrong = "wrong-Pa55word-xyzzy"

    async def password_required() -> bool:
        outcome = await execute(target_of(admin_url, None, user="app", password=""), sync())
        return not outcome.succeeded

    await eventually(password_required, within=5, what="pg_hba.conf to be reloaded")

    outcome = await execute(target_of(admin_url, None, user="app", password=wrong), sync())
    right = await execute(target_of(admin_url, None, user="app", password="the-right-one"), sync())

    assert outcome.error_code == "28P01", outcome
    assert outcome.error_message is not None
    assert 'password authentication failed for user "app"' in outcome.error_message
    assert wrong not in json.dumps([outcome.error_message, outcome.log, outcome.result])
    assert wrong not in repr(target_of(admin_url, None, password=wrong))
    assert right.succeeded, right


def sync() -> Change:
    return change_of(type=TaskType.INSTANCE_SYNC)


@pytest.fixture
async def created_databases(server_url: str) -> AsyncIterator[list[str]]:
    """Names of databases a test creates through `execute`; dropped afterwards."""
    names: list[str] = []
    yield names
    connection = await asyncpg.connect(server_url)
    try:
        for name in names:
            await connection.execute(
                f"DROP DATABASE IF EXISTS {quote_identifier(name)} WITH (FORCE)"
            )
    finally:
        await connection.close()


async def test_database_create_makes_a_database_of_exactly_the_given_name(
    server_url: str, created_databases: list[str]
) -> None:
    name = f'conveyor "odd"; name -- {uuid.uuid4().hex[:8]}'
    created_databases.append(name)
    target = target_of(server_url, None)
    change = change_of(type=TaskType.DATABASE_CREATE, database_name=name)
    assert not await change_was_applied(target, change)

    outcome = await execute(target, change)
    again = await execute(target, change)

    assert outcome.succeeded, outcome
    assert not outcome.transactional
    assert outcome.created_database == name
    assert outcome.log[0]["text"] == f'CREATE DATABASE "{name.replace(chr(34), chr(34) * 2)}"'
    rows = await fetch(server_url, "postgres", "SELECT datname FROM pg_database")
    assert name in [row["datname"] for row in rows]
    assert await change_was_applied(target, change)
    assert again.error_code == "ALREADY_EXISTS"
    assert again.result["sqlstate"] == "42P04"
    assert again.created_database is None


@pytest.mark.parametrize(
    ("name", "problem"),
    [("", "empty"), ("a\0b", "NUL"), ("x" * 64, "longer than 63 bytes"), ("é" * 32, "63 bytes")],
)
async def test_database_create_refuses_names_postgresql_would_not_keep(
    server_url: str, name: str, problem: str
) -> None:
    outcome = await execute(
        target_of(server_url, None), change_of(type=TaskType.DATABASE_CREATE, database_name=name)
    )

    assert outcome.error_code == "INVALID_NAME"
    assert outcome.error_message is not None
    assert problem in outcome.error_message


async def test_instance_sync_lists_the_databases_and_the_server_version(
    server_url: str, database: str
) -> None:
    target = target_of(server_url, None)

    outcome = await execute(target, sync())

    assert outcome.succeeded, outcome
    assert outcome.transactional
    databases = outcome.discovered_databases
    assert databases is not None
    assert database in databases
    assert "postgres" in databases
    assert "template0" not in databases
    assert "template1" not in databases
    assert databases == sorted(databases)
    assert outcome.result["databases"] == databases
    [row] = await fetch(server_url, "postgres", "SHOW server_version")
    assert outcome.result["serverVersion"] == row["server_version"]
    assert not await change_was_applied(target, sync()), "a sync is always safe to run again"


@pytest.mark.parametrize(
    "statement",
    [
        "BEGIN; INSERT INTO notes VALUES (1); COMMIT",
        "INSERT INTO notes VALUES (1); ROLLBACK",
        "start transaction; INSERT INTO notes VALUES (1); end",
    ],
)
async def test_a_script_that_controls_transactions_is_refused(
    server_url: str, database: str, target: Target, statement: str
) -> None:
    await fetch(server_url, database, "CREATE TABLE notes (n int)")

    outcome = await execute(target, change_of(statement, type=TaskType.DATA_UPDATE))

    assert outcome.error_code == "TRANSACTION_CONTROL"
    assert await fetch(server_url, database, "SELECT n FROM notes") == []


async def test_savepoints_stay_inside_the_change_transaction(
    server_url: str, database: str, target: Target
) -> None:
    await fetch(server_url, database, "CREATE TABLE notes (n int)")
    statement = (
        "SAVEPOINT s; INSERT INTO notes VALUES (1); ROLLBACK TO SAVEPOINT s; "
        "INSERT INTO notes VALUES (2)"
    )

    outcome = await execute(target, change_of(statement, type=TaskType.DATA_UPDATE))

    assert outcome.succeeded, outcome
    assert [row["n"] for row in await fetch(server_url, database, "SELECT n FROM notes")] == [2]


async def test_a_script_of_only_comments_is_refused(target: Target) -> None:
    outcome = await execute(target, change_of("-- nothing\n/* at all */ ;"))

    assert outcome.error_code == "EMPTY_STATEMENT"


def test_quote_identifier_keeps_the_name_exactly() -> None:
    assert quote_identifier("orders") == '"orders"'
    assert quote_identifier('my "odd" db') == '"my ""odd"" db"'
    with pytest.raises(ValueError, match="NUL"):
        quote_identifier("a\0b")
