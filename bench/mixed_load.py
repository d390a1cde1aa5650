"""Mixed load: tree reads, createIssue and task actions from many clients at once.

    python bench/mixed_load.py [--clients 50] [--seconds 60] [--mix 70 20 10] [--processes 2]
        [--read plain|page] [--tasks-per-stage 25] [--database conveyor_bench_mixed] [--keep]

Clones the data set of tree_seed.py (seeded once) into a database of its own, since the load
adds pipelines and changes statuses, starts one `conveyor serve` on it (no worker, rate limits
off, a DBA token on every request), then runs --clients closed-loop clients for --seconds. Each
client sends, at random by --mix: a tree read of one of the seeded 100-task pipelines (the
plain read, or with --read page the pipeline page: tree_queries.py), a createIssue of the
seeded pipelines' shape (4 stages of --tasks-per-stage tasks), or a task action on a
production task of its own (approve, cancel, retry in a cycle that is valid forever, and skip
on a task not yet used). The clients are asyncio httpx clients spread over --processes
processes, so that the load generator is not the bottleneck: the report gives each process's
CPU share beside the server's.
"""

import argparse
import asyncio
import concurrent.futures
import contextlib
import itertools
import json
import multiprocessing
import random
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
import uvloop

import tree_seed
from common import admin_fetch, percentile, server_url, with_database
from tree_queries import Case, relay_id
from tree_servers import REQUEST_TIMEOUT_SECONDS, post, running

DEFAULT_DATABASE = "conveyor_bench_mixed"
#: Seconds the processes get to start and warm up before the clients begin, all at once.
START_DELAY_SECONDS = 10.0
#: A client's own production tasks: enough for one action a second for the whole run.
TASKS_PER_CLIENT = 100
#: Attempts at cloning the data set while another session is connected to it.
CLONE_ATTEMPTS = 10

CREATE_ISSUE = "mutation($input: CreateIssueInput!) { createIssue(input: $input) { id } }"
#: The cycle each action client walks its tasks through: from a MANUAL environment's gate,
#: PENDING_APPROVAL -> PENDING -> CANCELED -> PENDING_APPROVAL, valid however long the run.
CYCLE = {
    "PENDING_APPROVAL": ("approveTask", "PENDING"),
    "PENDING": ("cancelTask", "CANCELED"),
    "CANCELED": ("retryTask", "PENDING_APPROVAL"),
}
#: The share of actions that skip a task the client has not touched yet (SKIPPED is final).
SKIP_SHARE = 0.25
ACTION = "mutation($input: %s!) { %s(input: $input) { id status } }"
ACTION_INPUTS = {
    "approveTask": "TaskActionInput",
    "cancelTask": "TaskActionInput",
    "retryTask": "TaskActionInput",
    "skipTask": "SkipTaskInput",
}
KINDS = ("tree read", "createIssue", *ACTION_INPUTS)


@dataclass(frozen=True)
class Workload:
    """What every client may send: everything but its own tasks."""

    url: str
    headers: dict[str, str]
    read_bodies: list[bytes]
    #: For each stage of a new issue: its environment and (instance, database) targets.
    stages: list[tuple[str, list[tuple[str, str]]]]
    tasks_per_stage: int
    #: Percentages of reads, createIssue and actions.
    mix: tuple[int, int, int]


@dataclass(frozen=True)
class ClientPlan:
    number: int
    #: Production tasks only this client acts on, all PENDING_APPROVAL at the start.
    task_ids: list[str]


@dataclass
class ProcessResult:
    #: (kind, seconds, ok) of every request answered before the deadline.
    samples: list[tuple[str, float, bool]] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0


class Client:
    def __init__(self, workload: Workload, plan: ClientPlan, http: httpx.AsyncClient) -> None:
        self.workload = workload
        self.http = http
        self.random = random.Random(plan.number)
        self.number = plan.number
        # Half the tasks cycle, the other half are skipped one by one.
        half = len(plan.task_ids) // 2
        self.cycling = {task_id: "PENDING_APPROVAL" for task_id in plan.task_ids[:half]}
        self.turn = itertools.cycle(plan.task_ids[:half])
        #: The task the cycle acts on, until it is back at PENDING_APPROVAL.
        self.current = next(self.turn)
        self.to_skip = list(plan.task_ids[half:])
        self.issues = 0

    def next_request(self) -> tuple[str, bytes, str | None]:
        """The next request's kind, body, and for a cycling action its task."""
        reads, creates, _ = self.workload.mix
        draw = self.random.uniform(0, 100)
        if draw < reads:
            return "tree read", self.random.choice(self.workload.read_bodies), None
        if draw < reads + creates:
            return "createIssue", self.create_issue_body(), None
        if self.random.random() < SKIP_SHARE and self.to_skip:
            task_id = self.to_skip.pop()
            variables = {"input": {"taskId": task_id, "reason": "mixed load"}}
            return "skipTask", action_body("skipTask", variables), None
        mutation, _ = CYCLE[self.cycling[self.current]]
        variables = {"input": {"taskId": self.current}}
        return mutation, action_body(mutation, variables), self.current

    def acted(self, task_id: str) -> None:
        """The cycle's action on `task_id` succeeded: one step on, and to the next task once
        this one is back at its gate."""
        self.cycling[task_id] = CYCLE[self.cycling[task_id]][1]
        if self.cycling[task_id] == "PENDING_APPROVAL":
            self.current = next(self.turn)

    def create_issue_body(self) -> bytes:
        self.issues += 1
        stages = [
            {
                "environmentId": environment_id,
                "tasks": [
                    {
                        "type": "SCHEMA_UPDATE",
                        "instanceId": instance_id,
                        "databaseId": database_id,
                        "statement": f"ALTER TABLE orders_{n} ADD COLUMN note_{self.issues} text",
                    }
                    for n in range(self.workload.tasks_per_stage)
                    for instance_id, database_id in [self.random.choice(targets)]
                ],
            }
            for environment_id, targets in self.workload.stages
        ]
        title = f"mixed {self.number}-{self.issues}"
        payload = {
            "query": CREATE_ISSUE,
            "variables": {"input": {"title": title, "stages": stages}},
        }
        return json.dumps(payload).encode()

    async def send(self, body: bytes) -> str | None:
        """The request's error, or None if it was answered without one."""
        try:
            response = await self.http.post(
                self.workload.url,
                content=body,
                headers={"content-type": "application/json", **self.workload.headers},
            )
        except httpx.HTTPError as error:
            return f"{type(error).__name__}"
        if response.status_code != 200:
            return f"HTTP {response.status_code}"
        # Decoding a whole tree to find no error would be most of the client's work.
        if b'"errors"' not in response.content:
            return None
        errors = response.json().get("errors")
        if errors:
            return str(errors[0].get("extensions", {}).get("code") or errors[0]["message"])[:120]
        return None

    async def warm_up(self) -> None:
        """One uncounted read: the connection opened, the client's code paths run once."""
        await self.send(self.workload.read_bodies[self.number % len(self.workload.read_bodies)])

    async def run(self, start: float, deadline: float, result: ProcessResult) -> None:
        await asyncio.sleep(max(0.0, start - time.time()))
        while time.time() < deadline:
            kind, body, task_id = self.next_request()
            started = time.perf_counter()
            error = await self.send(body)
            elapsed = time.perf_counter() - started
            if task_id is not None and error is None:
                self.acted(task_id)
            # An answer that arrives after the deadline is left out, as wrk leaves it out.
            if time.time() <= deadline:
                result.samples.append((kind, elapsed, error is None))
                if error is not None:
                    key = f"{kind}: {error}"
                    result.errors[key] = result.errors.get(key, 0) + 1


def action_body(mutation: str, variables: dict[str, Any]) -> bytes:
    query = ACTION % (ACTION_INPUTS[mutation], mutation)
    return json.dumps({"query": query, "variables": variables}).encode()


async def run_process(
    workload: Workload, plans: list[ClientPlan], start: float, deadline: float
) -> ProcessResult:
    result = ProcessResult()
    limits = httpx.Limits(max_connections=len(plans), max_keepalive_connections=len(plans))
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_SECONDS, limits=limits) as http:
        clients = [Client(workload, plan, http) for plan in plans]
        await asyncio.gather(*(client.warm_up() for client in clients))
        cpu_before, wall_before = time.process_time(), time.perf_counter()
        await asyncio.gather(*(client.run(start, deadline, result) for client in clients))
        result.cpu_seconds = time.process_time() - cpu_before
        result.wall_seconds = time.perf_counter() - wall_before
    return result


def process_main(
    workload: Workload, plans: list[ClientPlan], start: float, deadline: float
) -> ProcessResult:
    """One load process: its clients on one event loop."""
    return uvloop.run(run_process(workload, plans, start, deadline))


async def clone_data_set(name: str) -> str:
    """A fresh copy of the seeded data set under `name`; its URL."""
    await tree_seed.ensure_seeded(tree_seed.DEFAULT_DATABASE)
    await admin_fetch(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    for attempt in range(CLONE_ATTEMPTS):
        try:
            await admin_fetch(f'CREATE DATABASE "{name}" TEMPLATE "{tree_seed.DEFAULT_DATABASE}"')
            break
        except asyncpg.ObjectInUseError:
            # Another benchmark reads the data set right now; a template must be idle.
            print(f"the data set is in use, retrying ({attempt + 1})", file=sys.stderr)
            await asyncio.sleep(3)
    else:
        raise SystemExit(f"could not clone {tree_seed.DEFAULT_DATABASE}: it stays in use")
    return with_database(server_url(), name)


async def workload_data(
    database_url: str, clients: int
) -> tuple[list[int], list[tuple[str, list[tuple[str, str]]]], list[list[str]]]:
    """The 100-task pipelines to read, each stage's targets, and each client's tasks."""
    connection = await asyncpg.connect(database_url)
    try:
        pipelines = await connection.fetch(
            "SELECT p.id FROM pipeline p JOIN stage s ON s.pipeline_id = p.id "
            "GROUP BY p.id HAVING count(*) = $1 ORDER BY p.id",
            tree_seed.STAGES,
        )
        targets = await connection.fetch(
            "SELECT e.id AS environment_id, i.id AS instance_id, d.id AS database_id "
            "FROM environment e JOIN instance i ON i.environment_id = e.id "
            'JOIN database d ON d.instance_id = i.id ORDER BY e."order", i.id, d.id'
        )
        # Production tasks of the newest small pipelines: waiting for approval, in a MANUAL
        # environment; the large pipeline's are left alone (tree_reads reads it).
        tasks = await connection.fetch(
            "SELECT t.id FROM task t JOIN stage s ON s.id = t.stage_id "
            "JOIN environment e ON e.id = s.environment_id "
            "WHERE e.approval_policy = 'MANUAL' AND t.status = 'PENDING_APPROVAL' "
            "AND t.pipeline_id <> (SELECT p.id FROM pipeline p JOIN issue i ON i.id = p.issue_id "
            "WHERE i.title = $1) ORDER BY t.id DESC LIMIT $2",
            tree_seed.LARGE_TITLE,
            clients * TASKS_PER_CLIENT,
        )
    finally:
        await connection.close()
    by_environment: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for row in targets:
        by_environment[row["environment_id"]].append(
            (relay_id("Instance", row["instance_id"]), relay_id("Database", row["database_id"]))
        )
    stages = [
        (relay_id("Environment", environment_id), by_environment[environment_id])
        for environment_id in by_environment
    ]
    task_ids = [relay_id("Task", row["id"]) for row in tasks]
    if len(task_ids) < clients * TASKS_PER_CLIENT:
        raise SystemExit("the data set has too few production tasks waiting for approval")
    per_client = [
        task_ids[n * TASKS_PER_CLIENT : (n + 1) * TASKS_PER_CLIENT] for n in range(clients)
    ]
    return [row["id"] for row in pipelines], stages, per_client


@dataclass(frozen=True)
class Row:
    label: str
    count: int
    per_second: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int


def rows(samples: list[tuple[str, float, bool]], seconds: float) -> list[Row]:
    groups: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    for kind, elapsed, ok in samples:
        groups[kind].append((elapsed, ok))
        if kind in ACTION_INPUTS:
            groups["actions, all"].append((elapsed, ok))
        groups["all"].append((elapsed, ok))
    result = []
    for label in (*KINDS, "actions, all", "all"):
        group = groups.get(label, [])
        times = [elapsed for elapsed, _ in group]
        result.append(
            Row(
                label,
                len(group),
                len(group) / seconds,
                1000 * percentile(times, 0.5) if times else None,
                1000 * percentile(times, 0.99) if times else None,
                sum(1 for _, ok in group if not ok),
            )
        )
    return result


def milliseconds(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def report(
    args: argparse.Namespace,
    results: list[ProcessResult],
    server_cpu_seconds: float,
    read_label: str,
) -> str:
    samples = [sample for result in results for sample in result.samples]
    labels = {"tree read": read_label, "createIssue": f"createIssue (4 x {args.tasks_per_stage})"}
    lines = [
        "| operation | count | req/s | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows(samples, args.seconds):
        lines.append(
            f"| {labels.get(row.label, row.label)} | {row.count:,} | {row.per_second:.1f} "
            f"| {milliseconds(row.p50_ms)} | {milliseconds(row.p99_ms)} | {row.errors} |"
        )
    total = max(1, len(samples))
    sent = ", ".join(
        f"{name} {100 * sum(1 for kind, _, _ in samples if kind in kinds) / total:.0f}%"
        for name, kinds in (
            ("reads", {"tree read"}),
            ("createIssue", {"createIssue"}),
            ("actions", set(ACTION_INPUTS)),
        )
    )
    client_shares = ", ".join(
        f"{100 * result.cpu_seconds / result.wall_seconds:.0f}%" for result in results
    )
    client_cpu_ms = 1000 * sum(result.cpu_seconds for result in results) / total
    lines += [
        "",
        f"{args.clients} clients for {args.seconds} s, mix asked {args.mix[0]}/{args.mix[1]}/"
        f"{args.mix[2]}, sent: {sent}. Load processes' CPU (share of one CPU each): "
        f"{client_shares} ({client_cpu_ms:.2f} ms per request); the server's: "
        f"{100 * server_cpu_seconds / args.seconds:.0f}%.",
    ]
    errors: dict[str, int] = defaultdict(int)
    for result in results:
        for key, count in result.errors.items():
            errors[key] += count
    if errors:
        lines += ["", "Errors by kind and code:"]
        lines += [f"- {key}: {count}" for key, count in sorted(errors.items())]
    return "\n".join(lines)


@contextlib.asynccontextmanager
async def cloned(name: str, keep: bool) -> AsyncIterator[str]:
    url = await clone_data_set(name)
    try:
        yield url
    finally:
        if not keep:
            await admin_fetch(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument(
        "--mix", type=int, nargs=3, default=[70, 20, 10], help="percent reads, creates, actions"
    )
    parser.add_argument("--processes", type=int, default=2, help="load processes")
    parser.add_argument("--read", choices=["plain", "page"], default="plain")
    parser.add_argument("--tasks-per-stage", type=int, default=tree_seed.TASKS_PER_STAGE)
    parser.add_argument("--database", default=DEFAULT_DATABASE)
    parser.add_argument("--keep", action="store_true", help="keep the cloned database")
    args = parser.parse_args()
    if sum(args.mix) != 100:
        raise SystemExit("--mix must add up to 100")
    async with cloned(args.database, args.keep) as database_url:
        pipeline_ids, stages, tasks = await workload_data(database_url, args.clients)
        read_bodies = [
            Case("", pipeline_id, page=args.read == "page").body("conveyor")
            for pipeline_id in pipeline_ids
        ]
        with tempfile.TemporaryDirectory(prefix="conveyor-bench-mixed-") as temporary:
            async with (
                running(["conveyor"], database_url, Path(temporary), {}, "DBA") as servers,
                httpx.AsyncClient(timeout=REQUEST_TIMEOUT_SECONDS) as http,
            ):
                server = servers["conveyor"]
                for body in read_bodies[:3]:
                    await post(http, server, body)
                workload = Workload(
                    server.url,
                    server.headers,
                    read_bodies,
                    stages,
                    args.tasks_per_stage,
                    (args.mix[0], args.mix[1], args.mix[2]),
                )
                plans = [ClientPlan(n, tasks[n]) for n in range(args.clients)]
                start = time.time() + START_DELAY_SECONDS
                deadline = start + args.seconds
                server_process = psutil.Process(server.process.pid)
                loop = asyncio.get_running_loop()
                with concurrent.futures.ProcessPoolExecutor(
                    args.processes, mp_context=multiprocessing.get_context("spawn")
                ) as pool:
                    futures = [
                        loop.run_in_executor(
                            pool,
                            process_main,
                            workload,
                            plans[n :: args.processes],
                            start,
                            deadline,
                        )
                        for n in range(args.processes)
                    ]
                    await asyncio.sleep(max(0.0, start - time.time()))
                    cpu_before = server_process.cpu_times()
                    await asyncio.sleep(max(0.0, deadline - time.time()))
                    cpu_after = server_process.cpu_times()
                    results = await asyncio.gather(*futures)
    server_cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    read_label = (
        f"tree read ({'pipeline page' if args.read == 'page' else 'plain'}, "
        f"{tree_seed.STAGES * tree_seed.TASKS_PER_STAGE} tasks)"
    )
    print(report(args, results, server_cpu, read_label))


if __name__ == "__main__":
    asyncio.run(main())
