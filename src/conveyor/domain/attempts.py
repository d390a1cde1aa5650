"""How an attempt at running a task ends, and how recovery settles one whose worker died."""

from dataclasses import dataclass, field
from typing import Any

from conveyor.domain.statements import is_transactional
from conveyor.domain.statuses import TaskRunStatus, TaskType
from conveyor.domain.transitions import TaskAction

#: The target's SQLSTATE for a canceled statement is 57014; Conveyor reports it as this code.
CANCELED = "CANCELED"
#: The code of an attempt its worker did not see to the end.
INTERRUPTED = "INTERRUPTED"
SHUTDOWN_REASON = "interrupted: its worker was shutting down"


@dataclass
class Outcome:
    """What running a task on its target gave: the one result type from target to report."""

    succeeded: bool
    #: The target's SQLSTATE when it has one, else one of Conveyor's codes (runner.targets).
    error_code: str | None
    #: For a person; never holds the password.
    error_message: str | None
    #: Whether the change ran inside one transaction (so an interruption left nothing behind).
    transactional: bool
    result: dict[str, Any] = field(default_factory=dict)
    #: In order: {"at", "kind": "statement" | "notice" | "info" | "error", "text", ...}.
    log: list[dict[str, Any]] = field(default_factory=list)
    created_database: str | None = None
    #: INSTANCE_SYNC: the instance's databases, templates excluded.
    discovered_databases: list[str] | None = None


@dataclass(frozen=True)
class AttemptEnd:
    """The transition an attempt ends with, and what its run row records."""

    action: TaskAction
    run_status: TaskRunStatus
    error_code: str | None
    #: The run's error message; the task's status_reason too when it ends FAILED.
    reason: str | None

    @property
    def status_reason(self) -> str | None:
        """What the task shows as its reason: only a failure keeps one."""
        return self.reason if self.action is TaskAction.FAIL else None


def _rerunnable(task_type: TaskType, transactional: bool) -> bool:
    # CREATE DATABASE is all-or-nothing and a sync only reads; a change is safe only when it
    # ran inside one transaction, which PostgreSQL rolled back with the dead connection.
    return transactional or not task_type.needs_statement


def safe_to_rerun(task_type: TaskType, statement: str | None) -> bool:
    """Whether an interrupted attempt left nothing behind, so running it again is safe.

    Only for an attempt without an Outcome (recovery, a target that never answered): the
    Outcome already carries the one classification of the script its attempt made.
    """
    return _rerunnable(task_type, task_type.needs_statement and is_transactional(statement or ""))


def ending(
    outcome: Outcome,
    task_type: TaskType,
    *,
    canceled_by_person: bool,
    interrupted_by_shutdown: bool,
) -> AttemptEnd:
    """How an attempt the worker saw to the end is recorded."""
    if outcome.succeeded:
        return AttemptEnd(TaskAction.SUCCEED, TaskRunStatus.DONE, None, None)
    canceled = outcome.error_code == CANCELED
    if canceled and canceled_by_person:
        return AttemptEnd(
            TaskAction.ABORT, TaskRunStatus.CANCELED, outcome.error_code, outcome.error_message
        )
    if canceled and interrupted_by_shutdown:
        if _rerunnable(task_type, outcome.transactional):
            return AttemptEnd(
                TaskAction.RELEASE, TaskRunStatus.FAILED, outcome.error_code, outcome.error_message
            )
        # Canceled half-way outside a transaction: a person must look, not a rerun.
        return AttemptEnd(
            TaskAction.FAIL, TaskRunStatus.FAILED, outcome.error_code, SHUTDOWN_REASON
        )
    return AttemptEnd(
        TaskAction.FAIL, TaskRunStatus.FAILED, outcome.error_code, outcome.error_message
    )


def abandoned(task_type: TaskType, statement: str | None) -> AttemptEnd:
    """How an attempt is recorded when its target did not answer even a cancel at shutdown."""
    action = TaskAction.RELEASE if safe_to_rerun(task_type, statement) else TaskAction.FAIL
    return AttemptEnd(action, TaskRunStatus.FAILED, INTERRUPTED, SHUTDOWN_REASON)


def recovery(*, applied: bool, transactional: bool, cancel_requested: bool) -> AttemptEnd:
    """How a task whose worker died is settled, from whether the target shows it applied.

    Applied: DONE. Not applied and transactional: its transaction rolled back, so it is safe to
    run again (or, if a person asked to cancel it, it is canceled). Not applied and not
    transactional: nobody knows how far it got; FAILED, for a person to decide.
    """
    if applied:
        return AttemptEnd(TaskAction.SUCCEED, TaskRunStatus.DONE, None, None)
    if transactional and cancel_requested:
        return AttemptEnd(
            TaskAction.ABORT,
            TaskRunStatus.CANCELED,
            INTERRUPTED,
            "canceled while its worker stopped; the change was rolled back",
        )
    if transactional:
        return AttemptEnd(
            TaskAction.RELEASE,
            TaskRunStatus.FAILED,
            INTERRUPTED,
            "its worker stopped; the change was rolled back and will run again",
        )
    return AttemptEnd(
        TaskAction.FAIL,
        TaskRunStatus.FAILED,
        INTERRUPTED,
        "interrupted, outcome unknown: its worker stopped during a change that "
        "runs outside a transaction",
    )
