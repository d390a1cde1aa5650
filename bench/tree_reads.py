"""Nested-tree reads over HTTP: Conveyor beside the limit and PostGraphile, in one run.

    python bench/tree_reads.py [--database conveyor_bench_tree] [--reseed] [--seconds 10]
        [--clients 1 4 16] [--min-answers 20] [--no-postgraphile] [--no-page] [--small-only]
        [--profile-seconds 0] [--profile-output FILE] [--profile-case TEXT]

Seeds (once, see tree_seed.py) a data set on the server of CONVEYOR_BENCH_DATABASE_URL
(default postgresql://postgres@127.0.0.1:5432/postgres), then answers three reads of the same
shape (pipeline, stages, their environment, tasks, their instance and database) from three
servers, each one process on loopback:

- Conveyor: `conveyor serve` with CONVEYOR_LOG_LEVEL=warning, CONVEYOR_RUN_WORKER=false;
- the limit: bench/tree_limit.py, one SQL query that builds the response JSON, no GraphQL;
- PostGraphile 4.14.1 (pinned by bench/postgraphile/package-lock.json, installed with `npm ci`
  into bench/.postgraphile; skipped, and said so, without node).

Then Conveyor alone answers the pipeline page (the plain read plus the derived fields a page
shows) of the 100-task and the 5,000-task pipelines, beside its plain read of each.

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

import httpx
import psutil

import tree_seed
from common import server_url, with_database
from tree_profile import py_spy_record, summarize_profile
from tree_queries import Case, find_cases, plain_case
from tree_servers import (
    BENCH_DIR,
    REQUEST_TIMEOUT_SECONDS,
    Server,
    ensure_postgraphile,
    post,
    postgraphile_version,
    running,
)
from wire_count import WARM_UP_REQUESTS, Counted, count_statements, counts_table

WRK_SCRIPT = BENCH_DIR / "tree_post.lua"
#: A run lasts --seconds, or longer for a slow server: long enough for --min-answers answers,
#: and for this many answers per client ...
ROUNDS = 3
#: Issue 11's goals: Conveyor's p50 at most this many times the limit's ...
GOAL_P50_OVER_LIMIT = 1.5
#: ... its throughput at least this many times PostGraphile's ...
GOAL_THROUGHPUT_OVER_POSTGRAPHILE = 2.0
#: ... and the pipeline page's p50 at most this many times the plain read's.
GOAL_PAGE_OVER_PLAIN = 2.0
#: ... but no longer than this.
MAX_RUN_SECONDS = 120


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
    min_answers: int,
    database_url: str,
    work_dir: Path,
    profile: Callable[[Server, Path], Any] | None,
    profile_case: Case | None = None,
) -> dict[tuple[str, str, int], Load]:
    results: dict[tuple[str, str, int], Load] = {}
    async with (
        running(names, database_url, work_dir, {}) as servers,
        httpx.AsyncClient(timeout=REQUEST_TIMEOUT_SECONDS) as client,
    ):
        for case in cases:
            for name in case.servers(names):
                body_path = work_dir / f"{name}-{case.name}.json"
                body_path.write_bytes(case.body(name))
                started = time.perf_counter()
                for _ in range(WARM_UP_REQUESTS):
                    await post(client, servers[name], body_path.read_bytes())
                latency = (time.perf_counter() - started) / WARM_UP_REQUESTS
                for count in clients:
                    # A single process answers about one request per `latency` however many
                    # clients wait, and wrk drops the answers still in flight when it stops: run
                    # long enough for min_answers answers and ROUNDS per client.
                    answers = max(min_answers, ROUNDS * count)
                    duration = max(seconds, min(MAX_RUN_SECONDS, math.ceil(answers * latency)))
                    load = await run_wrk(servers[name], body_path, count, duration)
                    results[(name, case.name, count)] = load
                    print(
                        f"  {name:12} {case.name:28} clients {count:3}: p50 {load.p50_ms:8.1f} ms "
                        f"p99 {load.p99_ms:8.1f} ms {load.per_second:8.1f} req/s",
                        file=sys.stderr,
                    )
        if profile is not None:
            assert profile_case is not None
            await profile(servers["conveyor"], work_dir / f"conveyor-{profile_case.name}.json")
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


def profiled(cases: list[Case], name: str | None = None) -> Case:
    """The read the profile records: the case whose name holds `name`, else the largest
    plain read (the 5,000-task tree)."""
    if name is not None:
        return next(case for case in cases if name in case.name)
    return [case for case in cases if not case.page][-1]


def ms(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def per_second(load: Load) -> str:
    return f"{load.per_second:.1f}" if load.per_second < 100 else f"{load.per_second:.0f}"


def latency(load: Load | None) -> str:
    return "n/a" if load is None else f"{ms(load.p50_ms)} / {ms(load.p99_ms)}"


def answered(load: Load) -> str:
    """Throughput, and how many answers it rests on."""
    return f"{per_second(load)} ({load.requests} in {load.seconds:.0f} s)"


def times(value: float | None) -> str:
    return "n/a" if value is None else f"x{value:.2f}" if value < 10 else f"x{value:.1f}"


def p50_ratio(load: Load, reference: Load) -> float | None:
    return None if load.requests == 0 else load.p50_ms / reference.p50_ms


def throughput_ratio(load: Load, reference: Load | None) -> float | None:
    if reference is None or reference.requests == 0:
        return None
    return load.per_second / reference.per_second


def verdict(*met: bool | None) -> str:
    if any(goal is None for goal in met):
        return "n/a"
    return "yes" if all(met) else "**no**"


NO_PAGE_FOR_OTHERS = (
    "The limit and PostGraphile do not answer the pipeline page: they have no derived fields "
    "(stage status and taskCounts, activeStage, waitingReason, availableActions); the page is "
    "compared with Conveyor's own plain read of the same pipeline."
)


def plain_table(
    cases: list[Case], clients: list[int], loads: dict[tuple[str, str, int], Load]
) -> str:
    """The plain reads: each server's p50 and throughput, and issue 11's two ratios."""
    lines = [
        "| case | clients | limit p50 / p99 ms | limit req/s | Conveyor p50 / p99 ms "
        "| Conveyor req/s (answers in the run) | Conveyor CPU ms/req "
        "| PostGraphile p50 / p99 ms | PostGraphile req/s "
        f"| Conveyor p50 ÷ limit p50 (goal ≤ {GOAL_P50_OVER_LIMIT}) "
        f"| Conveyor req/s ÷ PostGraphile req/s (goal ≥ {GOAL_THROUGHPUT_OVER_POSTGRAPHILE:.0f}) "
        "| goals met |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        if case.page:
            continue
        for count in clients:
            limit = loads[("limit", case.name, count)]
            conveyor = loads[("conveyor", case.name, count)]
            other = loads.get(("postgraphile", case.name, count))
            over_limit = p50_ratio(conveyor, limit)
            over_other = throughput_ratio(conveyor, other)
            goals = verdict(
                None if over_limit is None else over_limit <= GOAL_P50_OVER_LIMIT,
                None if over_other is None else over_other >= GOAL_THROUGHPUT_OVER_POSTGRAPHILE,
            )
            lines.append(
                f"| {case.name} | {count} | {latency(limit)} | {per_second(limit)} "
                f"| {latency(conveyor)} | {answered(conveyor)} "
                f"| {conveyor.server_cpu_ms_per_request:.0f} "
                f"| {latency(other)} | {'n/a' if other is None else per_second(other)} "
                f"| {times(over_limit)} | {times(over_other)} "
                f"| {goals} |"
            )
    return "\n".join(lines)


def page_table(
    cases: list[Case], clients: list[int], loads: dict[tuple[str, str, int], Load]
) -> str:
    """The pipeline page beside Conveyor's plain read of the same pipeline."""
    lines = [
        "| case | clients | plain read p50 / p99 ms | plain read req/s "
        "| pipeline page p50 / p99 ms | pipeline page req/s (answers in the run) "
        f"| page CPU ms/req | page p50 ÷ plain p50 (goal ≤ {GOAL_PAGE_OVER_PLAIN:.0f}) "
        "| goal met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        if not case.page:
            continue
        for count in clients:
            plain = loads[("conveyor", plain_case(case, cases).name, count)]
            page = loads[("conveyor", case.name, count)]
            over_plain = p50_ratio(page, plain)
            lines.append(
                f"| {case.name} | {count} | {latency(plain)} | {per_second(plain)} "
                f"| {latency(page)} | {answered(page)} | {page.server_cpu_ms_per_request:.0f} "
                f"| {times(over_plain)} "
                f"| {verdict(None if over_plain is None else over_plain <= GOAL_PAGE_OVER_PLAIN)} |"
            )
    return "\n".join(lines)


def report(
    names: list[str],
    cases: list[Case],
    clients: list[int],
    counted: dict[tuple[str, str], Counted],
    loads: dict[tuple[str, str, int], Load],
) -> str:
    sections = [plain_table(cases, clients, loads)]
    if any(case.page for case in cases):
        sections += [page_table(cases, clients, loads), NO_PAGE_FOR_OTHERS]
    sections.append(counts_table(names, cases, counted))
    errors = sum(load.errors for load in loads.values())
    wrk_share = max(load.wrk_cpu_share for load in loads.values())
    sections.append(
        f"Errors (non-2xx or socket) across all runs: {errors}. `wrk` used at most "
        f"{100 * wrk_share:.0f}% of one CPU in any run."
    )
    return "\n\n".join(sections)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", default=tree_seed.DEFAULT_DATABASE)
    parser.add_argument("--reseed", action="store_true")
    parser.add_argument("--seconds", type=int, default=10, help="per wrk run")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument(
        "--min-answers", type=int, default=20, help="stretch a slow server's run to this many"
    )
    parser.add_argument("--no-postgraphile", action="store_true")
    parser.add_argument("--no-page", action="store_true", help="skip the pipeline page")
    parser.add_argument(
        "--small-only",
        action="store_true",
        help="only the reads of the 100-task pipeline (plain, and its page unless --no-page)",
    )
    parser.add_argument("--profile-seconds", type=int, default=0)
    parser.add_argument("--profile-output", type=Path, default=None)
    parser.add_argument(
        "--profile-case",
        default=None,
        help="profile the case whose name holds this text (default: the largest plain read)",
    )
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
    cases = [case for case in await find_cases(database_url) if not (args.no_page and case.page)]
    if args.small_only:
        cases = [case for case in cases if case.pipeline_id == cases[0].pipeline_id]
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
            args.min_answers,
            database_url,
            work_dir,
            profile if args.profile_seconds > 0 else None,
            profiled(cases, args.profile_case),
        )
        versions = "" if skipped is not None else f" PostGraphile {postgraphile_version()}."
        print(f"\nMachine: {machine()}. Data set: {tree_seed.SHAPE}.{versions}\n")
        print(report(names, cases, args.clients, counted, loads))
        if skipped is not None:
            print(f"\n{skipped}.")
        if args.profile_seconds > 0:
            print(
                f"\nProfile of Conveyor, {profiled(cases, args.profile_case).name}, one client "
                f"({profile_output}):\n"
            )
            print(summarize_profile(profile_output, args.profile_seconds))


if __name__ == "__main__":
    asyncio.run(main())
