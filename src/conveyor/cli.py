"""The `conveyor` command."""

import argparse
import asyncio
import logging
import math
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType

import uvicorn
from starlette.applications import Starlette
from strawberry import relay
from strawberry.relay import GlobalIDValueError
from tortoise.context import TortoiseContext

from conveyor.app import create_app, database_url, password_cipher
from conveyor.db import tokens
from conveyor.db.config import WORKER_SESSION_SETTINGS, tortoise_config
from conveyor.db.migrate import migrate_database
from conveyor.demo import load_demo
from conveyor.domain.checks import (
    Finding,
    blocking_findings,
    check_statement,
    default_review_policy,
)
from conveyor.domain.permissions import SYSTEM, Role
from conveyor.domain.statuses import TaskType
from conveyor.errors import ConveyorError
from conveyor.events.listener import running_listener
from conveyor.graphql.types.node import parse_node_id
from conveyor.operations.endpoints import OperationsEndpoints, Readiness
from conveyor.operations.logs import AccessLogWithoutQueries, configure_logging
from conveyor.operations.metrics import Metrics
from conveyor.runner.squawk import SquawkUnavailable, lint_sync
from conveyor.runner.worker import running_worker
from conveyor.settings import LogFormat, Settings


def export_schema(output: str) -> None:
    from conveyor.graphql.schema import schema

    text = schema.as_str() + "\n"
    if output == "-":
        sys.stdout.write(text)
    else:
        Path(output).write_text(text)


async def migrate(settings: Settings) -> None:
    async with database_url(settings) as url:
        await migrate_database(url)


@asynccontextmanager
async def migrated_database(settings: Settings) -> AsyncIterator[str]:
    """The database, migrated, with tortoise set up for a one-off command."""
    async with database_url(settings) as url:
        await migrate_database(url)
        async with TortoiseContext() as context:
            await context.init(config=tortoise_config(url, pool_max_size=2))
            yield url


async def demo(settings: Settings) -> None:
    async with migrated_database(settings) as url:
        await load_demo(url, settings, password_cipher(settings))


async def manage_tokens(settings: Settings, args: argparse.Namespace) -> None:
    """`conveyor token ...`: whoever can run this can read the database, so it acts as ADMIN."""
    async with migrated_database(settings):
        if args.token_command == "create":
            expires_at = (
                None
                if args.expires_in_days is None
                else datetime.now(UTC) + timedelta(days=args.expires_in_days)
            )
            issued = await tokens.issue_token(
                SYSTEM,
                args.actor,
                Role(args.role),
                description=args.description,
                expires_at=expires_at,
            )
            # The only place the token is ever shown: stdout, for the operator to keep.
            sys.stdout.write(issued.token + "\n")
            print(
                f"token {issued.row.id} ({issued.row.prefix}...) acts as {issued.row.actor}, "
                f"{issued.row.role.value}; it is not shown again",
                file=sys.stderr,
            )
        elif args.token_command == "list":
            for row in await tokens.list_tokens(SYSTEM, include_revoked=args.all):
                state = "revoked" if row.revoked_at else f"expires {row.expires_at or 'never'}"
                print(f"{row.id}\t{row.prefix}...\t{row.actor}\t{row.role.value}\t{state}")
        elif args.token_command == "revoke":
            row = await tokens.revoke_token(SYSTEM, args.id)
            print(f"token {row.id} ({row.prefix}...) of {row.actor} is revoked", file=sys.stderr)


def token_number(text: str) -> int:
    """A token as `token list` numbers it, or as the API names it (`ApiToken.id`)."""
    if text.isdigit():
        return int(text)
    try:
        global_id = relay.GlobalID.from_id(text)
    except GlobalIDValueError:
        global_id = None
    if global_id is not None and global_id.type_name != "ApiToken":
        raise argparse.ArgumentTypeError(
            f"{text} is an id of type {global_id.type_name}, not ApiToken"
        )
    key = None if global_id is None else parse_node_id(global_id.node_id)
    if key is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a token's number nor an API token id"
        )
    return key


def _add_token_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    token_parser = commands.add_parser("token", help="create, list or revoke API tokens")
    token_commands = token_parser.add_subparsers(dest="token_command", required=True)
    create = token_commands.add_parser("create", help="create a token; it is printed once")
    create.add_argument("--actor", required=True, help="the name recorded on its actions")
    create.add_argument("--role", required=True, choices=[role.value for role in Role])
    create.add_argument("--description", default="")
    create.add_argument("--expires-in-days", type=float, default=None, help="default: never")
    listing = token_commands.add_parser("list", help="list tokens (never their secrets)")
    listing.add_argument("--all", action="store_true", help="include revoked tokens")
    revoke = token_commands.add_parser("revoke", help="revoke a token")
    revoke.add_argument(
        "id",
        type=token_number,
        help="its number in `token list`, or its id in the API (`apiTokens { id }`)",
    )


async def work(settings: Settings) -> None:
    """Run a worker until SIGTERM or SIGINT, then stop it cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stop.set)
    metrics = Metrics()
    readiness = Readiness()
    async with database_url(settings) as url, TortoiseContext() as context:
        await context.init(
            config=tortoise_config(
                url,
                pool_max_size=settings.db_pool_max_size,
                session_settings=WORKER_SESSION_SETTINGS,
            )
        )
        # The server outlives the worker: while it drains, /readyz says so.
        async with (
            operations_server(settings, OperationsEndpoints(settings, metrics, readiness)),
            running_listener(url) as listener,
            running_worker(settings, password_cipher(settings), url, listener, metrics) as worker,
        ):
            readiness.listener, readiness.worker = listener, worker
            metrics.watch_worker(worker)
            await stop.wait()
            readiness.draining = True


def worker_event_loop() -> Callable[[], asyncio.AbstractEventLoop]:
    """The worker's event loop: uvloop's, as uvicorn picks for the server, where installed.

    A worker spends most of its CPU in the loop itself (socket writes and polls for its
    round trips to PostgreSQL), which uvloop does in C."""
    try:
        import uvloop
    except ImportError:  # uvicorn[standard] installs it except on Windows
        return asyncio.new_event_loop
    return uvloop.new_event_loop


class _ServerBesideWork(uvicorn.Server):
    """A uvicorn server inside a process that handles its own signals."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@asynccontextmanager
async def operations_server(
    settings: Settings, endpoints: OperationsEndpoints
) -> AsyncIterator[None]:
    """/healthz, /readyz and /metrics on `metrics_port`, if set, for the life of the context."""
    if settings.metrics_port is None:
        yield
        return
    config = uvicorn.Config(
        Starlette(routes=endpoints.routes()),
        host=settings.host,
        port=settings.metrics_port,
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="off",
    )
    server = _ServerBesideWork(config)
    serving = asyncio.create_task(server.serve(), name="conveyor-operations-server")
    try:
        yield
    finally:
        server.should_exit = True
        await serving


class DrainingServer(uvicorn.Server):
    """uvicorn, draining on SIGTERM: the app reports not ready and refuses new WebSockets for
    `drain_seconds` (for the load balancer to notice), then uvicorn stops accepting
    connections, closes the WebSockets with 1012 (service restart: clients reconnect
    elsewhere and resume with `after`) and lets requests in flight finish within its
    graceful-shutdown timeout. A second SIGTERM cuts the drain time short; SIGINT skips it."""

    def __init__(
        self, config: uvicorn.Config, *, begin_draining: Callable[[], None], drain_seconds: float
    ) -> None:
        super().__init__(config)
        self._begin_draining = begin_draining
        self._drain_seconds = drain_seconds
        self._drained_at: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler: it only sets flags, which the main loop reads every 0.1 s.
        self._begin_draining()
        if sig == signal.SIGTERM and self._drained_at is None and self._drain_seconds > 0:
            self._drained_at = time.monotonic() + self._drain_seconds
            self._captured_signals.append(sig)
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._drained_at is not None and time.monotonic() >= self._drained_at:
            return True
        return await super().on_tick(counter)


def serve(settings: Settings, *, with_demo: bool | None) -> None:
    app = create_app(settings, load_demo=with_demo)
    json_logs = settings.log_format is LogFormat.JSON
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # Only the proxy headers we are told to trust; none by default.
        proxy_headers=False,
        server_header=False,
        # uvicorn's default (5 s) closes idle connections under clients and proxies that
        # keep them longer; the header tells clients (Node's fetch reads it) when to stop
        # reusing one.
        timeout_keep_alive=settings.keep_alive_seconds,
        headers=[("Keep-Alive", f"timeout={settings.keep_alive_seconds}")],
        # No protocol-level pings: a client that stops reading cannot answer them, and their
        # timeout (1011) would close it before it learns why. graphql-transport-ws sockets
        # are pinged by graphql.live_socket, which closes a client that stopped reading with
        # SUBSCRIBER_TOO_SLOW; legacy graphql-ws ones get "ka" messages.
        ws_ping_interval=None,
        # graphql.live_socket writes live updates straight into this implementation's
        # connections (any other would take the slower ASGI path).
        ws="websockets-sansio",
        # Compression is per connection (each keeps its own dictionary), so a message shared
        # by 10,000 subscribers would be compressed 10,000 times; live messages are small.
        ws_per_message_deflate=False,
        # A WebSocket message may be as large as an HTTP request body, no larger.
        ws_max_size=settings.max_request_bytes,
        # On SIGTERM, requests in flight get this long to finish.
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_seconds),
        # JSON lines: uvicorn's loggers propagate to the root logger and its formatter.
        log_config=None if json_logs else uvicorn.config.LOGGING_CONFIG,
    )
    # After uvicorn.Config, which configures the loggers.
    logging.getLogger("uvicorn.access").addFilter(AccessLogWithoutQueries())
    DrainingServer(
        config,
        begin_draining=app.state.begin_draining,
        drain_seconds=settings.drain_seconds,
    ).run()


# Offline, the command cannot read an environment's approval policy: these names count as
# protected, as the demo's prod (MANUAL approval) is, unless --protected/--not-protected says.
_PROTECTED_NAMES = ("prod", "production", "prd", "live")


def _protected_by_name(environment: str) -> bool:
    name = environment.strip().lower()
    return name in _PROTECTED_NAMES or name.startswith(("prod-", "prod_", "production-"))


def _described(path: str, finding: Finding) -> str:
    where = f"{path}:{finding.line or 1}:{finding.column or 1}"
    return (
        f"{where}: {finding.level.value} {finding.rule}: {finding.message}\n    {finding.doc_url}"
    )


def check(path: str, environment: str, task_type: TaskType, protected: bool | None) -> int:
    """Print the findings a task of `task_type` would get in `environment`; the exit status."""
    try:
        sql = sys.stdin.read() if path == "-" else Path(path).read_text()
    except (OSError, UnicodeDecodeError) as error:
        print(f"conveyor check: cannot read {path}: {error}", file=sys.stderr)
        return 2
    if protected is None:
        protected = _protected_by_name(environment)
    policy = default_review_policy(protected)
    try:
        linted = lint_sync(sql)
    except SquawkUnavailable as error:
        print(f"conveyor check: {error}", file=sys.stderr)
        return 2
    findings = check_statement(sql, task_type, policy, linted)
    blocking = blocking_findings(findings, policy)
    for finding in findings:
        print(_described(path, finding))
    kind = "protected" if protected else "not protected"
    verdict = (
        f"blocked: {len(blocking)} finding(s) at {policy.blocking.value} or worse"
        if blocking
        else "would run"
    )
    print(
        f"{len(findings)} finding(s) for {task_type.described} in {environment} ({kind}): {verdict}"
    )
    return 1 if blocking else 0


def _add_check_command(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = commands.add_parser(
        "check",
        help="check a SQL file as a task's statement, offline; exit 1 when the result blocks",
    )
    parser.add_argument("file", help="the SQL file; '-' for stdin")
    parser.add_argument("--environment", required=True, help="the environment it would run in")
    parser.add_argument(
        "--type",
        choices=[TaskType.SCHEMA_UPDATE.value, TaskType.DATA_UPDATE.value],
        default=TaskType.SCHEMA_UPDATE.value,
        help="the task's type (default SCHEMA_UPDATE)",
    )
    protection = parser.add_mutually_exclusive_group()
    protection.add_argument(
        "--protected",
        dest="protected",
        action="store_true",
        default=None,
        help="use the protected environments' defaults (data-loss rules are errors); default: "
        "protected when the environment is named prod, production, prd or live",
    )
    protection.add_argument(
        "--not-protected",
        dest="protected",
        action="store_false",
        help="use the other environments' defaults (data-loss rules are warnings)",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="conveyor", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="migrate, then serve the GraphQL API")
    serve_parser.add_argument(
        "--demo",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="load the sample data into an empty database (default: only into the embedded one)",
    )
    commands.add_parser("worker", help="run tasks (as many worker processes as you like)")
    commands.add_parser("migrate", help="apply pending database migrations")
    commands.add_parser("demo", help="load the sample data into an empty database")
    _add_token_commands(commands)
    _add_check_command(commands)
    export_parser = commands.add_parser("export-schema", help="write the GraphQL schema (SDL)")
    export_parser.add_argument("output", nargs="?", default="schema.graphql", help="'-' for stdout")
    args = parser.parse_args(argv)

    if args.command == "export-schema":
        export_schema(args.output)
        return
    if args.command == "check":
        sys.exit(check(args.file, args.environment, TaskType(args.type), args.protected))
    settings = Settings()
    configure_logging(settings)
    if args.command == "serve":
        serve(settings, with_demo=args.demo)
    elif args.command == "worker":
        with asyncio.Runner(loop_factory=worker_event_loop()) as runner:
            runner.run(work(settings))
    elif args.command == "migrate":
        asyncio.run(migrate(settings))
    elif args.command == "demo":
        asyncio.run(demo(settings))
    elif args.command == "token":
        try:
            asyncio.run(manage_tokens(settings, args))
        except ConveyorError as error:
            sys.exit(f"conveyor token: {error.first.message}")
