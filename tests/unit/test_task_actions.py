"""The refusals of a person's actions on a task, and the actions offered: pure, no database."""

import pytest

from conveyor.domain.permissions import ApprovalRules, Principal, Role
from conveyor.domain.statuses import PipelineStatus, TaskStatus, TaskType
from conveyor.domain.task_actions import (
    PERSON_ACTIONS,
    TaskAccess,
    TaskFacts,
    actions_for,
    refusal,
    skip_reason_problems,
    stage_approval,
)
from conveyor.domain.transitions import TaskAction, available_actions
from conveyor.errors import ConveyorError, ErrorCode

FIELD = ("input", "stageId")
DBA = TaskAccess(Principal("dora", Role.DBA), "carol", ApprovalRules(True, True))
VIEWER = TaskAccess(Principal("vic", Role.VIEWER), "carol", ApprovalRules(True, True))


def facts(
    status: TaskStatus,
    *,
    type: TaskType = TaskType.SCHEMA_UPDATE,
    pipeline_status: PipelineStatus = PipelineStatus.OPEN,
    cancel_requested: bool = False,
    has_not_before: bool = True,
) -> TaskFacts:
    return TaskFacts(status, type, pipeline_status, cancel_requested, has_not_before)


def code(error: ConveyorError | None) -> ErrorCode | None:
    return None if error is None else error.problems[0].code


@pytest.mark.parametrize("status", list(TaskStatus))
def test_a_dba_may_take_every_action_the_table_allows_on_an_open_issue(status: TaskStatus) -> None:
    assert set(actions_for(facts(status), DBA)) == available_actions(status)


@pytest.mark.parametrize("action", PERSON_ACTIONS)
def test_a_closed_issue_refuses_every_action_as_a_conflict(action: TaskAction) -> None:
    closed = facts(TaskStatus.PENDING, pipeline_status=PipelineStatus.CANCELED)
    refused = refusal(closed, action, DBA)
    assert code(refused) is ErrorCode.CONFLICT
    assert refused is not None
    assert "of an issue that is CANCELED" in refused.problems[0].message


def test_who_asks_is_refused_before_the_state_is() -> None:
    closed = facts(TaskStatus.DONE, pipeline_status=PipelineStatus.DONE)
    assert code(refusal(closed, TaskAction.RETRY, VIEWER)) is ErrorCode.FORBIDDEN


@pytest.mark.parametrize(
    ("task", "action", "expected"),
    [
        (
            facts(TaskStatus.PENDING, type=TaskType.INSTANCE_SYNC),
            TaskAction.EDIT,
            "has no statement",
        ),
        (facts(TaskStatus.DONE), TaskAction.SKIP, "cannot skip a task that is DONE"),
        (facts(TaskStatus.RUNNING, cancel_requested=True), TaskAction.CANCEL, "canceled already"),
        (facts(TaskStatus.PENDING, has_not_before=False), TaskAction.RUN_NOW, "no not-before"),
    ],
)
def test_a_task_refuses_what_its_state_does_not_allow(
    task: TaskFacts, action: TaskAction, expected: str
) -> None:
    refused = refusal(task, action, DBA)
    assert refused is not None
    assert expected in refused.problems[0].message
    assert action not in actions_for(task, DBA)


def test_a_runner_action_is_never_a_persons() -> None:
    assert code(refusal(facts(TaskStatus.PENDING), TaskAction.START, DBA)) is ErrorCode.FORBIDDEN


def test_stage_approval_approves_exactly_the_tasks_approve_would_not_refuse() -> None:
    tasks = [
        facts(TaskStatus.PENDING_APPROVAL),
        facts(TaskStatus.DONE),
        facts(TaskStatus.PENDING_APPROVAL),
        facts(TaskStatus.RUNNING),
    ]
    assert stage_approval(PipelineStatus.OPEN, tasks, DBA, FIELD) == [0, 2]
    assert [refusal(task, TaskAction.APPROVE, DBA) is None for task in tasks] == [
        True,
        False,
        True,
        False,
    ]


@pytest.mark.parametrize(
    ("pipeline_status", "access", "tasks", "expected"),
    [
        (PipelineStatus.OPEN, VIEWER, [facts(TaskStatus.PENDING_APPROVAL)], ErrorCode.FORBIDDEN),
        (PipelineStatus.DONE, DBA, [facts(TaskStatus.PENDING_APPROVAL)], ErrorCode.CONFLICT),
        (PipelineStatus.OPEN, DBA, [facts(TaskStatus.PENDING)], ErrorCode.CONFLICT),
    ],
)
def test_stage_approval_refuses_as_approving_a_task_would(
    pipeline_status: PipelineStatus,
    access: TaskAccess,
    tasks: list[TaskFacts],
    expected: ErrorCode,
) -> None:
    refused = stage_approval(pipeline_status, tasks, access, FIELD)
    assert isinstance(refused, ConveyorError)
    assert code(refused) is expected
    assert refused.problems[0].field == FIELD


@pytest.mark.parametrize(
    ("reason", "expected"),
    [("  ", "a skip needs a reason"), ("x" * 1_001, "at most 1000 characters"), ("ok", None)],
)
def test_a_skip_reason_is_needed_and_bounded(reason: str, expected: str | None) -> None:
    problems = skip_reason_problems(reason, ("input", "reason"))
    if expected is None:
        assert problems == []
    else:
        assert expected in problems[0].message
