"""What the runner benchmarks seed: one environment, one instance on the benchmark's server,
target databases on it, and issues of data changes spread over them."""

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlparse

import httpx

from common import BENCH, free_port, none_is_ours, server_url
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


async def ready_workers(env: dict[str, str], count: int) -> list[subprocess.Popen[bytes]]:
    """Start `count` `conveyor worker` processes with `env` and return once each answers
    /readyz (its LISTEN connection up, its hot path prepared): timed samples then measure
    running workers, not a process still importing its modules."""
    ports = [free_port() for _ in range(count)]
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "conveyor", "worker"],
            env={**env, "CONVEYOR_METRICS_PORT": str(port)},
        )
        for port in ports
    ]
    try:
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(timeout=2) as client:
            for port in ports:
                while not await _ready(client, port):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"a worker was not ready within 60 s (port {port})")
                    await asyncio.sleep(0.05)
    except BaseException:
        for worker in workers:
            worker.kill()
        raise
    # Builds before 2026-12-04 night answer /readyz before their hot path is prepared.
    await asyncio.sleep(1)
    return workers


async def _ready(client: httpx.AsyncClient, port: int) -> bool:
    try:
        answer = await client.get(f"http://127.0.0.1:{port}/readyz")
    except httpx.TransportError:
        return False
    return answer.status_code == 200
