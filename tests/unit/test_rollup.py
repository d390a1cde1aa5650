import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.domain.rollup import (
    active_stage_index,
    count_task_statuses,
    derive_pipeline_status,
    derive_stage_status,
)
from conveyor.domain.statuses import PipelineStatus, StageStatus, TaskStatus

APPROVAL = TaskStatus.PENDING_APPROVAL
PENDING = TaskStatus.PENDING
RUNNING = TaskStatus.RUNNING
DONE = TaskStatus.DONE
FAILED = TaskStatus.FAILED
CANCELED = TaskStatus.CANCELED
SKIPPED = TaskStatus.SKIPPED

statuses_lists = st.lists(st.sampled_from(TaskStatus), max_size=12)


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([RUNNING, FAILED, CANCELED, APPROVAL, PENDING, DONE, SKIPPED], StageStatus.RUNNING),
        ([FAILED, CANCELED, APPROVAL, PENDING, DONE, SKIPPED], StageStatus.FAILED),
        ([CANCELED, APPROVAL, PENDING, DONE, SKIPPED], StageStatus.CANCELED),
        ([APPROVAL, PENDING, DONE, SKIPPED], StageStatus.PENDING_APPROVAL),
        ([PENDING, DONE, SKIPPED], StageStatus.PENDING),
        ([SKIPPED, SKIPPED], StageStatus.SKIPPED),
        ([SKIPPED, DONE], StageStatus.DONE),
        ([DONE], StageStatus.DONE),
        ([], StageStatus.DONE),
    ],
)
def test_stage_status_is_the_first_rule_that_matches(
    statuses: list[TaskStatus], expected: StageStatus
) -> None:
    assert derive_stage_status(statuses) is expected


@pytest.mark.parametrize("status", list(TaskStatus))
def test_a_single_task_gives_its_stage_its_own_status(status: TaskStatus) -> None:
    assert derive_stage_status([status]).value == status.value


@settings(max_examples=100)
@given(st.data())
def test_stage_status_ignores_the_order_of_tasks(data: st.DataObject) -> None:
    statuses = data.draw(statuses_lists)
    shuffled = data.draw(st.permutations(statuses))
    assert derive_stage_status(shuffled) is derive_stage_status(statuses)


def test_counts_include_every_status_with_zeros() -> None:
    counts = count_task_statuses([DONE, DONE, FAILED])
    assert counts == {
        APPROVAL: 0,
        PENDING: 0,
        RUNNING: 0,
        DONE: 2,
        FAILED: 1,
        CANCELED: 0,
        SKIPPED: 0,
    }


@settings(max_examples=100)
@given(statuses_lists)
def test_counts_add_up_to_the_number_of_tasks(statuses: list[TaskStatus]) -> None:
    counts = count_task_statuses(statuses)
    assert set(counts) == set(TaskStatus)
    assert sum(counts.values()) == len(statuses)
    assert all(counts[status] == statuses.count(status) for status in TaskStatus)


@pytest.mark.parametrize(
    ("current", "statuses", "expected"),
    [
        (PipelineStatus.OPEN, [DONE, SKIPPED, DONE], PipelineStatus.DONE),
        (PipelineStatus.OPEN, [DONE, PENDING], PipelineStatus.OPEN),
        (PipelineStatus.OPEN, [DONE, RUNNING], PipelineStatus.OPEN),
        (PipelineStatus.OPEN, [SKIPPED, FAILED], PipelineStatus.OPEN),
        (PipelineStatus.OPEN, [DONE, CANCELED], PipelineStatus.OPEN),
        (PipelineStatus.OPEN, [APPROVAL], PipelineStatus.OPEN),
        (PipelineStatus.CANCELED, [DONE, SKIPPED], PipelineStatus.CANCELED),
        (PipelineStatus.CANCELED, [CANCELED, RUNNING], PipelineStatus.CANCELED),
        (PipelineStatus.DONE, [DONE, SKIPPED], PipelineStatus.DONE),
    ],
)
def test_an_open_pipeline_is_done_once_every_task_is_done_or_skipped(
    current: PipelineStatus, statuses: list[TaskStatus], expected: PipelineStatus
) -> None:
    assert derive_pipeline_status(current, statuses) is expected


@pytest.mark.parametrize(
    ("stages", "expected"),
    [
        ([[PENDING], [PENDING]], 0),
        ([[DONE, SKIPPED], [DONE, FAILED], [APPROVAL]], 1),
        ([[DONE], [SKIPPED], [CANCELED]], 2),
        ([[DONE], [RUNNING, DONE]], 1),
        ([[DONE], [SKIPPED]], None),
        ([], None),
    ],
)
def test_active_stage_is_the_first_with_an_unfinished_task(
    stages: list[list[TaskStatus]], expected: int | None
) -> None:
    assert active_stage_index(stages) == expected
