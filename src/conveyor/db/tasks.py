"""What a person does to a task: edit, approve, retry, cancel, skip, run now."""

from dataclasses import dataclass
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from conveyor.db.access import refuse_if
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
from conveyor.domain.permissions import (
    ApprovalRules,
    Principal,
    approval_refusal,
    task_action_refusal,
)
from conveyor.domain.plan import check_statement
from conveyor.domain.statuses import EventKind, PipelineStatus, TaskStatus
from conveyor.domain.transitions import (
    TaskAction,
    TransitionRefused,
    available_actions,
    next_status,
)
from conveyor.errors import (
    ConveyorError,
    ErrorCode,
    FieldPath,
    Problem,
    conflict,
    forbidden,
    invalid_input,
    not_found,
)

REASON_MAX_LENGTH = 1_000

#: What a person may do to a task; START, SUCCEED and FAIL are the runner's.
PERSON_ACTIONS = tuple(action for action in TaskAction if not action.performed_by_runner)

_TASK_ID: FieldPath = ("input", "taskId")


def _closed_refusal(
    pipeline_status: PipelineStatus, action: TaskAction, field: FieldPath
) -> ConveyorError | None:
    if pipeline_status is PipelineStatus.OPEN:
        return None
    return conflict(
        f"cannot {action.verb_phrase} a task of an issue that is {pipeline_status.value}", field
    )


def approval_rules(environment: Environment) -> ApprovalRules:
    return ApprovalRules(
        developers_may_approve=environment.developers_may_approve,
        creator_may_approve=environment.creator_may_approve,
    )


@dataclass(frozen=True)
class TaskAccess:
    """Who asks, and what decides whether they may act on a task: its issue's creator and
    its environment's approval rules."""

    principal: Principal
    issue_creator: str
    rules: ApprovalRules


def refusal(
    task: Task, pipeline_status: PipelineStatus, action: TaskAction, access: TaskAccess
) -> ConveyorError | None:
    """Why `access.principal` may not take `action` on `task` now, or None if they may."""
    # Every action below and `actions_for` ask here, so the actions the API offers on a task
    # are exactly those it would not refuse.
    denied = task_action_refusal(access.principal, action, access.issue_creator, access.rules)
    if denied is not None:
        return forbidden(denied, _TASK_ID)
    closed = _closed_refusal(pipeline_status, action, _TASK_ID)
    if closed is not None:
        return closed
    if action is TaskAction.EDIT and not task.type.needs_statement:
        return invalid_input(f"{task.type.described} has no statement", _TASK_ID)
    if action not in available_actions(task.status):
        return conflict(str(TransitionRefused(task.status, action)), _TASK_ID)
    # The table allows both, but each would change nothing: a RUNNING task stays RUNNING until
    # its worker has aborted it, so asking a second time is a conflict, not a no-op success.
    if (
        action is TaskAction.CANCEL
        and task.status is TaskStatus.RUNNING
        and task.cancel_requested_at is not None
    ):
        return conflict("the task is being canceled already", _TASK_ID)
    if action is TaskAction.RUN_NOW and task.not_before is None:
        return conflict("the task has no not-before time to clear", _TASK_ID)
    return None


def actions_for(
    task: Task, pipeline_status: PipelineStatus, access: TaskAccess
) -> list[TaskAction]:
    """The actions `access.principal` may take on `task` now, in TaskAction's order."""
    return [
        action
        for action in PERSON_ACTIONS
        if refusal(task, pipeline_status, action, access) is None
    ]


@dataclass(frozen=True)
class _Locked:
    pipeline: Pipeline
    task: Task
    environment: Environment

    def next_status(self, action: TaskAction) -> TaskStatus:
        return next_status(self.task.status, action, self.environment.approval_policy)


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
        principal, await issue_creator(connection, pipeline.issue_id), approval_rules(environment)
    )
    refused = refusal(task, pipeline.status, action, access)
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
        new_status = locked.next_status(TaskAction.EDIT)
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
            [StatusChange(task, locked.next_status(action), columns)],
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
        refuse_if(
            approval_refusal(
                principal,
                await issue_creator(connection, pipeline.issue_id),
                approval_rules(environment),
            ),
            field,
        )
        closed = _closed_refusal(pipeline.status, TaskAction.APPROVE, field)
        if closed is not None:
            raise closed
        waiting = (
            await Task.filter(stage_id=stage_id, status=TaskStatus.PENDING_APPROVAL)
            .select_for_update()
            .using_db(connection)
            .order_by("position")
        )
        if not waiting:
            raise conflict("no task of this stage waits for approval", field)
        approved_at = now_utc()
        await apply_changes(
            connection,
            pipeline,
            [
                StatusChange(
                    task,
                    TaskStatus.PENDING,
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
    if not reason.strip():
        raise invalid_input("a skip needs a reason", ("input", "reason"))
    if len(reason) > REASON_MAX_LENGTH:
        raise ConveyorError(
            [
                Problem(
                    ErrorCode.INVALID_INPUT,
                    f"the reason must be at most {REASON_MAX_LENGTH} characters",
                    ("input", "reason"),
                    limit=REASON_MAX_LENGTH,
                )
            ]
        )
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
            new_status = locked.next_status(TaskAction.CANCEL)
            await apply_changes(
                connection, pipeline, [StatusChange(task, new_status)], principal.actor
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
