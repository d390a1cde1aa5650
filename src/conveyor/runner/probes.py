"""Asking a task's target before the task runs: can Conveyor connect, is the database there, may
its role create what the statement creates (the target checks), and what the statement does
when run and rolled back (a dry run). Nothing here changes a target.
"""

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from conveyor.domain.check_review import (
    DRY_RUN,
    TARGET_CONNECTION,
    TARGET_DATABASE_MISSING,
    TARGET_PRIVILEGE,
)
from conveyor.domain.checks import CheckLevel, Finding
from conveyor.domain.statements import StatementKind, line_and_column, parse_script
from conveyor.domain.statuses import TaskType
from conveyor.runner import targets
from conveyor.runner.targets import Sessions, Target

_DOCS = "README.md#"
#: A dry run waits this long at most for a lock: it must not queue behind live traffic.
DRY_RUN_LOCK_TIMEOUT_MS = 1_000


def _finding(rule: str, level: CheckLevel, message: str, statement: str | None = None) -> Finding:
    return Finding(rule, level, message, statement, None, None, f"{_DOCS}{rule}")


@dataclass(frozen=True)
class Probe:
    """One task's question to its target."""

    type: TaskType
    statement: str | None


async def target_findings(
    target: Target, probes: Sequence[Probe], sessions: Sessions = targets.new_session
) -> list[list[Finding]]:
    """The target checks of tasks that share `target` (one instance and database), one
    session (from `sessions`) for all of them."""
    found: list[list[Finding]] = []
    try:
        async with sessions(target) as connection:
            for probe in probes:
                found.append(await _privilege_findings(connection, probe))
    except Exception as error:
        if found:
            # The session broke after it was opened: a failure to report, not to hide.
            raise
        return [[_unreachable(target, error)] for _ in probes]
    return found


def _unreachable(target: Target, error: BaseException) -> Finding:
    code, message = targets.unreachable_reason(target, error)
    if isinstance(error, asyncpg.InvalidCatalogNameError):
        return _finding(
            TARGET_DATABASE_MISSING,
            CheckLevel.ERROR,
            f"the database {target.database} does not exist on the instance ({code})",
        )
    # A warning, not an error: the instance may be back by the time the task runs, and the run
    # reports an unreachable instance as clearly.
    return _finding(TARGET_CONNECTION, CheckLevel.WARNING, f"{message} ({code})")


_SCHEMA_PRIVILEGES = """
    SELECT n.nspname, has_schema_privilege(n.oid, 'CREATE') AS may_create
    FROM pg_namespace n WHERE n.nspname = ANY($1::text[])
"""


async def _privilege_findings(connection: targets.Connection, probe: Probe) -> list[Finding]:
    if probe.type is TaskType.DATABASE_CREATE:
        may: bool = await connection.fetchval(
            "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"
        )
        if may:
            return []
        return [
            _finding(
                TARGET_PRIVILEGE,
                CheckLevel.ERROR,
                "the instance's role may not create databases (it lacks CREATEDB)",
            )
        ]
    if probe.type is not TaskType.SCHEMA_UPDATE or probe.statement is None:
        return []
    script = parse_script(probe.statement)
    schemas: dict[str, str] = {}
    creates_schema = False
    current: str | None = await connection.fetchval("SELECT current_schema()")
    for statement in script.statements:
        if statement.kind is not StatementKind.DDL:
            continue
        if statement.node_type == "CreateSchemaStmt":
            creates_schema = True
        for schema in statement.schemas:
            schemas.setdefault(schema, statement.text)
        if current is not None and any(r.schema is None for r in statement.relations):
            schemas.setdefault(current, statement.text)
    found = []
    if creates_schema:
        may_create_schema: bool = await connection.fetchval(
            "SELECT has_database_privilege(current_database(), 'CREATE')"
        )
        if not may_create_schema:
            found.append(
                _finding(
                    TARGET_PRIVILEGE,
                    CheckLevel.ERROR,
                    "the instance's role may not create schemas in this database",
                )
            )
    # A schema that does not exist yet is one the script creates, or one it fails on: the
    # syntax and dry-run checks tell that.
    for row in await connection.fetch(_SCHEMA_PRIVILEGES, list(schemas)):
        if not row["may_create"]:
            found.append(
                _finding(
                    TARGET_PRIVILEGE,
                    CheckLevel.ERROR,
                    f"the instance's role may not create objects in schema {row['nspname']}",
                    schemas[row["nspname"]],
                )
            )
    return found


async def dry_run(
    target: Target, statement: str, statement_timeout_ms: int, lock_timeout_ms: int
) -> tuple[Finding, dict[str, Any]]:
    """Run the script's statements in one transaction that is always rolled back; its outcome
    as a finding and a detail (rows affected, duration, the error and its SQLSTATE). A script
    that cannot run in a transaction is not run at all: it could not be rolled back."""
    script = parse_script(statement)
    if not script.transactional or script.refusal is not None:
        reason = (
            script.refusal.message
            if script.refusal is not None
            else "it holds statements that cannot run inside a transaction (e.g. CREATE INDEX "
            "CONCURRENTLY), which a dry run could not roll back"
        )
        message = f"not executed: {reason}"
        return _finding(DRY_RUN, CheckLevel.NOTICE, message), {
            "executed": False,
            "message": message,
        }
    try:
        connection = await targets.connect(target)
    except Exception as error:
        unreachable = _unreachable(target, error)
        message = f"not executed: {unreachable.message}"
        return _finding(DRY_RUN, CheckLevel.ERROR, message), {
            "executed": False,
            "message": message,
        }
    ran: list[dict[str, Any]] = []
    started = time.monotonic()
    transaction = connection.transaction()
    try:
        await transaction.start()
        # The dry run's own, shorter lock timeout: it must not queue behind live traffic.
        lock_ms = min(lock_timeout_ms, DRY_RUN_LOCK_TIMEOUT_MS)
        await connection.execute(f"SET LOCAL lock_timeout = '{int(lock_ms)}ms'")
        await connection.execute(f"SET LOCAL statement_timeout = '{int(statement_timeout_ms)}ms'")
        for index, each in enumerate(script.statements):
            statement_started = time.monotonic()
            try:
                tag = await connection.execute(each.text)
            except asyncpg.PostgresError as error:
                line, column = line_and_column(statement, each.start)
                detail = {
                    "executed": True,
                    "rolledBack": True,
                    "failedStatement": index + 1,
                    "sqlstate": error.sqlstate,
                    "error": error.message,
                    "statements": ran,
                    "durationMs": _ms_since(started),
                }
                message = (
                    f"statement {index + 1} of {len(script.statements)} failed: "
                    f"{error.message} (SQLSTATE {error.sqlstate}); rolled back"
                )
                return Finding(
                    DRY_RUN, CheckLevel.ERROR, message, each.text, line, column, f"{_DOCS}{DRY_RUN}"
                ), detail
            ran.append(
                {
                    "statusTag": tag,
                    "rowsAffected": targets.rows_affected(tag),
                    "durationMs": _ms_since(statement_started),
                }
            )
    finally:
        # Always rolled back; and a worker killed before this line leaves an open transaction
        # on a dropped connection, which the server rolls back too.
        try:
            await transaction.rollback()
        finally:
            await targets.close(connection)
    rows = sum(each["rowsAffected"] or 0 for each in ran)
    took = _ms_since(started)
    message = f"{len(ran)} statement(s) ran in {took:g} ms, {rows} row(s) affected; rolled back"
    return _finding(DRY_RUN, CheckLevel.NOTICE, message), {
        "executed": True,
        "rolledBack": True,
        "rowsAffected": rows,
        "durationMs": took,
        "statements": ran,
    }


def _ms_since(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)
