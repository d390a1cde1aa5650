"""Which actions move a task from which status to which: the task state machine, without IO."""

from collections.abc import Mapping
from enum import Enum, StrEnum

from conveyor.domain.statuses import ApprovalPolicy, PipelineStatus, TaskStatus


class TaskAction(StrEnum):
    #: A person lets a task past its approval gate.
    APPROVE = "APPROVE"
    #: The runner claims a task and starts running it.
    START = "START"
    #: The runner reports that the run succeeded.
    SUCCEED = "SUCCEED"
    #: The runner reports that the run failed.
    FAIL = "FAIL"
    #: A person cancels a waiting or running task.
    CANCEL = "CANCEL"
    #: A person sends a failed or canceled task back to its gate.
    RETRY = "RETRY"
    #: A person passes over a task, giving a reason.
    SKIP = "SKIP"
    #: A person replaces the task's statement; any approval is dismissed.
    EDIT = "EDIT"
    #: A person clears the task's not-before time; its status does not change.
    RUN_NOW = "RUN_NOW"
    #: The runner has stopped, and rolled back, a task a person asked to cancel.
    ABORT = "ABORT"
    #: The runner hands back a task it did not finish and that left nothing behind: on
    #: shutdown, or when recovery finds a dead worker's transaction rolled back.
    RELEASE = "RELEASE"

    @property
    def performed_by_runner(self) -> bool:
        """Whether the runner takes this action (else a person does)."""
        return self in _RUNNER_ACTIONS

    @property
    def verb_phrase(self) -> str:
        """The action in words: "cannot {verb_phrase} a task that is ..."."""
        return _VERB_PHRASES[self]


_RUNNER_ACTIONS = frozenset(
    {TaskAction.START, TaskAction.SUCCEED, TaskAction.FAIL, TaskAction.ABORT, TaskAction.RELEASE}
)


class _Gate(Enum):
    #: Stands for "the gate" in the table: which status that is depends on the approval policy.
    GATE = "GATE"


_GATE = _Gate.GATE

# DOMAIN.md's transition table, plus RUN_NOW, which only clears the not-before time. A pair that
# is not here is refused, by every writer: db.task_status writes a status only through this
# table. A person's CANCEL of a RUNNING task is allowed but only asks the runner to stop it; the
# runner's ABORT then makes it CANCELED.
_TRANSITIONS: Mapping[tuple[TaskStatus, TaskAction], TaskStatus | _Gate] = {
    (TaskStatus.PENDING_APPROVAL, TaskAction.APPROVE): TaskStatus.PENDING,
    (TaskStatus.PENDING_APPROVAL, TaskAction.SKIP): TaskStatus.SKIPPED,
    (TaskStatus.PENDING_APPROVAL, TaskAction.CANCEL): TaskStatus.CANCELED,
    (TaskStatus.PENDING_APPROVAL, TaskAction.EDIT): _GATE,
    (TaskStatus.PENDING_APPROVAL, TaskAction.RUN_NOW): TaskStatus.PENDING_APPROVAL,
    (TaskStatus.PENDING, TaskAction.START): TaskStatus.RUNNING,
    (TaskStatus.PENDING, TaskAction.SKIP): TaskStatus.SKIPPED,
    (TaskStatus.PENDING, TaskAction.CANCEL): TaskStatus.CANCELED,
    (TaskStatus.PENDING, TaskAction.EDIT): _GATE,
    (TaskStatus.PENDING, TaskAction.RUN_NOW): TaskStatus.PENDING,
    (TaskStatus.RUNNING, TaskAction.SUCCEED): TaskStatus.DONE,
    (TaskStatus.RUNNING, TaskAction.FAIL): TaskStatus.FAILED,
    (TaskStatus.RUNNING, TaskAction.CANCEL): TaskStatus.CANCELED,
    (TaskStatus.RUNNING, TaskAction.ABORT): TaskStatus.CANCELED,
    (TaskStatus.RUNNING, TaskAction.RELEASE): TaskStatus.PENDING,
    (TaskStatus.FAILED, TaskAction.RETRY): _GATE,
    (TaskStatus.FAILED, TaskAction.SKIP): TaskStatus.SKIPPED,
    (TaskStatus.FAILED, TaskAction.EDIT): _GATE,
    (TaskStatus.CANCELED, TaskAction.RETRY): _GATE,
}


_VERB_PHRASES: Mapping[TaskAction, str] = {
    TaskAction.APPROVE: "approve",
    TaskAction.START: "start",
    TaskAction.SUCCEED: "mark as done",
    TaskAction.FAIL: "mark as failed",
    TaskAction.CANCEL: "cancel",
    TaskAction.RETRY: "retry",
    TaskAction.SKIP: "skip",
    TaskAction.EDIT: "edit",
    TaskAction.RUN_NOW: "run now",
    TaskAction.ABORT: "mark as aborted",
    TaskAction.RELEASE: "hand back",
}


class TransitionRefused(Exception):
    """The action is not allowed from the task's current status."""

    def __init__(self, status: TaskStatus, action: TaskAction) -> None:
        super().__init__(f"cannot {action.verb_phrase} a task that is {status.value}")
        self.status = status
        self.action = action


def gate(policy: ApprovalPolicy) -> TaskStatus:
    """The status a task waits in before it may run: approval first in a MANUAL environment."""
    if policy is ApprovalPolicy.MANUAL:
        return TaskStatus.PENDING_APPROVAL
    return TaskStatus.PENDING


def next_status(
    status: TaskStatus, action: TaskAction, policy: ApprovalPolicy | None = None
) -> TaskStatus:
    """The status `action` moves a task to; raises TransitionRefused if it is not allowed.

    `policy` (the approval policy of the task's environment) is needed only by the actions
    that lead to the gate: EDIT and RETRY.
    """
    target = _TRANSITIONS.get((status, action))
    if target is None:
        raise TransitionRefused(status, action)
    if target is _GATE:
        if policy is None:
            raise ValueError(f"{action.value} leads to the gate: the approval policy is needed")
        return gate(policy)
    return target


def statuses_allowing(action: TaskAction) -> frozenset[TaskStatus]:
    """The statuses `action` may be taken from: what a query guarding a transition looks for."""
    return frozenset(status for (status, allowed) in _TRANSITIONS if allowed is action)


def available_actions(status: TaskStatus) -> frozenset[TaskAction]:
    """The actions a person may take on a task in `status`."""
    return frozenset(
        action
        for (from_status, action) in _TRANSITIONS
        if from_status is status and not action.performed_by_runner
    )


def must_abort_on_issue_cancel(status: TaskStatus) -> bool:
    """Whether canceling the issue must ask the runner to stop this task."""
    return status is TaskStatus.RUNNING


class IssueAction(StrEnum):
    #: A person cancels the issue: its waiting tasks are canceled, its running ones stopped.
    CANCEL = "CANCEL"
    #: A person reopens a canceled issue: its canceled tasks return to their gate.
    REOPEN = "REOPEN"


_ISSUE_TRANSITIONS: Mapping[tuple[PipelineStatus, IssueAction], PipelineStatus] = {
    (PipelineStatus.OPEN, IssueAction.CANCEL): PipelineStatus.CANCELED,
    (PipelineStatus.CANCELED, IssueAction.REOPEN): PipelineStatus.OPEN,
}

_ISSUE_VERBS: Mapping[IssueAction, str] = {
    IssueAction.CANCEL: "cancel",
    IssueAction.REOPEN: "reopen",
}


def issue_transition_refusal(status: PipelineStatus, action: IssueAction) -> str | None:
    """Why `action` may not be taken on an issue whose pipeline is `status`, or None."""
    if (status, action) in _ISSUE_TRANSITIONS:
        return None
    return f"cannot {_ISSUE_VERBS[action]} an issue that is {status.value}"


def next_pipeline_status(status: PipelineStatus, action: IssueAction) -> PipelineStatus:
    """The status `action` gives the issue's pipeline; ValueError if it is not allowed."""
    refused = issue_transition_refusal(status, action)
    if refused is not None:
        raise ValueError(refused)
    return _ISSUE_TRANSITIONS[(status, action)]


def task_action_of_issue(action: IssueAction, status: TaskStatus) -> TaskAction | None:
    """The transition the issue's `action` takes on a task in `status`, or None if it keeps
    its status."""
    if action is IssueAction.CANCEL:
        # A running task keeps RUNNING until the runner has aborted it (see
        # must_abort_on_issue_cancel). FAILED is not "waiting" and the table has no FAILED ->
        # CANCELED: it stays FAILED, keeping its failure visible, and is still FAILED after a
        # reopen.
        if status is TaskStatus.RUNNING or (status, TaskAction.CANCEL) not in _TRANSITIONS:
            return None
        return TaskAction.CANCEL
    # Only CANCELED returns to the gate, whether a person or the issue's cancel put it there:
    # the two cannot be told apart, and either way the work was never finished.
    if status is TaskStatus.CANCELED:
        return TaskAction.RETRY
    return None
