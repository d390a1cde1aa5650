"""Live-updates benchmark: commit → subscriber delivery latency, and the server's memory.

    python bench/live_updates.py [--samples 30] [--subscribers 1 100 1000]

Starts one `conveyor serve` (no worker) on a fresh database of CONVEYOR_BENCH_DATABASE_URL
(default postgresql://postgres@127.0.0.1:5432/postgres), opens that many graphql-transport-ws
subscribers to one task over loopback, then commits status changes of the task (cancel, retry,
...) and times each one from the commit's return to its arrival at every subscriber. The
subscribers run in this process, so their own cost is part of the figures.
"""

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field

import httpx
import psutil
from cryptography.fernet import Fernet
from strawberry import relay
from tortoise.context import TortoiseContext
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from common import BENCH, admin_fetch, free_port, percentile, server_url, with_database
from conveyor.crypto import PasswordCipher
from conveyor.db import catalog, issues, tasks, tokens
from conveyor.db.config import tortoise_config
from conveyor.db.migrate import migrate_database
from conveyor.db.models import Event, Task
from conveyor.domain.permissions import SYSTEM, Role
from conveyor.domain.plan import IssuePlan, StagePlan, TaskPlan
from conveyor.domain.statuses import ApprovalPolicy, Engine, TaskType
from conveyor.domain.targets import UNRESTRICTED

SUBSCRIPTION = """
subscription($taskId: ID!) {
  taskStatusChanged(taskId: $taskId, snapshot: true) {
    sequence
    ... on TaskStatusChange { newStatus }
  }
}
"""
#: Subscribers opened at once while connecting; more would only queue in the accept backlog.
CONNECT_CONCURRENCY = 50
MESSAGE_WAIT_SECONDS = 30.0


@dataclass
class Subscriber:
    """One WebSocket subscriber; remembers when each sequence number arrived."""

    connection: ClientConnection
    arrivals: dict[int, float] = field(default_factory=dict)
    reader: asyncio.Task[None] | None = None

    async def read(self) -> None:
        async for raw in self.connection:
            message = json.loads(raw)
            if message["type"] == "next":
                sequence = message["payload"]["data"]["taskStatusChanged"]["sequence"]
                self.arrivals[sequence] = time.perf_counter()


async def subscribe(url: str, token: str, task_id: str) -> Subscriber:
    connection = await connect(
        url, subprotocols=[Subprotocol("graphql-transport-ws")], compression=None
    )
    await connection.send(
        json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
    )
    assert json.loads(await connection.recv())["type"] == "connection_ack"
    await connection.send(
        json.dumps(
            {
                "id": "1",
                "type": "subscribe",
                "payload": {"query": SUBSCRIPTION, "variables": {"taskId": task_id}},
            }
        )
    )
    # The snapshot comes once the server has registered the subscription.
    snapshot = json.loads(await asyncio.wait_for(connection.recv(), MESSAGE_WAIT_SECONDS))
    assert snapshot["type"] == "next", snapshot
    subscriber = Subscriber(connection)
    subscriber.reader = asyncio.create_task(subscriber.read())
    return subscriber


async def subscribe_many(url: str, token: str, task_id: str, count: int) -> list[Subscriber]:
    subscribers: list[Subscriber] = []
    while len(subscribers) < count:
        chunk = min(CONNECT_CONCURRENCY, count - len(subscribers))
        subscribers += await asyncio.gather(*(subscribe(url, token, task_id) for _ in range(chunk)))
    return subscribers


async def close_all(subscribers: list[Subscriber]) -> None:
    for subscriber in subscribers:
        await subscriber.connection.close()
        if subscriber.reader is not None:
            await subscriber.reader


#: A waiting task's status changes, in a cycle: cancel, then back to its gate.
STATUS_CHANGES = itertools.cycle([tasks.cancel_task, tasks.retry_task])


async def measure(
    url: str, token: str, task_id: int, count: int, samples: int, server: psutil.Process
) -> tuple[list[float], int]:
    """Latencies (ms) of `samples` changes to `count` subscribers, and the server's RSS."""
    global_id = str(relay.GlobalID("Task", str(task_id)))
    subscribers = await subscribe_many(url, token, global_id, count)
    latencies: list[float] = []
    try:
        for _ in range(samples):
            await next(STATUS_CHANGES)(BENCH, task_id)
            committed = time.perf_counter()
            sequence = await latest_sequence_of(task_id)
            deadline = committed + MESSAGE_WAIT_SECONDS
            while any(sequence not in s.arrivals for s in subscribers):
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"sequence {sequence} did not reach every subscriber")
                await asyncio.sleep(0.001)
            latencies += [(s.arrivals[sequence] - committed) * 1000 for s in subscribers]
        rss = server.memory_info().rss
    finally:
        await close_all(subscribers)
    return latencies, rss


async def latest_sequence_of(task_id: int) -> int:
    event = await Event.filter(task_id=task_id).order_by("-id").only("id").first()
    assert event is not None
    return int(event.id)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--subscribers", type=int, nargs="+", default=[1, 100, 1000])
    args = parser.parse_args()
    conveyor_db = f"conveyor_bench_live_{uuid.uuid4().hex[:8]}"
    await admin_fetch(f'CREATE DATABASE "{conveyor_db}"')
    database_url = with_database(server_url(), conveyor_db)
    key = Fernet.generate_key().decode()
    server = None
    results: list[tuple[int, list[float], int]] = []
    # The server writes a first admin token into its data directory: a temporary one, not
    # the user's.
    data_dir = tempfile.mkdtemp(prefix="conveyor-bench-live-")
    try:
        await migrate_database(database_url)
        async with TortoiseContext() as context:
            await context.init(config=tortoise_config(database_url))
            environment = await catalog.save_environment(
                BENCH,
                None,
                catalog.EnvironmentChanges(
                    name="bench", order=0, approval_policy=ApprovalPolicy.MANUAL
                ),
            )
            instance = await catalog.save_instance(
                BENCH,
                None,
                catalog.InstanceChanges(
                    name="bench",
                    environment_id=environment.id,
                    engine=Engine.POSTGRES,
                    host="127.0.0.1",
                    port=5432,
                    username="postgres",
                    password="",
                    max_running_tasks=1,
                ),
                PasswordCipher(key),
                networks=UNRESTRICTED,
            )
            database = await catalog.register_database(BENCH, instance.id, "never_created")
            # A MANUAL stage: the task only ever moves when the bench moves it.
            issue = await issues.create_issue(
                BENCH,
                IssuePlan(
                    title="live updates",
                    stages=(
                        StagePlan(
                            environment_id=environment.id,
                            tasks=(
                                TaskPlan(
                                    type=TaskType.DATA_UPDATE,
                                    instance_id=instance.id,
                                    database_id=database.id,
                                    statement="SELECT 1",
                                ),
                            ),
                        ),
                    ),
                ),
            )
            task = await Task.filter(pipeline__issue_id=issue.id).get()
            subscriber_token = await tokens.issue_token(
                SYSTEM, "bench", Role.VIEWER, description="bench/live_updates.py subscribers"
            )

            port = free_port()
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")},
                "CONVEYOR_DATABASE_URL": database_url,
                "CONVEYOR_SECRET_KEY": key,
                "CONVEYOR_DATA_DIR": data_dir,
                "CONVEYOR_RUN_WORKER": "false",
                "CONVEYOR_PORT": str(port),
                "CONVEYOR_LOG_LEVEL": "warning",
            }
            server = subprocess.Popen([sys.executable, "-m", "conveyor", "serve"], env=env)
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient() as http:
                for _ in range(300):
                    with contextlib.suppress(httpx.TransportError):
                        if (await http.get(f"{base}/healthz", timeout=1)).status_code == 200:
                            break
                    await asyncio.sleep(0.1)
                else:
                    raise RuntimeError("the server did not start")
            process = psutil.Process(server.pid)
            url = f"ws://127.0.0.1:{port}/graphql"
            for count in args.subscribers:
                latencies, rss = await measure(
                    url, subscriber_token.token, task.id, count, args.samples, process
                )
                results.append((count, latencies, rss))
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        await admin_fetch(f'DROP DATABASE IF EXISTS "{conveyor_db}" WITH (FORCE)')
        shutil.rmtree(data_dir, ignore_errors=True)

    print("| subscribers | commit → delivery p50 | p99 | server RSS |\n|---|---|---|---|")
    for count, latencies, rss in results:
        print(
            f"| {count} | {statistics.median(latencies):.1f} ms "
            f"| {percentile(latencies, 0.99):.1f} ms | {rss / 2**20:.0f} MiB |"
        )


if __name__ == "__main__":
    asyncio.run(main())
