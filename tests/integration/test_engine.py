"""Pipelines really run: a worker takes tasks through their stages against real PostgreSQL."""

from collections.abc import Awaitable, Callable
from typing import Any

from conveyor.db.models import Event
from conveyor.domain.statuses import EventKind
from conveyor.runner.worker import Worker
from tests.conftest import GraphQLClient
from tests.integration.conftest import EngineCatalog, build_engine_catalog, eventually, target_fetch

CREATE_ISSUE = """
mutation($input: CreateIssueInput!) {
  createIssue(input: $input) { id pipeline { stages { id tasks { id name } } } }
}
"""
ISSUE = """
query($id: ID!) { node(id: $id) { ... on Issue {
  status
  pipeline { stages { name status tasks {
    id name status statusReason version checkStatus waitingReason { kind rules }
    runs { attempt status errorCode errorMessage result log }
  } } }
} } }
"""


async def issue_state(graphql: GraphQLClient, issue_id: str) -> dict[str, Any]:
    data = await graphql.ok(ISSUE, {"id": issue_id})
    node: dict[str, Any] = data["node"]
    return node


def tasks_by_name(issue: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {task["name"]: task for stage in issue["pipeline"]["stages"] for task in stage["tasks"]}


async def wait_for_task(
    graphql: GraphQLClient, issue_id: str, name: str, *statuses: str
) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        task = tasks_by_name(await issue_state(graphql, issue_id))[name]
        return task if task["status"] in statuses else None

    found: dict[str, Any] = await eventually(check, what=f"task {name} to be {statuses}")
    return found


def change(
    catalog: EngineCatalog, database: str, name: str, statement: str, **extra: Any
) -> dict[str, Any]:
    return {
        "type": "SCHEMA_UPDATE"
        if statement.upper().startswith(("CREATE", "ALTER"))
        else "DATA_UPDATE",
        "name": name,
        "instanceId": catalog.instance,
        "databaseId": catalog.databases[database],
        "statement": statement,
        **extra,
    }


async def test_a_three_stage_pipeline_runs_to_done_through_the_api(
    graphql: GraphQLClient,
    worker: Worker,
    server_url: str,
    target_databases: Callable[[], Awaitable[str]],
) -> None:
    names = {env: await target_databases() for env in ("dev", "test", "prod")}
    catalog = await build_engine_catalog(graphql, server_url, names)
    plan = {
        "title": "orders",
        "stages": [
            {
                "environmentId": catalog.environments["dev"],
                "tasks": [
                    change(catalog, "dev", "dev-ddl", "CREATE TABLE orders (id int)", ref="ddl"),
                    change(
                        catalog,
                        "dev",
                        "dev-seed",
                        "INSERT INTO orders VALUES (1), (2)",
                        blockedBy=["ddl"],
                    ),
                ],
            },
            {
                "environmentId": catalog.environments["test"],
                "tasks": [
                    change(
                        catalog,
                        "test",
                        "test-ddl",
                        "CREAT TABLE orders (id int)",
                        type="SCHEMA_UPDATE",
                    ),
                    change(catalog, "test", "test-optional", "SELECT no_such_column"),
                ],
            },
            {
                "environmentId": catalog.environments["prod"],
                "tasks": [change(catalog, "prod", "prod-ddl", "CREATE TABLE orders (id int)")],
            },
        ],
    }
    issue_id = (await graphql.ok(CREATE_ISSUE, {"input": plan}))["createIssue"]["id"]

    seeded = await wait_for_task(graphql, issue_id, "dev-seed", "DONE")
    assert seeded["runs"][0]["result"]["rowsAffected"] == 2

    # The syntax error is the checks' to find, before anything runs: the task waits for a fix.
    async def blocked_by_its_checks() -> dict[str, Any] | None:
        task = tasks_by_name(await issue_state(graphql, issue_id))["test-ddl"]
        return task if task["checkStatus"] == "FAILED" else None

    failed = await eventually(blocked_by_its_checks, what="test-ddl's checks to fail")
    assert failed["waitingReason"] == {"kind": "CHECKS_FAILED", "rules": ["syntax"]}
    assert failed["status"] == "PENDING"
    assert failed["runs"] == []
    optional = await wait_for_task(graphql, issue_id, "test-optional", "FAILED")
    issue = await issue_state(graphql, issue_id)
    assert tasks_by_name(issue)["prod-ddl"]["status"] == "PENDING_APPROVAL"

    await graphql.ok(
        """mutation($i: UpdateTaskStatementInput!) { updateTaskStatement(input: $i) { status } }""",
        {"i": {"taskId": failed["id"], "statement": "CREATE TABLE orders (id int)"}},
    )
    await graphql.ok(
        """mutation($i: SkipTaskInput!) { skipTask(input: $i) { status } }""",
        {"i": {"taskId": optional["id"], "reason": "not needed in test"}},
    )
    fixed = await wait_for_task(graphql, issue_id, "test-ddl", "DONE")
    assert [run["status"] for run in fixed["runs"]] == ["DONE"]
    prod_stage = (await issue_state(graphql, issue_id))["pipeline"]["stages"][2]
    assert prod_stage["status"] == "PENDING_APPROVAL"

    data = await graphql.ok(
        "query($id: ID!) { node(id: $id) { ... on Issue { pipeline { stages { id } } } } }",
        {"id": issue_id},
    )
    prod_stage_id = data["node"]["pipeline"]["stages"][2]["id"]
    await graphql.ok(
        "mutation($i: StageActionInput!) { approveStage(input: $i) { status } }",
        {"i": {"stageId": prod_stage_id}},
    )
    await wait_for_task(graphql, issue_id, "prod-ddl", "DONE")

    issue = await issue_state(graphql, issue_id)
    assert issue["status"] == "DONE"
    assert await target_fetch(server_url, names["prod"], "SELECT count(*) FROM orders")
    done = await Event.filter(kind=EventKind.PIPELINE_STATUS_CHANGED, new_status="DONE").get()
    last_task = (
        await Event.filter(kind=EventKind.TASK_STATUS_CHANGED, new_status="DONE")
        .order_by("-id")
        .first()
    )
    assert last_task is not None
    assert done.transaction_id == last_task.transaction_id
