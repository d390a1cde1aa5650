"""Kill -9, over and over: no task lost, none applied twice, each settled within two leases.

    python bench/runner_chaos.py [--tasks 500] [--kills 100] [--workers 3] [--lease 2]

Three `conveyor worker` processes run `--tasks` changes over 8 target databases (one in five
not transactional: it starts with VACUUM, which runs outside a transaction); every few tenths
of a second one worker, at random, is killed with SIGKILL and started again, `--kills` times.
Each change records its task number in its target's `applied` table (no unique key there). At
the end: every task is DONE, or FAILED as "outcome unknown" (a non-transactional change that was
interrupted); every transactional task's number is recorded exactly once, no number twice; and
every attempt a kill interrupted was settled within two leases of the kill.

Too long for the test suite (about a minute and a half here): a benchmark, run by hand.
"""

import argparse
import asyncio
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import asyncpg
from cryptography.fernet import Fernet
from tortoise.context import TortoiseContext

from common import BENCH, admin_fetch, server_url, with_database
from conveyor.db import issues
from conveyor.db.config import tortoise_config
from conveyor.db.migrate import migrate_database
from conveyor.db.models import Task, TaskRun
from conveyor.domain.statuses import TaskStatus
from runner_catalog import runner_catalog, worker_env

TARGETS = 8
ISSUES = 5


def change(number: int) -> str:
    body = f"INSERT INTO applied VALUES ({number}); SELECT pg_sleep(0.4)"
    return f"VACUUM applied; {body}" if number % 5 == 0 else body


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--every", type=float, default=1.0, help="mean seconds between kills")
    args = parser.parse_args()
    chance = random.Random(args.seed)
    run_id = uuid.uuid4().hex[:8]
    conveyor_db = f"conveyor_chaos_{run_id}"
    targets = [f"conveyor_chaos_target_{run_id}_{n}" for n in range(TARGETS)]
    for name in [conveyor_db, *targets]:
        await admin_fetch(f'CREATE DATABASE "{name}"')
    for name in targets:
        connection = await asyncpg.connect(with_database(server_url(), name))
        await connection.execute("CREATE TABLE applied (task int)")
        await connection.close()
    database_url = with_database(server_url(), conveyor_db)
    key = Fernet.generate_key().decode()
    env = worker_env(
        database_url,
        key,
        lease_seconds=str(args.lease),
        poll_seconds="0.5",
        worker_concurrency="8",
        log_level="error",
    )
    workers: list[subprocess.Popen[bytes]] = []
    killed_at: dict[int, datetime] = {}

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "conveyor", "worker"], env=env)

    try:
        await migrate_database(database_url)
        async with TortoiseContext() as context:
            await context.init(config=tortoise_config(database_url))
            seeded = await runner_catalog(key, targets, max_running=TARGETS)
            per_issue = args.tasks // ISSUES
            for issue in range(ISSUES):
                numbers = range(issue * per_issue, (issue + 1) * per_issue)
                await issues.create_issue(
                    BENCH, seeded.plan(f"chaos {issue}", [change(n) for n in numbers])
                )
            workers = [start() for _ in range(args.workers)]
            started = time.perf_counter()
            for _ in range(args.kills):
                await asyncio.sleep(chance.uniform(args.every * 0.5, args.every * 1.5))
                victim = chance.randrange(len(workers))
                workers[victim].send_signal(signal.SIGKILL)
                killed_at[workers[victim].pid] = datetime.now(UTC)
                workers[victim].wait()
                workers[victim] = start()
            kills_done = time.perf_counter() - started
            while await Task.filter(status__in=[TaskStatus.PENDING, TaskStatus.RUNNING]).exists():
                if time.perf_counter() - started > 600:
                    break
                await asyncio.sleep(0.5)
            elapsed = time.perf_counter() - started
            tasks = await Task.all().order_by("id")
            runs = await TaskRun.all()
        applied: Counter[int] = Counter()
        for name in targets:
            connection = await asyncpg.connect(with_database(server_url(), name))
            applied.update(
                row["task"] for row in await connection.fetch("SELECT task FROM applied")
            )
            await connection.close()
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=60)
        for name in [conveyor_db, *targets]:
            await admin_fetch(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    number_of = {task.id: n for n, task in enumerate(tasks)}
    unsettled = [
        task.id for task in tasks if task.status not in (TaskStatus.DONE, TaskStatus.FAILED)
    ]
    failed_not_unknown = [
        task.id
        for task in tasks
        if task.status is TaskStatus.FAILED
        and (number_of[task.id] % 5 != 0 or "outcome unknown" not in (task.status_reason or ""))
    ]
    transactional_lost = [
        task.id
        for task in tasks
        if number_of[task.id] % 5 != 0 and applied[number_of[task.id]] != 1
    ]
    twice = [number for number, count in applied.items() if count > 1]
    interrupted = [run for run in runs if run.error_code == "INTERRUPTED"]
    lease = timedelta(seconds=args.lease)
    settle_delays = [
        (run.ended_at - killed_at[int(run.worker.split("-")[1])]).total_seconds()
        for run in interrupted
        if run.ended_at is not None
        and run.worker is not None
        and int(run.worker.split("-")[1]) in killed_at
    ]
    late = [delay for delay in settle_delays if delay > 2 * lease.total_seconds()]
    print("| measure | value |\n|---|---|")
    not_transactional = sum(1 for number in number_of.values() if number % 5 == 0)
    print(f"| tasks, of which not transactional | {len(tasks)}, {not_transactional} |")
    print(f"| SIGKILLs over {args.workers} workers | {args.kills} in {kills_done:.0f} s |")
    print(f"| all settled after | {elapsed:.0f} s |")
    print(f"| attempts interrupted by a kill | {len(interrupted)} |")
    lost = len(unsettled) + len(transactional_lost)
    print(f"| lost (not DONE/FAILED, or a transactional change not applied once) | {lost} |")
    print(
        f"| FAILED other than a non-transactional 'outcome unknown' | {len(failed_not_unknown)} |"
    )
    print(f"| applied twice | {len(twice)} |")
    worst = max(settle_delays, default=0.0)
    print(f"| kill → interrupted attempt settled, worst | {worst:.1f} s (lease {args.lease:g} s) |")
    print(f"| settled later than two leases | {len(late)} |")
    problems = sorted({*unsettled, *transactional_lost, *failed_not_unknown})
    for task in tasks:
        if task.id in problems:
            attempts = sorted(
                (run for run in runs if run.task_id == task.id), key=lambda r: r.attempt
            )
            print(
                f"task {number_of[task.id]}: {task.status.value} ({task.status_reason}); "
                f"applied {applied[number_of[task.id]]}x; runs: "
                + ", ".join(f"{run.status.value}/{run.error_code}" for run in attempts)
            )
    if problems or twice or late:
        sys.exit(1)


if __name__ == "__main__":
    asyncio.run(main())
