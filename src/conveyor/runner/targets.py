"""Running one task against its target instance: pure execution, no Conveyor database access.

Schema and data changes leave a row in `conveyor.change_history` on the target database,
committed together with the change when it runs in a transaction, so the target itself can
always tell whether a change was applied (`change_was_applied`) and no change runs twice.
"""

import asyncio
import contextlib
import functools
import hashlib
import logging
import socket
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeAlias, assert_never

import asyncpg
from asyncpg.connect_utils import SessionAttribute

from conveyor.domain.attempts import CANCELED, Outcome
from conveyor.domain.statements import Statement, parse_script
from conveyor.domain.statuses import TaskType
from conveyor.domain.targets import (
    CONVEYOR_DATABASE_REFUSAL,
    UNRESTRICTED,
    ConnectionOptions,
    DatabaseIdentity,
    InstanceNetworks,
    is_conveyor_database,
    pinned_address_problem,
    target_databases,
)
from conveyor.hosts import HostNotAllowed, checked_hosts

logger = logging.getLogger(__name__)

Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record]"
_Connection = Connection
#: Opens the session an attempt runs in, and closes or keeps it when the attempt is over.
Sessions = Callable[["Target"], contextlib.AbstractAsyncContextManager[Connection]]

#: The database an instance-level task connects to.
MAINTENANCE_DATABASE = "postgres"
#: How Conveyor's sessions show in the target's pg_stat_activity.
APPLICATION_NAME = "conveyor"
#: PostgreSQL silently truncates longer identifiers (NAMEDATALEN - 1).
MAX_IDENTIFIER_BYTES = 63
CLOSE_TIMEOUT_SECONDS = 5.0

# Conveyor's own error codes, for failures that have no SQLSTATE (or need a clearer one).
#: The instance could not be reached at all.
CONNECTION_FAILED = "CONNECTION_FAILED"
#: The instance's host is, or resolves to, an address outside the instance networks.
HOST_NOT_ALLOWED = "HOST_NOT_ALLOWED"
#: The instance's connection options are not ones Conveyor allows (see domain.targets).
INVALID_CONNECTION_OPTION = "INVALID_CONNECTION_OPTION"
#: The connection reached Conveyor's own database, which is never a target.
CONVEYOR_DATABASE = "CONVEYOR_DATABASE"
#: The connection broke while the change ran; the history row tells whether it committed.
CONNECTION_LOST = "CONNECTION_LOST"
# CANCELED (domain.attempts): the statement was canceled on request (pg_cancel_backend); the
# SQLSTATE is in the result.
#: DATABASE_CREATE: a database of that name exists already.
ALREADY_EXISTS = "ALREADY_EXISTS"
#: Another attempt of the same non-transactional change is running on the target.
ALREADY_RUNNING = "ALREADY_RUNNING"
#: DATABASE_CREATE: the name cannot be a PostgreSQL database name as given.
INVALID_NAME = "INVALID_NAME"

_QUERY_CANCELED = "57014"

#: What a session kept for another attempt runs once its attempt is over: the reset asyncpg's
#: own pools send, and what a script may leave behind that RESET ALL keeps (its role, its
#: temporary tables and sequence state). The prepared statements stay: asyncpg's own cache
#: holds them. RESET ALL goes first, so that a statement_timeout the script set cannot cut the
#: rest short; the function is qualified, as the script may have put a schema of its own
#: before pg_catalog. A transactional change sends it with its COMMIT, in the same round trip
#: (`was_reset`); runner.sessions sends it for the others when they give their session back.
SESSION_RESET = (
    "RESET ALL; SET SESSION AUTHORIZATION DEFAULT; SELECT pg_catalog.pg_advisory_unlock_all(); "
    "CLOSE ALL; UNLISTEN *; DISCARD TEMP; DISCARD SEQUENCES"
)
_COMMIT_AND_RESET = f"COMMIT; {SESSION_RESET}"

_HISTORY_TABLE = "conveyor.change_history"
# 0: no history table yet; 1: one from before installations were told apart; 2: current.
_HISTORY_STATE = """SELECT CASE
    WHEN to_regclass('conveyor.change_history') IS NULL THEN 0
    WHEN EXISTS (SELECT FROM pg_attribute
                 WHERE attrelid = to_regclass('conveyor.change_history')
                 AND attname = 'installation' AND NOT attisdropped) THEN 2
    ELSE 1 END"""
# A task is known by its installation and its id: task ids restart in a new installation
# (a new Conveyor database), and its tasks must not pass for changes applied already. Rows
# written before installations were told apart have none, and count for every installation.
_CREATE_HISTORY = """
CREATE SCHEMA IF NOT EXISTS conveyor;
CREATE TABLE IF NOT EXISTS conveyor.change_history (
    installation uuid,
    task_id bigint NOT NULL,
    attempt int NOT NULL,
    checksum text NOT NULL,
    transactional boolean NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS change_history_installation_task
    ON conveyor.change_history (installation, task_id)
"""
_UPGRADE_HISTORY = """
ALTER TABLE conveyor.change_history ADD COLUMN IF NOT EXISTS installation uuid;
ALTER TABLE conveyor.change_history DROP CONSTRAINT IF EXISTS change_history_pkey;
CREATE UNIQUE INDEX IF NOT EXISTS change_history_installation_task
    ON conveyor.change_history (installation, task_id)
"""
_LOCK_HISTORY_CREATION = (
    "SELECT pg_advisory_xact_lock(hashtextextended('conveyor.change_history', 0))"
)
_TRY_LOCK_TASK = """SELECT pg_try_advisory_lock(
    hashtextextended('conveyor.change_history/' || $1 || '/' || $2, 0))"""
_RECORD_CHANGE = """
INSERT INTO conveyor.change_history (installation, task_id, attempt, checksum, transactional)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (installation, task_id) DO NOTHING
RETURNING true
"""
_APPLIED_CHANGE = """SELECT attempt, checksum, applied_at FROM conveyor.change_history
WHERE task_id = $2 AND (installation = $1 OR installation IS NULL)
ORDER BY installation NULLS LAST
LIMIT 1"""
_AS_INSTANCE_USER = "SET SESSION AUTHORIZATION DEFAULT"
_LEGACY_APPLIED_CHANGE = (
    "SELECT attempt, checksum, applied_at FROM conveyor.change_history WHERE task_id = $1"
)
_DATABASE_EXISTS = "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)"
# pg_control_system() exists since PostgreSQL 9.6 and anyone may call it.
_IDENTITY = """SELECT s.system_identifier, d.oid
FROM pg_control_system() s, pg_database d
WHERE d.datname = current_database()"""
# Only the databases the instance's role may connect to: the others could never be targets.
_SYNC_INSTANCE = """SELECT current_setting('server_version') AS server_version,
       current_setting('server_version_num')::int AS server_version_num,
       s.system_identifier,
       coalesce(array_agg(d.datname::text ORDER BY d.datname) FILTER (WHERE d.oid IS NOT NULL),
                '{}') AS databases,
       coalesce(array_agg(d.oid::bigint ORDER BY d.datname) FILTER (WHERE d.oid IS NOT NULL),
                '{}') AS oids
FROM pg_control_system() s
LEFT JOIN pg_database d
  ON NOT d.datistemplate AND d.datallowconn AND has_database_privilege(d.oid, 'CONNECT')
GROUP BY s.system_identifier"""
# Only a backend of ours: the pid may already belong to someone else's new session.
_CANCEL_BACKEND = """SELECT coalesce(
    (SELECT pg_cancel_backend(pid) FROM pg_stat_activity
     WHERE pid = $1 AND application_name = $2),
    false)"""


class TargetUnreachable(Exception):
    """The target could not be asked (connection or query failed); ask again later."""


@dataclass(frozen=True)
class Target:
    """How to reach an instance; the password is already decrypted."""

    #: A host name or IP, or a Unix-socket directory (starts with "/").
    host: str
    port: int
    user: str
    password: str = field(repr=False)
    #: None for an instance-level task: it connects to the maintenance database.
    database: str | None
    #: Conveyor's own database: every connection that reaches it is closed unused.
    conveyor_database: DatabaseIdentity
    connect_timeout: float = 10
    #: Where the host may be; checked after resolution, before each connection.
    networks: InstanceNetworks = UNRESTRICTED
    #: The instance's libpq connection options, as stored; only allowed ones are applied.
    options: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Change:
    #: The installation of Conveyor whose task this is (`db.installation`): task ids are
    #: unique within one installation only.
    installation: uuid.UUID
    task_id: int
    attempt: int
    type: TaskType
    #: SCHEMA_UPDATE and DATA_UPDATE: the SQL script.
    statement: str | None
    #: DATABASE_CREATE: the name of the database to create.
    database_name: str | None
    lock_timeout_ms: int
    statement_timeout_ms: int


#: Hears a run's log entries as they happen (see `execute`).
LogListener = Callable[[dict[str, Any]], None]


# --- Reading scripts -------------------------------------------------------------------------


def quote_identifier(name: str) -> str:
    """`name` as a quoted SQL identifier, exactly as given."""
    if "\0" in name:
        raise ValueError("an identifier cannot contain a NUL character")
    return '"' + name.replace('"', '""') + '"'


def _database_name_problem(name: str) -> str | None:
    if not name:
        return "the database name is empty"
    if "\0" in name:
        return "a database name cannot contain a NUL character"
    if len(name.encode()) > MAX_IDENTIFIER_BYTES:
        return (
            f"the database name is longer than {MAX_IDENTIFIER_BYTES} bytes; "
            "PostgreSQL would truncate it"
        )
    return None


def _checksum(statement: str) -> str:
    return hashlib.sha256(statement.encode()).hexdigest()


def rows_affected(status: str) -> int | None:
    # "INSERT 0 5", "UPDATE 3", "SELECT 2" (CREATE TABLE AS too): the count comes last.
    verb, _, rest = status.partition(" ")
    count = rest.rpartition(" ")[2]
    counted = {"INSERT", "UPDATE", "DELETE", "MERGE", "SELECT", "COPY", "FETCH", "MOVE"}
    return int(count) if verb in counted and count.isdigit() else None


# --- One execution ---------------------------------------------------------------------------


@dataclass
class _Run:
    """What one execution collects on its way: the log and the clock."""

    transactional: bool
    log: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    #: Hears a copy of each entry as it happens (a statement twice: started, then finished).
    on_log: LogListener | None = None

    def note(self, kind: str, text: str, **details: Any) -> dict[str, Any]:
        entry = {"at": datetime.now(UTC).isoformat(), "kind": kind, "text": text, **details}
        self.log.append(entry)
        self.tell(entry)
        return entry

    def tell(self, entry: dict[str, Any]) -> None:
        if self.on_log is None:
            return
        if entry["kind"] == "statement":
            phase = "FINISHED" if "statusTag" in entry else "STARTED"
            self.on_log({**entry, "phase": phase})
        else:
            self.on_log(dict(entry))

    def hear(self, _connection: object, message: asyncpg.PostgresLogMessage, /) -> None:
        severity = message.severity_en or message.severity or "NOTICE"
        self.note("notice", message.message, severity=severity)

    def succeeded(self, result: dict[str, Any], **found: Any) -> Outcome:
        return Outcome(
            succeeded=True,
            error_code=None,
            error_message=None,
            transactional=self.transactional,
            result={**result, "durationMs": self._elapsed_ms()},
            log=self.log,
            **found,
        )

    def failed(self, code: str, message: str, result: dict[str, Any] | None = None) -> Outcome:
        self.note("error", message, code=code)
        return Outcome(
            succeeded=False,
            error_code=code,
            error_message=message,
            transactional=self.transactional,
            result={**(result or {}), "durationMs": self._elapsed_ms()},
            log=self.log,
        )

    def failed_on_target(
        self, error: asyncpg.PostgresError, *, prefix: str = "", code: str | None = None
    ) -> Outcome:
        sqlstate = error.sqlstate
        if code is None:
            # 57014 is both a statement timeout and a cancel; only the message tells them apart.
            canceled = sqlstate == _QUERY_CANCELED and "user request" in error.message
            code = CANCELED if canceled else sqlstate
        return self.failed(code, prefix + _describe(error), {"sqlstate": sqlstate})

    def _elapsed_ms(self) -> float:
        return round((time.monotonic() - self.started) * 1000, 1)


def _describe(error: asyncpg.PostgresError) -> str:
    lines = [error.message]
    if error.detail:
        lines.append(f"DETAIL: {error.detail}")
    if error.hint:
        lines.append(f"HINT: {error.hint}")
    return "\n".join(lines)


async def _run_statement(connection: _Connection, run: _Run, text: str) -> str:
    entry = run.note("statement", text)
    started = time.monotonic()
    status = await connection.execute(text)
    entry["statusTag"] = status
    entry["durationMs"] = round((time.monotonic() - started) * 1000, 1)
    run.tell(entry)
    return status


class _Refused(Exception):
    """Conveyor's own rules keep it from using the connection; no change was sent."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


# Errors of reaching the target, and of losing it mid-way. Any other InterfaceError is ours.
_CONNECT_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.TargetServerAttributeNotMatched,
    _Refused,
)
_LOST_ERRORS = (OSError, TimeoutError, asyncpg.ConnectionDoesNotExistError)


async def connect(target: Target) -> _Connection:
    """A new session on `target`, once every rule allows it; raises what connecting raised."""
    try:
        options = ConnectionOptions.parse(target.options.items())
    except ValueError as error:
        raise _Refused(INVALID_CONNECTION_OPTION, f"connection option {error}") from None
    problem = pinned_address_problem(target.host, options) if target.networks.restricted else None
    if problem is not None:
        raise _Refused(INVALID_CONNECTION_OPTION, problem)
    try:
        async with asyncio.timeout(target.connect_timeout):
            hosts = await checked_hosts(target.host, target.networks)
    except HostNotAllowed as error:
        raise _Refused(HOST_NOT_ALLOWED, str(error)) from None
    connection: _Connection = await asyncpg.connect(
        host=hosts,
        port=target.port,
        user=target.user,
        # Always a string: None would make asyncpg read PGPASSWORD or ~/.pgpass instead.
        password=target.password,
        database=target.database or MAINTENANCE_DATABASE,
        timeout=target.connect_timeout,
        server_settings={"application_name": APPLICATION_NAME},
        **_asyncpg_options(options),
    )
    # Asked of the server reached, not judged from the host and name: any route (another
    # host name, a socket, a proxy, a renamed database) to Conveyor's own tables ends here.
    try:
        row = await connection.fetchrow(_IDENTITY, timeout=target.connect_timeout)
    except BaseException:
        connection.terminate()
        raise
    assert row is not None  # current_database() is always in pg_database
    if is_conveyor_database(target.conveyor_database, DatabaseIdentity(*row)):
        await close(connection)
        raise _Refused(CONVEYOR_DATABASE, CONVEYOR_DATABASE_REFUSAL)
    return connection


def _asyncpg_options(options: ConnectionOptions) -> dict[str, Any]:
    """The instance's options as asyncpg's keywords; those not set keep asyncpg's defaults."""
    keywords: dict[str, Any] = {}
    if options.sslmode is not None:
        keywords["ssl"] = str(options.sslmode)
    if options.target_session_attrs is not None:
        keywords["target_session_attrs"] = SessionAttribute(str(options.target_session_attrs))
    return keywords


def unreachable_reason(target: Target, error: BaseException) -> tuple[str, str]:
    """The error code and message of a failed connection attempt."""
    if isinstance(error, asyncpg.PostgresError):
        code, reason = error.sqlstate, _describe(error)
    elif isinstance(error, _Refused):
        code, reason = error.code, error.reason
    elif isinstance(error, asyncpg.exceptions.TargetServerAttributeNotMatched):
        code, reason = CONNECTION_FAILED, "no server there is one target_session_attrs accepts"
    else:
        code = CONNECTION_FAILED
        if isinstance(error, TimeoutError):
            reason = f"no answer within {target.connect_timeout:g} s"
        elif isinstance(error, ConnectionRefusedError):
            reason = "connection refused"
        elif isinstance(error, socket.gaierror):
            reason = f"unknown host ({error.strerror})"
        elif isinstance(error, OSError) and error.strerror:
            reason = error.strerror
        else:
            reason = str(error) or type(error).__name__
    where = f"{target.host}:{target.port}/{target.database or MAINTENANCE_DATABASE}"
    return code, f"could not connect to the instance at {where}: {reason}"


async def close(connection: _Connection) -> None:
    """Close a session, or drop it if it does not answer."""
    try:
        await connection.close(timeout=CLOSE_TIMEOUT_SECONDS)
    except _CONNECT_ERRORS:
        connection.terminate()


_Work = Callable[[_Connection, _Run], Awaitable[Outcome]]


@contextlib.asynccontextmanager
async def new_session(target: Target) -> AsyncIterator[Connection]:
    """A session for one attempt only: opened for it, closed after it."""
    connection = await connect(target)
    try:
        yield connection
    finally:
        await close(connection)


async def execute(
    target: Target,
    change: Change,
    on_backend_pid: Callable[[int], Awaitable[None]] | None = None,
    sessions: Sessions = new_session,
    on_log: LogListener | None = None,
) -> Outcome:
    """Run `change` on `target`; every problem on the target's side comes back as an Outcome.

    `on_backend_pid` hears the target's backend pid as soon as the session exists, so the
    caller can stop a running statement with `cancel_backend`; `on_log` hears each log entry
    as it happens, so that the caller can show the run's progress live. `sessions` gives the
    session (runner.sessions keeps them open between attempts).
    """
    work: _Work
    match change.type:
        case TaskType.SCHEMA_UPDATE | TaskType.DATA_UPDATE:
            if change.statement is None:
                raise ValueError(f"a {change.type} change needs a statement")
            # A statement stored before a rule existed may still break it.
            script = parse_script(change.statement)
            run = _Run(transactional=script.transactional)
            refusal = script.refusal
            if refusal is not None:
                return run.failed(refusal.rule, refusal.message)
            work = functools.partial(
                _apply_change,
                change=change,
                statements=script.statements,
                checksum=_checksum(change.statement),
            )
        case TaskType.DATABASE_CREATE:
            if change.database_name is None:
                raise ValueError("a DATABASE_CREATE change needs a database name")
            run = _Run(transactional=False)
            problem = _database_name_problem(change.database_name)
            if problem is not None:
                return run.failed(INVALID_NAME, problem)
            work = functools.partial(_create_database, name=change.database_name)
        case TaskType.INSTANCE_SYNC:
            run = _Run(transactional=True)
            work = functools.partial(_sync_instance, conveyor_database=target.conveyor_database)
        case unknown:
            assert_never(unknown)
    run.on_log = on_log
    async with contextlib.AsyncExitStack() as stack:
        try:
            connection = await stack.enter_async_context(sessions(target))
        except _CONNECT_ERRORS as error:
            return run.failed(*unreachable_reason(target, error))
        try:
            if on_backend_pid is not None:
                await on_backend_pid(connection.get_server_pid())
            connection.add_log_listener(run.hear)
            return await work(connection, run)
        except asyncpg.PostgresError as error:
            return run.failed_on_target(error)
        except _LOST_ERRORS as error:
            return run.failed(CONNECTION_LOST, f"lost the connection to the instance: {error}")
        finally:
            connection.remove_log_listener(run.hear)


async def _ensure_history_table(connection: _Connection) -> None:
    if await connection.fetchval(_HISTORY_STATE) == 2:
        return
    # Two changes creating the table at once would collide on the catalogs' unique indexes.
    async with connection.transaction():
        await connection.execute(_LOCK_HISTORY_CREATION)
        state = await connection.fetchval(_HISTORY_STATE)
        if state == 0:
            await connection.execute(_CREATE_HISTORY)
        elif state == 1:
            await connection.execute(_UPGRADE_HISTORY)


async def _applied_change(connection: _Connection, change: Change) -> asyncpg.Record | None:
    """The history row saying `change` was applied, if any (the table is current)."""
    return await connection.fetchrow(_APPLIED_CHANGE, change.installation, change.task_id)


async def _applied_change_if_recorded(
    connection: _Connection, change: Change
) -> asyncpg.Record | None:
    """The same, on a target whose history table may be missing or from before
    installations were told apart: it is read as it is, never changed."""
    state = await connection.fetchval(_HISTORY_STATE)
    if state == 0:
        return None
    if state == 1:
        return await connection.fetchrow(_LEGACY_APPLIED_CHANGE, change.task_id)
    return await _applied_change(connection, change)


def _already_applied(run: _Run, applied: asyncpg.Record, checksum: str) -> Outcome:
    attempt, applied_at = applied["attempt"], applied["applied_at"].isoformat()
    run.note("info", f"already applied by attempt {attempt} at {applied_at}; not applied again")
    return run.succeeded(
        {
            "alreadyApplied": True,
            "appliedAttempt": attempt,
            "appliedAt": applied_at,
            "sameStatement": applied["checksum"] == checksum,
        }
    )


async def _set_timeouts(connection: _Connection, run: _Run, change: Change, scope: str) -> None:
    for setting, milliseconds in (
        ("lock_timeout", change.lock_timeout_ms),
        ("statement_timeout", change.statement_timeout_ms),
    ):
        await _run_statement(connection, run, f"SET {scope}{setting} = '{int(milliseconds)}ms'")


async def _run_statements(
    connection: _Connection, run: _Run, statements: Sequence[Statement]
) -> dict[str, Any]:
    status = ""
    for statement in statements:
        status = await _run_statement(connection, run, statement.text)
    return {"statusTag": status, "rowsAffected": rows_affected(status)}


#: Sessions that found the history table. A transactional change skips the look-up there: its
#: first statement inserts into the table, and should a person have dropped it meanwhile,
#: that statement fails with nothing applied and the change starts over with the look-up.
_SEEN_HISTORY: weakref.WeakSet[_Connection] = weakref.WeakSet()


class _HistoryMissing(Exception):
    """The history table a session had found is gone; the transaction rolled back."""

    def __init__(self, error: asyncpg.UndefinedTableError) -> None:
        super().__init__(error.message)
        self.error = error


async def _apply_change(
    connection: _Connection,
    run: _Run,
    *,
    change: Change,
    statements: Sequence[Statement],
    checksum: str,
) -> Outcome:
    looked_up = not (run.transactional and connection in _SEEN_HISTORY)
    if looked_up:
        try:
            await _ensure_history_table(connection)
        except asyncpg.PostgresError as error:
            return run.failed_on_target(error, prefix=f"could not prepare {_HISTORY_TABLE}: ")
        _SEEN_HISTORY.add(connection)
    if run.transactional:
        try:
            return await _apply_in_transaction(connection, run, change, statements, checksum)
        except _HistoryMissing as missing:
            _SEEN_HISTORY.discard(connection)
            if looked_up:
                return run.failed_on_target(missing.error)
            return await _apply_change(
                connection, run, change=change, statements=statements, checksum=checksum
            )
    return await _apply_outside_transaction(connection, run, change, statements, checksum)


async def _apply_in_transaction(
    connection: _Connection,
    run: _Run,
    change: Change,
    statements: Sequence[Statement],
    checksum: str,
) -> Outcome:
    # The history row goes in before the change. A second attempt of the same task waits on
    # it until this transaction ends, then finds it committed (applied: skip) or gone (rolled
    # back: apply), so the change never applies twice. The wait happens before lock_timeout
    # is set: a live earlier attempt is bounded by its own statement_timeout.
    #
    # BEGIN, the history row and the two timeouts go in one round trip (one simple query):
    # the timeouts are set by the insert's RETURNING, so only once its row is in (after any
    # wait on an earlier attempt's), and, being transaction-local, only for this transaction.
    # The values are ours (a UUID, integers, a hex digest), written as literals.
    try:
        tag = await connection.execute(_begin_and_record(change, checksum))
    except asyncpg.UndefinedTableError as error:
        await _roll_back(connection)
        raise _HistoryMissing(error) from error
    except BaseException:
        await _roll_back(connection)
        raise
    try:
        if tag != "INSERT 0 1":
            # Not recorded: the change (or a row of it from before installations were told
            # apart) is there already.
            applied = await _applied_change(connection, change)
            assert applied is not None  # the insert conflicted with it, or was kept out by it
            await connection.execute("ROLLBACK")  # nothing was written
            return _already_applied(run, applied, checksum)
        for setting, milliseconds in _timeouts(change):
            # Logged as the statement it amounts to (set_config(..., true) is SET LOCAL).
            entry = run.note("statement", f"SET LOCAL {setting} = '{milliseconds}ms'")
            entry["statusTag"] = "SET"
            entry["durationMs"] = 0.0
            run.tell(entry)
        result = await _run_statements(connection, run, statements)
        await _commit_and_reset(connection, change)
    except BaseException:
        await _roll_back(connection)
        raise
    return run.succeeded(result)


#: Sessions whose attempt reset them with its COMMIT (`was_reset`).
_RESET_WITH_COMMIT: weakref.WeakSet[_Connection] = weakref.WeakSet()


def was_reset(connection: _Connection) -> bool:
    """Whether the attempt just over left its session reset (SESSION_RESET); asked once, when
    the session is given back."""
    if connection in _RESET_WITH_COMMIT:
        _RESET_WITH_COMMIT.discard(connection)
        return True
    return False


async def _commit_and_reset(connection: _Connection, change: Change) -> None:
    try:
        await connection.execute(_COMMIT_AND_RESET)
    except asyncpg.PostgresError as error:
        # The COMMIT failed (a deferred constraint, say: nothing was applied), or the reset
        # after it did: the change's own history row tells which, read as the instance's user
        # (the script's role may not see it).
        try:
            await connection.execute(_AS_INSTANCE_USER)
            applied = await _applied_change(connection, change)
        except asyncpg.PostgresError:
            raise error from None
        if applied is None or applied["attempt"] != change.attempt:
            raise error
        return  # committed; the session is reset when it is given back, or closed
    _RESET_WITH_COMMIT.add(connection)


def _timeouts(change: Change) -> tuple[tuple[str, int], ...]:
    return (
        ("lock_timeout", int(change.lock_timeout_ms)),
        ("statement_timeout", int(change.statement_timeout_ms)),
    )


def _begin_and_record(change: Change, checksum: str) -> str:
    """BEGIN and the change's history row (with its timeouts), as one simple query: its tag is
    `INSERT 0 1` when the row went in, `INSERT 0 0` when the change was applied already."""
    installation = str(uuid.UUID(str(change.installation)))
    if not all(c in "0123456789abcdef" for c in checksum):
        raise ValueError("a checksum is a hex digest")
    task_id, attempt = int(change.task_id), int(change.attempt)
    settings = ", ".join(
        f"set_config('{setting}', '{milliseconds}ms', true)"
        for setting, milliseconds in _timeouts(change)
    )
    return (
        "BEGIN; "
        "INSERT INTO conveyor.change_history "
        "(installation, task_id, attempt, checksum, transactional) "
        f"SELECT '{installation}'::uuid, {task_id}, {attempt}, '{checksum}', true "
        "WHERE NOT EXISTS (SELECT FROM conveyor.change_history "
        f"WHERE task_id = {task_id} AND installation IS NULL) "
        f"ON CONFLICT (installation, task_id) DO NOTHING RETURNING {settings}"
    )


async def _roll_back(connection: _Connection) -> None:
    """End the transaction this module began, if the session is still in one. A session that
    cannot roll back is left in its transaction, and so is not reused (runner.sessions)."""
    if not connection.is_closed() and connection.is_in_transaction():
        with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            await connection.execute("ROLLBACK")


async def _apply_outside_transaction(
    connection: _Connection,
    run: _Run,
    change: Change,
    statements: Sequence[Statement],
    checksum: str,
) -> Outcome:
    # Without a transaction to hold the history row, a session advisory lock keeps a second
    # attempt out while this one runs; it goes with the session, even if the worker dies.
    if not await connection.fetchval(_TRY_LOCK_TASK, str(change.installation), str(change.task_id)):
        return run.failed(
            ALREADY_RUNNING, f"another attempt of task {change.task_id} is running on the target"
        )
    applied = await _applied_change(connection, change)
    if applied is not None:
        return _already_applied(run, applied, checksum)
    run.note(
        "info",
        "ran outside a transaction: a statement in it cannot run inside one, so each "
        "statement commits on its own and a failure leaves the earlier ones applied",
    )
    await _set_timeouts(connection, run, change, "")
    result = await _run_statements(connection, run, statements)
    try:
        await _record_applied(connection, change, checksum)
    except asyncpg.PostgresError as error:
        prefix = f"the change was applied but could not be recorded in {_HISTORY_TABLE}: "
        return run.failed_on_target(error, prefix=prefix)
    return run.succeeded(result)


async def _record_applied(connection: _Connection, change: Change, checksum: str) -> None:
    row = _history_row(change, checksum, transactional=False)
    # The change is in: a cancel landing now must not leave it unrecorded, so try again.
    for _ in range(2):
        with contextlib.suppress(asyncpg.QueryCanceledError):
            await _record_as_conveyor(connection, row)
            return
    await _record_as_conveyor(connection, row)


async def _record_as_conveyor(connection: _Connection, row: tuple[object, ...]) -> None:
    # The script may have changed the session's role (SET ROLE app_owner, say): the history
    # is written as the instance's own user, who made it.
    await connection.execute(_AS_INSTANCE_USER)
    await connection.fetchval(_RECORD_CHANGE, *row)


def _history_row(change: Change, checksum: str, *, transactional: bool) -> tuple[object, ...]:
    """The values of a change's history row, in `_RECORD_CHANGE`'s order."""
    return (change.installation, change.task_id, change.attempt, checksum, transactional)


async def _create_database(connection: _Connection, run: _Run, *, name: str) -> Outcome:
    try:
        await _run_statement(connection, run, f"CREATE DATABASE {quote_identifier(name)}")
    except asyncpg.DuplicateDatabaseError as error:
        return run.failed_on_target(error, code=ALREADY_EXISTS)
    return run.succeeded({"database": name}, created_database=name)


async def _sync_instance(
    connection: _Connection, run: _Run, *, conveyor_database: DatabaseIdentity
) -> Outcome:
    run.note("statement", _SYNC_INSTANCE)
    row = await connection.fetchrow(_SYNC_INSTANCE)
    assert row is not None
    found = list(zip(row["databases"], row["oids"], strict=True))
    databases = target_databases(conveyor_database, row["system_identifier"], found)
    if len(databases) < len(found):
        run.note("info", "Conveyor's own database is on this instance; it is not a target")
    return run.succeeded(
        {
            "serverVersion": row["server_version"],
            "serverVersionNum": row["server_version_num"],
            "databases": databases,
        },
        discovered_databases=databases,
    )


async def conveyor_database_refusal(target: Target) -> str | None:
    """Why the runner would refuse `target` as Conveyor's own database; None when it would
    not, or when the target cannot be reached now (the runner asks again on each connection)."""
    try:
        connection = await connect(target)
    except _Refused as error:
        return error.reason if error.code == CONVEYOR_DATABASE else None
    except _CONNECT_ERRORS:
        return None
    await close(connection)
    return None


# --- Recovery and cancel ---------------------------------------------------------------------


async def change_was_applied(target: Target, change: Change) -> bool:
    """Whether `change` took effect on the target, as the target itself records it.

    Raises TargetUnreachable when the target cannot be asked.
    """
    if change.type is TaskType.INSTANCE_SYNC:
        return False  # it only reads: running it again is harmless
    try:
        connection = await connect(target)
    except asyncpg.InvalidCatalogNameError as error:
        if change.type.needs_database:
            return False  # its database is gone, and the change with it
        raise TargetUnreachable(unreachable_reason(target, error)[1]) from error
    except _Refused as error:
        if error.code == CONVEYOR_DATABASE:
            # The runner sends no change there, so it applied none; asking again would only
            # keep the task RUNNING for good.
            return False
        raise TargetUnreachable(unreachable_reason(target, error)[1]) from error
    except _CONNECT_ERRORS as error:
        raise TargetUnreachable(unreachable_reason(target, error)[1]) from error
    try:
        if change.type is TaskType.DATABASE_CREATE:
            exists: bool = await connection.fetchval(
                _DATABASE_EXISTS, change.database_name, timeout=target.connect_timeout
            )
            return exists
        return await _applied_change_if_recorded(connection, change) is not None
    except (asyncpg.PostgresError, *_LOST_ERRORS) as error:
        raise TargetUnreachable(f"could not read the change history: {error}") from error
    finally:
        await close(connection)


async def cancel_backend(target: Target, backend_pid: int) -> bool:
    """Cancel the statement Conveyor's session `backend_pid` runs, from a session of its own.

    False when nothing was canceled: the session is gone, or the target unreachable.
    """
    try:
        connection = await connect(target)
    except _CONNECT_ERRORS as error:
        logger.warning(
            "could not cancel backend %s: %s", backend_pid, unreachable_reason(target, error)[1]
        )
        return False
    try:
        canceled: bool = await connection.fetchval(
            _CANCEL_BACKEND, backend_pid, APPLICATION_NAME, timeout=target.connect_timeout
        )
        return canceled
    except (asyncpg.PostgresError, *_LOST_ERRORS) as error:
        logger.warning("could not cancel backend %s: %s", backend_pid, error)
        return False
    finally:
        await close(connection)
