"""The plan's rules, checked without a database (the API tests check them end to end)."""

from conveyor.domain.plan import (
    Catalog,
    IssuePlan,
    StagePlan,
    TaskPlan,
    check_database_name,
    stage_names_in_order,
    task_names_in_order,
    validate_issue_plan,
)
from conveyor.domain.statuses import ApprovalPolicy, TaskType
from conveyor.errors import ErrorCode

CATALOG = Catalog(
    environment_policies={1: ApprovalPolicy.AUTOMATIC, 2: ApprovalPolicy.MANUAL},
    environment_names={1: "dev", 2: "prod"},
    instance_ids=frozenset({10, 11}),
    database_instances={100: 10, 101: 11},
)


def change(ref: str, *blocked_by: str, database_id: int = 100) -> TaskPlan:
    return TaskPlan(
        type=TaskType.DATA_UPDATE,
        instance_id=10,
        ref=ref,
        database_id=database_id,
        statement="SELECT 1",
        blocked_by=blocked_by,
    )


def plan(*stages: tuple[TaskPlan, ...]) -> IssuePlan:
    return IssuePlan(
        title="t", stages=tuple(StagePlan(environment_id=1, tasks=tasks) for tasks in stages)
    )


def messages(issue: IssuePlan) -> list[str]:
    return [problem.message for problem in validate_issue_plan(issue, CATALOG)]


def test_a_valid_plan_has_no_problem() -> None:
    assert messages(plan((change("a"), change("b", "a")), (change("c", "a", "b"),))) == []


def test_a_cycle_is_named_along_its_path() -> None:
    found = messages(plan((change("a", "c"), change("b", "a"), change("c", "b"))))

    # Read along the links: a waits for c, which waits for b, which waits for a.
    assert found == ["blocked-by links form a cycle: a -> c -> b -> a"]


def test_a_task_may_not_wait_for_a_later_stage() -> None:
    found = messages(plan((change("a", "b"),), (change("b"),)))

    assert found == ["blocked by 'b', which belongs to a later stage"]


def test_a_database_must_be_on_the_task_instance() -> None:
    found = validate_issue_plan(plan((change("a", database_id=101),)), CATALOG)

    assert [(p.code, p.field) for p in found] == [
        (ErrorCode.INVALID_INPUT, ("input", "stages", 0, "tasks", 0, "databaseId"))
    ]


def test_database_names_are_limited_in_bytes_not_characters() -> None:
    assert check_database_name("é" * 31, ("name",)) == []
    assert [p.message for p in check_database_name("é" * 32, ("name",))] == [
        "must be at most 63 bytes in UTF-8"
    ]
    assert [p.message for p in check_database_name("a\x00b", ("name",))] == [
        "must not contain a NUL character"
    ]


def test_unnamed_stages_and_tasks_get_readable_names() -> None:
    issue = plan((change("a"), TaskPlan(type=TaskType.INSTANCE_SYNC, instance_id=10)))

    assert stage_names_in_order(issue, CATALOG) == ["dev"]
    assert task_names_in_order(issue) == [["data_update-1", "instance_sync-2"]]
