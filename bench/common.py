"""What every benchmark needs: the server it measures against, databases on it, percentiles."""

import os
import socket
from urllib.parse import urlparse, urlunparse

import asyncpg

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def server_url() -> str:
    """The PostgreSQL server the benchmarks use (CONVEYOR_BENCH_DATABASE_URL)."""
    return os.environ.get("CONVEYOR_BENCH_DATABASE_URL", DEFAULT_SERVER)


def with_database(url: str, name: str) -> str:
    return urlunparse(urlparse(url)._replace(path=f"/{name}"))


async def admin_fetch(statement: str, *args: object) -> list[asyncpg.Record]:
    """Run `statement` on the server's maintenance database."""
    connection = await asyncpg.connect(server_url())
    try:
        return await connection.fetch(statement, *args)
    finally:
        await connection.close()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
