from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from conveyor.domain.rollup import active_stage_index
from conveyor.domain.scheduling import (
    Occupancy,
    PipelineState,
    SchedulingDecision,
    StageState,
    TaskState,
    WaitingKind,
    WaitingReason,
    decide,
)
from conveyor.domain.statuses import FINISHED_TASK_STATUSES, PipelineStatus, TaskStatus

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)
EARLIER = NOW - timedelta(hours=1)
APPROVAL = TaskStatus.PENDING_APPROVAL
PENDING = TaskStatus.PENDING
RUNNING = TaskStatus.RUNNING
DONE = TaskStatus.DONE
FAILED = TaskStatus.FAILED
CANCELED = TaskStatus.CANCELED
SKIPPED = TaskStatus.SKIPPED


def task(
    task_id: int,
    status: TaskStatus = PENDING,
    *,
    instance: int = 1,
    database: int | None = None,
    not_before: datetime | None = None,
    blocked_by: frozenset[int] = frozenset(),
) -> TaskState:
    return TaskState(task_id, status, instance, database, not_before, blocked_by)


def pipeline(
    *stages: tuple[str, tuple[TaskState, ...]], status: PipelineStatus = PipelineStatus.OPEN
) -> PipelineState:
    return PipelineState(
        status,
        tuple(StageState(100 + index, name, tasks) for index, (name, tasks) in enumerate(stages)),
    )


def occupancy(
    running_task_by_database: Mapping[int, int] | None = None,
    running_count_by_instance: Mapping[int, int] | None = None,
    limit_by_instance: Mapping[int, int] | None = None,
) -> Occupancy:
    return Occupancy(
        running_task_by_database or {},
        running_count_by_instance or {},
        limit_by_instance or {1: 10, 2: 10},
    )


def decide_now(state: PipelineState, cluster: Occupancy | None = None) -> SchedulingDecision:
    return decide(state, cluster or occupancy(), NOW)


def test_a_free_pending_task_of_the_active_stage_starts() -> None:
    decision = decide_now(pipeline(("dev", (task(1, database=10),))))
    assert decision == SchedulingDecision(startable=(1,), waiting={})


def test_running_and_finished_tasks_get_no_reason() -> None:
    state = pipeline(("dev", (task(1, RUNNING), task(2, DONE), task(3, SKIPPED), task(4))))
    cluster = occupancy(running_count_by_instance={1: 1})
    assert decide_now(state, cluster) == SchedulingDecision(startable=(4,), waiting={})


def test_a_task_waiting_for_approval_says_so() -> None:
    decision = decide_now(pipeline(("prod", (task(1, APPROVAL),))))
    assert decision.startable == ()
    assert decision.waiting == {1: WaitingReason(WaitingKind.APPROVAL)}
    assert decision.waiting[1].message == "waiting for approval"


@pytest.mark.parametrize(
    ("status", "kind", "message"),
    [
        (FAILED, WaitingKind.TASK_FAILED, "failed: waiting for a person to retry, edit or skip it"),
        (CANCELED, WaitingKind.TASK_CANCELED, "canceled: waiting for a person to retry it"),
    ],
)
def test_a_failed_or_canceled_task_waits_for_a_person_while_its_siblings_run(
    status: TaskStatus, kind: WaitingKind, message: str
) -> None:
    decision = decide_now(pipeline(("dev", (task(1, status), task(2))), ("prod", (task(3),))))
    assert decision.startable == (2,)
    assert decision.waiting[1] == WaitingReason(kind)
    assert decision.waiting[1].message == message
    assert decision.waiting[3].kind is WaitingKind.EARLIER_STAGE


def test_tasks_of_later_stages_wait_for_the_first_unfinished_stage() -> None:
    state = pipeline(
        ("dev", (task(1, DONE), task(2, SKIPPED))),
        ("test", (task(3, DONE), task(4))),
        ("prod", (task(5),)),
    )
    decision = decide_now(state)
    assert decision.startable == (4,)
    assert decision.waiting == {
        5: WaitingReason(WaitingKind.EARLIER_STAGE, stage_id=101, stage_name="test")
    }
    assert decision.waiting[5].message == "waiting for stage 'test' to finish"


def test_approval_is_reported_before_an_unfinished_earlier_stage() -> None:
    decision = decide_now(pipeline(("test", (task(1),)), ("prod", (task(2, APPROVAL),))))
    assert decision.waiting == {2: WaitingReason(WaitingKind.APPROVAL)}


def test_a_blocked_task_waits_for_its_lowest_unfinished_blocker() -> None:
    state = pipeline(
        (
            "dev",
            (
                task(1, DONE),
                task(2, RUNNING),
                task(3),
                task(4, blocked_by=frozenset({1, 3, 2})),
            ),
        )
    )
    decision = decide_now(state, occupancy(running_count_by_instance={1: 1}))
    assert decision.startable == (3,)
    assert decision.waiting == {4: WaitingReason(WaitingKind.BLOCKED_BY, task_id=2)}
    assert decision.waiting[4].message == "blocked by task 2"


@pytest.mark.parametrize("blocker_status", [DONE, SKIPPED])
def test_a_task_whose_blockers_are_finished_starts(blocker_status: TaskStatus) -> None:
    state = pipeline(
        ("dev", (task(1, blocker_status),)),
        ("test", (task(2, blocker_status), task(3, blocked_by=frozenset({1, 2})))),
    )
    assert decide_now(state).startable == (3,)


def test_a_blocker_outside_the_pipeline_keeps_the_task_waiting() -> None:
    decision = decide_now(pipeline(("dev", (task(1, blocked_by=frozenset({77})),))))
    assert decision.waiting == {1: WaitingReason(WaitingKind.BLOCKED_BY, task_id=77)}


@pytest.mark.parametrize(("not_before", "starts"), [(LATER, False), (NOW, True), (EARLIER, True)])
def test_a_task_waits_for_its_not_before_time(not_before: datetime, starts: bool) -> None:
    decision = decide_now(pipeline(("dev", (task(1, not_before=not_before),))))
    if starts:
        assert decision.startable == (1,)
    else:
        assert decision.waiting == {1: WaitingReason(WaitingKind.NOT_BEFORE, not_before=not_before)}
        assert decision.waiting[1].message == "not before 2025-03-01T13:00:00+00:00"


def test_a_database_busy_in_another_pipeline_holds_the_task() -> None:
    state = pipeline(("dev", (task(1, database=10), task(2, database=11))))
    decision = decide_now(state, occupancy(running_task_by_database={10: 99}))
    assert decision.startable == (2,)
    assert decision.waiting == {1: WaitingReason(WaitingKind.DATABASE_BUSY, task_id=99)}
    assert decision.waiting[1].message == "database busy with task 99"


def test_two_tasks_on_one_database_start_one_at_a_time_lowest_id_first() -> None:
    state = pipeline(("dev", (task(5, database=10), task(3, database=10), task(4))))
    decision = decide_now(state)
    assert decision.startable == (3, 4)
    assert decision.waiting == {5: WaitingReason(WaitingKind.DATABASE_BUSY, task_id=3)}


def test_instance_level_tasks_occupy_no_database() -> None:
    decision = decide_now(pipeline(("dev", (task(1), task(2)))))
    assert decision.startable == (1, 2)


def test_an_instance_at_its_limit_holds_its_tasks_and_not_others() -> None:
    state = pipeline(
        (
            "dev",
            (
                task(1, instance=1, database=10),
                task(2, instance=1, database=11),
                task(3, instance=1),
                task(4, instance=2, database=20),
            ),
        )
    )
    cluster = occupancy(running_count_by_instance={1: 1}, limit_by_instance={1: 2, 2: 1})
    decision = decide_now(state, cluster)
    at_limit = WaitingReason(WaitingKind.INSTANCE_AT_LIMIT, limit=2)
    assert decision.startable == (1, 4)
    assert decision.waiting == {2: at_limit, 3: at_limit}
    assert at_limit.message == "instance at its limit of 2 running tasks"


def test_a_canceled_pipeline_starts_nothing_and_says_why() -> None:
    state = pipeline(
        ("dev", (task(1, RUNNING), task(2, CANCELED), task(3, FAILED), task(4, DONE))),
        ("prod", (task(5, APPROVAL), task(6))),
        status=PipelineStatus.CANCELED,
    )
    decision = decide_now(state, occupancy(running_count_by_instance={1: 1}))
    canceled = WaitingReason(WaitingKind.PIPELINE_CANCELED)
    assert decision == SchedulingDecision(
        startable=(), waiting={2: canceled, 3: canceled, 5: canceled, 6: canceled}
    )
    assert canceled.message == "the issue is canceled"


def test_a_done_pipeline_starts_nothing_even_on_inconsistent_data() -> None:
    decision = decide_now(pipeline(("dev", (task(1),)), status=PipelineStatus.DONE))
    assert decision == SchedulingDecision(
        startable=(), waiting={1: WaitingReason(WaitingKind.PIPELINE_DONE)}
    )
    assert decision.waiting[1].message == "the issue is done"


def test_a_finished_pipeline_has_nothing_to_decide() -> None:
    state = pipeline(("dev", (task(1, DONE),)), ("prod", (task(2, SKIPPED),)))
    assert decide_now(state) == SchedulingDecision(startable=(), waiting={})


@pytest.mark.parametrize(
    ("status", "behind_a_stage", "blocked", "not_before", "database", "expected"),
    [
        (APPROVAL, True, True, LATER, 10, WaitingKind.APPROVAL),
        (PENDING, True, True, LATER, 10, WaitingKind.EARLIER_STAGE),
        (PENDING, False, True, LATER, 10, WaitingKind.BLOCKED_BY),
        (PENDING, False, False, LATER, 10, WaitingKind.NOT_BEFORE),
        (PENDING, False, False, None, 10, WaitingKind.DATABASE_BUSY),
        (PENDING, False, False, None, 11, WaitingKind.INSTANCE_AT_LIMIT),
    ],
)
def test_the_first_applicable_reason_wins(
    status: TaskStatus,
    behind_a_stage: bool,
    blocked: bool,
    not_before: datetime | None,
    database: int,
    expected: WaitingKind,
) -> None:
    candidate = task(
        1,
        status,
        database=database,
        not_before=not_before,
        blocked_by=frozenset({7}) if blocked else frozenset(),
    )
    blocker = task(7, APPROVAL)
    earlier_stages = (("test", (task(8, APPROVAL),)),) if behind_a_stage else ()
    state = pipeline(*earlier_stages, ("prod", (candidate, blocker)))
    cluster = occupancy(
        running_task_by_database={10: 99},
        running_count_by_instance={1: 1},
        limit_by_instance={1: 1},
    )
    assert decide_now(state, cluster).waiting[1].kind is expected


def test_failed_checks_come_before_approval_and_all_the_pipeline_clears_itself() -> None:
    candidate = task(1, APPROVAL, not_before=LATER, blocked_by=frozenset({7}))._replace(
        failed_checks=("truncate", "syntax")
    )
    state = pipeline(("test", (task(8, PENDING),)), ("prod", (candidate, task(7, PENDING))))

    reason = decide_now(state).waiting[1]

    assert (reason.kind, reason.rules) == (WaitingKind.CHECKS_FAILED, ("truncate", "syntax"))
    assert reason.message == "checks failed: truncate, syntax"


def test_a_failed_task_says_it_failed_before_its_checks_do() -> None:
    failed = task(1, FAILED)._replace(failed_checks=("syntax",))

    assert decide_now(pipeline(("dev", (failed,)))).waiting[1].kind is WaitingKind.TASK_FAILED


def test_pending_checks_come_after_the_pipeline_s_own_reasons_and_before_capacity() -> None:
    later = task(1, PENDING, not_before=LATER)._replace(checks_pending=True)
    now = task(2, PENDING, database=10)._replace(checks_pending=True)
    cluster = occupancy(running_task_by_database={10: 99}, running_count_by_instance={1: 1})

    decision = decide_now(pipeline(("dev", (later, now))), cluster)

    assert decision.waiting[1].kind is WaitingKind.NOT_BEFORE
    assert decision.waiting[2].kind is WaitingKind.CHECKS_PENDING
    assert decision.waiting[2].message == "waiting for its checks to finish"


DATABASES_BY_INSTANCE = {1: (10, 11), 2: (20,)}
MAX_TASKS = 16
OUTSIDE_TASK_IDS = 1000

# Strategies are built once here, not inside the composites: building them per draw made
# generation many times slower. Repeated values weigh the draws towards pipelines that start
# something, which uniform draws seldom gave.
targets = st.sampled_from(
    [
        (instance, database)
        for instance, databases in DATABASES_BY_INSTANCE.items()
        for database in (None, *databases)
    ]
)
any_tasks = st.tuples(
    st.sampled_from([PENDING, PENDING, PENDING, DONE, DONE, *TaskStatus]),
    targets,
    st.sampled_from([None, None, EARLIER, NOW, LATER]),
    # Positions of the blocking tasks in the pipeline, taken modulo its number of tasks.
    st.just(frozenset[int]())
    | st.frozensets(st.integers(0, MAX_TASKS - 1), min_size=1, max_size=2),
    # Checks: (pending, failed rules); mostly passed.
    st.sampled_from([(False, ()), (False, ()), (False, ()), (True, ()), (False, ("truncate",))]),
)
any_pipelines = st.tuples(
    st.sampled_from([PipelineStatus.OPEN, PipelineStatus.OPEN, *PipelineStatus]),
    st.lists(st.lists(any_tasks, min_size=1, max_size=4), min_size=1, max_size=4),
)
# One open stage of ready tasks: they compete for databases and instance slots, which the
# pipelines above rarely make them do.
contending_tasks = st.tuples(
    st.sampled_from([PENDING, PENDING, RUNNING]),
    targets,
    st.none(),
    st.just(frozenset[int]()),
    st.just((False, ())),
)
contending_pipelines = st.tuples(
    st.just(PipelineStatus.OPEN),
    st.lists(st.lists(contending_tasks, min_size=2, max_size=8), min_size=1, max_size=1),
)
id_orders = st.permutations(range(1, MAX_TASKS + 1))
busy_elsewhere = st.frozensets(
    st.sampled_from([database for pair in DATABASES_BY_INSTANCE.values() for database in pair]),
    max_size=1,
)
extra_running = st.tuples(*(st.integers(0, 1) for _ in DATABASES_BY_INSTANCE))
limits = st.tuples(*(st.sampled_from([3, 2, 1]) for _ in DATABASES_BY_INSTANCE))
# No deadline: other test suites may share the machine, and a slow example is no failure here.
property_test = settings(max_examples=100, deadline=None)


@st.composite
def pipeline_states(draw: st.DrawFn) -> PipelineState:
    status, shapes = draw(any_pipelines | contending_pipelines)
    ids = draw(id_orders)
    total = sum(len(stage) for stage in shapes)
    stages = []
    position = 0
    for index, stage in enumerate(shapes):
        tasks = []
        for task_status, (instance, database), not_before, blocker_positions, checks in stage:
            task_id = ids[position]
            blockers = frozenset(ids[blocker % total] for blocker in blocker_positions)
            pending, failed = checks
            tasks.append(
                TaskState(
                    task_id,
                    task_status,
                    instance,
                    database,
                    not_before,
                    blockers - {task_id},
                    checks_pending=pending,
                    failed_checks=failed,
                )
            )
            position += 1
        stages.append(StageState(100 + index, f"stage-{index}", tuple(tasks)))
    return PipelineState(status, tuple(stages))


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[PipelineState, Occupancy]:
    """A pipeline and a cluster consistent with it: its RUNNING tasks are in the occupancy."""
    state = draw(pipeline_states())
    running = [task for task in all_tasks(state) if task.status is RUNNING]
    databases_of_running = [task.database_id for task in running if task.database_id is not None]
    # Two tasks running on one database cannot happen.
    assume(len(set(databases_of_running)) == len(databases_of_running))
    running_task_by_database = {
        task.database_id: task.id for task in running if task.database_id is not None
    }
    running_count_by_instance = Counter(task.instance_id for task in running)
    busy = draw(busy_elsewhere) - set(running_task_by_database)
    for (instance, instance_databases), extra in zip(
        DATABASES_BY_INSTANCE.items(), draw(extra_running), strict=True
    ):
        for database in busy.intersection(instance_databases):
            running_task_by_database[database] = OUTSIDE_TASK_IDS + database
            running_count_by_instance[instance] += 1
        running_count_by_instance[instance] += extra
    limit_by_instance = dict(zip(DATABASES_BY_INSTANCE, draw(limits), strict=True))
    return state, Occupancy(running_task_by_database, running_count_by_instance, limit_by_instance)


def all_tasks(state: PipelineState) -> list[TaskState]:
    return [task for stage in state.stages for task in stage.tasks]


def active_stage_of(state: PipelineState) -> int | None:
    return active_stage_index([[task.status for task in stage.tasks] for stage in state.stages])


def startable_tasks(state: PipelineState, decision: SchedulingDecision) -> list[TaskState]:
    by_id = {task.id: task for task in all_tasks(state)}
    return [by_id[task_id] for task_id in decision.startable]


@property_test
@given(scenarios())
def test_only_ready_pending_tasks_of_the_active_stage_start(
    scenario: tuple[PipelineState, Occupancy],
) -> None:
    state, cluster = scenario
    decision = decide(state, cluster, NOW)
    active = active_stage_of(state)
    finished = {task.id for task in all_tasks(state) if task.status in FINISHED_TASK_STATUSES}
    for started in startable_tasks(state, decision):
        assert active is not None
        assert started in state.stages[active].tasks
        assert started.status is PENDING
        assert not started.checks_pending
        assert started.failed_checks == ()
        assert started.blocked_by <= finished
        assert started.not_before is None or started.not_before <= NOW


@property_test
@given(scenarios())
def test_never_two_tasks_run_on_one_database(scenario: tuple[PipelineState, Occupancy]) -> None:
    state, cluster = scenario
    databases = [
        task.database_id
        for task in startable_tasks(state, decide(state, cluster, NOW))
        if task.database_id is not None
    ]
    assert len(databases) == len(set(databases))
    assert not set(databases) & set(cluster.running_task_by_database)


@property_test
@given(scenarios())
def test_instance_limits_are_never_exceeded(scenario: tuple[PipelineState, Occupancy]) -> None:
    state, cluster = scenario
    starting = Counter(
        task.instance_id for task in startable_tasks(state, decide(state, cluster, NOW))
    )
    for instance, count in starting.items():
        running = cluster.running_count_by_instance.get(instance, 0)
        assert running + count <= cluster.limit_by_instance[instance]


@property_test
@given(scenarios())
def test_every_waiting_task_is_startable_or_has_exactly_one_reason(
    scenario: tuple[PipelineState, Occupancy],
) -> None:
    state, cluster = scenario
    decision = decide(state, cluster, NOW)
    waiting = {
        task.id
        for task in all_tasks(state)
        if task.status not in {RUNNING, *FINISHED_TASK_STATUSES}
    }
    assert len(decision.startable) == len(set(decision.startable))
    assert not set(decision.startable) & set(decision.waiting)
    assert set(decision.startable) | set(decision.waiting) == waiting


@property_test
@given(scenarios())
def test_every_reason_given_is_true(scenario: tuple[PipelineState, Occupancy]) -> None:
    state, cluster = scenario
    decision = decide(state, cluster, NOW)
    status_by_id = {task.id: task.status for task in all_tasks(state)}
    starting = startable_tasks(state, decision)
    active = active_stage_of(state)
    for stage_index, stage in enumerate(state.stages):
        for waiting in stage.tasks:
            reason = decision.waiting.get(waiting.id)
            if reason is None:
                continue
            match reason.kind:
                case WaitingKind.PIPELINE_CANCELED:
                    assert state.status is PipelineStatus.CANCELED
                case WaitingKind.PIPELINE_DONE:
                    assert state.status is PipelineStatus.DONE
                case WaitingKind.TASK_FAILED:
                    assert waiting.status is FAILED
                case WaitingKind.TASK_CANCELED:
                    assert waiting.status is CANCELED
                case WaitingKind.APPROVAL:
                    assert waiting.status is APPROVAL
                case WaitingKind.CHECKS_FAILED:
                    assert reason.rules == waiting.failed_checks != ()
                case WaitingKind.CHECKS_PENDING:
                    assert waiting.checks_pending
                case WaitingKind.EARLIER_STAGE:
                    assert active is not None
                    assert active < stage_index
                    assert reason.stage_id == state.stages[active].id
                    assert reason.stage_name == state.stages[active].name
                case WaitingKind.BLOCKED_BY:
                    assert reason.task_id in waiting.blocked_by
                    assert status_by_id.get(reason.task_id) not in FINISHED_TASK_STATUSES
                case WaitingKind.NOT_BEFORE:
                    assert waiting.not_before == reason.not_before
                    assert reason.not_before is not None
                    assert reason.not_before > NOW
                case WaitingKind.DATABASE_BUSY:
                    assert waiting.database_id is not None
                    holders = {cluster.running_task_by_database.get(waiting.database_id)} | {
                        task.id for task in starting if task.database_id == waiting.database_id
                    }
                    assert reason.task_id in holders
                case WaitingKind.INSTANCE_AT_LIMIT:
                    instance = waiting.instance_id
                    in_use = cluster.running_count_by_instance.get(instance, 0) + sum(
                        task.instance_id == instance for task in starting
                    )
                    assert reason.limit == cluster.limit_by_instance[instance] <= in_use


@settings(property_test, max_examples=50)
@given(scenarios(), st.sampled_from([PipelineStatus.CANCELED, PipelineStatus.DONE]))
def test_closed_pipelines_start_nothing(
    scenario: tuple[PipelineState, Occupancy], closed: PipelineStatus
) -> None:
    state, cluster = scenario
    decision = decide(replace(state, status=closed), cluster, NOW)
    assert decision.startable == ()
    assert {reason.kind for reason in decision.waiting.values()} <= {
        WaitingKind.PIPELINE_CANCELED,
        WaitingKind.PIPELINE_DONE,
    }


@settings(property_test, max_examples=50)
@given(scenarios(), st.data())
def test_the_decision_depends_on_the_inputs_not_on_task_order(
    scenario: tuple[PipelineState, Occupancy], data: st.DataObject
) -> None:
    state, cluster = scenario
    shuffled = PipelineState(
        state.status,
        tuple(
            StageState(stage.id, stage.name, tuple(data.draw(st.permutations(stage.tasks))))
            for stage in state.stages
        ),
    )
    decision = decide(state, cluster, NOW)
    assert decide(state, cluster, NOW) == decision
    assert decide(shuffled, cluster, NOW) == decision
    position = {
        task.id: (index, task.id)
        for index, stage in enumerate(state.stages)
        for task in stage.tasks
    }
    assert list(decision.startable) == sorted(decision.startable, key=position.__getitem__)
