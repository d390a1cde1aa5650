"""A worker's sessions on its targets: reused between attempts, never after a cancel, retired
when the instance's connection settings change, bounded by the instance's limit, and closed
when idle too long."""

import asyncio
import contextlib
import functools
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from conveyor.runner import targets
from conveyor.runner.sessions import TargetSessions
from conveyor.runner.targets import Connection, Target, execute
from tests.integration.conftest import target_fetch
from tests.integration.test_targets import MakeDatabase, change_of, target_of


async def backend_of(
    sessions: TargetSessions,
    target: Target,
    task_id: int,
    *,
    reusable: bool = True,
    limit: int = 2,
) -> int:
    """The target backend an attempt ran in."""
    pids: list[int] = []

    async def remember(pid: int) -> None:
        pids.append(pid)

    outcome = await execute(
        target,
        change_of("SELECT 1", task_id=task_id),
        on_backend_pid=remember,
        sessions=functools.partial(sessions.session, 1, limit, reusable=lambda: reusable),
    )
    assert outcome.succeeded, outcome.error_message
    return pids[0]


async def test_a_session_serves_the_next_attempt_on_the_same_target(
    server_url: str, target_databases: MakeDatabase
) -> None:
    target = target_of(server_url, await target_databases())
    sessions = TargetSessions()
    try:
        first = await backend_of(sessions, target, 1)
        assert await backend_of(sessions, target, 2) == first
    finally:
        await sessions.close()


async def test_a_session_whose_attempt_was_canceled_is_not_reused(
    server_url: str, target_databases: MakeDatabase
) -> None:
    target = target_of(server_url, await target_databases())
    sessions = TargetSessions()
    try:
        first = await backend_of(sessions, target, 1, reusable=False)
        assert await backend_of(sessions, target, 2) != first
    finally:
        await sessions.close()


async def test_a_reused_session_keeps_nothing_of_the_script_before(
    server_url: str, target_databases: MakeDatabase
) -> None:
    # A script may change its session's role, settings and temporary tables: committed, those
    # outlive the transaction, and must not reach the next task that reuses the session.
    database = await target_databases()
    target = target_of(server_url, database)
    role = f"owner_{uuid.uuid4().hex[:12]}"
    await target_fetch(server_url, database, f"CREATE ROLE {role}")
    await target_fetch(server_url, database, f"GRANT CREATE ON SCHEMA public TO {role}")
    sessions = TargetSessions()
    run = functools.partial(sessions.session, 1, 1, reusable=lambda: True)
    try:
        first = await execute(
            target,
            change_of(
                f"SET ROLE {role}; SET search_path = pg_catalog; CREATE TEMP TABLE scratch ()"
            ),
            sessions=run,
        )
        second = await execute(
            target,
            change_of("CREATE TABLE public.made_next (); CREATE TEMP TABLE scratch ()", task_id=2),
            sessions=run,
        )
        assert first.succeeded, first.error_message
        assert second.succeeded, second.error_message
        [owner] = await target_fetch(
            server_url,
            database,
            "SELECT tableowner FROM pg_tables WHERE tablename = 'made_next'",
        )
        assert owner["tableowner"] != role
    finally:
        await sessions.close()
        await target_fetch(server_url, database, "DROP TABLE IF EXISTS public.made_next")
        await target_fetch(server_url, database, f"REVOKE CREATE ON SCHEMA public FROM {role}")
        await target_fetch(server_url, database, f"DROP ROLE {role}")


async def test_sessions_kept_without_reset_go_back_as_their_user_left_them(
    server_url: str, target_databases: MakeDatabase
) -> None:
    # The checks' sessions: their probes change nothing, so no reset is sent; a user that
    # changed a setting would leave it to the next (which is why only read-only users may).
    target = target_of(server_url, await target_databases())
    sessions = TargetSessions(reset_on_return=False)
    try:
        async with sessions.session(1, 1, target, reusable=lambda: True) as connection:
            first = connection.get_server_pid()
            await connection.execute("SET application_name = 'left behind'")
        async with sessions.session(1, 1, target, reusable=lambda: True) as connection:
            assert connection.get_server_pid() == first
            assert await connection.fetchval("SHOW application_name") == "left behind"
    finally:
        await sessions.close()


async def test_changed_connection_settings_retire_the_instances_sessions(
    server_url: str, target_databases: MakeDatabase
) -> None:
    database = await target_databases()
    sessions = TargetSessions()
    try:
        first = await backend_of(sessions, target_of(server_url, database), 1)
        changed = target_of(server_url, database, options={"sslmode": "disable"})
        second = await backend_of(sessions, changed, 2)
        assert second != first
        assert await backend_of(sessions, target_of(server_url, database), 3) not in (first, second)
    finally:
        await sessions.close()


async def test_the_instances_limit_bounds_its_open_sessions(
    server_url: str, target_databases: MakeDatabase
) -> None:
    databases = [await target_databases() for _ in range(3)]
    sessions = TargetSessions()
    try:
        for task_id, database in enumerate(databases, start=1):
            await backend_of(sessions, target_of(server_url, database), task_id, limit=2)
        rows = await target_fetch(
            server_url,
            "postgres",
            "SELECT count(*) AS open FROM pg_stat_activity WHERE application_name = 'conveyor' "
            f"AND datname IN ({', '.join(repr(name) for name in databases)})",
        )
        assert rows[0]["open"] == 2
    finally:
        await sessions.close()


async def test_a_session_idle_too_long_is_closed(
    server_url: str, target_databases: MakeDatabase
) -> None:
    target = target_of(server_url, await target_databases())
    sessions = TargetSessions(idle_seconds=0.2)
    try:
        first = await backend_of(sessions, target, 1)
        await asyncio.sleep(0.3)
        assert await backend_of(sessions, target, 2) != first
    finally:
        await sessions.close()


async def test_a_session_whose_history_table_was_dropped_creates_it_again(
    server_url: str, target_databases: MakeDatabase
) -> None:
    database = await target_databases()
    target = target_of(server_url, database)
    sessions = TargetSessions()
    try:
        first = await backend_of(sessions, target, 1)
        # The session found the table and no longer looks it up; a person drops it.
        await target_fetch(server_url, database, "DROP TABLE conveyor.change_history")
        assert await backend_of(sessions, target, 2) == first
        rows = await target_fetch(
            server_url, database, "SELECT task_id FROM conveyor.change_history"
        )
        assert [row["task_id"] for row in rows] == [2]
    finally:
        await sessions.close()


async def test_a_transactional_change_resets_its_session_with_its_commit(
    server_url: str, target_databases: MakeDatabase
) -> None:
    # Three round trips an attempt: BEGIN with the history row, the statement, COMMIT with the
    # reset; giving the session back sends nothing more.
    target = target_of(server_url, await target_databases())
    sessions = TargetSessions()
    sent: list[str] = []

    def log(query: asyncpg.connection.LoggedQuery) -> None:
        sent.append(query.query)

    @contextlib.asynccontextmanager
    async def logged(target: Target) -> AsyncIterator[Connection]:
        async with sessions.session(1, 1, target, reusable=lambda: True) as connection:
            connection.add_query_logger(log)
            yield connection
        connection.remove_query_logger(log)

    try:
        await execute(target, change_of("SELECT 1"), sessions=logged)  # finds the history table
        await asyncio.sleep(0)  # asyncpg calls query loggers soon after, not at once
        sent.clear()
        outcome = await execute(
            target, change_of("SET search_path = pg_catalog", task_id=2), sessions=logged
        )
        assert outcome.succeeded, outcome.error_message
        await asyncio.sleep(0)
        assert len(sent) == 3
        assert sent[1] == "SET search_path = pg_catalog"
        assert sent[2].startswith("COMMIT; ")
        async with sessions.session(1, 1, target, reusable=lambda: True) as connection:
            assert await connection.fetchval("SHOW search_path") == '"$user", public'
    finally:
        await sessions.close()


async def test_a_change_whose_commit_fails_applies_nothing_and_leaves_a_clean_session(
    server_url: str, target_databases: MakeDatabase
) -> None:
    database = await target_databases()
    target = target_of(server_url, database)
    sessions = TargetSessions()
    run = functools.partial(sessions.session, 1, 1, reusable=lambda: True)
    script = (
        "SET search_path = pg_catalog; "
        "CREATE TABLE public.deferred (id int PRIMARY KEY, parent int "
        "REFERENCES public.deferred DEFERRABLE INITIALLY DEFERRED); "
        "INSERT INTO public.deferred VALUES (1, 2)"
    )
    try:
        outcome = await execute(target, change_of(script), sessions=run)
        assert not outcome.succeeded
        assert outcome.error_code == "23503"  # the foreign key, checked at COMMIT
        rows = await target_fetch(
            server_url,
            database,
            "SELECT to_regclass('public.deferred') AS made, "
            "(SELECT count(*) FROM conveyor.change_history) AS recorded",
        )
        assert (rows[0]["made"], rows[0]["recorded"]) == (None, 0)
        async with run(target) as connection:
            assert await connection.fetchval("SHOW search_path") == '"$user", public'
    finally:
        await sessions.close()


async def test_a_commit_whose_reset_fails_counts_as_applied(
    server_url: str, target_databases: MakeDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No script makes the reset fail (it resets its settings first and names pg_catalog's
    # function); the failure is made here, after a real COMMIT.
    monkeypatch.setattr(targets, "_COMMIT_AND_RESET", "COMMIT; SELECT 1 / 0")
    database = await target_databases()
    target = target_of(server_url, database)
    sessions = TargetSessions()
    run = functools.partial(sessions.session, 1, 1, reusable=lambda: True)
    try:
        outcome = await execute(
            target,
            change_of("SET search_path = pg_catalog; CREATE TABLE public.kept ()"),
            sessions=run,
        )
        assert outcome.succeeded, outcome.error_message
        rows = await target_fetch(
            server_url,
            database,
            "SELECT to_regclass('public.kept') IS NOT NULL AS made, "
            "(SELECT count(*) FROM conveyor.change_history) AS recorded",
        )
        assert (rows[0]["made"], rows[0]["recorded"]) == (True, 1)
        async with run(target) as connection:  # reset when it was given back
            assert await connection.fetchval("SHOW search_path") == '"$user", public'
    finally:
        await sessions.close()
