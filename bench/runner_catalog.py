"""What the runner benchmarks seed: one environment, one instance on the benchmark's server,
target databases on it, and issues of data changes spread over them."""

import os
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlparse

from common import BENCH, none_is_ours, server_url
from conveyor.crypto import PasswordCipher
from conveyor.db import catalog
from conveyor.domain.plan import IssuePlan, StagePlan, TaskPlan
from conveyor.domain.statuses import ApprovalPolicy, Engine, TaskType
from conveyor.domain.targets import UNRESTRICTED


@dataclass(frozen=True)
class RunnerCatalog:
    environment_id: int
    instance_id: int
    database_ids: tuple[int, ...]

    def plan(self, title: str, statements: Sequence[str]) -> IssuePlan:
        """One stage of DATA_UPDATE tasks, the n-th on target database n (round robin)."""
        tasks = tuple(
            TaskPlan(
                type=TaskType.DATA_UPDATE,
                instance_id=self.instance_id,
                database_id=self.database_ids[n % len(self.database_ids)],
                statement=statement,
            )
            for n, statement in enumerate(statements)
        )
        return IssuePlan(
            title=title, stages=(StagePlan(environment_id=self.environment_id, tasks=tasks),)
        )


async def runner_catalog(key: str, databases: Sequence[str], max_running: int) -> RunnerCatalog:
    """Seed the catalog in the current tortoise context; `key` encrypts the password."""
    environment = await catalog.save_environment(
        BENCH,
        None,
        catalog.EnvironmentChanges(name="bench", order=0, approval_policy=ApprovalPolicy.AUTOMATIC),
    )
    address = urlparse(server_url())
    instance = await catalog.save_instance(
        BENCH,
        None,
        catalog.InstanceChanges(
            name="bench",
            environment_id=environment.id,
            engine=Engine.POSTGRES,
            host=address.hostname or "127.0.0.1",
            port=address.port or 5432,
            username=address.username or "postgres",
            password=address.password or "",
            max_running_tasks=max_running,
        ),
        PasswordCipher(key),
        networks=UNRESTRICTED,
        own_database=none_is_ours,
    )
    registered = [
        await catalog.register_database(BENCH, instance.id, name, own_database=none_is_ours)
        for name in databases
    ]
    return RunnerCatalog(environment.id, instance.id, tuple(row.id for row in registered))


def worker_env(database_url: str, key: str, **settings: str) -> dict[str, str]:
    """The environment of a `conveyor worker` process on `database_url`."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")},
        "CONVEYOR_DATABASE_URL": database_url,
        "CONVEYOR_SECRET_KEY": key,
        "CONVEYOR_LOG_LEVEL": "warning",
        **{f"CONVEYOR_{name.upper()}": value for name, value in settings.items()},
    }
