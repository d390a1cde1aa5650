"""What a person does to a task: edit, approve, retry, cancel, skip, run now."""

from dataclasses import dataclass
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from conveyor.db.checks import edited_statement_columns
from conveyor.db.events import record_events
from conveyor.db.models import Environment, Pipeline, Stage, Task
from conveyor.db.task_status import (
    StatusChange,
    apply_changes,
    environment_of,
    issue_creator,
    lock_task,
    now_utc,
    task_event,
)
from conveyor.domain.permissions import ApprovalRules, Principal
from conveyor.domain.plan import check_statement
from conveyor.domain.statuses import EventKind, TaskStatus
from conveyor.domain.task_actions import (
    TaskAccess,
    TaskFacts,
    refusal,
    skip_reason_problems,
    stage_approval,
)
from conveyor.domain.transitions import TaskAction
from conveyor.errors import ConveyorError, FieldPath, not_found


@dataclass(frozen=True)
class _Locked:
    pipeline: Pipeline
    task: Task
    environment: Environment

    def change(self, action: TaskAction, columns: dict[str, Any] | None = None) -> StatusChange:
        return StatusChange(
            self.task, action, columns or {}, policy=self.environment.approval_policy
        )


async def _lock_for(
    connection: BaseDBAsyncClient,
    task_id: int,
    action: TaskAction,
    principal: Principal,
    expected_version: int | None,
) -> _Locked:
    pipeline, task = await lock_task(connection, task_id, expected_version)
    environment = await environment_of(connection, task)
    access = TaskAccess(
        principal,
        await issue_creator(connection, pipeline.issue_id),
        ApprovalRules.of(environment),
    )
    refused = refusal(TaskFacts.of(task, pipeline.status), action, access)
    if refused is not None:
        raise refused
    return _Locked(pipeline, task, environment)


async def edit_task_statement(
    principal: Principal, task_id: int, statement: str, expected_version: int | None = None
) -> Task:
    """Replace a waiting or failed task's statement; it returns to its gate."""
    problems = check_statement(statement, ("input", "statement"))
    if problems:
        raise ConveyorError(problems)
    async with in_transaction() as connection:
        locked = await _lock_for(connection, task_id, TaskAction.EDIT, principal, expected_version)
        pipeline, task = locked.pipeline, locked.task
        edited = task_event(
            pipeline, task, EventKind.TASK_EDITED, detail={"version": task.version + 1}
        )
        # The status may stay where it is, but the approval is dismissed all the same.
        await apply_changes(
            connection,
            pipeline,
            [
                locked.change(
                    TaskAction.EDIT,
                    {
                        "statement": statement,
                        "approved_by": None,
                        "approved_at": None,
                        # The checks run again, and an override of the old ones is dismissed.
                        **edited_statement_columns(task),
                    },
                )
            ],
            principal.actor,
            [edited],
        )
    return task


async def _take_action(
    principal: Principal,
    task_id: int,
    action: TaskAction,
    expected_version: int | None,
    columns: dict[str, Any],
    event_kind: EventKind | None = None,
) -> Task:
    """Lock the task, check `action` is allowed, move it on with `columns`, record it."""
    async with in_transaction() as connection:
        locked = await _lock_for(connection, task_id, action, principal, expected_version)
        pipeline, task = locked.pipeline, locked.task
        await apply_changes(
            connection,
            pipeline,
            [locked.change(action, columns)],
            principal.actor,
            [task_event(pipeline, task, event_kind)] if event_kind is not None else [],
        )
    return task


async def approve_task(
    principal: Principal, task_id: int, expected_version: int | None = None
) -> Task:
    """Let a task past its approval gate."""
    return await _take_action(
        principal,
        task_id,
        TaskAction.APPROVE,
        expected_version,
        {"approved_by": principal.actor, "approved_at": now_utc()},
        EventKind.TASK_APPROVED,
    )


async def approve_stage(principal: Principal, stage_id: int) -> Stage:
    """Approve every task of the stage that waits for approval, at once."""
    field: FieldPath = ("input", "stageId")
    async with in_transaction() as connection:
        stage = await Stage.filter(id=stage_id).using_db(connection).first()
        if stage is None:
            raise not_found("stage", field)
        pipeline = (
            await Pipeline.filter(id=stage.pipeline_id)
            .select_for_update()
            .using_db(connection)
            .get()
        )
        environment = await Environment.filter(id=stage.environment_id).using_db(connection).get()
        tasks = (
            await Task.filter(stage_id=stage_id)
            .select_for_update()
            .using_db(connection)
            .order_by("position")
        )
        access = TaskAccess(
            principal,
            await issue_creator(connection, pipeline.issue_id),
            ApprovalRules.of(environment),
        )
        approvable = stage_approval(
            pipeline.status, [TaskFacts.of(task, pipeline.status) for task in tasks], access, field
        )
        if isinstance(approvable, ConveyorError):
            raise approvable
        waiting = [tasks[index] for index in approvable]
        approved_at = now_utc()
        await apply_changes(
            connection,
            pipeline,
            [
                StatusChange(
                    task,
                    TaskAction.APPROVE,
                    {"approved_by": principal.actor, "approved_at": approved_at},
                )
                for task in waiting
            ],
            principal.actor,
            [task_event(pipeline, task, EventKind.TASK_APPROVED) for task in waiting],
        )
    return stage


async def retry_task(
    principal: Principal, task_id: int, expected_version: int | None = None
) -> Task:
    """Send a failed or canceled task back to its gate for another attempt."""
    return await _take_action(
        principal,
        task_id,
        TaskAction.RETRY,
        expected_version,
        {
            "status_reason": None,
            "approved_by": None,
            "approved_at": None,
            "cancel_requested_at": None,
        },
    )


async def skip_task(
    principal: Principal, task_id: int, reason: str, expected_version: int | None = None
) -> Task:
    """Pass over a waiting or failed task, for a reason a person gives."""
    problems = skip_reason_problems(reason, ("input", "reason"))
    if problems:
        raise ConveyorError(problems)
    return await _take_action(
        principal, task_id, TaskAction.SKIP, expected_version, {"status_reason": reason.strip()}
    )


async def cancel_task(
    principal: Principal, task_id: int, expected_version: int | None = None
) -> Task:
    """Cancel a waiting task; ask the worker running a RUNNING one to abort it."""
    async with in_transaction() as connection:
        locked = await _lock_for(
            connection, task_id, TaskAction.CANCEL, principal, expected_version
        )
        pipeline, task = locked.pipeline, locked.task
        if task.status is TaskStatus.RUNNING:
            # The task stays RUNNING until its worker has aborted the statement on the target
            # and rolled it back: only then is CANCELED true.
            await request_abort(connection, pipeline, [task], principal.actor)
        else:
            await apply_changes(
                connection, pipeline, [locked.change(TaskAction.CANCEL)], principal.actor
            )
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


async def run_task_now(
    principal: Principal, task_id: int, expected_version: int | None = None
) -> Task:
    """Clear a waiting task's not-before time."""
    async with in_transaction() as connection:
        locked = await _lock_for(
            connection, task_id, TaskAction.RUN_NOW, principal, expected_version
        )
        pipeline, task = locked.pipeline, locked.task
        task.not_before = None
        task.version += 1
        await task.save(using_db=connection, update_fields=["not_before", "version", "updated_at"])
        await record_events(
            connection,
            principal.actor,
            [task_event(pipeline, task, EventKind.TASK_EDITED, detail={"notBefore": None})],
        )
    return task
