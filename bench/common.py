"""What every benchmark needs: the server it measures against, databases on it, percentiles."""

import asyncio
import os
import socket
import statistics
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import asyncpg
import psutil

from conveyor.domain.permissions import Principal, Role

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
#: Who the benchmarks act as when they seed through Conveyor's own functions.
BENCH = Principal(actor="bench", role=Role.ADMIN)
#: How often a latency sample looks for the row of the run it waits for. The times are read
#: from the rows, so a slower look costs the sample nothing; a look every millisecond took a
#: good part of a core from the worker and PostgreSQL on a two-core machine.
SAMPLE_POLL_SECONDS = 0.02


async def none_is_ours(_instance: object, _database: str) -> str | None:
    """The own-database check of the catalog, for benchmarks that register only databases
    they created themselves on a fresh run (never Conveyor's)."""
    return None


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


async def create_token(database_url: str, role: str = "VIEWER") -> str:
    """A token of `role` for the benchmark's requests, made with `conveyor token create` as an
    operator makes one; it expires in a day, so that reruns leave nothing usable behind."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    # Not subprocess.run: the database may be behind wire_count's proxy, in this event loop.
    command = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "conveyor",
        "token",
        "create",
        "--actor",
        "bench",
        "--role",
        role,
        "--description",
        "benchmark requests",
        "--expires-in-days",
        "1",
        env={**environment, "CONVEYOR_DATABASE_URL": database_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await command.communicate()
    if command.returncode != 0:
        raise RuntimeError(f"conveyor token create failed: {err.decode()}")
    return out.decode().strip()


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far (those gone count nothing)."""
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


async def backends(databases: list[str]) -> list[int]:
    """The server's processes serving sessions on these databases."""
    rows = await admin_fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = ANY($1::text[])", databases
    )
    return [row["pid"] for row in rows]


def print_runner_rows(
    tasks: int,
    since: str,
    marks: tuple[str, tuple[float, ...]],
    running_seconds: float,
    worker_cpu: float,
    server_cpu: float,
) -> None:
    """The rows bench/runner.py and its peer share: throughput from `since` (the run's start)
    to the last run's end, the run's named `marks` (milliseconds from its start, the last
    run's end last), the runs alone, and the CPU seconds a task."""
    names, moments = marks
    rate = tasks / (moments[-1] / 1000)
    print(
        f"| throughput ({since} → the last run's end) | {rate:.0f} tasks/s "
        f"({2 * rate:.0f} transitions/s) |"
    )
    print(f"| of the run: {names} | {' / '.join(f'{ms:.0f}' for ms in moments)} ms |")
    print(f"| runs only (first start → last end) | {tasks / running_seconds:.0f} tasks/s |")
    print(f"| worker CPU per task | {1000 * worker_cpu / tasks:.2f} ms |")
    print(
        f"| PostgreSQL CPU per task (backends open at the start) | "
        f"{1000 * server_cpu / tasks:.2f} ms |"
    )


def print_latency_rows(latencies: list[float]) -> None:
    """commit → start p50 and p99, and the slowest samples with their place in the run."""
    print(f"| commit → start p50 | {statistics.median(latencies):.1f} ms |")
    print(f"| commit → start p99 | {percentile(latencies, 0.99):.1f} ms |")
    slowest = sorted(range(len(latencies)), key=lambda n: latencies[n])[-3:]
    print(
        "| slowest samples (their order in the run) | "
        + ", ".join(f"#{n + 1}: {latencies[n]:.1f} ms" for n in reversed(slowest))
        + " |"
    )


def npm_ci(directory: Path) -> None:
    """Install exactly `directory`'s package-lock.json (`npm ci` fails if package.json
    disagrees with it). npm's progress goes to stderr with the benchmark's own: stdout holds
    only the tables."""
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"],
        cwd=directory,
        stdout=sys.stderr,
        check=True,
        timeout=600,
    )


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
