"""Which tasks of a pipeline may start now, and why each other one waits, without IO."""

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from operator import attrgetter
from typing import NamedTuple, assert_never

from conveyor.domain.rollup import active_stage_index
from conveyor.domain.statuses import FINISHED_TASK_STATUSES, PipelineStatus, TaskStatus


class TaskState(NamedTuple):
    """A task as the decision sees it. A named tuple, not a frozen dataclass: a pipeline page
    builds one for each of up to thousands of tasks per request, and a frozen dataclass's
    __init__ (one object.__setattr__ a field) took four times as long."""

    id: int
    status: TaskStatus
    instance_id: int
    #: None for an instance-level task, which occupies no database.
    database_id: int | None = None
    #: Timezone-aware, like the `now` it is compared with.
    not_before: datetime | None = None
    #: Ids of tasks of the same pipeline that must be DONE or SKIPPED first.
    blocked_by: frozenset[int] = frozenset()
    #: Its checks have not finished for its current statement.
    checks_pending: bool = False
    #: The rules whose findings block it (empty when none do, or a DBA overrode them).
    failed_checks: tuple[str, ...] = ()


@dataclass(frozen=True)
class StageState:
    id: int
    name: str
    tasks: tuple[TaskState, ...]


@dataclass(frozen=True)
class PipelineState:
    status: PipelineStatus
    #: In pipeline order.
    stages: tuple[StageState, ...]


@dataclass(frozen=True)
class Occupancy:
    """The tasks RUNNING anywhere in the cluster, in any pipeline, this one's included."""

    running_task_by_database: Mapping[int, int]
    running_count_by_instance: Mapping[int, int]
    #: Must hold every instance a task of the pipeline runs against.
    limit_by_instance: Mapping[int, int]


class WaitingKind(StrEnum):
    # In priority order: a task gets the first kind that applies. A closed pipeline overrides
    # everything; then come the reasons only a person can clear, since nothing else will; then
    # the ones the pipeline clears by itself, in the order it clears them.
    #: The issue is canceled; nothing runs until it is reopened.
    PIPELINE_CANCELED = "PIPELINE_CANCELED"
    #: The issue is done. Only seen on inconsistent data: a DONE pipeline has no unfinished task.
    PIPELINE_DONE = "PIPELINE_DONE"
    #: The task failed; a person must retry, edit or skip it.
    TASK_FAILED = "TASK_FAILED"
    #: The task was canceled; a person must retry it.
    TASK_CANCELED = "TASK_CANCELED"
    #: Its checks found what blocks it here; a person must fix the statement, or a DBA
    #: override them. Before APPROVAL: approving would not let it run.
    CHECKS_FAILED = "CHECKS_FAILED"
    #: The task waits for a person's approval.
    APPROVAL = "APPROVAL"
    #: An earlier stage has a task not DONE or SKIPPED.
    EARLIER_STAGE = "EARLIER_STAGE"
    #: A task it is blocked by is not DONE or SKIPPED.
    BLOCKED_BY = "BLOCKED_BY"
    #: Its not-before time has not come.
    NOT_BEFORE = "NOT_BEFORE"
    #: Its checks have not finished yet (a worker runs them soon after each edit).
    CHECKS_PENDING = "CHECKS_PENDING"
    #: Another task runs, or is starting, against its database.
    DATABASE_BUSY = "DATABASE_BUSY"
    #: Its instance already runs as many tasks as its limit allows.
    INSTANCE_AT_LIMIT = "INSTANCE_AT_LIMIT"


@dataclass(frozen=True)
class WaitingReason:
    kind: WaitingKind
    #: The unfinished stage, for EARLIER_STAGE.
    stage_id: int | None = None
    stage_name: str | None = None
    #: The blocking task for BLOCKED_BY; the one holding the database for DATABASE_BUSY.
    task_id: int | None = None
    not_before: datetime | None = None
    #: The instance's limit, for INSTANCE_AT_LIMIT.
    limit: int | None = None
    #: The blocking rules, for CHECKS_FAILED.
    rules: tuple[str, ...] = ()

    @property
    def message(self) -> str:
        """The reason in words a person can read."""
        match self.kind:
            case WaitingKind.PIPELINE_CANCELED:
                return "the issue is canceled"
            case WaitingKind.PIPELINE_DONE:
                return "the issue is done"
            case WaitingKind.TASK_FAILED:
                return "failed: waiting for a person to retry, edit or skip it"
            case WaitingKind.TASK_CANCELED:
                return "canceled: waiting for a person to retry it"
            case WaitingKind.CHECKS_FAILED:
                return f"checks failed: {', '.join(self.rules)}"
            case WaitingKind.APPROVAL:
                return "waiting for approval"
            case WaitingKind.EARLIER_STAGE:
                return f"waiting for stage '{self.stage_name}' to finish"
            case WaitingKind.BLOCKED_BY:
                return f"blocked by task {self.task_id}"
            case WaitingKind.NOT_BEFORE:
                assert self.not_before is not None
                return f"not before {self.not_before.isoformat()}"
            case WaitingKind.CHECKS_PENDING:
                return "waiting for its checks to finish"
            case WaitingKind.DATABASE_BUSY:
                return f"database busy with task {self.task_id}"
            case WaitingKind.INSTANCE_AT_LIMIT:
                return f"instance at its limit of {self.limit} running tasks"
            case _:
                assert_never(self.kind)


@dataclass(frozen=True)
class SchedulingDecision:
    #: Task ids in stage order, then by id.
    startable: tuple[int, ...]
    #: One reason for every task not RUNNING, DONE, SKIPPED or startable.
    waiting: Mapping[int, WaitingReason]


#: The statuses that hold a database and a slot of the instance's limit.
OCCUPYING_STATUSES = frozenset({TaskStatus.RUNNING})

_NOT_WAITING = frozenset({*OCCUPYING_STATUSES, *FINISHED_TASK_STATUSES})

_CLOSED_PIPELINE_KINDS = {
    PipelineStatus.CANCELED: WaitingKind.PIPELINE_CANCELED,
    PipelineStatus.DONE: WaitingKind.PIPELINE_DONE,
}

# A FAILED or CANCELED task holds later stages back, not its siblings: the rest of the active
# stage still runs, as the other jobs of a GitLab CI stage finish when one of them fails.
_WAITING_FOR_A_PERSON = {
    TaskStatus.FAILED: WaitingKind.TASK_FAILED,
    TaskStatus.CANCELED: WaitingKind.TASK_CANCELED,
    TaskStatus.PENDING_APPROVAL: WaitingKind.APPROVAL,
}
#: One reason object for each: a pipeline's waiting tasks share them (reasons are values).
_PERSON_REASONS = {status: WaitingReason(kind) for status, kind in _WAITING_FOR_A_PERSON.items()}
_CHECKS_PENDING = WaitingReason(WaitingKind.CHECKS_PENDING)


_by_id = attrgetter("id")


def decide(pipeline: PipelineState, occupancy: Occupancy, now: datetime) -> SchedulingDecision:
    """Which tasks of `pipeline` may start now, and why each other unfinished one waits."""
    # Tasks are considered in stage order, then by id, so that among tasks competing for one
    # database or instance slot the oldest wins, and the same inputs give the same decision.
    candidates = [
        (stage_index, task)
        for stage_index, stage in enumerate(pipeline.stages)
        for task in sorted(stage.tasks, key=_by_id)
        if task.status not in _NOT_WAITING
    ]
    closed_kind = _CLOSED_PIPELINE_KINDS.get(pipeline.status)
    if closed_kind is not None:
        closed = WaitingReason(closed_kind)
        return SchedulingDecision(startable=(), waiting={task.id: closed for _, task in candidates})
    active_index = active_stage_index(
        [[task.status for task in stage.tasks] for stage in pipeline.stages]
    )
    if active_index is None:
        return SchedulingDecision(startable=(), waiting={})
    finished_task_ids = frozenset(
        task.id
        for stage in pipeline.stages
        for task in stage.tasks
        if task.status in FINISHED_TASK_STATUSES
    )
    capacity = _Capacity(occupancy)
    startable: list[int] = []
    waiting: dict[int, WaitingReason] = {}
    active_stage = pipeline.stages[active_index]
    # Every task of a later stage waits for the same stage: one reason shared by all.
    earlier_stage = WaitingReason(
        WaitingKind.EARLIER_STAGE, stage_id=active_stage.id, stage_name=active_stage.name
    )
    for stage_index, task in candidates:
        reason = _reason_in_pipeline(
            task, stage_index, earlier_stage, active_index, finished_task_ids, now
        ) or capacity.reason_to_wait(task)
        if reason is None:
            startable.append(task.id)
            capacity.take(task)
        else:
            waiting[task.id] = reason
    return SchedulingDecision(startable=tuple(startable), waiting=waiting)


def _reason_in_pipeline(
    task: TaskState,
    stage_index: int,
    earlier_stage: WaitingReason,
    active_index: int,
    finished_task_ids: frozenset[int],
    now: datetime,
) -> WaitingReason | None:
    person_reason = _PERSON_REASONS.get(task.status)
    if person_reason is not None and person_reason.kind is not WaitingKind.APPROVAL:
        return person_reason
    if task.failed_checks:
        return WaitingReason(WaitingKind.CHECKS_FAILED, rules=task.failed_checks)
    if person_reason is not None:
        return person_reason
    if stage_index > active_index:
        return earlier_stage
    # A blocker that is not a task of this pipeline counts as unfinished: never start on a link
    # that cannot be checked.
    if task.blocked_by:
        unfinished_blockers = sorted(task.blocked_by - finished_task_ids)
        if unfinished_blockers:
            return WaitingReason(WaitingKind.BLOCKED_BY, task_id=unfinished_blockers[0])
    if task.not_before is not None and task.not_before > now:
        return WaitingReason(WaitingKind.NOT_BEFORE, not_before=task.not_before)
    if task.checks_pending:
        return _CHECKS_PENDING
    return None


def capacity_reason(task: TaskState, occupancy: Occupancy) -> WaitingReason | None:
    """Why the cluster has no room for `task` now (its database busy, its instance at its
    limit), or None: the rule the decision applies, and the claim checks again under lock."""
    return _Capacity(occupancy).reason_to_wait(task)


class _Capacity:
    """Databases and instance slots in use: the cluster's running tasks plus those chosen here."""

    def __init__(self, occupancy: Occupancy) -> None:
        self._task_by_database = dict(occupancy.running_task_by_database)
        self._count_by_instance = Counter(occupancy.running_count_by_instance)
        self._limit_by_instance = occupancy.limit_by_instance

    def reason_to_wait(self, task: TaskState) -> WaitingReason | None:
        if task.database_id is not None and task.database_id in self._task_by_database:
            return WaitingReason(
                WaitingKind.DATABASE_BUSY, task_id=self._task_by_database[task.database_id]
            )
        limit = self._limit_by_instance[task.instance_id]
        if self._count_by_instance[task.instance_id] >= limit:
            return WaitingReason(WaitingKind.INSTANCE_AT_LIMIT, limit=limit)
        return None

    def take(self, task: TaskState) -> None:
        if task.database_id is not None:
            self._task_by_database[task.database_id] = task.id
        self._count_by_instance[task.instance_id] += 1
