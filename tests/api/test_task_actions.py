"""What a person does to one task (approve, retry, cancel, skip, run now, approve a stage), and
what the API tells them about it: why it waits, and which of those actions it would accept."""

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conveyor.db.models import Event, Issue, Pipeline, Task
from conveyor.domain.statuses import EventKind, TaskStatus
from tests.api.support import (
    CANCEL_ISSUE,
    Catalog,
    CreatedIssue,
    create_issue,
    database_task,
    global_id,
    instance_task,
    put_task_in,
    row_key,
    snapshot,
    the_error,
)
from tests.conftest import GraphQLClient, Response


@pytest.fixture
def database_url(emptied_module_database_url: str) -> str:
    """The module's one database, emptied for each test: creating one costs more than a test."""
    return emptied_module_database_url


TASK_STATE = """
fragment TaskState on Task {
  id name status version statusReason approvedBy approvedAt cancelRequested notBefore
  availableActions
  waitingReason {
    kind message notBefore limit
    stage { name }
    blockingTask { name }
  }
}
"""


def task_mutation(field: str, input_type: str = "TaskActionInput") -> str:
    return (
        TASK_STATE
        + f"mutation($input: {input_type}!) {{ {field}(input: $input) {{ ...TaskState }} }}"
    )


APPROVE_TASK = task_mutation("approveTask")
RETRY_TASK = task_mutation("retryTask")
CANCEL_TASK = task_mutation("cancelTask")
SKIP_TASK = task_mutation("skipTask", "SkipTaskInput")
RUN_TASK_NOW = task_mutation("runTaskNow")
UPDATE_STATEMENT = task_mutation("updateTaskStatement", "UpdateTaskStatementInput")
APPROVE_STAGE = (
    TASK_STATE
    + """
mutation($input: StageActionInput!) {
  approveStage(input: $input) { name status tasks { ...TaskState } }
}
"""
)
TASK = TASK_STATE + "query($id: ID!) { node(id: $id) { ...TaskState } }"
PIPELINE = (
    TASK_STATE
    + """
query($id: ID!) {
  node(id: $id) {
    ... on Issue { status pipeline { activeStage { name } stages { tasks { ...TaskState } } } }
  }
}
"""
)

#: The mutation that takes each action of the API's TaskAction enum, and the input it needs
#: beside the task's id.
MUTATION_OF_ACTION: dict[str, tuple[str, dict[str, Any]]] = {
    "APPROVE": (APPROVE_TASK, {}),
    "CANCEL": (CANCEL_TASK, {}),
    "RETRY": (RETRY_TASK, {}),
    "SKIP": (SKIP_TASK, {"reason": "not needed"}),
    "EDIT": (UPDATE_STATEMENT, {"statement": "SELECT 2"}),
    "RUN_NOW": (RUN_TASK_NOW, {}),
}


def tomorrow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)


def change(catalog: Catalog, name: str, instance: str = "alpha", **fields: Any) -> dict[str, Any]:
    """A schema change against `instance`'s database, named and referable as `name`."""
    return database_task(
        catalog,
        "SCHEMA_UPDATE",
        instance,
        name=name,
        ref=name,
        statement="CREATE TABLE o ()",
        **fields,
    )


def sync(catalog: Catalog, name: str, instance: str) -> dict[str, Any]:
    """An instance-level task: it occupies `instance` but none of its databases."""
    return instance_task(catalog, "INSTANCE_SYNC", instance, name=name)


def the_issues_stages(catalog: Catalog) -> dict[str, list[dict[str, Any]]]:
    """dev (AUTOMATIC): ddl, then seed (blocked by ddl), on alpha's database;
    prod (MANUAL): prod-ddl on beta's database and prod-sync on beta."""
    return {
        "dev": [change(catalog, "ddl"), change(catalog, "seed", blockedBy=["ddl"])],
        "prod": [change(catalog, "prod-ddl", "beta"), sync(catalog, "prod-sync", "beta")],
    }


@pytest.fixture
async def issue(graphql: GraphQLClient, catalog: Catalog) -> CreatedIssue:
    """An issue of `the_issues_stages`, all of its tasks at their gate."""
    return await create_issue(graphql, catalog, the_issues_stages(catalog))


async def task_state(graphql: GraphQLClient, task_id: str) -> dict[str, Any]:
    state: dict[str, Any] = (await graphql.ok(TASK, {"id": task_id}))["node"]
    return state


async def act(
    graphql: GraphQLClient,
    document: str,
    task_id: str,
    *,
    actor: str = "tester",
    **fields: Any,
) -> Response:
    return await graphql(document, {"input": {"taskId": task_id, **fields}}, actor=actor)


async def act_ok(
    graphql: GraphQLClient, document: str, task_id: str, *, actor: str = "tester", **fields: Any
) -> dict[str, Any]:
    response = await act(graphql, document, task_id, actor=actor, **fields)
    assert response.errors == [], response.errors
    assert response.data is not None
    (state,) = response.data.values()
    assert isinstance(state, dict)
    return state


async def task_events(task_key: int) -> list[tuple[str, str, str | None, str | None]]:
    """(kind, actor, old status, new status) of every event about the task, oldest first,
    those of its checks left out (the issue's fixture records them)."""
    return [
        (event.kind.value, event.actor, event.old_status, event.new_status)
        for event in await Event.filter(task_id=task_key)
        .exclude(kind=EventKind.TASK_CHECKED)
        .order_by("id")
    ]


# --- each action's success ----------------------------------------------------------------------


async def test_approve_lets_the_task_past_its_gate(
    graphql: GraphQLClient, issue: CreatedIssue
) -> None:
    before = datetime.now(UTC)

    state = await act_ok(graphql, APPROVE_TASK, issue.tasks["prod-ddl"], actor="ada")

    assert (state["status"], state["version"], state["approvedBy"]) == ("PENDING", 2, "ada")
    assert datetime.fromisoformat(state["approvedAt"]) >= before
    assert await task_events(issue.task_key("prod-ddl")) == [
        ("TASK_APPROVED", "ada", None, None),
        ("TASK_STATUS_CHANGED", "ada", "PENDING_APPROVAL", "PENDING"),
    ]


async def test_approve_stage_approves_every_waiting_task_of_the_stage(
    graphql: GraphQLClient, issue: CreatedIssue
) -> None:
    await act_ok(graphql, APPROVE_TASK, issue.tasks["prod-sync"], actor="ada")

    data = await graphql.ok(
        APPROVE_STAGE, {"input": {"stageId": issue.stages["prod"]}}, actor="bob"
    )

    stage = data["approveStage"]
    assert (stage["name"], stage["status"]) == ("prod", "PENDING")
    assert [(task["name"], task["status"], task["approvedBy"]) for task in stage["tasks"]] == [
        ("prod-ddl", "PENDING", "bob"),
        # Approved already: the stage's approval leaves it alone.
        ("prod-sync", "PENDING", "ada"),
    ]
    assert await task_events(issue.task_key("prod-ddl")) == [
        ("TASK_APPROVED", "bob", None, None),
        ("TASK_STATUS_CHANGED", "bob", "PENDING_APPROVAL", "PENDING"),
    ]
    assert len(await task_events(issue.task_key("prod-sync"))) == 2


@pytest.mark.parametrize(
    ("task", "failed_or_canceled", "gate"),
    [
        ("ddl", TaskStatus.FAILED, "PENDING"),
        ("ddl", TaskStatus.CANCELED, "PENDING"),
        ("prod-ddl", TaskStatus.FAILED, "PENDING_APPROVAL"),
        ("prod-ddl", TaskStatus.CANCELED, "PENDING_APPROVAL"),
    ],
)
async def test_retry_returns_the_task_to_its_gate_and_forgets_why_it_stopped(
    graphql: GraphQLClient,
    issue: CreatedIssue,
    task: str,
    failed_or_canceled: TaskStatus,
    gate: str,
) -> None:
    await act_ok(graphql, APPROVE_TASK, issue.tasks["prod-ddl"])
    await put_task_in(issue.task_key(task), failed_or_canceled, status_reason="boom")
    version = (await Task.get(id=issue.task_key(task))).version

    state = await act_ok(graphql, RETRY_TASK, issue.tasks[task], actor="carol")

    assert (state["status"], state["version"]) == (gate, version + 1)
    # A retry in a MANUAL environment asks for approval again.
    assert (state["statusReason"], state["approvedBy"], state["approvedAt"]) == (None, None, None)
    assert (await task_events(issue.task_key(task)))[-1] == (
        "TASK_STATUS_CHANGED",
        "carol",
        failed_or_canceled.value,
        gate,
    )


@pytest.mark.parametrize(("task", "gate"), [("ddl", "PENDING"), ("prod-ddl", "PENDING_APPROVAL")])
async def test_cancel_cancels_a_waiting_task(
    graphql: GraphQLClient, issue: CreatedIssue, task: str, gate: str
) -> None:
    state = await act_ok(graphql, CANCEL_TASK, issue.tasks[task], actor="dave")

    assert (state["status"], state["version"], state["cancelRequested"]) == ("CANCELED", 2, False)
    assert await task_events(issue.task_key(task)) == [
        ("TASK_STATUS_CHANGED", "dave", gate, "CANCELED")
    ]


async def test_cancel_asks_the_worker_of_a_running_task_to_stop_it(
    graphql: GraphQLClient, issue: CreatedIssue
) -> None:
    await put_task_in(issue.task_key("ddl"), TaskStatus.RUNNING)

    state = await act_ok(graphql, CANCEL_TASK, issue.tasks["ddl"], actor="dave")

    # Only the worker, once it has aborted the statement, may say CANCELED.
    assert (state["status"], state["version"], state["cancelRequested"]) == ("RUNNING", 2, True)
    assert state["availableActions"] == []
    assert await task_events(issue.task_key("ddl")) == [
        ("TASK_CANCEL_REQUESTED", "dave", None, None)
    ]


async def test_a_second_cancel_of_a_running_task_is_a_conflict(
    graphql: GraphQLClient, issue: CreatedIssue
) -> None:
    await put_task_in(issue.task_key("ddl"), TaskStatus.RUNNING)
    await act_ok(graphql, CANCEL_TASK, issue.tasks["ddl"])
    before = await snapshot()

    error = the_error(await act(graphql, CANCEL_TASK, issue.tasks["ddl"]))

    assert (error["extensions"]["code"], error["extensions"]["field"]) == (
        "CONFLICT",
        ["input", "taskId"],
    )
    assert error["message"] == "the task is being canceled already"
    assert await snapshot() == before


async def test_skip_passes_over_the_task_keeping_the_reason(
    graphql: GraphQLClient, issue: CreatedIssue
) -> None:
    state = await act_ok(
        graphql, SKIP_TASK, issue.tasks["ddl"], actor="erin", reason="  done by hand  "
    )

    assert (state["status"], state["version"], state["statusReason"]) == (
        "SKIPPED",
        2,
        "done by hand",
    )
    event = await Event.exclude(kind=EventKind.TASK_CHECKED).get(task_id=issue.task_key("ddl"))
    assert (event.kind, event.actor, event.new_status, event.detail) == (
        EventKind.TASK_STATUS_CHANGED,
        "erin",
        "SKIPPED",
        {"reason": "done by hand"},
    )


async def test_skip_of_a_failed_task_lets_the_pipeline_move_on(
    graphql: GraphQLClient, issue: CreatedIssue
) -> None:
    await put_task_in(issue.task_key("ddl"), TaskStatus.FAILED, status_reason="boom")

    await act_ok(graphql, SKIP_TASK, issue.tasks["ddl"], reason="applied by hand")

    # seed was blocked by ddl: a skipped blocker no longer holds it.
    assert (await task_state(graphql, issue.tasks["seed"]))["waitingReason"] is None


async def test_run_now_clears_the_not_before_time_and_nothing_else(
    graphql: GraphQLClient, issue: CreatedIssue
) -> None:
    await Task.filter(id=issue.task_key("ddl")).update(not_before=tomorrow())

    state = await act_ok(graphql, RUN_TASK_NOW, issue.tasks["ddl"], actor="fay")

    assert (state["status"], state["version"], state["notBefore"]) == ("PENDING", 2, None)
    assert state["waitingReason"] is None
    event = await Event.exclude(kind=EventKind.TASK_CHECKED).get(task_id=issue.task_key("ddl"))
    assert (event.kind, event.actor, event.detail) == (
        EventKind.TASK_EDITED,
        "fay",
        {"notBefore": None},
    )


async def test_the_issue_is_done_in_the_same_transaction_as_its_last_task(
    graphql: GraphQLClient, issue: CreatedIssue
) -> None:
    *first, last = issue.tasks
    for name in first:
        await act_ok(graphql, SKIP_TASK, issue.tasks[name], reason="not needed")
        assert (await Pipeline.get(issue_id=row_key(issue.id))).status.value == "OPEN"

    data = await graphql.ok(
        TASK_STATE
        + """
mutation($input: SkipTaskInput!) {
  skipTask(input: $input) { ...TaskState pipeline { status activeStage { name } issue { status } } }
}
""",
        {"input": {"taskId": issue.tasks[last], "reason": "not needed"}},
    )

    pipeline = data["skipTask"]["pipeline"]
    assert (pipeline["status"], pipeline["issue"]["status"]) == ("DONE", "DONE")
    assert pipeline["activeStage"] is None
    *_, last_task_change, stage_change, pipeline_change = await Event.filter(
        issue_id=row_key(issue.id)
    ).order_by("id")
    assert (last_task_change.kind, last_task_change.task_id, last_task_change.new_status) == (
        EventKind.TASK_STATUS_CHANGED,
        issue.task_key(last),
        "SKIPPED",
    )
    assert (stage_change.kind, stage_change.new_status) == (
        EventKind.STAGE_STATUS_CHANGED,
        "SKIPPED",
    )
    assert (pipeline_change.kind, pipeline_change.old_status, pipeline_change.new_status) == (
        EventKind.PIPELINE_STATUS_CHANGED,
        "OPEN",
        "DONE",
    )
    assert last_task_change.transaction_id == pipeline_change.transaction_id


async def test_cancel_issue_asks_the_workers_of_its_running_tasks_to_stop_them(
    graphql: GraphQLClient, issue: CreatedIssue
) -> None:
    await put_task_in(issue.task_key("ddl"), TaskStatus.RUNNING)

    await graphql.ok(CANCEL_ISSUE, {"id": issue.id}, actor="gil")

    running = await task_state(graphql, issue.tasks["ddl"])
    assert (running["status"], running["cancelRequested"], running["version"]) == (
        "RUNNING",
        True,
        2,
    )
    assert await task_events(issue.task_key("ddl")) == [
        ("TASK_CANCEL_REQUESTED", "gil", None, None)
    ]
    waiting = await task_state(graphql, issue.tasks["seed"])
    assert (waiting["status"], waiting["cancelRequested"]) == ("CANCELED", False)


# --- refusals -----------------------------------------------------------------------------------


# fmt: off
REFUSALS = [
    pytest.param(
        APPROVE_TASK, "ddl", None, {}, "CONFLICT", "taskId",
        "cannot approve a task that is PENDING", id="approve PENDING",
    ),
    pytest.param(
        APPROVE_TASK, "prod-ddl", TaskStatus.FAILED, {}, "CONFLICT", "taskId",
        "cannot approve a task that is FAILED", id="approve FAILED",
    ),
    pytest.param(
        RETRY_TASK, "ddl", TaskStatus.DONE, {}, "CONFLICT", "taskId",
        "cannot retry a task that is DONE", id="retry DONE",
    ),
    pytest.param(
        RETRY_TASK, "prod-ddl", None, {}, "CONFLICT", "taskId",
        "cannot retry a task that is PENDING_APPROVAL", id="retry PENDING_APPROVAL",
    ),
    pytest.param(
        CANCEL_TASK, "ddl", TaskStatus.SKIPPED, {}, "CONFLICT", "taskId",
        "cannot cancel a task that is SKIPPED", id="cancel SKIPPED",
    ),
    pytest.param(
        CANCEL_TASK, "ddl", TaskStatus.FAILED, {}, "CONFLICT", "taskId",
        "cannot cancel a task that is FAILED", id="cancel FAILED",
    ),
    pytest.param(
        SKIP_TASK, "ddl", TaskStatus.RUNNING, {"reason": "x"}, "CONFLICT", "taskId",
        "cannot skip a task that is RUNNING", id="skip RUNNING",
    ),
    pytest.param(
        SKIP_TASK, "ddl", TaskStatus.CANCELED, {"reason": "x"}, "CONFLICT", "taskId",
        "cannot skip a task that is CANCELED", id="skip CANCELED",
    ),
    pytest.param(
        SKIP_TASK, "ddl", None, {"reason": " \n "}, "INVALID_INPUT", "reason",
        "a skip needs a reason", id="skip without a reason",
    ),
    pytest.param(
        SKIP_TASK, "ddl", None, {"reason": "x" * 1_001}, "INVALID_INPUT", "reason",
        "the reason must be at most 1000 characters", id="skip with a long reason",
    ),
    pytest.param(
        RUN_TASK_NOW, "ddl", TaskStatus.RUNNING, {}, "CONFLICT", "taskId",
        "cannot run now a task that is RUNNING", id="run now RUNNING",
    ),
    pytest.param(
        RUN_TASK_NOW, "ddl", None, {}, "CONFLICT", "taskId",
        "the task has no not-before time to clear", id="run now without notBefore",
    ),
    pytest.param(
        APPROVE_TASK, "prod-ddl", None, {"expectedVersion": 7}, "CONFLICT", "expectedVersion",
        "the task changed since you read it (now at version 1)", id="approve stale version",
    ),
    pytest.param(
        SKIP_TASK, "ddl", None, {"reason": "x", "expectedVersion": 2}, "CONFLICT",
        "expectedVersion", "the task changed since you read it (now at version 1)",
        id="skip stale version",
    ),
    pytest.param(
        UPDATE_STATEMENT, "prod-sync", None, {"statement": "SELECT 1"}, "INVALID_INPUT",
        "taskId", "an INSTANCE_SYNC task has no statement", id="edit a task without statement",
    ),
]
# fmt: on


@pytest.mark.parametrize(
    ("document", "task", "status", "fields", "code", "field", "message"), REFUSALS
)
async def test_refuses_an_action_the_task_does_not_allow_and_changes_nothing(
    graphql: GraphQLClient,
    issue: CreatedIssue,
    document: str,
    task: str,
    status: TaskStatus | None,
    fields: dict[str, Any],
    code: str,
    field: str,
    message: str,
) -> None:
    if status is not None:
        await put_task_in(issue.task_key(task), status)
    before = await snapshot()

    error = the_error(await act(graphql, document, issue.tasks[task], **fields))

    assert (error["extensions"]["code"], error["extensions"]["field"]) == (code, ["input", field])
    assert error["message"] == message
    assert await snapshot() == before


@pytest.mark.parametrize("action", list(MUTATION_OF_ACTION))
async def test_refuses_every_action_on_a_task_of_a_canceled_issue(
    graphql: GraphQLClient, issue: CreatedIssue, action: str
) -> None:
    await graphql.ok(CANCEL_ISSUE, {"id": issue.id})
    before = await snapshot()
    document, fields = MUTATION_OF_ACTION[action]

    error = the_error(await act(graphql, document, issue.tasks["prod-ddl"], **fields))

    assert (error["extensions"]["code"], error["extensions"]["field"]) == (
        "CONFLICT",
        ["input", "taskId"],
    )
    assert error["message"].endswith(" a task of an issue that is CANCELED")
    assert await snapshot() == before


@pytest.mark.parametrize("action", list(MUTATION_OF_ACTION))
@pytest.mark.parametrize("id_of", ["no such task", "a stage's id"])
async def test_refuses_to_act_on_an_unknown_task(
    graphql: GraphQLClient, issue: CreatedIssue, action: str, id_of: str
) -> None:
    task_id = global_id("Task", 987_654) if id_of == "no such task" else issue.stages["dev"]
    document, fields = MUTATION_OF_ACTION[action]

    error = the_error(await act(graphql, document, task_id, **fields))

    assert (error["extensions"]["code"], error["extensions"]["field"]) == (
        "NOT_FOUND",
        ["input", "taskId"],
    )
    assert error["message"] == "task does not exist"


@pytest.mark.parametrize("id_of", ["no such stage", "a task's id"])
async def test_refuses_to_approve_an_unknown_stage(
    graphql: GraphQLClient, issue: CreatedIssue, id_of: str
) -> None:
    stage_id = global_id("Stage", 987_654) if id_of == "no such stage" else issue.tasks["prod-ddl"]

    error = the_error(await graphql(APPROVE_STAGE, {"input": {"stageId": stage_id}}))

    assert (error["extensions"]["code"], error["extensions"]["field"]) == (
        "NOT_FOUND",
        ["input", "stageId"],
    )
    assert error["message"] == "stage does not exist"


async def test_refuses_to_approve_a_stage_where_nothing_waits_for_approval(
    graphql: GraphQLClient, issue: CreatedIssue
) -> None:
    before = await snapshot()

    error = the_error(await graphql(APPROVE_STAGE, {"input": {"stageId": issue.stages["dev"]}}))

    assert (error["extensions"]["code"], error["extensions"]["field"]) == (
        "CONFLICT",
        ["input", "stageId"],
    )
    assert error["message"] == "no task of this stage waits for approval"
    assert await snapshot() == before


async def test_refuses_to_approve_a_stage_of_a_canceled_issue(
    graphql: GraphQLClient, issue: CreatedIssue
) -> None:
    await graphql.ok(CANCEL_ISSUE, {"id": issue.id})

    error = the_error(await graphql(APPROVE_STAGE, {"input": {"stageId": issue.stages["prod"]}}))

    assert (error["extensions"]["code"], error["extensions"]["field"]) == (
        "CONFLICT",
        ["input", "stageId"],
    )
    assert error["message"] == "cannot approve a task of an issue that is CANCELED"


# --- two people at once -------------------------------------------------------------------------

RACES = 20


async def test_of_two_simultaneous_approvals_exactly_one_wins(
    graphql: GraphQLClient, catalog: Catalog
) -> None:
    for _ in range(RACES):
        issue = await create_issue(graphql, catalog, {"prod": [change(catalog, "ddl", "beta")]})
        task_id = issue.tasks["ddl"]

        responses = await asyncio.gather(
            act(graphql, APPROVE_TASK, task_id, actor="ada"),
            act(graphql, APPROVE_TASK, task_id, actor="bob"),
        )

        (winner,) = [response for response in responses if not response.errors]
        (loser,) = [response for response in responses if response.errors]
        assert loser.data is None
        assert loser.error_codes == ["CONFLICT"]
        assert loser.errors[0]["message"] == "cannot approve a task that is PENDING"
        assert winner.data is not None
        approved_by = winner.data["approveTask"]["approvedBy"]
        row = await Task.get(id=issue.task_key("ddl"))
        assert (row.status, row.version, row.approved_by) == (TaskStatus.PENDING, 2, approved_by)
        assert await task_events(issue.task_key("ddl")) == [
            ("TASK_APPROVED", approved_by, None, None),
            ("TASK_STATUS_CHANGED", approved_by, "PENDING_APPROVAL", "PENDING"),
        ]


async def test_of_an_approval_and_a_cancel_of_one_version_exactly_one_wins(
    graphql: GraphQLClient, catalog: Catalog
) -> None:
    for _ in range(RACES):
        issue = await create_issue(graphql, catalog, {"prod": [change(catalog, "ddl", "beta")]})
        task_id = issue.tasks["ddl"]

        approval, cancel = await asyncio.gather(
            act(graphql, APPROVE_TASK, task_id, actor="ada", expectedVersion=1),
            act(graphql, CANCEL_TASK, task_id, actor="bob", expectedVersion=1),
        )

        assert sorted([approval.error_codes, cancel.error_codes]) == [[], ["CONFLICT"]]
        row = await Task.get(id=issue.task_key("ddl"))
        events = await task_events(issue.task_key("ddl"))
        assert row.version == 2
        if approval.errors:
            assert row.status is TaskStatus.CANCELED
            assert events == [("TASK_STATUS_CHANGED", "bob", "PENDING_APPROVAL", "CANCELED")]
        else:
            assert (row.status, row.approved_by) == (TaskStatus.PENDING, "ada")
            assert [event[0] for event in events] == ["TASK_APPROVED", "TASK_STATUS_CHANGED"]


async def test_of_a_skip_and_a_cancel_exactly_one_wins(
    graphql: GraphQLClient, catalog: Catalog
) -> None:
    for _ in range(RACES):
        issue = await create_issue(graphql, catalog, {"dev": [change(catalog, "ddl")]})
        task_id = issue.tasks["ddl"]

        skip, cancel = await asyncio.gather(
            act(graphql, SKIP_TASK, task_id, reason="not needed"),
            act(graphql, CANCEL_TASK, task_id),
        )

        assert sorted([skip.error_codes, cancel.error_codes]) == [[], ["CONFLICT"]]
        row = await Task.get(id=issue.task_key("ddl"))
        winner = TaskStatus.CANCELED if skip.errors else TaskStatus.SKIPPED
        assert (row.status, row.version) == (winner, 2)
        assert len(await task_events(issue.task_key("ddl"))) == 1
        # The skip finished the issue's only task: the issue is DONE exactly when it won.
        pipeline = await Pipeline.get(issue_id=row_key(issue.id))
        assert (pipeline.status.value == "DONE") is (winner is TaskStatus.SKIPPED)


# --- why a task waits ---------------------------------------------------------------------------


def waiting(state: dict[str, Any]) -> tuple[str, str] | None:
    reason = state["waitingReason"]
    return None if reason is None else (reason["kind"], reason["message"])


async def test_tasks_free_to_start_running_or_finished_do_not_wait(
    graphql: GraphQLClient, issue: CreatedIssue
) -> None:
    assert (await task_state(graphql, issue.tasks["ddl"]))["waitingReason"] is None
    await put_task_in(issue.task_key("ddl"), TaskStatus.RUNNING)
    assert (await task_state(graphql, issue.tasks["ddl"]))["waitingReason"] is None
    await put_task_in(issue.task_key("ddl"), TaskStatus.DONE)
    assert (await task_state(graphql, issue.tasks["ddl"]))["waitingReason"] is None


async def test_a_task_waits_for_approval(graphql: GraphQLClient, issue: CreatedIssue) -> None:
    state = await task_state(graphql, issue.tasks["prod-ddl"])

    assert waiting(state) == ("APPROVAL", "waiting for approval")


async def test_an_approved_task_waits_for_the_earlier_stage(
    graphql: GraphQLClient, issue: CreatedIssue
) -> None:
    data = await graphql.ok(APPROVE_STAGE, {"input": {"stageId": issue.stages["prod"]}})

    for task in data["approveStage"]["tasks"]:
        assert waiting(task) == ("EARLIER_STAGE", "waiting for stage 'dev' to finish")
        assert task["waitingReason"]["stage"] == {"name": "dev"}


async def test_a_task_waits_for_its_blocker(graphql: GraphQLClient, issue: CreatedIssue) -> None:
    state = await task_state(graphql, issue.tasks["seed"])

    assert waiting(state) == ("BLOCKED_BY", f"blocked by task {issue.task_key('ddl')}")
    assert state["waitingReason"]["blockingTask"] == {"name": "ddl"}


async def test_a_task_waits_for_its_not_before_time(
    graphql: GraphQLClient, issue: CreatedIssue
) -> None:
    not_before = tomorrow()
    await Task.filter(id=issue.task_key("ddl")).update(not_before=not_before)

    state = await task_state(graphql, issue.tasks["ddl"])

    assert waiting(state) == ("NOT_BEFORE", f"not before {not_before.isoformat()}")
    assert datetime.fromisoformat(state["waitingReason"]["notBefore"]) == not_before


async def test_a_task_whose_not_before_time_has_passed_does_not_wait(
    graphql: GraphQLClient, issue: CreatedIssue
) -> None:
    await Task.filter(id=issue.task_key("ddl")).update(
        not_before=datetime.now(UTC) - timedelta(minutes=1)
    )

    assert (await task_state(graphql, issue.tasks["ddl"]))["waitingReason"] is None


async def test_a_task_waits_for_its_database_busy_with_another_issue(
    graphql: GraphQLClient, catalog: Catalog, issue: CreatedIssue
) -> None:
    other = await create_issue(graphql, catalog, {"dev": [change(catalog, "other")]})
    await put_task_in(other.task_key("other"), TaskStatus.RUNNING)

    state = await task_state(graphql, issue.tasks["ddl"])

    assert waiting(state) == ("DATABASE_BUSY", f"database busy with task {other.task_key('other')}")
    assert state["waitingReason"]["blockingTask"] == {"name": "other"}


async def test_a_task_waits_for_its_instance_at_its_limit(
    graphql: GraphQLClient, catalog: Catalog, issue: CreatedIssue
) -> None:
    # alpha runs one task at a time; the running one holds no database, so only the limit bites.
    other = await create_issue(graphql, catalog, {"dev": [sync(catalog, "other", "alpha")]})
    await put_task_in(other.task_key("other"), TaskStatus.RUNNING)

    state = await task_state(graphql, issue.tasks["ddl"])

    assert waiting(state) == ("INSTANCE_AT_LIMIT", "instance at its limit of 1 running tasks")
    assert state["waitingReason"]["limit"] == 1


async def test_every_task_of_a_canceled_issue_waits_for_a_reopen(
    graphql: GraphQLClient, issue: CreatedIssue
) -> None:
    await put_task_in(issue.task_key("ddl"), TaskStatus.FAILED)
    await graphql.ok(CANCEL_ISSUE, {"id": issue.id})

    data = await graphql.ok(PIPELINE, {"id": issue.id})

    tasks = [task for stage in data["node"]["pipeline"]["stages"] for task in stage["tasks"]]
    assert {waiting(task) for task in tasks} == {("PIPELINE_CANCELED", "the issue is canceled")}
    assert {tuple(task["availableActions"]) for task in tasks} == {()}


async def test_a_failed_task_waits_for_a_person(
    graphql: GraphQLClient, issue: CreatedIssue
) -> None:
    await put_task_in(issue.task_key("ddl"), TaskStatus.FAILED)

    state = await task_state(graphql, issue.tasks["ddl"])

    assert waiting(state) == (
        "TASK_FAILED",
        "failed: waiting for a person to retry, edit or skip it",
    )


async def test_a_canceled_task_waits_for_a_retry(
    graphql: GraphQLClient, issue: CreatedIssue
) -> None:
    state = await act_ok(graphql, CANCEL_TASK, issue.tasks["ddl"])

    assert waiting(state) == ("TASK_CANCELED", "canceled: waiting for a person to retry it")


async def test_tasks_free_to_start_compete_for_their_instances_slots(
    graphql: GraphQLClient, issue: CreatedIssue
) -> None:
    await put_task_in(issue.task_key("seed"), TaskStatus.SKIPPED)
    await graphql.ok(APPROVE_STAGE, {"input": {"stageId": issue.stages["prod"]}})
    await put_task_in(issue.task_key("ddl"), TaskStatus.DONE)

    data = await graphql.ok(PIPELINE, {"id": issue.id})

    _, prod = data["node"]["pipeline"]["stages"]
    # prod-ddl and prod-sync compete for beta's single slot: the first by id takes it.
    assert [waiting(task) for task in prod["tasks"]] == [
        None,
        ("INSTANCE_AT_LIMIT", "instance at its limit of 1 running tasks"),
    ]


# --- what a person may do -----------------------------------------------------------------------


async def test_the_task_action_enum_offers_only_a_persons_actions(graphql: GraphQLClient) -> None:
    data = await graphql.ok('{ __type(name: "TaskAction") { enumValues { name } } }')

    assert [value["name"] for value in data["__type"]["enumValues"]] == list(MUTATION_OF_ACTION)


@dataclass(frozen=True)
class TaskCase:
    task: str
    status: TaskStatus | None = None
    not_before: bool = False
    cancel_requested: bool = False
    issue_canceled: bool = False


ACTIONS_BY_CASE = [
    pytest.param(TaskCase("prod-ddl"), ["APPROVE", "CANCEL", "SKIP", "EDIT"], id="approval"),
    pytest.param(
        TaskCase("prod-ddl", not_before=True),
        ["APPROVE", "CANCEL", "SKIP", "EDIT", "RUN_NOW"],
        id="approval, not before",
    ),
    pytest.param(TaskCase("ddl"), ["CANCEL", "SKIP", "EDIT"], id="pending"),
    pytest.param(
        TaskCase("ddl", not_before=True),
        ["CANCEL", "SKIP", "EDIT", "RUN_NOW"],
        id="pending, not before",
    ),
    pytest.param(TaskCase("prod-sync"), ["APPROVE", "CANCEL", "SKIP"], id="no statement"),
    pytest.param(TaskCase("ddl", TaskStatus.RUNNING), ["CANCEL"], id="running"),
    pytest.param(
        TaskCase("ddl", TaskStatus.RUNNING, cancel_requested=True), [], id="running, canceling"
    ),
    pytest.param(TaskCase("ddl", TaskStatus.DONE), [], id="done"),
    pytest.param(TaskCase("ddl", TaskStatus.FAILED), ["RETRY", "SKIP", "EDIT"], id="failed"),
    pytest.param(TaskCase("ddl", TaskStatus.CANCELED), ["RETRY"], id="canceled"),
    pytest.param(TaskCase("ddl", TaskStatus.SKIPPED), [], id="skipped"),
    pytest.param(TaskCase("ddl", issue_canceled=True), [], id="issue canceled"),
]


async def arrange(graphql: GraphQLClient, catalog: Catalog, case: TaskCase) -> CreatedIssue:
    """A new issue (see the `issue` fixture) whose task `case.task` is as `case` describes."""
    issue = await create_issue(graphql, catalog, the_issues_stages(catalog))
    columns: dict[str, Any] = {}
    if case.status is not None:
        columns["status"] = case.status
    if case.not_before:
        columns["not_before"] = tomorrow()
    if case.cancel_requested:
        columns["cancel_requested_at"] = datetime.now(UTC)
    if columns:
        await Task.filter(id=issue.task_key(case.task)).update(**columns)
    if case.issue_canceled:
        await graphql.ok(CANCEL_ISSUE, {"id": issue.id})
    return issue


@pytest.mark.parametrize(("case", "expected"), ACTIONS_BY_CASE)
async def test_available_actions_are_exactly_those_the_api_accepts(
    graphql: GraphQLClient, catalog: Catalog, case: TaskCase, expected: list[str]
) -> None:
    issue = await arrange(graphql, catalog, case)

    actions = (await task_state(graphql, issue.tasks[case.task]))["availableActions"]

    assert actions == expected
    # Each action is tried on a task of a fresh issue of its own, arranged the same way.
    await Issue.filter(id=row_key(issue.id)).delete()
    for action, (document, fields) in MUTATION_OF_ACTION.items():
        issue = await arrange(graphql, catalog, case)
        response = await act(graphql, document, issue.tasks[case.task], **fields)
        assert (response.errors == []) is (action in expected), (action, response.errors)
        # Only one task may be RUNNING per database: make room for the next arrangement.
        await Issue.filter(id=row_key(issue.id)).delete()


# --- a pipeline's active stage --------------------------------------------------------------------


async def test_the_active_stage_is_the_first_with_an_unfinished_task(
    graphql: GraphQLClient, issue: CreatedIssue
) -> None:
    async def active_stage() -> dict[str, str] | None:
        data = await graphql.ok(PIPELINE, {"id": issue.id})
        stage: dict[str, str] | None = data["node"]["pipeline"]["activeStage"]
        return stage

    assert await active_stage() == {"name": "dev"}
    await put_task_in(issue.task_key("ddl"), TaskStatus.DONE)
    await put_task_in(issue.task_key("seed"), TaskStatus.FAILED)
    # A failed task holds its stage active until it is retried or skipped.
    assert await active_stage() == {"name": "dev"}
    await act_ok(graphql, SKIP_TASK, issue.tasks["seed"], reason="not needed")
    assert await active_stage() == {"name": "prod"}
