"""Seed the nested-read benchmark's data set through Conveyor's own code.

    python bench/tree_seed.py [--database conveyor_bench_tree] [--reseed]

4 environments, 50 instances with 4 databases each, 1,000 pipelines of 4 stages x 25 tasks and
one of 10 stages x 500 tasks (the oldest), created with `conveyor.db.issues.create_issue`.
The data set is built under a temporary name and renamed when complete, then kept: a later
run finds it by name (and checks its comment, which records the shape) and seeds nothing.
"""

import argparse
import asyncio
import time
from dataclasses import dataclass

import asyncpg
from cryptography.fernet import Fernet
from tortoise.context import TortoiseContext

from common import BENCH, admin_fetch, none_is_ours, server_url, with_database
from conveyor.crypto import PasswordCipher
from conveyor.db import catalog, issues
from conveyor.db.config import tortoise_config
from conveyor.db.migrate import migrate_database
from conveyor.db.models import Database, Environment, Instance
from conveyor.domain.plan import IssuePlan, StagePlan, TaskPlan
from conveyor.domain.statuses import ApprovalPolicy, Engine, TaskType
from conveyor.domain.targets import UNRESTRICTED

DEFAULT_DATABASE = "conveyor_bench_tree"
ENVIRONMENTS = (
    ("dev", ApprovalPolicy.AUTOMATIC),
    ("test", ApprovalPolicy.AUTOMATIC),
    ("staging", ApprovalPolicy.AUTOMATIC),
    ("prod", ApprovalPolicy.MANUAL),
)
INSTANCES = 50
DATABASES_PER_INSTANCE = 4
PIPELINES = 1_000
STAGES = 4
TASKS_PER_STAGE = 25
LARGE_STAGES = 10
LARGE_TASKS_PER_STAGE = 500
LARGE_TITLE = f"bench {LARGE_STAGES} x {LARGE_TASKS_PER_STAGE}"
#: Issues created at once while seeding (each in its own transaction).
SEED_CONCURRENCY = 8
#: What the seeded database's comment says; a database with another comment is not reused.
SHAPE = (
    f"conveyor bench tree v1: {len(ENVIRONMENTS)} environments, {INSTANCES} instances x "
    f"{DATABASES_PER_INSTANCE} databases, {PIPELINES} x {STAGES} x {TASKS_PER_STAGE} tasks, "
    f"1 x {LARGE_STAGES} x {LARGE_TASKS_PER_STAGE}"
)


@dataclass(frozen=True)
class Targets:
    """The seeded catalog: for each environment, its instances' databases as (instance, db)."""

    environment_ids: list[int]
    databases_by_environment: dict[int, list[tuple[int, int]]]

    def stage(self, stage_index: int, tasks: int, title_seed: int) -> StagePlan:
        environment_id = self.environment_ids[stage_index % len(self.environment_ids)]
        targets = self.databases_by_environment[environment_id]
        return StagePlan(
            environment_id=environment_id,
            tasks=tuple(
                TaskPlan(
                    type=TaskType.SCHEMA_UPDATE,
                    instance_id=targets[(title_seed + n) % len(targets)][0],
                    database_id=targets[(title_seed + n) % len(targets)][1],
                    statement=f"ALTER TABLE orders_{n} ADD COLUMN note_{title_seed} text",
                )
                for n in range(tasks)
            ),
        )

    def plan(self, title: str, stages: int, tasks_per_stage: int, title_seed: int) -> IssuePlan:
        return IssuePlan(
            title=title,
            stages=tuple(self.stage(s, tasks_per_stage, title_seed) for s in range(stages)),
        )


async def seed_catalog() -> Targets:
    cipher = PasswordCipher(Fernet.generate_key().decode())
    environment_ids: list[int] = []
    for order, (name, policy) in enumerate(ENVIRONMENTS):
        environment = await catalog.save_environment(
            BENCH, None, catalog.EnvironmentChanges(name=name, order=order, approval_policy=policy)
        )
        environment_ids.append(environment.id)
    databases_by_environment: dict[int, list[tuple[int, int]]] = {
        environment_id: [] for environment_id in environment_ids
    }
    for n in range(INSTANCES):
        environment_id = environment_ids[n % len(environment_ids)]
        instance = await catalog.save_instance(
            BENCH,
            None,
            catalog.InstanceChanges(
                name=f"pg-{n:02d}",
                environment_id=environment_id,
                engine=Engine.POSTGRES,
                host=f"pg-{n:02d}.internal",
                port=5432,
                username="conveyor",
                password="secret",
                max_running_tasks=2,
            ),
            cipher,
            # Made-up hosts, never connected to: nothing to resolve.
            networks=UNRESTRICTED,
            own_database=none_is_ours,
        )
        for d in range(DATABASES_PER_INSTANCE):
            database = await catalog.register_database(
                BENCH, instance.id, f"app_{d}", own_database=none_is_ours
            )
            databases_by_environment[environment_id].append((instance.id, database.id))
    return Targets(environment_ids, databases_by_environment)


async def seed_issues(targets: Targets) -> None:
    # The large pipeline first, so that the newest page of pipelines holds only small ones.
    await issues.create_issue(
        BENCH, targets.plan(LARGE_TITLE, LARGE_STAGES, LARGE_TASKS_PER_STAGE, 0)
    )
    for start in range(0, PIPELINES, SEED_CONCURRENCY):
        await asyncio.gather(
            *(
                issues.create_issue(BENCH, targets.plan(f"bench {n}", STAGES, TASKS_PER_STAGE, n))
                for n in range(start, min(start + SEED_CONCURRENCY, PIPELINES))
            )
        )


async def seeded(name: str) -> bool:
    """Whether `name` holds a complete data set of today's shape; refuses another shape."""
    rows = await admin_fetch(
        "SELECT shobj_description(oid, 'pg_database') AS shape FROM pg_database WHERE datname = $1",
        name,
    )
    if not rows:
        return False
    if rows[0]["shape"] != SHAPE:
        raise SystemExit(f"database {name} holds another data set; run with --reseed")
    return True


async def ensure_seeded(name: str, *, reseed: bool = False) -> float | None:
    """Seed `name` unless it is already seeded; the seconds seeding took, None if skipped."""
    if reseed:
        await admin_fetch(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    if await seeded(name):
        return None
    building = f"{name}_seeding"
    started = time.perf_counter()
    await admin_fetch(f'DROP DATABASE IF EXISTS "{building}" WITH (FORCE)')
    await admin_fetch(f'CREATE DATABASE "{building}"')
    url = with_database(server_url(), building)
    await migrate_database(url)
    async with TortoiseContext() as context:
        await context.init(config=tortoise_config(url, pool_max_size=SEED_CONCURRENCY))
        await seed_issues(await seed_catalog())
        counts = (await Environment.all().count(), await Instance.all().count())
        assert counts == (len(ENVIRONMENTS), INSTANCES), counts
        assert await Database.all().count() == INSTANCES * DATABASES_PER_INSTANCE
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("VACUUM ANALYZE")
    finally:
        await connection.close()
    await admin_fetch(f"COMMENT ON DATABASE \"{building}\" IS '{SHAPE}'")
    await admin_fetch(f'ALTER DATABASE "{building}" RENAME TO "{name}"')
    return time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", default=DEFAULT_DATABASE)
    parser.add_argument("--reseed", action="store_true", help="drop and seed it again")
    args = parser.parse_args()
    seconds = await ensure_seeded(args.database, reseed=args.reseed)
    url = with_database(server_url(), args.database)
    connection = await asyncpg.connect(url)
    try:
        rows = {
            table: await connection.fetchval(f'SELECT count(*) FROM "{table}"')
            for table in ("environment", "instance", "database", "pipeline", "stage", "task")
        }
    finally:
        await connection.close()
    print(f"| table | rows |\n|---|---|\n| (seeded database) | {args.database} |")
    for table, count in rows.items():
        print(f"| {table} | {count:,} |")
    print(f"| seeding | {'already seeded' if seconds is None else f'{seconds:.0f} s'} |")


if __name__ == "__main__":
    asyncio.run(main())
