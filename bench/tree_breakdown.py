"""Where Conveyor's time goes on the 5,000-task tree: the same read with parts of it left out.

    python bench/tree_breakdown.py [--database conveyor_bench_tree] [--repeat 3]

In-process `schema.execute` (no HTTP, no JSON encoding) on the data set of tree_seed.py, with
the garbage collector on (as in production) and off, for variants of the task selection.
"""

import argparse
import asyncio
import gc
import statistics
import time
from collections.abc import Callable

from cryptography.fernet import Fernet
from tortoise.context import TortoiseContext

import tree_seed
from common import BENCH, server_url, with_database
from conveyor.crypto import PasswordCipher
from conveyor.db.config import tortoise_config
from conveyor.db.models import Issue, Pipeline
from conveyor.graphql.context import Context
from conveyor.graphql.schema import schema
from conveyor.settings import Settings
from tree_queries import TASKS_PER_STAGE, TREE_TASK, conveyor_one, relay_id

#: The task selection of each variant; the rest of the tree is the benchmark's.
VARIANTS = {
    "the benchmark's tree": TREE_TASK,
    "without instance and database (no per-task DataLoader)": (
        "id name type status statement version"
    ),
    "scalars only, without the global id": "name type status statement version",
    "task id only": "id",
    "task name only": "name",
}


async def median_ms(document: str, pipeline_id: str, settings: Settings, repeat: int) -> float:
    cipher = PasswordCipher(settings.secret_key or "")

    async def once() -> float:
        context = Context(
            request=None, response=None, settings=settings, cipher=cipher, principal=BENCH
        )
        started = time.perf_counter()
        result = await schema.execute(
            document, variable_values={"id": pipeline_id}, context_value=context
        )
        elapsed = time.perf_counter() - started
        assert not result.errors, result.errors
        return elapsed

    await once()
    return 1000 * statistics.median([await once() for _ in range(repeat)])


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", default=tree_seed.DEFAULT_DATABASE)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    await tree_seed.ensure_seeded(args.database)
    url = with_database(server_url(), args.database)
    settings = Settings(
        database_url=url,
        secret_key=Fernet.generate_key().decode(),
        max_page_size=TASKS_PER_STAGE,
    )
    async with TortoiseContext() as context:
        await context.init(config=tortoise_config(url))
        issue = await Issue.get(title=tree_seed.LARGE_TITLE)
        pipeline = await Pipeline.get(issue_id=issue.id)
        pipeline_id = relay_id("Pipeline", pipeline.id)
        print("| tasks { ... } selects | GC on: ms | GC off: ms |\n|---|---|---|")
        for label, selection in VARIANTS.items():
            timings: list[float] = []
            switches: tuple[Callable[[], None], ...] = (gc.enable, gc.disable)
            for switch in switches:
                switch()
                try:
                    timings.append(
                        await median_ms(conveyor_one(selection), pipeline_id, settings, args.repeat)
                    )
                finally:
                    gc.enable()
            print(f"| {label}: `{selection}` | {timings[0]:.0f} | {timings[1]:.0f} |")


if __name__ == "__main__":
    asyncio.run(main())
