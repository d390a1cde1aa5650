"""Checks benchmark: the time to check a 1,000-task plan, and what checks do to createIssue.

    python bench/check_latency.py [--tasks 1000] [--samples 30]
        [--issue-tasks 20]

Uses the PostgreSQL server of CONVEYOR_BENCH_DATABASE_URL (default: this machine's) both as
Conveyor's database (a fresh one) and as the target instance (four target databases). The
plan's statements are a mix of what real migrations hold (tables, columns, indexes, updates,
deletes), so squawk and the parser have something to say about a good share of them.

Prints two tables:
- checking a plan of --tasks tasks in a MANUAL environment (nothing runs): the worker's whole
  round (parser + rules + squawk + target checks + recording), and the statement checks alone
  (`checkPlan`, which writes nothing), each in total and per task;
- createIssue's latency over --samples issues of --issue-tasks tasks, three ways in the same
  run: no checker running; a checker in the same process (as `conveyor serve` runs its worker)
  checking each issue as it is created; and the statement checks run inside the request
  instead (what checking synchronously would cost).
"""

import argparse
import asyncio
import logging
import statistics
import time
import uuid

from cryptography.fernet import Fernet
from tortoise.context import TortoiseContext

from common import BENCH, admin_fetch, percentile, server_url, with_database
from conveyor.crypto import PasswordCipher
from conveyor.db import catalog, issues
from conveyor.db.config import tortoise_config
from conveyor.db.migrate import migrate_database
from conveyor.db.models import Task
from conveyor.db.outages import Outage
from conveyor.db.own_database import conveyor_database
from conveyor.domain.plan import IssuePlan, StagePlan, TaskPlan
from conveyor.domain.statuses import ApprovalPolicy, TaskType
from conveyor.domain.targets import UNRESTRICTED
from conveyor.runner.checking import Checker, check_plan
from conveyor.settings import Settings
from runner_catalog import RunnerCatalog, runner_catalog

#: (type, statement) — the n-th task gets the n-th modulo their number, with n in its names.
STATEMENTS = (
    (TaskType.SCHEMA_UPDATE, "CREATE TABLE t{n} (id bigint PRIMARY KEY, note text)"),
    (TaskType.SCHEMA_UPDATE, "ALTER TABLE t{n} ADD COLUMN created_at timestamptz"),
    (TaskType.SCHEMA_UPDATE, "CREATE INDEX t{n}_note ON t{n} (note)"),
    (TaskType.SCHEMA_UPDATE, "ALTER TABLE t{n} ADD CONSTRAINT t{n}_note CHECK (note <> '')"),
    (TaskType.SCHEMA_UPDATE, "ALTER TABLE t{n} DROP COLUMN note"),
    (TaskType.DATA_UPDATE, "UPDATE t{n} SET note = 'x' WHERE id = {n}"),
    (TaskType.DATA_UPDATE, "INSERT INTO t{n} (id, note) VALUES ({n}, 'a'), ({n} + 1, 'b')"),
    (TaskType.DATA_UPDATE, "DELETE FROM t{n}"),
)


def plan_of(seeded: RunnerCatalog, title: str, count: int) -> IssuePlan:
    tasks = [
        TaskPlan(
            type=STATEMENTS[n % len(STATEMENTS)][0],
            instance_id=seeded.instance_id,
            database_id=seeded.database_ids[n % len(seeded.database_ids)],
            statement=STATEMENTS[n % len(STATEMENTS)][1].format(n=n),
        )
        for n in range(count)
    ]
    per_stage = 1_000
    return IssuePlan(
        title=title,
        stages=tuple(
            StagePlan(environment_id=seeded.environment_id, tasks=tuple(tasks[i : i + per_stage]))
            for i in range(0, count, per_stage)
        ),
    )


async def check_all(checker: Checker) -> int:
    checked = 0
    while True:
        round_ = await checker.check_round()
        if not round_:
            return checked
        checked += round_


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=1_000)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--issue-tasks", type=int, default=20)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    run_id = uuid.uuid4().hex[:8]
    conveyor_db = f"conveyor_bench_{run_id}"
    targets = [f"conveyor_bench_target_{run_id}_{n}" for n in range(4)]
    for name in [conveyor_db, *targets]:
        await admin_fetch(f'CREATE DATABASE "{name}"')
    database_url = with_database(server_url(), conveyor_db)
    key = Fernet.generate_key().decode()
    try:
        await migrate_database(database_url)
        async with TortoiseContext() as context:
            await context.init(config=tortoise_config(database_url))
            seeded = await runner_catalog(key, targets, max_running=4)
            # MANUAL: the tasks wait for approval, so only the checks run.
            await catalog.save_environment(
                BENCH,
                seeded.environment_id,
                catalog.EnvironmentChanges(approval_policy=ApprovalPolicy.MANUAL),
            )
            settings = Settings(database_url=database_url, secret_key=key)
            checker = Checker(
                settings,
                PasswordCipher(key),
                await conveyor_database(),
                UNRESTRICTED,
                Outage(logging.getLogger("bench"), "bench"),
            )
            big = plan_of(seeded, "big", args.tasks)

            started = time.perf_counter()
            planned = await check_plan(BENCH, big)
            statement_only = time.perf_counter() - started
            blocked = sum(1 for task in planned if task.blocking_rules)

            await issues.create_issue(BENCH, big)
            started = time.perf_counter()
            checked = await check_all(checker)
            whole_round = time.perf_counter() - started
            assert checked == args.tasks, checked
            assert not await Task.filter(checked_version__isnull=True).exists()

            print(f"## Checking a {args.tasks:,}-task plan ({blocked:,} tasks blocked)\n")
            print("| what | total | per task |")
            print("|---|---|---|")
            for label, seconds in (
                ("worker: statement + squawk + target checks, recorded", whole_round),
                ("checkPlan: statement + squawk checks, nothing written", statement_only),
            ):
                print(f"| {label} | {seconds:.2f} s | {seconds / args.tasks * 1000:.2f} ms |")

            async def create_many(label: str, inline: bool) -> list[float]:
                latencies = []
                for sample in range(args.samples):
                    plan = plan_of(seeded, f"{label} {sample}", args.issue_tasks)
                    started = time.perf_counter()
                    if inline:
                        await check_plan(BENCH, plan)
                    await issues.create_issue(BENCH, plan)
                    latencies.append((time.perf_counter() - started) * 1000)
                    # Leave the background checker a moment, as a client's pace would.
                    await asyncio.sleep(0.02)
                return latencies

            idle = await create_many("idle", inline=False)
            await check_all(checker)
            stopping = asyncio.Event()
            wakeup = asyncio.Event()
            background = asyncio.create_task(checker.run(wakeup, stopping))

            async def creating_with_checker() -> list[float]:
                latencies = []
                for sample in range(args.samples):
                    plan = plan_of(seeded, f"busy {sample}", args.issue_tasks)
                    started = time.perf_counter()
                    await issues.create_issue(BENCH, plan)
                    latencies.append((time.perf_counter() - started) * 1000)
                    wakeup.set()
                    await asyncio.sleep(0.02)
                return latencies

            busy = await creating_with_checker()
            stopping.set()
            await background
            inline = await create_many("inline", inline=True)
            await checker.close()

            print(f"\n## createIssue, {args.samples} issues of {args.issue_tasks} tasks\n")
            print("| checks | p50 | p95 | mean | ratio to none (p50) |")
            print("|---|---|---|---|---|")
            base = statistics.median(idle)
            for label, values in (
                ("none running", idle),
                ("in the background (same process)", busy),
                ("inside the request (not how Conveyor does it)", inline),
            ):
                print(
                    f"| {label} | {statistics.median(values):.1f} ms | "
                    f"{percentile(values, 0.95):.1f} ms | {statistics.mean(values):.1f} ms | "
                    f"{statistics.median(values) / base:.2f} |"
                )
    finally:
        for name in [conveyor_db, *targets]:
            await admin_fetch(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    asyncio.run(main())
