"""Every task status change goes through here: the row, its event, the pipeline's roll-up.

This module is the one writer of a task's status, and it writes only what the transition table
(domain.transitions) allows: a change names an action, never a status. `apply_changes` serves
a person's actions and the runner's rare paths; `start_tasks` and `end_attempts` are the
runner's hot path, one named statement each (sql/runner.sql), the table consulted first.
"""

import json
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from conveyor.db.events import EVENT_ORDER_LOCK_KEY, RUNNER_CHANNEL, NewEvent, record_events
from conveyor.db.models import Environment, Issue, Pipeline, Task
from conveyor.db.queries import RUNNER
from conveyor.domain.attempts import AttemptEnd, Outcome
from conveyor.domain.rollup import derive_pipeline_status, derive_stage_status
from conveyor.domain.statuses import (
    FINISHED_TASK_STATUSES,
    ApprovalPolicy,
    EventKind,
    PipelineStatus,
    TaskRunStatus,
    TaskStatus,
)
from conveyor.domain.transitions import TaskAction, next_status
from conveyor.errors import conflict, not_found


@dataclass(frozen=True)
class StatusChange:
    """A transition of the table, taken on `task` (whose row is locked)."""

    task: Task
    action: TaskAction
    #: Other columns to set with the status, e.g. {"status_reason": "..."}.
    columns: dict[str, Any] = field(default_factory=dict)
    #: The approval policy of the task's environment: needed by the actions leading to the gate.
    policy: ApprovalPolicy | None = None


def task_event(pipeline: Pipeline, task: Task, kind: EventKind, **fields: Any) -> NewEvent:
    """An event about `task` of `pipeline`."""
    return NewEvent(
        kind,
        issue_id=pipeline.issue_id,
        pipeline_id=pipeline.id,
        stage_id=task.stage_id,
        task_id=task.id,
        **fields,
    )


def pipeline_event(pipeline: Pipeline, new_status: PipelineStatus) -> NewEvent:
    return NewEvent(
        EventKind.PIPELINE_STATUS_CHANGED,
        issue_id=pipeline.issue_id,
        pipeline_id=pipeline.id,
        old_status=pipeline.status,
        new_status=new_status,
    )


async def set_pipeline_status(
    connection: BaseDBAsyncClient, pipeline: Pipeline, status: PipelineStatus
) -> NewEvent:
    event = pipeline_event(pipeline, status)
    pipeline.status = status
    await pipeline.save(using_db=connection, update_fields=["status", "updated_at"])
    return event


async def apply_changes(
    connection: BaseDBAsyncClient,
    pipeline: Pipeline,
    changes: Sequence[StatusChange],
    actor: str,
    extra_events: Sequence[NewEvent] = (),
) -> None:
    """Save the changes, roll the pipeline up, and record every event, in the caller's
    transaction (whose pipeline row must be locked).

    Raises TransitionRefused, before writing anything, if the table refuses one of them.
    """
    events = list(extra_events)
    statuses_before = {change.task.id: change.task.status for change in changes}
    stage_ids = {change.task.stage_id for change in changes}
    new_statuses = [
        next_status(change.task.status, change.action, change.policy) for change in changes
    ]
    for change, new_status in zip(changes, new_statuses, strict=True):
        task = change.task
        if new_status is not task.status:
            events.append(
                task_event(
                    pipeline,
                    task,
                    EventKind.TASK_STATUS_CHANGED,
                    old_status=task.status,
                    new_status=new_status,
                    detail={"reason": change.columns["status_reason"]}
                    if change.columns.get("status_reason")
                    else None,
                )
            )
        task.status = new_status
        task.version += 1
        for column, value in change.columns.items():
            setattr(task, column, value)
        await task.save(
            using_db=connection,
            update_fields=["status", "version", "updated_at", *change.columns],
        )
    events.extend(await _stage_events(connection, pipeline, stage_ids, statuses_before))
    if changes and pipeline.status is PipelineStatus.OPEN:
        # One unfinished task is enough to keep the pipeline open; no need to read them all.
        unfinished = (
            await Task.filter(pipeline_id=pipeline.id)
            .exclude(status__in=FINISHED_TASK_STATUSES)
            .using_db(connection)
            .limit(1)
            .only("id", "status")
        )
        rolled_up = derive_pipeline_status(pipeline.status, [task.status for task in unfinished])
        if rolled_up is not pipeline.status:
            # The issue becomes DONE in the same transaction as its last task.
            events.append(await set_pipeline_status(connection, pipeline, rolled_up))
    await record_events(connection, actor, events)


async def _stage_events(
    connection: BaseDBAsyncClient,
    pipeline: Pipeline,
    stage_ids: set[int],
    statuses_before: dict[int, TaskStatus],
) -> list[NewEvent]:
    """A STAGE_STATUS_CHANGED event for each of `stage_ids` whose derived status the saved
    changes moved (`statuses_before`: the changed tasks' statuses before them)."""
    if not stage_ids:
        return []
    rows = (
        await Task.filter(stage_id__in=stage_ids)
        .using_db(connection)
        .values_list("id", "stage_id", "status")
    )
    after: dict[int, list[TaskStatus]] = defaultdict(list)
    before: dict[int, list[TaskStatus]] = defaultdict(list)
    for task_id, stage_id, status in rows:
        after[stage_id].append(status)
        before[stage_id].append(statuses_before.get(task_id, status))
    events = []
    for stage_id in sorted(after):
        old, new = derive_stage_status(before[stage_id]), derive_stage_status(after[stage_id])
        if old is not new:
            events.append(
                NewEvent(
                    EventKind.STAGE_STATUS_CHANGED,
                    issue_id=pipeline.issue_id,
                    pipeline_id=pipeline.id,
                    stage_id=stage_id,
                    old_status=old,
                    new_status=new,
                )
            )
    return events


def stage_events_of_changes(
    pipeline_id: int,
    issue_id: int,
    stage_id: int,
    others: Sequence[TaskStatus],
    before: Sequence[TaskStatus],
    after: Sequence[TaskStatus],
) -> list[NewEvent]:
    """A STAGE_STATUS_CHANGED event if the stage's derived status moved when its changed tasks
    went from `before` to `after` statuses (`others`: the statuses of its other tasks, as read
    under the pipeline's lock); none otherwise."""
    old = derive_stage_status([*others, *before])
    new = derive_stage_status([*others, *after])
    if old is new:
        return []
    return [
        NewEvent(
            EventKind.STAGE_STATUS_CHANGED,
            issue_id=issue_id,
            pipeline_id=pipeline_id,
            stage_id=stage_id,
            old_status=old,
            new_status=new,
        )
    ]


async def lock_task(
    connection: BaseDBAsyncClient, task_id: int, expected_version: int | None = None
) -> tuple[Pipeline, Task]:
    """The task and its pipeline, both locked (pipeline first), or a typed refusal."""
    # Every writer locks the pipeline row before any of its tasks: one lock order for all,
    # so two writers never deadlock.
    pipeline = (
        await Pipeline.filter(tasks__id=task_id).select_for_update().using_db(connection).first()
    )
    if pipeline is None:
        raise not_found("task", ("input", "taskId"))
    task = await Task.filter(id=task_id).select_for_update().using_db(connection).get()
    if expected_version is not None and task.version != expected_version:
        raise conflict(
            f"the task changed since you read it (now at version {task.version})",
            ("input", "expectedVersion"),
        )
    return pipeline, task


async def issue_creator(connection: BaseDBAsyncClient, issue_id: int) -> str:
    """Who opened the issue: the actor some permissions turn on."""
    issue = await Issue.filter(id=issue_id).using_db(connection).only("id", "creator").get()
    return issue.creator


async def environment_of(connection: BaseDBAsyncClient, task: Task) -> Environment:
    """The environment of the task's stage: its approval policy and who may approve there."""
    return await Environment.filter(stages__id=task.stage_id).using_db(connection).get()


def now_utc() -> datetime:
    return datetime.now(UTC)


async def start_tasks(
    connection: BaseDBAsyncClient,
    tasks: Sequence[tuple[int, TaskStatus]],
    worker: str,
    lease: timedelta,
    actor: str,
) -> list[dict[str, Any]]:
    """START the (task id, current status) pairs of one pipeline the caller holds locked, in
    one statement; a row per task started, with what running it needs."""
    if not tasks:
        return []
    new_statuses = {next_status(status, TaskAction.START) for _, status in tasks}
    [running] = new_statuses  # START leads to one status, whatever it is taken from
    rows = await connection.execute_query_dict(
        RUNNER["start_tasks"],
        [
            [task_id for task_id, _ in tasks],
            [status.value for _, status in tasks],
            running.value,
            worker,
            lease.total_seconds(),
            TaskRunStatus.RUNNING.value,
            EVENT_ORDER_LOCK_KEY,
            EventKind.TASK_STATUS_CHANGED.value,
            actor,
            RUNNER_CHANNEL,
            [status.value for status in TaskStatus],
        ],
    )
    if rows:
        stage_events = _stage_roll_ups(
            rows[0]["pipeline_id"],
            rows[0]["issue_id"],
            rows,
            lambda row: (TaskStatus(row["old_status"]), running),
        )
        # Rare (a stage's first task starting): its event is written after the tasks' own.
        await record_events(connection, actor, stage_events, RUNNER_CHANNEL)
    return rows


def _stage_roll_ups(
    pipeline_id: int,
    issue_id: int,
    rows: Sequence[Mapping[str, Any]],
    change_of: Callable[[Mapping[str, Any]], tuple[TaskStatus, TaskStatus]],
) -> list[NewEvent]:
    """The STAGE_STATUS_CHANGED events of the tasks one statement changed: `rows` give each
    task's `stage_id` and its stage's other statuses (`stage_others`), `change_of` each task's
    status before and after."""
    by_stage: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        by_stage[row["stage_id"]].append(row)
    return [
        event
        for stage_id, changed in sorted(by_stage.items())
        for event in stage_events_of_changes(
            pipeline_id,
            issue_id,
            stage_id,
            [TaskStatus(status) for status in changed[0]["stage_others"]],
            [change_of(row)[0] for row in changed],
            [change_of(row)[1] for row in changed],
        )
    ]


@dataclass(frozen=True)
class HeldTask:
    """A task a worker holds, as its claim left it."""

    task_id: int
    run_id: int
    status: TaskStatus


@dataclass(frozen=True)
class LockedPipeline:
    """A pipeline the caller's transaction holds locked, as it is now."""

    pipeline_id: int
    issue_id: int
    status: PipelineStatus


async def lock_pipeline_of(connection: BaseDBAsyncClient, task_id: int) -> LockedPipeline | None:
    """Lock the pipeline of the task, as every writer locks it first; None: no such task."""
    return _locked(await connection.execute_query_dict(RUNNER["lock_pipeline_of_task"], [task_id]))


async def lock_pipeline(connection: BaseDBAsyncClient, pipeline_id: int) -> LockedPipeline | None:
    """Lock the pipeline, as every writer locks it first; None: no such pipeline."""
    return _locked(await connection.execute_query_dict(RUNNER["lock_pipeline"], [pipeline_id]))


def _locked(rows: Sequence[Mapping[str, Any]]) -> LockedPipeline | None:
    if not rows:
        return None
    [row] = rows
    return LockedPipeline(row["id"], row["issue_id"], PipelineStatus(row["status"]))


@dataclass(frozen=True)
class AttemptToEnd:
    """An attempt `end_attempts` records: the task as held, how the attempt ended, what the
    target answered (None: it never did), the database a DATABASE_CREATE task made (to link),
    and the attempt's log lines not streamed yet."""

    held: HeldTask
    end: AttemptEnd
    outcome: Outcome | None = None
    database_id: int | None = None
    log_lines: Sequence[dict[str, Any]] = ()


@dataclass(frozen=True)
class EndedAttempts:
    """What `end_attempts` left: the pipeline, as the ends left it (for the next write in the
    same transaction), and the tasks whose attempt it ended (the others were not held)."""

    pipeline: LockedPipeline
    task_ids: frozenset[int]


async def end_attempts(
    connection: BaseDBAsyncClient,
    worker: str,
    attempts: Sequence[AttemptToEnd],
    actor: str,
    *,
    locked: LockedPipeline | None = None,
) -> EndedAttempts | None:
    """Take the ending transitions of attempts on tasks of one pipeline and record their runs,
    in two statements whatever their number (the pipeline's lock, then the rest: each task's
    log lines as a TASK_LOG event before its status change); None if the first task does not
    exist. A task `worker` no longer held is left alone. A stage or pipeline that rolls up adds
    its event after them. The pipeline stays locked until the caller's transaction ends.

    `locked`: the pipeline as this transaction already locked it (by `lock_pipeline_of` or an
    earlier write in it), which saves the first statement."""
    if not attempts:
        raise ValueError("no attempt to end")
    new_statuses = [next_status(item.held.status, item.end.action) for item in attempts]
    if locked is None:
        locked = await lock_pipeline_of(connection, attempts[0].held.task_id)
        if locked is None:
            return None
    rows = await connection.execute_query_dict(
        RUNNER["end_attempts"],
        [
            [item.held.task_id for item in attempts],
            [item.held.status.value for item in attempts],
            [status.value for status in new_statuses],
            [item.end.status_reason for item in attempts],
            [item.database_id for item in attempts],
            [item.held.run_id for item in attempts],
            [item.end.run_status.value for item in attempts],
            [item.end.error_code for item in attempts],
            [item.end.reason for item in attempts],
            *_outcome_columns([item.outcome for item in attempts]),
            [
                json.dumps({"reason": item.end.status_reason}) if item.end.status_reason else None
                for item in attempts
            ],
            [
                json.dumps({"entries": list(item.log_lines)}) if item.log_lines else None
                for item in attempts
            ],
            worker,
            EVENT_ORDER_LOCK_KEY,
            EventKind.TASK_STATUS_CHANGED.value,
            actor,
            EventKind.TASK_LOG.value,
            RUNNER_CHANNEL,
            sorted(set(TaskStatus) - FINISHED_TASK_STATUSES),
            [status.value for status in TaskStatus],
        ],
    )
    if not rows:
        return EndedAttempts(locked, frozenset())
    pipeline_id, issue_id = locked.pipeline_id, locked.issue_id
    changes = {
        item.held.task_id: (item.held.status, new)
        for item, new in zip(attempts, new_statuses, strict=True)
    }
    roll_up = _stage_roll_ups(pipeline_id, issue_id, rows, lambda row: changes[row["id"]])
    pipeline_status = locked.status
    others = [TaskStatus(status) for status in rows[0]["unfinished"]]
    rolled_up = derive_pipeline_status(
        pipeline_status, [*(changes[row["id"]][1] for row in rows), *others]
    )
    if rolled_up is not pipeline_status:
        # The issue becomes DONE in the same transaction as its last task.
        pipeline = await Pipeline.filter(id=pipeline_id).using_db(connection).get()
        roll_up.append(await set_pipeline_status(connection, pipeline, rolled_up))
    await record_events(connection, actor, roll_up, RUNNER_CHANNEL)
    return EndedAttempts(
        LockedPipeline(pipeline_id, issue_id, rolled_up), frozenset(row["id"] for row in rows)
    )


def _outcome_columns(outcomes: Sequence[Outcome | None]) -> list[list[Any]]:
    """The run rows' result, log (JSON) and transactional flag; None where the target never
    answered (the row keeps what it has)."""
    return [
        [None if outcome is None else json.dumps(outcome.result) for outcome in outcomes],
        [None if outcome is None else json.dumps(outcome.log) for outcome in outcomes],
        [None if outcome is None else outcome.transactional for outcome in outcomes],
    ]
