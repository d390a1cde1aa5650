"""Nested-tree reads over HTTP: Conveyor beside the limit, and PostGraphile, on the same data.

    python bench/tree_reads.py [--database conveyor_bench_tree] [--reseed] [--seconds 10]
        [--clients 1 4 16] [--no-postgraphile] [--profile-seconds 0] [--profile-output FILE]

Seeds (once, see tree_seed.py) a data set on the server of CONVEYOR_BENCH_DATABASE_URL
(default postgresql://postgres@127.0.0.1:5432/postgres), then answers three reads of the same
shape (pipeline, stages, their environment, tasks, their instance and database) from three
servers, each one process on loopback:

- Conveyor: `conveyor serve` with CONVEYOR_LOG_LEVEL=warning, CONVEYOR_RUN_WORKER=false;
- the limit: bench/tree_limit.py, one SQL query that builds the response JSON, no GraphQL;
- PostGraphile 4 (npm, installed into bench/.postgraphile on first use; skipped without node).

It first runs each server through a loopback proxy that counts the statements and round trips
each request sends to PostgreSQL (wire_count.py) and checks the responses are equivalent, then
runs each directly under `wrk` (bench/tree_post.lua) at each number of clients.
"""

import argparse
import asyncio
import json
import math
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import asyncpg
import httpx
import psutil

import tree_seed
from common import server_url, with_database
from tree_profile import py_spy_record, summarize_profile
from tree_queries import LABELS, PAGE_SIZE, SHAPES, Case, Shape, normalized, task_count
from tree_servers import (
    BENCH_DIR,
    REQUEST_TIMEOUT_SECONDS,
    Server,
    ensure_postgraphile,
    post,
    running,
)
from wire_count import WireCounts, counting_proxy

WRK_SCRIPT = BENCH_DIR / "tree_post.lua"
SMALL_TITLE = "bench 500"
#: Requests each server answers before it is counted or measured (caches, JIT, pools).
WARM_UP_REQUESTS = 3
#: A pool resets a connection after the response may have left: wait for it before reading.
SETTLE_SECONDS = 0.3
#: A run lasts --seconds, or longer for a slow server: long enough for this many answers,
#: and for this many answers per client ...
MIN_REQUESTS = 20
ROUNDS = 3
#: ... but no longer than this.
MAX_RUN_SECONDS = 120


@dataclass(frozen=True)
class Counted:
    counts: WireCounts
    tasks: int
    #: The same content as the limit's response.
    equivalent: bool
    #: The same JSON as the limit's, ids and all (for servers of the limit's shape).
    identical: bool


async def count_statements(
    names: list[str], cases: list[Case], database_url: str, work_dir: Path
) -> dict[tuple[str, str], Counted]:
    """Each server's statements and round trips per request, and whether it answers alike."""
    address = urlparse(database_url)
    results: dict[tuple[str, str], Counted] = {}
    async with (
        counting_proxy(address.hostname or "127.0.0.1", address.port or 5432) as (port, proxy),
        httpx.AsyncClient(timeout=REQUEST_TIMEOUT_SECONDS) as client,
    ):
        user_info = address.netloc.rpartition("@")[0]
        proxied_url = urlunparse(address._replace(netloc=f"{user_info}@127.0.0.1:{port}"))
        # The hub's safety-net poll would be counted as the request's: poll once an hour here.
        async with running(
            names, proxied_url, work_dir, {"CONVEYOR_EVENT_POLL_SECONDS": "3600"}
        ) as servers:
            expected: dict[str, list[Any]] = {}
            expected_data: dict[tuple[Shape, str], dict[str, Any]] = {}
            for case in cases:
                for name in names:
                    server = servers[name]
                    body = case.body(name)
                    for _ in range(WARM_UP_REQUESTS):
                        await post(client, server, body)
                    await asyncio.sleep(SETTLE_SECONDS)
                    proxy.reset()
                    data = await post(client, server, body)
                    await asyncio.sleep(SETTLE_SECONDS)
                    counts = proxy.reset()
                    tree = normalized(data, SHAPES[name])
                    expected.setdefault(case.name, tree)
                    # Conveyor and the limit share one shape: their JSON must match exactly.
                    expected_data.setdefault((SHAPES[name], case.name), data)
                    results[(name, case.name)] = Counted(
                        counts,
                        task_count(tree),
                        tree == expected[case.name],
                        data == expected_data[(SHAPES[name], case.name)],
                    )
    return results


@dataclass(frozen=True)
class Load:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    server_cpu_ms_per_request: float
    wrk_cpu_share: float

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds


async def run_wrk(server: Server, body_path: Path, clients: int, seconds: int) -> Load:
    """`wrk` with one thread and `clients` connections POSTing the body for `seconds`."""
    server_process = psutil.Process(server.process.pid)
    cpu_before = server_process.cpu_times()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    wrk = await asyncio.create_subprocess_exec(
        "wrk",
        "-t1",
        f"-c{clients}",
        f"-d{seconds}s",
        f"--timeout={REQUEST_TIMEOUT_SECONDS:.0f}s",
        "-s",
        str(WRK_SCRIPT),
        server.url,
        env={
            **os.environ,
            "BENCH_BODY_FILE": str(body_path),
            "BENCH_AUTHORIZATION": server.headers.get("Authorization", ""),
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(wrk.communicate(), seconds + REQUEST_TIMEOUT_SECONDS + 30)
    wall = time.perf_counter() - started
    if wrk.returncode != 0:
        raise RuntimeError(f"wrk failed: {err.decode()}")
    cpu_after = server_process.cpu_times()
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = json.loads(out.decode().strip().splitlines()[-1])
    requests = max(1, summary["requests"])
    server_cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    wrk_cpu = (children_after.ru_utime - children_before.ru_utime) + (
        children_after.ru_stime - children_before.ru_stime
    )
    return Load(
        requests=summary["requests"],
        seconds=summary["duration_us"] / 1e6,
        p50_ms=summary["p50_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
        errors=summary["non_2xx"] + summary["socket_errors"],
        server_cpu_ms_per_request=1000 * server_cpu / requests,
        wrk_cpu_share=wrk_cpu / wall,
    )


async def measure(
    names: list[str],
    cases: list[Case],
    clients: list[int],
    seconds: int,
    database_url: str,
    work_dir: Path,
    profile: Callable[[Server, Path], Any] | None,
) -> dict[tuple[str, str, int], Load]:
    results: dict[tuple[str, str, int], Load] = {}
    async with (
        running(names, database_url, work_dir, {}) as servers,
        httpx.AsyncClient(timeout=REQUEST_TIMEOUT_SECONDS) as client,
    ):
        for case in cases:
            for name in names:
                body_path = work_dir / f"{name}-{case.name}.json"
                body_path.write_bytes(case.body(name))
                started = time.perf_counter()
                for _ in range(WARM_UP_REQUESTS):
                    await post(client, servers[name], body_path.read_bytes())
                latency = (time.perf_counter() - started) / WARM_UP_REQUESTS
                for count in clients:
                    # A single process answers about one request per `latency` however many
                    # clients wait, and wrk drops the answers still in flight when it stops: run
                    # long enough for MIN_REQUESTS answers and ROUNDS per client.
                    answers = max(MIN_REQUESTS, ROUNDS * count)
                    duration = max(seconds, min(MAX_RUN_SECONDS, math.ceil(answers * latency)))
                    load = await run_wrk(servers[name], body_path, count, duration)
                    results[(name, case.name, count)] = load
                    print(
                        f"  {name:12} {case.name:28} clients {count:3}: p50 {load.p50_ms:8.1f} ms "
                        f"p99 {load.p99_ms:8.1f} ms {load.per_second:8.1f} req/s",
                        file=sys.stderr,
                    )
        if profile is not None:
            await profile(servers["conveyor"], work_dir / f"conveyor-{cases[-1].name}.json")
    return results


async def record_profile(server: Server, body_path: Path, seconds: int, output: Path) -> None:
    """py-spy on Conveyor while one client reads the body in a loop."""
    wrk = asyncio.create_task(run_wrk(server, body_path, 1, seconds + 4))
    await asyncio.sleep(1)
    await py_spy_record(server.process.pid, seconds, output)
    await wrk


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory = psutil.virtual_memory().total / 2**30
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {memory:.1f} GiB RAM, Python {platform.python_version()}"
    )


async def find_cases(database_url: str) -> list[Case]:
    connection = await asyncpg.connect(database_url)
    try:
        small = await connection.fetchval(
            "SELECT p.id FROM pipeline p JOIN issue i ON i.id = p.issue_id WHERE i.title = $1",
            SMALL_TITLE,
        )
        large = await connection.fetchval(
            "SELECT p.id FROM pipeline p JOIN issue i ON i.id = p.issue_id WHERE i.title = $1",
            tree_seed.LARGE_TITLE,
        )
        server_version = await connection.fetchval("SHOW server_version")
    finally:
        await connection.close()
    print(f"PostgreSQL {server_version}", file=sys.stderr)
    small_tasks = tree_seed.STAGES * tree_seed.TASKS_PER_STAGE
    large_tasks = tree_seed.LARGE_STAGES * tree_seed.LARGE_TASKS_PER_STAGE
    return [
        Case(f"1 pipeline, {small_tasks} tasks", small),
        Case(f"{PAGE_SIZE} pipelines, {PAGE_SIZE * small_tasks:,} tasks", None),
        Case(f"1 pipeline, {large_tasks:,} tasks", large),
    ]


def ms(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def ratios(load: Load, limit: Load) -> str:
    """How many times the limit's p50 latency, and what fraction of its throughput."""
    if load.requests == 0:
        return "n/a (no answer within the run)"
    return f"x{load.p50_ms / limit.p50_ms:.1f}, x{load.per_second / limit.per_second:.2f}"


def same_content(name: str, result: Counted) -> str:
    if name == "limit":
        return "(the reference)"
    if not result.equivalent:
        return "**NO**"
    if SHAPES[name] is not SHAPES["limit"]:
        return "yes"
    return "yes, identical JSON" if result.identical else "**same content, other JSON**"


def report(
    names: list[str],
    cases: list[Case],
    clients: list[int],
    counted: dict[tuple[str, str], Counted],
    loads: dict[tuple[str, str, int], Load],
) -> str:
    has_postgraphile = "postgraphile" in names
    header = (
        "| case | clients | limit p50 / p99 ms | limit req/s | Conveyor p50 / p99 ms "
        "| Conveyor req/s (answers in the run) | Conveyor ÷ limit (p50, req/s) "
        "| Conveyor CPU ms/req |"
    )
    rule = "|---|---|---|---|---|---|---|---|"
    if has_postgraphile:
        header += (
            " PostGraphile ÷ limit (p50, req/s) | PostGraphile p50 / p99 ms | PostGraphile req/s |"
        )
        rule += "---|---|---|"
    lines = [header, rule]
    for case in cases:
        for count in clients:
            limit = loads[("limit", case.name, count)]
            conveyor = loads[("conveyor", case.name, count)]
            row = (
                f"| {case.name} | {count} | {ms(limit.p50_ms)} / {ms(limit.p99_ms)} "
                f"| {limit.per_second:.0f} | {ms(conveyor.p50_ms)} / {ms(conveyor.p99_ms)} "
                f"| {conveyor.per_second:.1f} ({conveyor.requests} in {conveyor.seconds:.0f} s) "
                f"| {ratios(conveyor, limit)} | {conveyor.server_cpu_ms_per_request:.0f} |"
            )
            if has_postgraphile:
                other = loads[("postgraphile", case.name, count)]
                row += (
                    f" {ratios(other, limit)} | {ms(other.p50_ms)} / {ms(other.p99_ms)} "
                    f"| {other.per_second:.0f} |"
                )
            lines.append(row)
    lines += [
        "",
        "| case | server | tasks in the response | same content as the limit | SQL statements "
        "| round trips | of which pool resets | statements prepared (Parse) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        for name in names:
            result = counted[(name, case.name)]
            resets = sum(1 for text in result.counts.texts if "RESET ALL" in text.upper())
            lines.append(
                f"| {case.name} | {LABELS[name]} | {result.tasks:,} "
                f"| {same_content(name, result)} | {result.counts.statements} "
                f"| {result.counts.round_trips} | {resets} | {result.counts.parses} |"
            )
    errors = sum(load.errors for load in loads.values())
    wrk_share = max(load.wrk_cpu_share for load in loads.values())
    lines += [
        "",
        f"Errors (non-2xx or socket) across all runs: {errors}. `wrk` used at most "
        f"{100 * wrk_share:.0f}% of one CPU in any run.",
    ]
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", default=tree_seed.DEFAULT_DATABASE)
    parser.add_argument("--reseed", action="store_true")
    parser.add_argument("--seconds", type=int, default=10, help="per wrk run")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--no-postgraphile", action="store_true")
    parser.add_argument("--profile-seconds", type=int, default=0)
    parser.add_argument("--profile-output", type=Path, default=None)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")
    seeded_in = await tree_seed.ensure_seeded(args.database, reseed=args.reseed)
    print(
        "data set already seeded" if seeded_in is None else f"seeded in {seeded_in:.0f} s",
        file=sys.stderr,
    )
    database_url = with_database(server_url(), args.database)
    names = ["limit", "conveyor"]
    skipped = None if args.no_postgraphile else ensure_postgraphile()
    if args.no_postgraphile:
        skipped = "PostGraphile skipped (--no-postgraphile)"
    if skipped is None:
        names.append("postgraphile")
    else:
        print(skipped, file=sys.stderr)
    cases = await find_cases(database_url)
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-tree-") as temporary:
        work_dir = Path(temporary)
        print("counting statements through the proxy ...", file=sys.stderr)
        counted = await count_statements(names, cases, database_url, work_dir)
        profile_output = args.profile_output or work_dir / "conveyor-profile.txt"

        async def profile(server: Server, body_path: Path) -> None:
            await record_profile(server, body_path, args.profile_seconds, profile_output)

        print("measuring with wrk ...", file=sys.stderr)
        loads = await measure(
            names,
            cases,
            args.clients,
            args.seconds,
            database_url,
            work_dir,
            profile if args.profile_seconds > 0 else None,
        )
        print(f"\nMachine: {machine()}. Data set: {tree_seed.SHAPE}.\n")
        print(report(names, cases, args.clients, counted, loads))
        if skipped is not None:
            print(f"\n{skipped}.")
        if args.profile_seconds > 0:
            print(f"\nProfile of Conveyor, {cases[-1].name}, one client ({profile_output}):\n")
            print(summarize_profile(profile_output, args.profile_seconds))


if __name__ == "__main__":
    asyncio.run(main())
