"""The syntax rule says what the server says: the same statements refused, at the same place."""

from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from conveyor.domain.checks import check_statement, default_review_policy
from conveyor.domain.statements import parse_script
from conveyor.domain.statuses import TaskType
from tests.conftest import with_database

BROKEN = [
    "SELECT x FORM t",
    "CREATE TABLE t (x int,)",
    "INSERT INTO t VALUES (1, 2",
    "ALTER TABLE t ADD COLUMN",
    "UPDATE t SET x = 1 WHERE",
    "CREATE INDEX ON t USING (x)",
    "SELECT 'é' FROM t WHERE x = = 1",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1 END",
    "DROP TABLE IF EXISTS",
    "GRANT SELECT ON TABLE TO PUBLIC",
]
# Valid, though most would fail on this empty database for other reasons than syntax.
ACCEPTED = [
    "SELECT x FROM t",
    "CREATE TABLE t (x int)",
    "INSERT INTO t VALUES (1, 2)",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END",
    "MERGE INTO t USING s ON t.x = s.x WHEN MATCHED THEN DELETE",
    "ALTER TABLE t ADD COLUMN y int GENERATED ALWAYS AS (x * 2) STORED",
    "CREATE INDEX CONCURRENTLY i ON t (x) WHERE x > 0",
]


@pytest.fixture
async def target(
    server_url: str, target_databases: Callable[[], Awaitable[str]]
) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(with_database(server_url, await target_databases()))
    yield connection
    await connection.close()


async def server_refuses_syntax(connection: asyncpg.Connection, statement: str) -> int | None:
    """Where the server's parser stops in `statement` (0-based), or None when it parses; run
    in a transaction rolled back, so nothing stays."""
    transaction = connection.transaction()
    await transaction.start()
    try:
        await connection.execute(statement)
    except asyncpg.PostgresSyntaxError as error:
        return int(error.position or 0) - 1
    except asyncpg.PostgresError:
        return None
    finally:
        await transaction.rollback()
    return None


@pytest.mark.parametrize("statement", BROKEN)
async def test_a_statement_the_server_refuses_is_refused_at_the_servers_position(
    target: asyncpg.Connection, statement: str
) -> None:
    [parsed] = parse_script(statement).statements
    server_position = await server_refuses_syntax(target, statement)

    assert parsed.syntax_error is not None
    assert server_position == parsed.syntax_error.offset
    [finding] = check_statement(statement, TaskType.SCHEMA_UPDATE, default_review_policy(True))
    assert (finding.rule, finding.line, finding.column) == ("syntax", 1, server_position + 1)


@pytest.mark.parametrize("statement", ACCEPTED)
async def test_a_statement_the_server_parses_has_no_syntax_finding(
    target: asyncpg.Connection, statement: str
) -> None:
    assert await server_refuses_syntax(target, statement) is None

    findings = check_statement(statement, TaskType.SCHEMA_UPDATE, default_review_policy(True))
    assert "syntax" not in [finding.rule for finding in findings]
