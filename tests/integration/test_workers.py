"""Several `conveyor worker` processes on one database: exactly-once, ordering, exclusivity,
and what happens when a worker is killed or told to stop."""

import asyncio
import itertools
import signal
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.db.models import Task, TaskRun
from conveyor.domain.statuses import TaskStatus
from conveyor.settings import Settings
from tests.conftest import ConveyorProcess, GraphQLClient, conveyor_env, free_port, launch
from tests.integration.conftest import build_engine_catalog, eventually, target_fetch

CREATE_ISSUE = "mutation($i: CreateIssueInput!) { createIssue(input: $i) { id } }"
LEASE_SECONDS = 3


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    return conveyor_env(
        settings,
        CONVEYOR_LEASE_SECONDS=str(LEASE_SECONDS),
        CONVEYOR_POLL_SECONDS="0.5",
        **extra,
    )


def launch_worker(settings: Settings, log_path: Path, **extra: str) -> ConveyorProcess:
    return launch(["worker"], worker_env(settings, **extra), log_path)


def wait_started(worker: ConveyorProcess) -> ConveyorProcess:
    worker.wait_until(lambda: " started" in worker.log(), "the worker to start")
    return worker


def start_worker(settings: Settings, log_path: Path, **extra: str) -> ConveyorProcess:
    return wait_started(launch_worker(settings, log_path, **extra))


@pytest.fixture
def workers(settings: Settings, tmp_path: Path) -> Iterator[list[ConveyorProcess]]:
    """Three worker processes, started side by side and stopped at the end."""
    launched = [launch_worker(settings, tmp_path / f"worker-{n}.log") for n in range(3)]
    yield [wait_started(worker) for worker in launched]
    for worker in launched:
        worker.send_signal(signal.SIGTERM)
    for worker in launched:
        worker.stop()


def logged_change(label: str) -> str:
    # Each task records when it started and ended on the target, by the target's clock.
    return (
        f"INSERT INTO run_log VALUES ('{label}', clock_timestamp(), NULL);"
        "SELECT pg_sleep(0.03);"
        f"UPDATE run_log SET ended_at = clock_timestamp() WHERE label = '{label}'"
    )


async def test_many_workers_run_each_task_once_in_order_one_per_database(
    graphql: GraphQLClient,
    workers: list[ConveyorProcess],
    server_url: str,
    target_databases: Callable[[], Awaitable[str]],
) -> None:
    names = {f"db{n}": await target_databases() for n in range(3)}
    for name in names.values():
        await target_fetch(
            server_url,
            name,
            "CREATE TABLE run_log (label text, started_at timestamptz, ended_at timestamptz)",
        )
    catalog = await build_engine_catalog(graphql, server_url, names, maxRunningTasks=10)
    for pipeline in range(6):
        await graphql.ok(
            CREATE_ISSUE,
            {
                "i": {
                    "title": f"pipeline {pipeline}",
                    "stages": [
                        {
                            "environmentId": catalog.environments[("dev", "test")[stage % 2]],
                            "tasks": [
                                {
                                    "type": "DATA_UPDATE",
                                    "instanceId": catalog.instance,
                                    "databaseId": catalog.databases[f"db{task % 3}"],
                                    "statement": logged_change(f"p{pipeline}-s{stage}-t{task}"),
                                }
                                for task in range(6)
                            ],
                        }
                        for stage in range(3)
                    ],
                }
            },
        )

    async def all_done() -> bool:
        return not await Task.exclude(status=TaskStatus.DONE).exists()

    await eventually(all_done, within=120, what="every task to be DONE")

    runs: list[tuple[str, str, datetime, datetime]] = []
    for database in names.values():
        for row in await target_fetch(server_url, database, "SELECT * FROM run_log"):
            runs.append((database, row["label"], row["started_at"], row["ended_at"]))
    labels = [label for _, label, _, _ in runs]
    assert len(labels) == 6 * 3 * 6
    assert len(set(labels)) == len(labels), "a task ran twice"
    assert await TaskRun.all().count() == 6 * 3 * 6
    assert_no_overlap_per_database(runs)
    assert_stages_in_order(runs)
    worker_names = {run.worker for run in await TaskRun.all()}
    assert len(worker_names) > 1, "the work should have been shared"


def assert_no_overlap_per_database(runs: list[tuple[str, str, datetime, datetime]]) -> None:
    by_database: dict[str, list[tuple[datetime, datetime]]] = {}
    for database, _, started, ended in runs:
        by_database.setdefault(database, []).append((started, ended))
    for intervals in by_database.values():
        intervals.sort()
        for (_, previous_end), (next_start, _) in itertools.pairwise(intervals):
            assert previous_end <= next_start, "two tasks ran on one database at once"


def assert_stages_in_order(runs: list[tuple[str, str, datetime, datetime]]) -> None:
    stage_spans: dict[tuple[str, int], tuple[datetime, datetime]] = {}
    for _, label, started, ended in runs:
        pipeline, stage_label, _ = label.split("-")
        key = (pipeline, int(stage_label[1:]))
        first, last = stage_spans.get(key, (started, ended))
        stage_spans[key] = (min(first, started), max(last, ended))
    for (pipeline, stage), (_, last_end) in stage_spans.items():
        later = stage_spans.get((pipeline, stage + 1))
        if later is not None:
            assert last_end <= later[0], f"{pipeline} started stage {stage + 1} too early"


async def run_one(
    graphql: GraphQLClient, catalog: Any, statement: str, database: str = "db"
) -> int:
    data = await graphql.ok(
        CREATE_ISSUE,
        {
            "i": {
                "title": "one task",
                "stages": [
                    {
                        "environmentId": catalog.environments["dev"],
                        "tasks": [
                            {
                                "type": "DATA_UPDATE",
                                "instanceId": catalog.instance,
                                "databaseId": catalog.databases[database],
                                "statement": statement,
                            }
                        ],
                    }
                ],
            }
        },
    )
    del data
    task = await Task.all().order_by("-id").first()
    assert task is not None
    return task.id


async def wait_running(task_id: int) -> None:
    async def started() -> bool:
        return bool(await Task.exists(id=task_id, status=TaskStatus.RUNNING))

    await eventually(started, what="the task to start")


@pytest.mark.parametrize("transactional", [True, False], ids=["transactional", "non-transactional"])
async def test_a_killed_worker_loses_no_task_and_applies_nothing_twice(
    graphql: GraphQLClient,
    settings: Settings,
    tmp_path: Path,
    server_url: str,
    target_databases: Callable[[], Awaitable[str]],
    transactional: bool,
) -> None:
    name = await target_databases()
    await target_fetch(server_url, name, "CREATE TABLE applied (task int)")
    catalog = await build_engine_catalog(graphql, server_url, {"db": name})
    # VACUUM cannot run in a transaction: its script runs statement by statement.
    prefix = "" if transactional else "VACUUM applied;"
    rounds = 3
    for round_number in range(rounds):
        task_id = await run_one(
            graphql,
            catalog,
            f"{prefix}INSERT INTO applied VALUES ({round_number}); SELECT pg_sleep(1.5)",
        )
        victim = start_worker(settings, tmp_path / f"victim-{round_number}.log")
        await wait_running(task_id)
        # Well inside the statement's sleep, after the INSERT before it.
        await asyncio.sleep(0.7)
        victim.stop(signal.SIGKILL)
        metrics_port = free_port()
        rescuer = start_worker(
            settings,
            tmp_path / f"rescuer-{round_number}.log",
            CONVEYOR_METRICS_PORT=str(metrics_port),
        )
        try:

            async def settled(task_id: int = task_id) -> Task | None:
                task = await Task.get(id=task_id)
                return task if task.status in (TaskStatus.DONE, TaskStatus.FAILED) else None

            task = await eventually(settled, within=LEASE_SECONDS * 6, what="recovery")
            async with httpx.AsyncClient() as http:
                metrics = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
        finally:
            rescuer.stop()
        # The rescuer counts the task it settled: run again (PENDING) or left to a person.
        recovered = "PENDING" if transactional else "FAILED"
        assert f'conveyor_lease_recoveries_total{{status="{recovered}"}} 1.0' in metrics
        if transactional:
            assert task.status is TaskStatus.DONE
            assert [
                run.status for run in await TaskRun.filter(task_id=task_id).order_by("attempt")
            ] == [
                "FAILED",
                "DONE",
            ]
        else:
            assert task.status is TaskStatus.FAILED
            assert task.status_reason is not None
            assert "outcome unknown" in task.status_reason
    applied = [
        row["task"] for row in await target_fetch(server_url, name, "SELECT task FROM applied")
    ]
    assert len(applied) == len(set(applied)), "a change was applied twice"
    if transactional:
        assert sorted(applied) == list(range(rounds)), "a change was lost"


async def test_sigterm_leaves_no_task_running(
    graphql: GraphQLClient,
    settings: Settings,
    tmp_path: Path,
    server_url: str,
    target_databases: Callable[[], Awaitable[str]],
) -> None:
    name = await target_databases()
    catalog = await build_engine_catalog(graphql, server_url, {"db": name})
    task_id = await run_one(graphql, catalog, "SELECT pg_sleep(60)")
    worker = start_worker(settings, tmp_path / "worker.log", CONVEYOR_SHUTDOWN_GRACE_SECONDS="1")
    await wait_running(task_id)

    exit_code = worker.stop(signal.SIGTERM)

    assert exit_code == 0, worker.log()
    task = await Task.get(id=task_id)
    assert task.status is TaskStatus.PENDING, "a transactional task is handed back to the queue"
    assert task.lease_owner is None
    assert not await Task.exists(status=TaskStatus.RUNNING)
