"""How an attempt ends and how recovery settles one: pure decisions, each a row of the table."""

import pytest

from conveyor.domain.attempts import (
    CANCELED,
    INTERRUPTED,
    SHUTDOWN_REASON,
    Outcome,
    abandoned,
    ending,
    recovery,
    safe_to_rerun,
)
from conveyor.domain.statuses import TaskRunStatus, TaskStatus, TaskType
from conveyor.domain.transitions import TaskAction, next_status

CHANGE = TaskType.SCHEMA_UPDATE


def outcome(
    *, succeeded: bool = False, code: str | None = None, transactional: bool = True
) -> Outcome:
    return Outcome(succeeded, code, None if succeeded else "boom", transactional)


@pytest.mark.parametrize(
    ("result", "task_type", "by_person", "by_shutdown", "action", "run_status"),
    [
        (outcome(succeeded=True), CHANGE, False, False, TaskAction.SUCCEED, TaskRunStatus.DONE),
        (outcome(code="42P01"), CHANGE, False, False, TaskAction.FAIL, TaskRunStatus.FAILED),
        (outcome(code=CANCELED), CHANGE, True, False, TaskAction.ABORT, TaskRunStatus.CANCELED),
        (outcome(code=CANCELED), CHANGE, True, True, TaskAction.ABORT, TaskRunStatus.CANCELED),
        (outcome(code=CANCELED), CHANGE, False, True, TaskAction.RELEASE, TaskRunStatus.FAILED),
        (
            outcome(code=CANCELED, transactional=False),
            CHANGE,
            False,
            True,
            TaskAction.FAIL,
            TaskRunStatus.FAILED,
        ),
        (
            outcome(code=CANCELED, transactional=False),
            TaskType.DATABASE_CREATE,
            False,
            True,
            TaskAction.RELEASE,
            TaskRunStatus.FAILED,
        ),
        # A statement timeout is also 57014 but not CANCELED: it fails, shutdown or not.
        (outcome(code="57014"), CHANGE, False, True, TaskAction.FAIL, TaskRunStatus.FAILED),
    ],
)
def test_an_attempt_ends_with_one_transition_of_the_table(
    result: Outcome,
    task_type: TaskType,
    by_person: bool,
    by_shutdown: bool,
    action: TaskAction,
    run_status: TaskRunStatus,
) -> None:
    end = ending(
        result, task_type, canceled_by_person=by_person, interrupted_by_shutdown=by_shutdown
    )
    assert (end.action, end.run_status) == (action, run_status)
    next_status(TaskStatus.RUNNING, end.action)  # the table allows it from RUNNING


def test_a_non_transactional_change_stopped_by_shutdown_says_why_it_failed() -> None:
    end = ending(
        outcome(code=CANCELED, transactional=False),
        CHANGE,
        canceled_by_person=False,
        interrupted_by_shutdown=True,
    )
    assert end.status_reason == SHUTDOWN_REASON


@pytest.mark.parametrize(
    ("applied", "transactional", "cancel_requested", "expected"),
    [
        (True, True, False, TaskStatus.DONE),
        (True, False, True, TaskStatus.DONE),
        (False, True, True, TaskStatus.CANCELED),
        (False, True, False, TaskStatus.PENDING),
        (False, False, False, TaskStatus.FAILED),
        (False, False, True, TaskStatus.FAILED),
    ],
)
def test_recovery_is_a_function_of_applied_transactional_and_cancel(
    applied: bool, transactional: bool, cancel_requested: bool, expected: TaskStatus
) -> None:
    end = recovery(applied=applied, transactional=transactional, cancel_requested=cancel_requested)
    assert next_status(TaskStatus.RUNNING, end.action) is expected
    assert end.error_code == (None if applied else INTERRUPTED)
    assert (end.status_reason is not None) is (expected is TaskStatus.FAILED)


@pytest.mark.parametrize(
    ("task_type", "statement", "expected"),
    [
        (CHANGE, "CREATE TABLE t (id int)", True),
        (CHANGE, "CREATE INDEX CONCURRENTLY i ON t (id)", False),
        (TaskType.DATABASE_CREATE, None, True),
        (TaskType.INSTANCE_SYNC, None, True),
    ],
)
def test_abandoned_attempts_are_handed_back_only_when_safe(
    task_type: TaskType, statement: str | None, expected: bool
) -> None:
    assert safe_to_rerun(task_type, statement) is expected
    action = abandoned(task_type, statement).action
    assert action is (TaskAction.RELEASE if expected else TaskAction.FAIL)
