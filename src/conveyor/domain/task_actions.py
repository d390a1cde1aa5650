"""What a person may do to a task now, and why not: pure functions of small facts records.

Every mutation on a task, `approveStage` and `Task.availableActions` ask here, so the actions
the API offers are exactly those it would not refuse.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from conveyor.domain.permissions import ApprovalRules, Principal, task_action_refusal
from conveyor.domain.statuses import PipelineStatus, TaskStatus, TaskType
from conveyor.domain.transitions import TaskAction, TransitionRefused, available_actions
from conveyor.errors import (
    ConveyorError,
    ErrorCode,
    FieldPath,
    Problem,
    conflict,
    forbidden,
    invalid_input,
)

#: The most characters a person's reason (e.g. for a skip) may have.
REASON_MAX_LENGTH = 1_000

#: What a person may do to a task; the others are the runner's.
PERSON_ACTIONS = tuple(action for action in TaskAction if not action.performed_by_runner)

TASK_ID: FieldPath = ("input", "taskId")


class _TaskRow(Protocol):
    @property
    def status(self) -> TaskStatus: ...
    @property
    def type(self) -> TaskType: ...
    @property
    def cancel_requested_at(self) -> datetime | None: ...
    @property
    def not_before(self) -> datetime | None: ...


@dataclass(frozen=True)
class TaskFacts:
    """What about a task decides which actions it allows."""

    status: TaskStatus
    type: TaskType
    pipeline_status: PipelineStatus
    cancel_requested: bool
    has_not_before: bool

    @classmethod
    def of(cls, task: _TaskRow, pipeline_status: PipelineStatus) -> "TaskFacts":
        return cls(
            status=task.status,
            type=task.type,
            pipeline_status=pipeline_status,
            cancel_requested=task.cancel_requested_at is not None,
            has_not_before=task.not_before is not None,
        )


@dataclass(frozen=True)
class TaskAccess:
    """Who asks, and what decides whether they may act on a task: its issue's creator and
    its environment's approval rules."""

    principal: Principal
    issue_creator: str
    rules: ApprovalRules


def _person_refusal(
    pipeline_status: PipelineStatus, action: TaskAction, access: TaskAccess, field: FieldPath
) -> ConveyorError | None:
    """The refusals that do not depend on the task itself: who asks, and the issue's state."""
    denied = task_action_refusal(access.principal, action, access.issue_creator, access.rules)
    if denied is not None:
        return forbidden(denied, field)
    if pipeline_status is not PipelineStatus.OPEN:
        return conflict(
            f"cannot {action.verb_phrase} a task of an issue that is {pipeline_status.value}",
            field,
        )
    return None


def _task_refusal(facts: TaskFacts, action: TaskAction, field: FieldPath) -> ConveyorError | None:
    if action is TaskAction.EDIT and not facts.type.needs_statement:
        return invalid_input(f"{facts.type.described} has no statement", field)
    if action not in available_actions(facts.status):
        return conflict(str(TransitionRefused(facts.status, action)), field)
    # The table allows both, but each would change nothing: a RUNNING task stays RUNNING until
    # its worker has aborted it, so asking a second time is a conflict, not a no-op success.
    if (
        action is TaskAction.CANCEL
        and facts.status is TaskStatus.RUNNING
        and facts.cancel_requested
    ):
        return conflict("the task is being canceled already", field)
    if action is TaskAction.RUN_NOW and not facts.has_not_before:
        return conflict("the task has no not-before time to clear", field)
    return None


def refusal(
    facts: TaskFacts, action: TaskAction, access: TaskAccess, field: FieldPath = TASK_ID
) -> ConveyorError | None:
    """Why `access.principal` may not take `action` on the task now, or None if they may."""
    return _person_refusal(facts.pipeline_status, action, access, field) or _task_refusal(
        facts, action, field
    )


def actions_for(facts: TaskFacts, access: TaskAccess) -> list[TaskAction]:
    """The actions `access.principal` may take on the task now, in TaskAction's order."""
    return [action for action in PERSON_ACTIONS if refusal(facts, action, access) is None]


def stage_approval(
    pipeline_status: PipelineStatus,
    tasks: Sequence[TaskFacts],
    access: TaskAccess,
    field: FieldPath,
) -> list[int] | ConveyorError:
    """The positions in `tasks` (a stage's) that approving the stage approves, or why it may
    not be approved: the same checks as approving each task on its own."""
    refused = _person_refusal(pipeline_status, TaskAction.APPROVE, access, field)
    if refused is not None:
        return refused
    approvable = [
        index
        for index, facts in enumerate(tasks)
        if _task_refusal(facts, TaskAction.APPROVE, field) is None
    ]
    if not approvable:
        return conflict("no task of this stage waits for approval", field)
    return approvable


def skip_reason_problems(reason: str, field: FieldPath) -> list[Problem]:
    """What is wrong with a person's reason for skipping a task."""
    if not reason.strip():
        return [Problem(ErrorCode.INVALID_INPUT, "a skip needs a reason", field)]
    if len(reason) > REASON_MAX_LENGTH:
        return [
            Problem(
                ErrorCode.INVALID_INPUT,
                f"the reason must be at most {REASON_MAX_LENGTH} characters",
                field,
                limit=REASON_MAX_LENGTH,
            )
        ]
    return []
