"""Runner benchmark: task throughput through one worker process, and commit → start latency.

    python bench/runner.py [--tasks 400] [--samples 100] [--concurrency 8] [--workers 1]
        [--issues 1] [--targets 8] [--profile worker.txt]

With --profile, py-spy (`pip install py-spy`) samples the first worker during the throughput
run and writes collapsed stacks there (`--format raw`: one line per stack and its count).

Uses the PostgreSQL server of CONVEYOR_BENCH_DATABASE_URL (default: this machine's, at
postgresql://postgres@127.0.0.1:5432/postgres) both as Conveyor's database (a fresh one) and
as the target instance. Tasks are trivial `SELECT 1` data changes spread over several target
databases, so the numbers are the runner's own cost: claim, run, record, roll up.
"""

import argparse
import asyncio
import signal
import statistics
import subprocess
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.fernet import Fernet
from tortoise.context import TortoiseContext

from common import (
    BENCH,
    SAMPLE_POLL_SECONDS,
    admin_fetch,
    backends,
    cpu_seconds,
    percentile,
    print_latency_rows,
    print_runner_rows,
    server_url,
    with_database,
)
from conveyor.db import issues
from conveyor.db.config import tortoise_config
from conveyor.db.migrate import migrate_database
from conveyor.db.models import Event, Task, TaskRun
from conveyor.domain.plan import IssuePlan
from conveyor.domain.statuses import EventKind, TaskStatus
from runner_catalog import ready_workers, runner_catalog, worker_env


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=400)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--targets", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--issues", type=int, default=1, help="split the throughput run's tasks over this many"
    )
    parser.add_argument("--profile", default=None)
    args = parser.parse_args()
    run_id = uuid.uuid4().hex[:8]
    conveyor_db = f"conveyor_bench_{run_id}"
    targets = [f"conveyor_bench_target_{run_id}_{n}" for n in range(args.targets)]
    for name in [conveyor_db, *targets]:
        await admin_fetch(f'CREATE DATABASE "{name}"')
    database_url = with_database(server_url(), conveyor_db)
    key = Fernet.generate_key().decode()
    workers: list[subprocess.Popen[bytes]] = []
    profiler = None
    try:
        await migrate_database(database_url)
        async with TortoiseContext() as context:
            await context.init(config=tortoise_config(database_url))
            seeded = await runner_catalog(key, targets, max_running=args.targets)

            def plan(title: str, count: int) -> IssuePlan:
                return seeded.plan(title, ["SELECT 1"] * count)

            env = worker_env(database_url, key, worker_concurrency=str(args.concurrency))
            workers = await ready_workers(env, args.workers)

            latencies = []
            to_checked: list[float] = []
            to_start: list[float] = []
            for sample in range(args.samples):
                created = await issues.create_issue(BENCH, plan(f"latency {sample}", 1))
                committed = datetime.now(UTC)
                while True:
                    run = await TaskRun.filter(task__pipeline__issue_id=created.id).first()
                    if run is not None:
                        break
                    await asyncio.sleep(SAMPLE_POLL_SECONDS)
                latencies.append((run.started_at - committed).total_seconds() * 1000)
                # Where the wait went: a task starts once its checks are recorded.
                checked = (
                    await Event.filter(task_id=run.task_id, kind=EventKind.TASK_CHECKED)
                    .order_by("id")
                    .first()
                )
                if checked is not None:
                    to_checked.append((checked.created_at - committed).total_seconds() * 1000)
                    to_start.append((run.started_at - checked.created_at).total_seconds() * 1000)
                while await Task.filter(
                    pipeline__issue_id=created.id, status=TaskStatus.RUNNING
                ).exists():
                    await asyncio.sleep(0.005)

            if args.profile is not None:
                profiler = subprocess.Popen(
                    [
                        *("py-spy", "record", "--format", "raw", "--rate", "200"),
                        *("-o", args.profile, "-p", str(workers[0].pid)),
                    ],
                    stdout=subprocess.DEVNULL,
                )
                await asyncio.sleep(1)
            worker_cpu = cpu_seconds([worker.pid for worker in workers])
            # The server's processes serving this run: the workers' sessions to Conveyor's
            # database and to the targets (pooled, so they last through the run).
            serving = await backends([conveyor_db, *targets])
            server_cpu = cpu_seconds(serving)
            started_at = datetime.now(UTC)
            created = [
                await issues.create_issue(BENCH, plan(f"throughput {n}", args.tasks // args.issues))
                for n in range(args.issues)
            ]
            committed_at = datetime.now(UTC)
            while (
                await Task.filter(pipeline__issue_id__in=[issue.id for issue in created])
                .exclude(status=TaskStatus.DONE)
                .exists()
            ):
                # Seldom: the bench's own queries share the machine's two cores with the
                # worker and PostgreSQL. The run's end is read from the rows below.
                await asyncio.sleep(0.05)
            worker_cpu = cpu_seconds([worker.pid for worker in workers]) - worker_cpu
            server_cpu = cpu_seconds(serving) - server_cpu
            phases = await _throughput_phases(
                started_at, committed_at, [issue.id for issue in created]
            )
    finally:
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(timeout=30)
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=30)
        for name in [conveyor_db, *targets]:
            await admin_fetch(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    print("| measure | value |\n|---|---|")
    print(
        f"| tasks through {args.workers} worker process(es), concurrency {args.concurrency}, "
        f"{args.issues} issue(s), {args.targets} target databases | {args.tasks} |"
    )
    print_runner_rows(
        args.tasks,
        "creating the issues",
        ("issues created, last checks' transaction, first start, last end", phases.marks),
        phases.running_seconds,
        worker_cpu,
        server_cpu,
    )
    print_latency_rows(latencies)
    if to_checked:
        # Both from the checks' transaction start (the event's created_at is its now()).
        print(
            f"| of which commit → checks recorded p50 / p99 | {statistics.median(to_checked):.1f}"
            f" / {percentile(to_checked, 0.99):.1f} ms |"
        )
        print(
            f"| of which checks recorded → start p50 / p99 | {statistics.median(to_start):.1f}"
            f" / {percentile(to_start, 0.99):.1f} ms |"
        )


@dataclass(frozen=True)
class _Phases:
    """Milliseconds from the run's start to each of its marks."""

    issues_created: float
    last_checks: float
    first_start: float
    last_end: float

    @property
    def marks(self) -> tuple[float, float, float, float]:
        return (self.issues_created, self.last_checks, self.first_start, self.last_end)

    @property
    def running_seconds(self) -> float:
        return (self.last_end - self.first_start) / 1000


async def _throughput_phases(
    started_at: datetime, committed_at: datetime, issue_ids: list[int]
) -> _Phases:
    """Where the throughput run's time went, from the rows it left."""
    runs = TaskRun.filter(task__pipeline__issue_id__in=issue_ids)
    first_start = await runs.order_by("started_at").first()
    last_end = await runs.order_by("-ended_at").first()
    checked = Event.filter(issue_id__in=issue_ids, kind=EventKind.TASK_CHECKED)
    last_checked = await checked.order_by("-id").first()
    if not (first_start and last_end and last_end.ended_at and last_checked):
        raise RuntimeError("the throughput run left no runs, events or checks to read")

    def since_start(moment: datetime) -> float:
        return (moment - started_at).total_seconds() * 1000

    return _Phases(
        issues_created=since_start(committed_at),
        last_checks=since_start(last_checked.created_at),
        first_start=since_start(first_start.started_at),
        last_end=since_start(last_end.ended_at),
    )


if __name__ == "__main__":
    asyncio.run(main())
