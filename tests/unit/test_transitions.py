import pytest

from conveyor.domain.statuses import ApprovalPolicy, PipelineStatus, TaskStatus
from conveyor.domain.transitions import (
    IssueAction,
    TaskAction,
    TransitionRefused,
    available_actions,
    gate,
    issue_transition_refusal,
    must_abort_on_issue_cancel,
    next_pipeline_status,
    next_status,
    task_action_of_issue,
)

APPROVAL = TaskStatus.PENDING_APPROVAL
PENDING = TaskStatus.PENDING
RUNNING = TaskStatus.RUNNING
DONE = TaskStatus.DONE
FAILED = TaskStatus.FAILED
CANCELED = TaskStatus.CANCELED
SKIPPED = TaskStatus.SKIPPED
GATE = "the gate"
NO = "refused"

COLUMNS = (
    TaskAction.APPROVE,
    TaskAction.START,
    TaskAction.SUCCEED,
    TaskAction.FAIL,
    TaskAction.CANCEL,
    TaskAction.RETRY,
    TaskAction.SKIP,
    TaskAction.EDIT,
    TaskAction.RUN_NOW,
    TaskAction.ABORT,
    TaskAction.RELEASE,
)

# fmt: off
EXPECTED: dict[TaskStatus, tuple[TaskStatus | str, ...]] = {
    #          APPROVE  START    SUCCEED FAIL    CANCEL    RETRY SKIP     EDIT  RUN_NOW   ABORT RELEASE  # noqa: E501
    APPROVAL: (PENDING, NO,      NO,     NO,     CANCELED, NO,   SKIPPED, GATE, APPROVAL, NO,   NO),
    PENDING:  (NO,      RUNNING, NO,     NO,     CANCELED, NO,   SKIPPED, GATE, PENDING,  NO,   NO),
    RUNNING:  (NO,      NO,      DONE,   FAILED, CANCELED, NO,   NO,      NO,   NO,  CANCELED, PENDING),  # noqa: E501
    DONE:     (NO,      NO,      NO,     NO,     NO,       NO,   NO,      NO,   NO,       NO,   NO),
    FAILED:   (NO,      NO,      NO,     NO,     NO,       GATE, SKIPPED, GATE, NO,       NO,   NO),
    CANCELED: (NO,      NO,      NO,     NO,     NO,       GATE, NO,      NO,   NO,       NO,   NO),
    SKIPPED:  (NO,      NO,      NO,     NO,     NO,       NO,   NO,      NO,   NO,       NO,   NO),
}
# fmt: on

GATE_BY_POLICY = {ApprovalPolicy.MANUAL: APPROVAL, ApprovalPolicy.AUTOMATIC: PENDING}


def test_expected_table_covers_every_status_and_action() -> None:
    assert set(EXPECTED) == set(TaskStatus)
    assert set(COLUMNS) == set(TaskAction)
    assert all(len(row) == len(COLUMNS) for row in EXPECTED.values())


@pytest.mark.parametrize("policy", list(ApprovalPolicy))
@pytest.mark.parametrize("action", list(TaskAction))
@pytest.mark.parametrize("status", list(TaskStatus))
def test_next_status_follows_the_table(
    status: TaskStatus, action: TaskAction, policy: ApprovalPolicy
) -> None:
    expected = EXPECTED[status][COLUMNS.index(action)]
    if expected == NO:
        with pytest.raises(TransitionRefused) as refusal:
            next_status(status, action, policy)
        assert (refusal.value.status, refusal.value.action) == (status, action)
    else:
        wanted = GATE_BY_POLICY[policy] if expected == GATE else expected
        assert next_status(status, action, policy) is wanted


@pytest.mark.parametrize(
    ("policy", "expected"),
    [(ApprovalPolicy.MANUAL, APPROVAL), (ApprovalPolicy.AUTOMATIC, PENDING)],
)
def test_gate_asks_for_approval_only_in_manual_environments(
    policy: ApprovalPolicy, expected: TaskStatus
) -> None:
    assert gate(policy) is expected


@pytest.mark.parametrize(
    ("status", "action", "message"),
    [
        (RUNNING, TaskAction.RETRY, "cannot retry a task that is RUNNING"),
        (DONE, TaskAction.SKIP, "cannot skip a task that is DONE"),
        (PENDING, TaskAction.APPROVE, "cannot approve a task that is PENDING"),
        (CANCELED, TaskAction.EDIT, "cannot edit a task that is CANCELED"),
        (SKIPPED, TaskAction.CANCEL, "cannot cancel a task that is SKIPPED"),
        (RUNNING, TaskAction.RUN_NOW, "cannot run now a task that is RUNNING"),
        (APPROVAL, TaskAction.START, "cannot start a task that is PENDING_APPROVAL"),
        (PENDING, TaskAction.SUCCEED, "cannot mark as done a task that is PENDING"),
        (FAILED, TaskAction.FAIL, "cannot mark as failed a task that is FAILED"),
    ],
)
def test_refusal_names_the_action_and_the_current_status(
    status: TaskStatus, action: TaskAction, message: str
) -> None:
    with pytest.raises(TransitionRefused, match=f"^{message}$"):
        next_status(status, action, ApprovalPolicy.AUTOMATIC)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (
            APPROVAL,
            {
                TaskAction.APPROVE,
                TaskAction.CANCEL,
                TaskAction.SKIP,
                TaskAction.EDIT,
                TaskAction.RUN_NOW,
            },
        ),
        (PENDING, {TaskAction.CANCEL, TaskAction.SKIP, TaskAction.EDIT, TaskAction.RUN_NOW}),
        (RUNNING, {TaskAction.CANCEL}),
        (DONE, set()),
        (FAILED, {TaskAction.RETRY, TaskAction.SKIP, TaskAction.EDIT}),
        (CANCELED, {TaskAction.RETRY}),
        (SKIPPED, set()),
    ],
)
def test_available_actions_are_the_persons_allowed_ones(
    status: TaskStatus, expected: set[TaskAction]
) -> None:
    assert available_actions(status) == expected


def test_only_start_succeed_fail_abort_and_release_are_the_runners() -> None:
    runners = {action for action in TaskAction if action.performed_by_runner}
    assert runners == {
        TaskAction.START,
        TaskAction.SUCCEED,
        TaskAction.FAIL,
        TaskAction.ABORT,
        TaskAction.RELEASE,
    }


@pytest.mark.parametrize("action", [TaskAction.EDIT, TaskAction.RETRY])
def test_an_action_leading_to_the_gate_needs_the_policy(action: TaskAction) -> None:
    with pytest.raises(ValueError, match="approval policy"):
        next_status(FAILED, action)


@pytest.mark.parametrize(
    ("status", "expected", "must_abort"),
    [
        (APPROVAL, CANCELED, False),
        (PENDING, CANCELED, False),
        (RUNNING, None, True),
        (DONE, None, False),
        (FAILED, None, False),
        (CANCELED, None, False),
        (SKIPPED, None, False),
    ],
)
def test_issue_cancel_cancels_waiting_tasks_and_stops_running_ones(
    status: TaskStatus, expected: TaskStatus | None, must_abort: bool
) -> None:
    action = task_action_of_issue(IssueAction.CANCEL, status)
    after = None if action is None else next_status(status, action)
    assert after is expected
    assert must_abort_on_issue_cancel(status) is must_abort


@pytest.mark.parametrize("policy", list(ApprovalPolicy))
@pytest.mark.parametrize("status", list(TaskStatus))
def test_issue_reopen_returns_only_canceled_tasks_to_their_gate(
    status: TaskStatus, policy: ApprovalPolicy
) -> None:
    expected = GATE_BY_POLICY[policy] if status is CANCELED else None
    action = task_action_of_issue(IssueAction.REOPEN, status)
    assert (None if action is None else next_status(status, action, policy)) is expected


ISSUE_EXPECTED = {
    (PipelineStatus.OPEN, IssueAction.CANCEL): PipelineStatus.CANCELED,
    (PipelineStatus.CANCELED, IssueAction.REOPEN): PipelineStatus.OPEN,
}


@pytest.mark.parametrize("action", list(IssueAction))
@pytest.mark.parametrize("status", list(PipelineStatus))
def test_issue_transitions_follow_their_table(status: PipelineStatus, action: IssueAction) -> None:
    expected = ISSUE_EXPECTED.get((status, action))
    if expected is None:
        refusal = f"cannot {action.value.lower()} an issue that is {status.value}"
        assert issue_transition_refusal(status, action) == refusal
        with pytest.raises(ValueError, match=refusal):
            next_pipeline_status(status, action)
    else:
        assert issue_transition_refusal(status, action) is None
        assert next_pipeline_status(status, action) is expected
