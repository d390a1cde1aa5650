"""What a person does to a task: edit, approve, retry, cancel, skip, run now."""

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from conveyor.db.models import Pipeline, Task
from conveyor.db.task_status import (
    StatusChange,
    apply_changes,
    approval_policy_of,
    lock_task,
    now_utc,
    task_event,
)
from conveyor.domain.plan import check_statement
from conveyor.domain.statuses import EventKind, PipelineStatus, TaskStatus
from conveyor.domain.transitions import TaskAction, TransitionRefused, next_status
from conveyor.errors import ConveyorError, conflict, invalid_input, not_found
from conveyor.events.store import record_events

REASON_MAX_LENGTH = 1_000


def _require_open(pipeline: Pipeline, verb: str, field: str = "taskId") -> None:
    if pipeline.status is not PipelineStatus.OPEN:
        raise conflict(
            f"cannot {verb} a task of an issue that is {pipeline.status.value}", ("input", field)
        )


async def _next_status(connection: BaseDBAsyncClient, task: Task, action: TaskAction) -> TaskStatus:
    try:
        return next_status(task.status, action, await approval_policy_of(connection, task))
    except TransitionRefused as refusal:
        raise conflict(str(refusal), ("input", "taskId")) from None


async def edit_task_statement(
    task_id: int, statement: str, actor: str, expected_version: int | None = None
) -> Task:
    """Replace a waiting or failed task's statement; it returns to its gate."""
    problems = check_statement(statement, ("input", "statement"))
    if problems:
        raise ConveyorError(problems)
    async with in_transaction() as connection:
        pipeline, task = await lock_task(connection, task_id, expected_version)
        _require_open(pipeline, "edit")
        if not task.type.needs_statement:
            raise invalid_input(f"a {task.type.value} task has no statement", ("input", "taskId"))
        new_status = await _next_status(connection, task, TaskAction.EDIT)
        edited = task_event(
            pipeline, task, EventKind.TASK_EDITED, detail={"version": task.version + 1}
        )
        # The status may stay where it is, but the approval is dismissed all the same.
        await apply_changes(
            connection,
            pipeline,
            [
                StatusChange(
                    task,
                    new_status,
                    {"statement": statement, "approved_by": None, "approved_at": None},
                )
            ],
            actor,
            [edited],
        )
    return task


async def approve_task(task_id: int, actor: str, expected_version: int | None = None) -> Task:
    """Let a task past its approval gate."""
    async with in_transaction() as connection:
        pipeline, task = await lock_task(connection, task_id, expected_version)
        _require_open(pipeline, "approve")
        new_status = await _next_status(connection, task, TaskAction.APPROVE)
        await apply_changes(
            connection,
            pipeline,
            [StatusChange(task, new_status, {"approved_by": actor, "approved_at": now_utc()})],
            actor,
            [task_event(pipeline, task, EventKind.TASK_APPROVED)],
        )
    return task


async def approve_stage(stage_id: int, actor: str) -> list[Task]:
    """Approve every task of the stage that waits for approval, at once."""
    async with in_transaction() as connection:
        pipeline = (
            await Pipeline.filter(stages__id=stage_id)
            .select_for_update()
            .using_db(connection)
            .first()
        )
        if pipeline is None:
            raise not_found("stage", ("input", "stageId"))
        _require_open(pipeline, "approve", "stageId")
        waiting = (
            await Task.filter(stage_id=stage_id, status=TaskStatus.PENDING_APPROVAL)
            .select_for_update()
            .using_db(connection)
            .order_by("position")
        )
        if not waiting:
            raise conflict("no task of this stage waits for approval", ("input", "stageId"))
        approved_at = now_utc()
        await apply_changes(
            connection,
            pipeline,
            [
                StatusChange(
                    task, TaskStatus.PENDING, {"approved_by": actor, "approved_at": approved_at}
                )
                for task in waiting
            ],
            actor,
            [task_event(pipeline, task, EventKind.TASK_APPROVED) for task in waiting],
        )
    return list(await Task.filter(stage_id=stage_id).order_by("position"))


async def retry_task(task_id: int, actor: str, expected_version: int | None = None) -> Task:
    """Send a failed or canceled task back to its gate for another attempt."""
    async with in_transaction() as connection:
        pipeline, task = await lock_task(connection, task_id, expected_version)
        _require_open(pipeline, "retry")
        new_status = await _next_status(connection, task, TaskAction.RETRY)
        await apply_changes(
            connection,
            pipeline,
            [
                StatusChange(
                    task,
                    new_status,
                    {
                        "status_reason": None,
                        "approved_by": None,
                        "approved_at": None,
                        "cancel_requested_at": None,
                    },
                )
            ],
            actor,
        )
    return task


async def skip_task(
    task_id: int, reason: str, actor: str, expected_version: int | None = None
) -> Task:
    """Pass over a waiting or failed task, for a reason a person gives."""
    if not reason.strip():
        raise invalid_input("a skip needs a reason", ("input", "reason"))
    if len(reason) > REASON_MAX_LENGTH:
        raise invalid_input(
            f"the reason must be at most {REASON_MAX_LENGTH} characters", ("input", "reason")
        )
    async with in_transaction() as connection:
        pipeline, task = await lock_task(connection, task_id, expected_version)
        _require_open(pipeline, "skip")
        new_status = await _next_status(connection, task, TaskAction.SKIP)
        await apply_changes(
            connection,
            pipeline,
            [StatusChange(task, new_status, {"status_reason": reason.strip()})],
            actor,
        )
    return task


async def cancel_task(task_id: int, actor: str, expected_version: int | None = None) -> Task:
    """Cancel a waiting task; ask the worker running a RUNNING one to abort it."""
    async with in_transaction() as connection:
        pipeline, task = await lock_task(connection, task_id, expected_version)
        _require_open(pipeline, "cancel")
        new_status = await _next_status(connection, task, TaskAction.CANCEL)
        if task.status is TaskStatus.RUNNING:
            # The task stays RUNNING until its worker has aborted the statement on the target
            # and rolled it back: only then is CANCELED true.
            if task.cancel_requested_at is not None:
                raise conflict("the task is being canceled already", ("input", "taskId"))
            await request_abort(connection, pipeline, [task], actor)
        else:
            await apply_changes(connection, pipeline, [StatusChange(task, new_status)], actor)
    return task


async def request_abort(
    connection: BaseDBAsyncClient, pipeline: Pipeline, tasks: list[Task], actor: str
) -> None:
    """Ask the workers of these RUNNING tasks to abort them."""
    requested_at = now_utc()
    for task in tasks:
        task.cancel_requested_at = requested_at
        task.version += 1
        await task.save(
            using_db=connection, update_fields=["cancel_requested_at", "version", "updated_at"]
        )
    await record_events(
        connection,
        actor,
        [task_event(pipeline, task, EventKind.TASK_CANCEL_REQUESTED) for task in tasks],
    )


async def run_task_now(task_id: int, actor: str, expected_version: int | None = None) -> Task:
    """Clear a waiting task's not-before time."""
    async with in_transaction() as connection:
        pipeline, task = await lock_task(connection, task_id, expected_version)
        _require_open(pipeline, "run")
        await _next_status(connection, task, TaskAction.RUN_NOW)
        if task.not_before is None:
            raise conflict("the task has no not-before time to clear", ("input", "taskId"))
        task.not_before = None
        task.version += 1
        await task.save(using_db=connection, update_fields=["not_before", "version", "updated_at"])
        await record_events(
            connection,
            actor,
            [task_event(pipeline, task, EventKind.TASK_EDITED, detail={"notBefore": None})],
        )
    return task
