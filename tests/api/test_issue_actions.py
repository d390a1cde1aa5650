"""What a person does to an issue and its tasks: cancel, reopen, edit a task's statement."""

from collections.abc import Callable
from typing import Any

import pytest

from conveyor.db.models import Task
from conveyor.domain.statuses import TaskStatus
from tests.api.support import (
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
from tests.conftest import GraphQLClient


@pytest.fixture
def database_url(emptied_module_database_url: str) -> str:
    """The module's one database, emptied for each test: creating one costs more than a test."""
    return emptied_module_database_url


ISSUE_STATE = """
fragment IssueState on Issue {
  status
  pipeline { status stages { tasks { name status } } }
}
"""
CANCEL_ISSUE = (
    ISSUE_STATE + "mutation($id: ID!) { cancelIssue(input: {issueId: $id}) { ...IssueState } }"
)
REOPEN_ISSUE = (
    ISSUE_STATE + "mutation($id: ID!) { reopenIssue(input: {issueId: $id}) { ...IssueState } }"
)
EVENTS = """
query($id: ID!) {
  node(id: $id) {
    ... on Issue { events(first: 100) { sequence kind actor taskId oldStatus newStatus detail } }
  }
}
"""
UPDATE_STATEMENT = """
mutation($input: UpdateTaskStatementInput!) {
  updateTaskStatement(input: $input) { id name status statement version }
}
"""


@pytest.fixture
async def issue(graphql: GraphQLClient, catalog: Catalog) -> CreatedIssue:
    """dev (AUTOMATIC): ddl, seed, sync, create; prod (MANUAL): prod-ddl. All at their gate."""
    return await create_issue(
        graphql,
        catalog,
        {
            "dev": [
                database_task(catalog, "SCHEMA_UPDATE", name="ddl", statement="CREATE TABLE o ()"),
                database_task(
                    catalog, "DATA_UPDATE", name="seed", statement="INSERT INTO o DEFAULT"
                ),
                instance_task(catalog, "INSTANCE_SYNC", "beta", name="sync"),
                instance_task(
                    catalog, "DATABASE_CREATE", "beta", name="create", databaseName="reports"
                ),
            ],
            "prod": [
                database_task(
                    catalog, "SCHEMA_UPDATE", "beta", name="prod-ddl", statement="CREATE TABLE o ()"
                )
            ],
        },
    )


def task_statuses(issue_state: dict[str, Any]) -> dict[str, str]:
    return {
        task["name"]: task["status"]
        for stage in issue_state["pipeline"]["stages"]
        for task in stage["tasks"]
    }


async def events_of(graphql: GraphQLClient, issue: CreatedIssue) -> list[dict[str, Any]]:
    """The issue's events, those of its checks left out (the fixture records them)."""
    data = await graphql.ok(EVENTS, {"id": issue.id})
    return [event for event in data["node"]["events"] if event["kind"] != "TASK_CHECKED"]


def status_changes(events: list[dict[str, Any]]) -> list[tuple[str, str | None, str, str]]:
    """(kind, task id, old status, new status) of each event."""
    return [
        (event["kind"], event["taskId"], event["oldStatus"], event["newStatus"]) for event in events
    ]


# --- cancel -----------------------------------------------------------------------------------


async def test_cancel_cancels_every_waiting_task_and_the_issue(
    graphql: GraphQLClient, issue: CreatedIssue
) -> None:
    data = await graphql.ok(CANCEL_ISSUE, {"id": issue.id})

    state = data["cancelIssue"]
    assert state["status"] == state["pipeline"]["status"] == "CANCELED"
    assert set(task_statuses(state).values()) == {"CANCELED"}


async def test_cancel_records_the_pipeline_and_every_task_change(
    graphql: GraphQLClient, issue: CreatedIssue
) -> None:
    await graphql.ok(CANCEL_ISSUE, {"id": issue.id}, actor="bob")

    created, *changes = await events_of(graphql, issue)
    assert created["kind"] == "ISSUE_CREATED"
    assert {event["actor"] for event in changes} == {"bob"}
    # The domain fixes no order among the events of one change, only that all are there.
    assert sorted(status_changes(changes)) == sorted(
        [
            ("PIPELINE_STATUS_CHANGED", None, "OPEN", "CANCELED"),
            ("TASK_STATUS_CHANGED", issue.tasks["ddl"], "PENDING", "CANCELED"),
            ("TASK_STATUS_CHANGED", issue.tasks["seed"], "PENDING", "CANCELED"),
            ("TASK_STATUS_CHANGED", issue.tasks["sync"], "PENDING", "CANCELED"),
            ("TASK_STATUS_CHANGED", issue.tasks["create"], "PENDING", "CANCELED"),
            ("TASK_STATUS_CHANGED", issue.tasks["prod-ddl"], "PENDING_APPROVAL", "CANCELED"),
            # Each stage's derived status, rolled up with its tasks.
            ("STAGE_STATUS_CHANGED", None, "PENDING", "CANCELED"),
            ("STAGE_STATUS_CHANGED", None, "PENDING_APPROVAL", "CANCELED"),
        ]
    )
    sequences = [event["sequence"] for event in [created, *changes]]
    assert sequences == sorted(set(sequences))


async def test_cancel_leaves_finished_failed_and_running_tasks_as_they_are(
    graphql: GraphQLClient, issue: CreatedIssue
) -> None:
    await put_task_in(issue.task_key("ddl"), TaskStatus.DONE)
    await put_task_in(issue.task_key("seed"), TaskStatus.RUNNING)
    await put_task_in(issue.task_key("sync"), TaskStatus.FAILED)
    await put_task_in(issue.task_key("create"), TaskStatus.SKIPPED)

    data = await graphql.ok(CANCEL_ISSUE, {"id": issue.id})

    assert task_statuses(data["cancelIssue"]) == {
        "ddl": "DONE",
        "seed": "RUNNING",
        "sync": "FAILED",
        "create": "SKIPPED",
        "prod-ddl": "CANCELED",
    }


async def test_refuses_to_cancel_a_canceled_issue(
    graphql: GraphQLClient, issue: CreatedIssue
) -> None:
    await graphql.ok(CANCEL_ISSUE, {"id": issue.id})
    before = await snapshot()

    error = the_error(await graphql(CANCEL_ISSUE, {"id": issue.id}))

    assert error["extensions"]["code"] == "CONFLICT"
    assert error["extensions"]["field"] == ["input", "issueId"]
    assert error["message"] == "cannot cancel an issue that is CANCELED"
    assert await snapshot() == before


@pytest.mark.parametrize("document", [CANCEL_ISSUE, REOPEN_ISSUE], ids=["cancel", "reopen"])
@pytest.mark.parametrize(
    "make_id",
    [lambda catalog: global_id("Issue", 987_654), lambda catalog: catalog.environments["dev"]],
    ids=["no such issue", "an environment's id"],
)
async def test_refuses_to_act_on_an_unknown_issue(
    graphql: GraphQLClient, catalog: Catalog, document: str, make_id: Callable[[Catalog], str]
) -> None:
    error = the_error(await graphql(document, {"id": make_id(catalog)}))

    assert error["extensions"]["code"] == "NOT_FOUND"
    assert error["extensions"]["field"] == ["input", "issueId"]
    assert error["message"] == "issue does not exist"


# --- reopen -----------------------------------------------------------------------------------


async def test_reopen_returns_canceled_tasks_to_their_gate(
    graphql: GraphQLClient, issue: CreatedIssue
) -> None:
    await graphql.ok(CANCEL_ISSUE, {"id": issue.id})

    data = await graphql.ok(REOPEN_ISSUE, {"id": issue.id})

    state = data["reopenIssue"]
    assert state["status"] == state["pipeline"]["status"] == "OPEN"
    assert task_statuses(state) == {
        "ddl": "PENDING",
        "seed": "PENDING",
        "sync": "PENDING",
        "create": "PENDING",
        # prod is MANUAL: its task must be approved again.
        "prod-ddl": "PENDING_APPROVAL",
    }


async def test_reopen_leaves_tasks_that_were_not_canceled_as_they_are(
    graphql: GraphQLClient, issue: CreatedIssue
) -> None:
    await put_task_in(issue.task_key("ddl"), TaskStatus.DONE)
    await put_task_in(issue.task_key("sync"), TaskStatus.FAILED)
    await graphql.ok(CANCEL_ISSUE, {"id": issue.id})

    data = await graphql.ok(REOPEN_ISSUE, {"id": issue.id})

    statuses = task_statuses(data["reopenIssue"])
    assert (statuses["ddl"], statuses["sync"], statuses["seed"]) == ("DONE", "FAILED", "PENDING")


async def test_reopen_records_the_pipeline_and_every_task_change(
    graphql: GraphQLClient, issue: CreatedIssue
) -> None:
    await graphql.ok(CANCEL_ISSUE, {"id": issue.id})
    already = len(await events_of(graphql, issue))

    await graphql.ok(REOPEN_ISSUE, {"id": issue.id}, actor="carol")

    reopened = (await events_of(graphql, issue))[already:]
    assert {event["actor"] for event in reopened} == {"carol"}
    assert sorted(status_changes(reopened)) == sorted(
        [
            ("PIPELINE_STATUS_CHANGED", None, "CANCELED", "OPEN"),
            ("TASK_STATUS_CHANGED", issue.tasks["ddl"], "CANCELED", "PENDING"),
            ("TASK_STATUS_CHANGED", issue.tasks["seed"], "CANCELED", "PENDING"),
            ("TASK_STATUS_CHANGED", issue.tasks["sync"], "CANCELED", "PENDING"),
            ("TASK_STATUS_CHANGED", issue.tasks["create"], "CANCELED", "PENDING"),
            ("TASK_STATUS_CHANGED", issue.tasks["prod-ddl"], "CANCELED", "PENDING_APPROVAL"),
            ("STAGE_STATUS_CHANGED", None, "CANCELED", "PENDING"),
            ("STAGE_STATUS_CHANGED", None, "CANCELED", "PENDING_APPROVAL"),
        ]
    )


async def test_refuses_to_reopen_an_open_issue(graphql: GraphQLClient, issue: CreatedIssue) -> None:
    before = await snapshot()

    error = the_error(await graphql(REOPEN_ISSUE, {"id": issue.id}))

    assert error["extensions"]["code"] == "CONFLICT"
    assert error["extensions"]["field"] == ["input", "issueId"]
    assert error["message"] == "cannot reopen an issue that is OPEN"
    assert await snapshot() == before


# --- edit a task's statement ------------------------------------------------------------------


def edit(task_id: str, statement: str, **extra: Any) -> dict[str, Any]:
    return {"input": {"taskId": task_id, "statement": statement, **extra}}


async def test_edit_replaces_the_statement_and_bumps_the_version(
    graphql: GraphQLClient, issue: CreatedIssue
) -> None:
    data = await graphql.ok(UPDATE_STATEMENT, edit(issue.tasks["seed"], "INSERT INTO o VALUES (2)"))

    assert data["updateTaskStatement"] == {
        "id": issue.tasks["seed"],
        "name": "seed",
        "status": "PENDING",
        "statement": "INSERT INTO o VALUES (2)",
        "version": 2,
    }
    row = await Task.get(id=row_key(issue.tasks["seed"]))
    assert (row.statement, row.version) == ("INSERT INTO o VALUES (2)", 2)


async def test_edit_records_a_task_edited_event(
    graphql: GraphQLClient, issue: CreatedIssue
) -> None:
    already = len(await events_of(graphql, issue))

    await graphql.ok(UPDATE_STATEMENT, edit(issue.tasks["seed"], "SELECT 1"), actor="dave")

    edited = [
        event
        for event in (await events_of(graphql, issue))[already:]
        if event["kind"] == "TASK_EDITED"
    ]
    assert [(event["actor"], event["taskId"], event["detail"]) for event in edited] == [
        ("dave", issue.tasks["seed"], {"version": 2})
    ]


@pytest.mark.parametrize(
    ("task", "status", "gate"),
    [
        ("seed", TaskStatus.FAILED, TaskStatus.PENDING),
        ("prod-ddl", TaskStatus.FAILED, TaskStatus.PENDING_APPROVAL),
        # An approved task in a MANUAL environment: the edit dismisses the approval.
        ("prod-ddl", TaskStatus.PENDING, TaskStatus.PENDING_APPROVAL),
    ],
    ids=["failed, automatic", "failed, manual", "approved, manual"],
)
async def test_edit_sends_the_task_back_to_its_gate(
    graphql: GraphQLClient, issue: CreatedIssue, task: str, status: TaskStatus, gate: TaskStatus
) -> None:
    await put_task_in(issue.task_key(task), status)
    already = len(await events_of(graphql, issue))

    data = await graphql.ok(UPDATE_STATEMENT, edit(issue.tasks[task], "CREATE TABLE p ()"))

    assert data["updateTaskStatement"]["status"] == gate.value
    assert (await Task.get(id=row_key(issue.tasks[task]))).status is gate
    changes = status_changes((await events_of(graphql, issue))[already:])
    assert ("TASK_STATUS_CHANGED", issue.tasks[task], status.value, gate.value) in changes


async def test_edit_of_a_task_awaiting_approval_keeps_it_there(
    graphql: GraphQLClient, issue: CreatedIssue
) -> None:
    data = await graphql.ok(UPDATE_STATEMENT, edit(issue.tasks["prod-ddl"], "CREATE TABLE p ()"))

    assert (data["updateTaskStatement"]["status"], data["updateTaskStatement"]["version"]) == (
        "PENDING_APPROVAL",
        2,
    )


async def test_edit_at_the_expected_version_succeeds(
    graphql: GraphQLClient, issue: CreatedIssue
) -> None:
    await graphql.ok(UPDATE_STATEMENT, edit(issue.tasks["ddl"], "CREATE TABLE a ()"))

    data = await graphql.ok(
        UPDATE_STATEMENT, edit(issue.tasks["ddl"], "CREATE TABLE b ()", expectedVersion=2)
    )

    assert data["updateTaskStatement"]["version"] == 3


async def test_refuses_an_edit_of_a_version_that_is_gone(
    graphql: GraphQLClient, issue: CreatedIssue
) -> None:
    await graphql.ok(UPDATE_STATEMENT, edit(issue.tasks["ddl"], "CREATE TABLE a ()"))
    before = await snapshot()

    response = await graphql(
        UPDATE_STATEMENT, edit(issue.tasks["ddl"], "CREATE TABLE b ()", expectedVersion=1)
    )

    error = the_error(response)
    assert error["extensions"]["code"] == "CONFLICT"
    assert error["extensions"]["field"] == ["input", "expectedVersion"]
    assert error["message"] == "the task changed since you read it (now at version 2)"
    assert await snapshot() == before


@pytest.mark.parametrize(
    "status",
    [TaskStatus.RUNNING, TaskStatus.DONE, TaskStatus.SKIPPED, TaskStatus.CANCELED],
)
async def test_refuses_an_edit_in_a_status_that_does_not_allow_it(
    graphql: GraphQLClient, issue: CreatedIssue, status: TaskStatus
) -> None:
    await put_task_in(issue.task_key("ddl"), status)
    before = await snapshot()

    error = the_error(await graphql(UPDATE_STATEMENT, edit(issue.tasks["ddl"], "SELECT 1")))

    assert error["extensions"]["code"] == "CONFLICT"
    assert error["extensions"]["field"] == ["input", "taskId"]
    assert error["message"] == f"cannot edit a task that is {status.value}"
    assert await snapshot() == before


@pytest.mark.parametrize("task", ["sync", "create"])
async def test_refuses_an_edit_of_a_task_without_a_statement(
    graphql: GraphQLClient, issue: CreatedIssue, task: str
) -> None:
    before = await snapshot()

    error = the_error(await graphql(UPDATE_STATEMENT, edit(issue.tasks[task], "SELECT 1")))

    assert error["extensions"]["code"] == "INVALID_INPUT"
    assert error["extensions"]["field"] == ["input", "taskId"]
    described = {"sync": "an INSTANCE_SYNC task", "create": "a DATABASE_CREATE task"}[task]
    assert error["message"] == f"{described} has no statement"
    assert await snapshot() == before


async def test_refuses_an_edit_of_a_task_of_a_canceled_issue(
    graphql: GraphQLClient, issue: CreatedIssue
) -> None:
    await graphql.ok(CANCEL_ISSUE, {"id": issue.id})
    before = await snapshot()

    error = the_error(await graphql(UPDATE_STATEMENT, edit(issue.tasks["ddl"], "SELECT 1")))

    assert error["extensions"]["code"] == "CONFLICT"
    assert error["extensions"]["field"] == ["input", "taskId"]
    assert error["message"] == "cannot edit a task of an issue that is CANCELED"
    assert await snapshot() == before


@pytest.mark.parametrize("statement", ["", "  \n\t"], ids=["empty", "blank"])
async def test_refuses_an_empty_statement(
    graphql: GraphQLClient, issue: CreatedIssue, statement: str
) -> None:
    before = await snapshot()

    error = the_error(await graphql(UPDATE_STATEMENT, edit(issue.tasks["ddl"], statement)))

    assert error["extensions"]["code"] == "INVALID_INPUT"
    assert error["extensions"]["field"] == ["input", "statement"]
    assert error["message"] == "the statement must not be empty"
    assert await snapshot() == before


RUNNER_REFUSALS = {
    "only comments": (
        "-- nothing here\n/* still nothing */",
        "the statement holds no SQL, only comments",
    ),
    "its own transaction": (
        "BEGIN; UPDATE orders SET n = 1; COMMIT",
        "the statement must not begin or end transactions (BEGIN, COMMIT, ROLLBACK...): "
        "Conveyor runs each change in a transaction of its own",
    ),
}


@pytest.mark.parametrize("case", RUNNER_REFUSALS.values(), ids=RUNNER_REFUSALS.keys())
async def test_refuses_at_once_a_statement_the_runner_would_refuse(
    graphql: GraphQLClient, issue: CreatedIssue, case: tuple[str, str]
) -> None:
    statement, message = case
    before = await snapshot()

    error = the_error(await graphql(UPDATE_STATEMENT, edit(issue.tasks["ddl"], statement)))

    assert error["message"] == message
    assert error["extensions"]["code"] == "INVALID_INPUT"
    assert error["extensions"]["field"] == ["input", "statement"]
    assert error["extensions"]["problems"] == [
        {"message": message, "code": "INVALID_INPUT", "field": ["input", "statement"]}
    ]
    assert await snapshot() == before


async def test_refuses_an_edit_of_an_unknown_task(
    graphql: GraphQLClient, issue: CreatedIssue
) -> None:
    error = the_error(await graphql(UPDATE_STATEMENT, edit(global_id("Task", 987_654), "SELECT 1")))

    assert error["extensions"]["code"] == "NOT_FOUND"
    assert error["extensions"]["field"] == ["input", "taskId"]
    assert error["message"] == "task does not exist"
