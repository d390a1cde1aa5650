"""What the runner sends to Conveyor's database to claim one task and to finish it.

    python bench/runner_wire_count.py [--statements]

Seeds a fresh database with one instance and one issue of trivial tasks on one database, then
calls the worker's own claim and finish (`db.claims`) through wire_count's counting proxy:
statements, pool resets and round trips, as the worker sends them. The tasks are not run;
their outcome is made up.
"""

import argparse
import asyncio
import uuid
from datetime import timedelta
from urllib.parse import urlparse, urlunparse

from cryptography.fernet import Fernet
from tortoise.context import TortoiseContext

from common import BENCH, admin_fetch, server_url, with_database
from conveyor.db import checks, claims, issues
from conveyor.db.checks import CheckOutcome
from conveyor.db.config import tortoise_config
from conveyor.db.migrate import migrate_database
from conveyor.db.models import Task
from conveyor.domain.attempts import Outcome, ending
from conveyor.domain.plan import IssuePlan, StagePlan, TaskPlan
from conveyor.domain.statuses import TaskType
from runner_catalog import runner_catalog
from wire_count import WireCounts, counting_proxy

#: Claims and finishes made before the counted one: caches and prepared statements warm.
WARM_UP = 3


async def seed(count: int) -> None:
    # The key is never needed again: the counted claims and finishes decrypt no password.
    seeded = await runner_catalog(Fernet.generate_key().decode(), ("postgres", "template1"), 4)
    database, other = seeded.database_ids

    def task(database_id: int) -> TaskPlan:
        return TaskPlan(
            type=TaskType.DATA_UPDATE,
            instance_id=seeded.instance_id,
            database_id=database_id,
            statement="SELECT 1",
        )

    # The first task, on another database, runs throughout the counts: as in a busy worker,
    # the stage stays RUNNING while the counted tasks start and finish one after another.
    stage = StagePlan(
        environment_id=seeded.environment_id, tasks=(task(other), *[task(database)] * count)
    )
    issue = await issues.create_issue(BENCH, IssuePlan(title="wire", stages=(stage,)))
    # Clean checks, as a worker that found nothing records them: what is counted is the
    # runner's claims and finishes, which wait for the checks.
    tasks = await Task.filter(pipeline__issue_id=issue.id).only("id")
    await checks.record_checks([CheckOutcome(task.id, 1, (), ()) for task in tasks])


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--statements", action="store_true")
    args = parser.parse_args()
    name = f"conveyor_bench_wire_{uuid.uuid4().hex[:8]}"
    await admin_fetch(f'CREATE DATABASE "{name}"')
    database_url = with_database(server_url(), name)
    address = urlparse(database_url)
    try:
        await migrate_database(database_url)
        async with counting_proxy(address.hostname or "127.0.0.1", address.port or 5432) as (
            port,
            proxy,
        ):
            user_info = address.netloc.rpartition("@")[0]
            proxied = urlunparse(address._replace(netloc=f"{user_info}@127.0.0.1:{port}"))
            async with TortoiseContext() as context:
                await context.init(config=tortoise_config(proxied))
                await seed(2 * (WARM_UP + 2))
                lease = timedelta(seconds=30)
                done = Outcome(
                    succeeded=True, error_code=None, error_message=None, transactional=True
                )
                end = ending(
                    done,
                    TaskType.DATA_UPDATE,
                    canceled_by_person=False,
                    interrupted_by_shutdown=False,
                )
                # The worker's steady state: a finish that claims the next task in its own
                # transaction (the database the finished task held is free for it).
                [throughout] = (await claims.claim_tasks("wire-worker", lease, 1)).tasks
                [claimed] = (await claims.claim_tasks("wire-worker", lease, 1)).tasks
                finish_and_claim: list[WireCounts] = []
                for _ in range(WARM_UP + 1):
                    await asyncio.sleep(0.3)
                    proxy.reset()
                    following = await claims.finish_and_claim(
                        "wire-worker", claimed, end, done, (), lease, 1
                    )
                    await asyncio.sleep(0.3)
                    finish_and_claim.append(proxy.reset())
                    assert following is not None
                    [claimed] = following
                assert await claims.finish_task("wire-worker", claimed, end, done)
                counted: list[tuple[WireCounts, WireCounts]] = []
                for round_ in range(WARM_UP + 2):
                    if round_ == WARM_UP + 1:
                        # The issue's last task is the one counted last.
                        assert await claims.finish_task("wire-worker", throughout, end, done)
                    await asyncio.sleep(0.3)
                    proxy.reset()
                    [claimed] = (await claims.claim_tasks("wire-worker", lease, 1)).tasks
                    await asyncio.sleep(0.3)
                    claim = proxy.reset()
                    assert await claims.finish_task("wire-worker", claimed, end, done)
                    await asyncio.sleep(0.3)
                    counted.append((claim, proxy.reset()))
    finally:
        await admin_fetch(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    claim, finish = counted[-2]
    last = counted[-1][1]
    steady = finish_and_claim[-1]
    print("| operation | SQL statements | of which pool resets | round trips | prepared (Parse) |")
    print("|---|---|---|---|---|")
    for label, counts in (
        ("claim one task", claim),
        ("finish one task", finish),
        ("finish one task and claim the next (one transaction, the worker's way)", steady),
        ("finish the issue's last task (+ the pipeline's roll-up)", last),
    ):
        print(
            f"| {label} | {counts.statements} | {counts.pool_resets} | {counts.round_trips} "
            f"| {counts.parses} |"
        )
    if args.statements:
        for label, counts in (
            ("claim", claim),
            ("finish", finish),
            ("finish and claim", steady),
            ("last finish", last),
        ):
            print(f"\n{label}:")
            for text in counts.texts:
                print(f"- `{' '.join(text.split())[:200]}`")


if __name__ == "__main__":
    asyncio.run(main())
