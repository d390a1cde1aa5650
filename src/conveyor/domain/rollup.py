"""What a stage's and a pipeline's status are, derived from their tasks' statuses."""

from collections import Counter
from collections.abc import Iterable, Sequence

from conveyor.domain.statuses import (
    FINISHED_TASK_STATUSES,
    PipelineStatus,
    StageStatus,
    TaskStatus,
)

# First match wins: a stage shows the most urgent thing about any of its tasks.
_STAGE_STATUS_PRECEDENCE = (
    (TaskStatus.RUNNING, StageStatus.RUNNING),
    (TaskStatus.FAILED, StageStatus.FAILED),
    (TaskStatus.CANCELED, StageStatus.CANCELED),
    (TaskStatus.PENDING_APPROVAL, StageStatus.PENDING_APPROVAL),
    (TaskStatus.PENDING, StageStatus.PENDING),
)


def derive_stage_status(statuses: Iterable[TaskStatus]) -> StageStatus:
    """A stage's status from its tasks' statuses, by DOMAIN.md's first-match rule."""
    present = frozenset(statuses)
    for task_status, stage_status in _STAGE_STATUS_PRECEDENCE:
        if task_status in present:
            return stage_status
    # A stage always has a task, but should an empty one reach here it is DONE, not SKIPPED: it
    # holds nothing back, as active_stage_index and derive_pipeline_status also treat it.
    if present == {TaskStatus.SKIPPED}:
        return StageStatus.SKIPPED
    return StageStatus.DONE


def count_task_statuses(statuses: Iterable[TaskStatus]) -> dict[TaskStatus, int]:
    """How many tasks are in each status, with every status present (zeros included)."""
    counts = Counter(statuses)
    return {status: counts[status] for status in TaskStatus}


def derive_pipeline_status(
    current: PipelineStatus, task_statuses: Iterable[TaskStatus]
) -> PipelineStatus:
    """An OPEN pipeline becomes DONE once every task is DONE or SKIPPED; others keep theirs."""
    # A CANCELED pipeline stays CANCELED even when its last running task ends DONE: only a
    # person's reopen brings it back to OPEN, from where it can then become DONE. A pipeline
    # without tasks cannot exist; were one to reach here it would be DONE, like an empty stage.
    if current is PipelineStatus.OPEN and all(
        status in FINISHED_TASK_STATUSES for status in task_statuses
    ):
        return PipelineStatus.DONE
    return current


def active_stage_index(stages: Sequence[Iterable[TaskStatus]]) -> int | None:
    """The position of the first stage with a task not DONE or SKIPPED, or None if none has."""
    for index, statuses in enumerate(stages):
        if any(status not in FINISHED_TASK_STATUSES for status in statuses):
            return index
    return None
