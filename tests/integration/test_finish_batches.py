"""Attempts of one pipeline that finish while another finish holds it are recorded together
(`db.claims.finish_and_claim_together`, one `end_attempts` statement for all): each must end
as it would alone, its log lines before its status change, the roll-ups once, after them.
A queued finish (`db.claims.finish_queued_and_claim`) takes its attempts once it holds the
pipeline's lock: those that finished while it waited go with it."""

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from tortoise.transactions import in_transaction

from conveyor.db.claims import (
    ClaimedTask,
    Finished,
    claim_tasks,
    finish_and_claim_together,
    finish_queued_and_claim,
)
from conveyor.db.models import Event, Instance, Pipeline, Task, TaskRun
from conveyor.domain.attempts import AttemptEnd
from conveyor.domain.statuses import (
    EventKind,
    PipelineStatus,
    TaskRunStatus,
    TaskStatus,
)
from conveyor.domain.transitions import TaskAction
from tests.api.support import Catalog, create_catalog, create_issue, database_task, instance_task
from tests.conftest import GraphQLClient

WORKER = "worker-batch"
LEASE = timedelta(seconds=30)
SUCCEED = AttemptEnd(TaskAction.SUCCEED, TaskRunStatus.DONE, None, None)
FAIL = AttemptEnd(TaskAction.FAIL, TaskRunStatus.FAILED, "TARGET_ERROR", "relation missing")
LOG_LINE = {"kind": "statement", "text": "SELECT 1", "statusTag": "SELECT 1"}
Events = list[tuple[str, int | None, str | None, str | None]]
Stages = Callable[[Catalog], dict[str, list[dict[str, Any]]]]


async def _claimed(
    graphql: GraphQLClient, stages: Stages
) -> tuple[dict[str, int], dict[str, ClaimedTask], int]:
    """The issue's task ids by name, its tasks a claim took (by name), and the last event's
    sequence number once claimed."""
    catalog = await create_catalog(graphql)
    issue = await create_issue(graphql, catalog, stages(catalog))
    await Instance.all().update(max_running_tasks=4)
    ids = {name: issue.task_key(name) for name in issue.tasks}
    names = {task_id: name for name, task_id in ids.items()}
    claims = await claim_tasks(WORKER, LEASE, limit=8)
    last = await Event.all().order_by("-id").first()
    assert last is not None
    return ids, {names[task.task_id]: task for task in claims.tasks}, last.id


def _one_task_on_each_database(catalog: Catalog) -> dict[str, list[dict[str, Any]]]:
    return {
        "dev": [
            database_task(catalog, "DATA_UPDATE", name="a1", statement="SELECT 1"),
            database_task(catalog, "DATA_UPDATE", "beta", name="b1", statement="SELECT 1"),
        ]
    }


async def _events_after(sequence: int) -> Events:
    return [
        (event.kind.value, event.task_id, event.old_status, event.new_status)
        for event in await Event.filter(id__gt=sequence).order_by("id")
    ]


async def test_a_batch_ends_each_attempt_with_its_own_outcome(graphql: GraphQLClient) -> None:
    def stages(catalog: Catalog) -> dict[str, list[dict[str, Any]]]:
        return {
            "dev": [
                database_task(catalog, "DATA_UPDATE", name="a1", statement="SELECT 1"),
                database_task(catalog, "DATA_UPDATE", "beta", name="b1", statement="SELECT 1"),
                instance_task(catalog, "INSTANCE_SYNC", "alpha", name="sync"),
            ],
            "test": [database_task(catalog, "DATA_UPDATE", name="t1", statement="SELECT 1")],
        }

    ids, claimed, sequence = await _claimed(graphql, stages)
    assert set(claimed) == {"a1", "b1", "sync"}

    round_ = await finish_and_claim_together(
        WORKER,
        [
            Finished(claimed["b1"], FAIL, log_lines=[LOG_LINE]),
            Finished(claimed["a1"], SUCCEED, log_lines=[LOG_LINE]),
        ],
        LEASE,
        claim=True,
    )

    # The stage still runs (sync): the next stage's task is not claimed.
    assert (round_.claimed, round_.dropped) == ([], [])
    tasks = {task.id: task for task in await Task.filter(id__in=list(ids.values()))}
    assert [tasks[ids[name]].status for name in ("a1", "b1", "sync", "t1")] == [
        TaskStatus.DONE,
        TaskStatus.FAILED,
        TaskStatus.RUNNING,
        TaskStatus.PENDING,
    ]
    assert tasks[ids["a1"]].status_reason is None
    assert tasks[ids["b1"]].status_reason == "relation missing"
    assert tasks[ids["a1"]].lease_owner is tasks[ids["b1"]].lease_owner is None
    runs = {run.task_id: run for run in await TaskRun.filter(task_id__in=[ids["a1"], ids["b1"]])}
    assert (runs[ids["a1"]].status, runs[ids["a1"]].error_code) == (TaskRunStatus.DONE, None)
    assert (runs[ids["b1"]].status, runs[ids["b1"]].error_code) == (
        TaskRunStatus.FAILED,
        "TARGET_ERROR",
    )
    assert runs[ids["a1"]].ended_at is not None
    # In task order, each task's log lines before its status change; no roll-up yet.
    assert await _events_after(sequence) == [
        ("TASK_LOG", ids["a1"], None, None),
        ("TASK_STATUS_CHANGED", ids["a1"], "RUNNING", "DONE"),
        ("TASK_LOG", ids["b1"], None, None),
        ("TASK_STATUS_CHANGED", ids["b1"], "RUNNING", "FAILED"),
    ]

    # The last of the stage, alone: the stage rolls up to FAILED, the pipeline stays open.
    await finish_and_claim_together(WORKER, [Finished(claimed["sync"], SUCCEED)], LEASE, claim=True)
    assert (await _events_after(sequence))[4:] == [
        ("TASK_STATUS_CHANGED", ids["sync"], "RUNNING", "DONE"),
        ("STAGE_STATUS_CHANGED", None, "RUNNING", "FAILED"),
    ]


async def test_a_batch_that_ends_the_last_tasks_rolls_the_stage_and_pipeline_up_once(
    graphql: GraphQLClient,
) -> None:
    ids, claimed, sequence = await _claimed(graphql, _one_task_on_each_database)

    round_ = await finish_and_claim_together(
        WORKER,
        [Finished(claimed["a1"], SUCCEED), Finished(claimed["b1"], SUCCEED)],
        LEASE,
        claim=True,
    )

    assert (round_.claimed, round_.dropped) == ([], [])
    events = await _events_after(sequence)
    assert events[:3] == [
        ("TASK_STATUS_CHANGED", ids["a1"], "RUNNING", "DONE"),
        ("TASK_STATUS_CHANGED", ids["b1"], "RUNNING", "DONE"),
        ("STAGE_STATUS_CHANGED", None, "RUNNING", "DONE"),
    ]
    assert [kind for kind, *_ in events[3:]] == [EventKind.PIPELINE_STATUS_CHANGED.value]
    assert events[3][2:] == ("OPEN", "DONE")
    pipeline = await Pipeline.get(id=claimed["a1"].pipeline_id)
    assert pipeline.status is PipelineStatus.DONE


async def test_an_attempt_no_longer_held_is_dropped_and_the_others_are_recorded(
    graphql: GraphQLClient,
) -> None:
    ids, claimed, sequence = await _claimed(graphql, _one_task_on_each_database)
    # Another worker settled b1's expired lease and runs it again.
    await Task.filter(id=ids["b1"]).update(lease_owner="worker-other")

    round_ = await finish_and_claim_together(
        WORKER, [Finished(claimed["a1"], SUCCEED), Finished(claimed["b1"], FAIL)], LEASE, claim=True
    )

    assert round_.dropped == [ids["b1"]]
    assert (await Task.get(id=ids["a1"])).status is TaskStatus.DONE
    b1 = await Task.get(id=ids["b1"])
    assert (b1.status, b1.lease_owner) == (TaskStatus.RUNNING, "worker-other")
    assert await _events_after(sequence) == [("TASK_STATUS_CHANGED", ids["a1"], "RUNNING", "DONE")]


async def test_a_queued_finish_takes_the_attempts_that_finished_while_it_waited_for_the_lock(
    graphql: GraphQLClient,
) -> None:
    ids, claimed, sequence = await _claimed(graphql, _one_task_on_each_database)
    pipeline_id = claimed["a1"].pipeline_id
    queued = [Finished(claimed["a1"], SUCCEED)]
    taken: list[list[int]] = []

    def take() -> list[Finished]:
        taken.append([item.claimed.task_id for item in queued])
        return list(queued)

    locked, released = asyncio.Event(), asyncio.Event()

    async def earlier_finish() -> None:
        async with in_transaction() as connection:
            await Pipeline.filter(id=pipeline_id).select_for_update().using_db(connection).get()
            locked.set()
            await released.wait()

    holder = asyncio.create_task(earlier_finish())
    await locked.wait()
    finishing = asyncio.create_task(
        finish_queued_and_claim(WORKER, pipeline_id, take, LEASE, claim=True)
    )
    await asyncio.sleep(0.3)
    # It waits for the lock in PostgreSQL, and has taken nothing yet.
    assert not finishing.done()
    assert taken == []
    queued.append(Finished(claimed["b1"], FAIL))
    released.set()
    await holder

    round_ = await finishing
    assert taken == [[ids["a1"], ids["b1"]]]
    assert (round_.claimed, round_.dropped) == ([], [])
    assert [event[1:] for event in await _events_after(sequence)][:2] == [
        (ids["a1"], "RUNNING", "DONE"),
        (ids["b1"], "RUNNING", "FAILED"),
    ]
