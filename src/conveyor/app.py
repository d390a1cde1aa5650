"""The ASGI application: GraphQL over HTTP and WebSocket, wired to the database."""

import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route, WebSocketRoute
from tortoise import Tortoise

from conveyor import demo
from conveyor.crypto import PasswordCipher, load_or_create_key, write_secret
from conveyor.db import tokens
from conveyor.db.config import tortoise_config
from conveyor.db.embedded import EmbeddedPostgres
from conveyor.db.migrate import migrate_database
from conveyor.events.hub import running_hub
from conveyor.events.listener import running_listener
from conveyor.graphql.ide import graphiql_assets_mount
from conveyor.graphql.live_socket import ExposeWebSocketConnection
from conveyor.graphql.schema import build_schema
from conveyor.graphql.shared_render import rendered as live_renders
from conveyor.graphql.view import GraphQLView
from conveyor.operations.endpoints import OperationsEndpoints, Readiness
from conveyor.operations.metrics import Metrics
from conveyor.runner.worker import running_worker
from conveyor.settings import Settings
from conveyor.web.page import page_routes

logger = logging.getLogger(__name__)

#: The cyclic collector's thresholds in a server (CPython's default: 700, 10, 10). With
#: thousands of live subscribers, a collection of the youngest generation every 700 objects
#: promoted whatever a fan-out had in flight, and the oldest generation, walked whole about
#: twice a second, stopped the event loop 30-95 ms each time (10,000 subscribers,
#: `bench/live_updates.py`): the p99 of live updates, and 100-170 ms more on the first
#: update after a burst, whose reading set off two collections. Collected every 20,000
#: objects, what a fan-out makes is gone before a collection sees it.
COLLECTOR_THRESHOLDS = (20_000, 10, 10)


def password_cipher(settings: Settings) -> PasswordCipher:
    return PasswordCipher(settings.secret_key or load_or_create_key(settings.data_dir))


@contextlib.asynccontextmanager
async def database_url(settings: Settings) -> AsyncIterator[str]:
    """The configured database, or an embedded one that lives as long as the context."""
    if settings.database_url is not None:
        yield settings.database_url
        return
    # Stopped in `finally` because uvicorn's SIGTERM handling skips the wheel's exit hook.
    embedded = EmbeddedPostgres(settings.data_dir)
    try:
        embedded.__enter__()
        yield embedded.url()
    finally:
        embedded.stop()


@contextlib.asynccontextmanager
async def _orm(url: str, pool_max_size: int) -> AsyncIterator[None]:
    """Tortoise for the whole process: request handlers run outside the lifespan's context, so
    it is the global fallback (what `RegisterTortoise` does, but whose close logs
    "Tortoise-ORM shutdown" twice: once itself and once inside `Tortoise.close_connections`)."""
    await Tortoise.init(
        config=tortoise_config(url, pool_max_size=pool_max_size), _enable_global_fallback=True
    )
    try:
        yield
    finally:
        await Tortoise.close_connections()


async def _issue_first_admin_token(settings: Settings) -> None:
    """Keep a new installation reachable: with no usable ADMIN token, write one for the
    operator into the data directory."""
    path = settings.admin_token_path
    if await tokens.issue_first_admin_token(lambda token: write_secret(path, token)):
        # The path, never the token: log lines end up in places secrets must not.
        logger.warning("no admin token existed: wrote a new one to %s (owner-only file)", path)


def create_app(settings: Settings, *, load_demo: bool | None = None) -> Starlette:
    """The application; `load_demo` None loads the sample only into a new embedded database."""
    metrics = Metrics()
    readiness = Readiness()
    graphql = GraphQLView(
        build_schema(settings), settings=settings, cipher=password_cipher(settings), metrics=metrics
    )
    operations = OperationsEndpoints(settings, metrics, readiness)

    def begin_draining() -> None:
        """Report not ready and refuse new WebSockets, until the process stops."""
        readiness.draining = True
        graphql.draining = True

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with database_url(settings) as url:
            await migrate_database(url)
            async with _orm(url, settings.db_pool_max_size):
                await _issue_first_admin_token(settings)
                if load_demo or (load_demo is None and settings.database_url is None):
                    await demo.load_demo(url, settings, graphql.cipher)
                # One LISTEN connection per process, shared by live updates and the worker.
                async with (
                    running_listener(url, graphql.verified_tokens.forget_all) as listener,
                    running_hub(
                        listener,
                        subscriber_buffer=settings.subscriber_buffer,
                        poll_seconds=settings.event_poll_seconds,
                        token_check_seconds=settings.token_check_seconds,
                    ) as hub,
                    contextlib.AsyncExitStack() as worker_stack,
                ):
                    if settings.run_worker:
                        readiness.worker = await worker_stack.enter_async_context(
                            running_worker(settings, graphql.cipher, url, listener, metrics)
                        )
                        metrics.watch_worker(readiness.worker)
                    graphql.hub = hub
                    readiness.listener = listener
                    metrics.watch_hub(hub)
                    metrics.watch_live_renders(live_renders)
                    # What start-up made (modules, the schema, pools) lives as long as the
                    # process: out of the collector's reach, a full collection no longer walks
                    # it, which otherwise held up a whole fan-out of live updates now and then.
                    gc.collect()
                    gc.freeze()
                    gc.set_threshold(*COLLECTOR_THRESHOLDS)
                    try:
                        yield
                    finally:
                        graphql.hub = None
                        readiness.listener = readiness.worker = None
                        metrics.watch_hub(None)
                        metrics.watch_worker(None)

    app = Starlette(
        routes=[
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
            *operations.routes(),
            graphiql_assets_mount(),
            *page_routes(),
        ],
        lifespan=lifespan,
        middleware=[Middleware(ExposeWebSocketConnection)],
    )
    app.state.begin_draining = begin_draining
    return app
