"""What the API tests share beside fixtures: documents, plan builders, ids and refusal helpers."""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from strawberry import relay

from conveyor.db.checks import CheckOutcome, record_checks
from conveyor.db.models import Event, Pipeline, Task
from conveyor.domain.statuses import TaskStatus
from tests.conftest import GraphQLClient, Response

# --- the database -----------------------------------------------------------------------------

#: Conveyor's tables, each before the tables it references.
TABLES = (
    "event",
    "task_run",
    "task_dependency",
    "task",
    "stage",
    "pipeline",
    "issue",
    "database",
    "instance",
    "environment",
    "api_token",
)


async def delete_all_rows(database_url: str) -> None:
    """Empty every table of Conveyor's, so that a test starts as on a fresh database."""
    # DELETE, not TRUNCATE: on tables this small it is several times faster.
    connection = await asyncpg.connect(database_url)
    try:
        async with connection.transaction():
            for table in TABLES:
                await connection.execute(f"DELETE FROM {table}")
    finally:
        await connection.close()


# --- global ids -------------------------------------------------------------------------------


def global_id(type_name: str, key: int) -> str:
    return str(relay.GlobalID(type_name, str(key)))


def row_key(node_id: str) -> int:
    return int(relay.GlobalID.from_id(node_id).node_id)


# --- the catalog ------------------------------------------------------------------------------

CREATE_ENVIRONMENT = """
mutation($input: CreateEnvironmentInput!) { createEnvironment(input: $input) { id name } }
"""
CREATE_INSTANCE = """
mutation($input: CreateInstanceInput!) { createInstance(input: $input) { id name } }
"""
REGISTER_DATABASE = """
mutation($input: RegisterDatabaseInput!) { registerDatabase(input: $input) { id name } }
"""


@dataclass(frozen=True)
class Catalog:
    """Global ids of a small catalog: three environments, two instances, their databases."""

    environments: dict[str, str]
    instances: dict[str, str]
    databases: dict[str, str]


async def create_catalog(graphql: GraphQLClient) -> Catalog:
    """dev, test (both AUTOMATIC) and prod (MANUAL); instances alpha and beta in dev, each with
    one database (alpha_db, beta_db)."""
    environments = {}
    for order, (name, policy) in enumerate(
        [("dev", "AUTOMATIC"), ("test", "AUTOMATIC"), ("prod", "MANUAL")]
    ):
        data = await graphql.ok(
            CREATE_ENVIRONMENT,
            {"input": {"name": name, "order": order, "approvalPolicy": policy}},
        )
        environments[name] = data["createEnvironment"]["id"]
    instances = {}
    databases = {}
    for name in ("alpha", "beta"):
        data = await graphql.ok(
            CREATE_INSTANCE,
            {
                "input": {
                    "name": name,
                    "environmentId": environments["dev"],
                    "host": "127.0.0.1",
                    "username": "postgres",
                    "password": f"secret-{name}",
                }
            },
        )
        instances[name] = data["createInstance"]["id"]
        data = await graphql.ok(
            REGISTER_DATABASE, {"input": {"instanceId": instances[name], "name": f"{name}_db"}}
        )
        databases[name] = data["registerDatabase"]["id"]
    return Catalog(environments=environments, instances=instances, databases=databases)


# --- plans and issues -------------------------------------------------------------------------

CREATE_ISSUE = """
mutation($input: CreateIssueInput!) {
  createIssue(input: $input) {
    id
    pipeline { id stages { id name tasks { id name } } }
  }
}
"""
CANCEL_ISSUE = "mutation($id: ID!) { cancelIssue(input: {issueId: $id}) { status } }"


def database_task(
    catalog: Catalog, task_type: str, instance: str = "alpha", **fields: Any
) -> dict[str, Any]:
    """A task's plan of `task_type` against the database of `instance`, with `fields`."""
    return {
        "type": task_type,
        "instanceId": catalog.instances[instance],
        "databaseId": catalog.databases[instance],
        **fields,
    }


def instance_task(catalog: Catalog, task_type: str, instance: str, **fields: Any) -> dict[str, Any]:
    """A task's plan of `task_type` on `instance` itself (none of its databases), with `fields`."""
    return {"type": task_type, "instanceId": catalog.instances[instance], **fields}


def orders_tasks(catalog: Catalog, **second: Any) -> list[dict[str, Any]]:
    """Two tasks on alpha's database: "ddl" creates table orders, then one blocked by it fills
    the table (`second` names it or gives it a ref)."""
    return [
        database_task(
            catalog, "SCHEMA_UPDATE", ref="ddl", statement="CREATE TABLE orders (id int)"
        ),
        database_task(
            catalog,
            "DATA_UPDATE",
            statement="INSERT INTO orders VALUES (1)",
            blockedBy=["ddl"],
            **second,
        ),
    ]


def issue_plan(
    catalog: Catalog, stages: Mapping[str, list[dict[str, Any]]], title: str = "Add orders"
) -> dict[str, Any]:
    """createIssue's input: one stage per environment named in `stages`, in that order."""
    return {
        "title": title,
        "stages": [
            {"environmentId": catalog.environments[environment], "tasks": tasks}
            for environment, tasks in stages.items()
        ],
    }


@dataclass(frozen=True)
class CreatedIssue:
    id: str
    pipeline_id: str
    #: Global ids by name.
    stages: dict[str, str]
    tasks: dict[str, str]

    def task_key(self, name: str) -> int:
        return row_key(self.tasks[name])


async def create_issue(
    graphql: GraphQLClient,
    catalog: Catalog,
    stages: Mapping[str, list[dict[str, Any]]],
    *,
    title: str = "Add orders",
    actor: str = "tester",
    checked: bool = True,
) -> CreatedIssue:
    """An issue with one stage per environment named in `stages`, in that order; unless not
    `checked`, its checks done and clean, as a worker leaves a plan with nothing to report."""
    data = await graphql.ok(
        CREATE_ISSUE, {"input": issue_plan(catalog, stages, title)}, actor=actor
    )
    created = data["createIssue"]
    stage_rows = created["pipeline"]["stages"]
    if checked:
        await pass_checks(row_key(created["pipeline"]["id"]))
    return CreatedIssue(
        id=created["id"],
        pipeline_id=created["pipeline"]["id"],
        stages={stage["name"]: stage["id"] for stage in stage_rows},
        tasks={task["name"]: task["id"] for stage in stage_rows for task in stage["tasks"]},
    )


async def pass_checks(pipeline_key: int) -> None:
    """Record clean checks for the pipeline's tasks, as a worker that found nothing would."""
    tasks = await Task.filter(pipeline_id=pipeline_key).only("id")
    await record_checks([CheckOutcome(task.id, 1, (), ()) for task in tasks])


async def put_task_in(task_key: int, status: TaskStatus, **columns: Any) -> None:
    """Give a task what only the runner gives it, as the runner would: no event, no version."""
    await Task.filter(id=task_key).update(status=status, **columns)


# --- refusals ---------------------------------------------------------------------------------


def only_error(response: Response) -> dict[str, Any]:
    """The one error of a response."""
    assert len(response.errors) == 1, response.errors
    error: dict[str, Any] = response.errors[0]
    return error


def the_error(response: Response) -> dict[str, Any]:
    """The one error of a refused request, which returned no data."""
    assert response.data is None
    return only_error(response)


@dataclass(frozen=True)
class Snapshot:
    """What a refused action must leave as it was."""

    #: (id, status, version, statement, approved by, not before, cancel requested at)
    tasks: list[tuple[int, str, int, str | None, str | None, datetime | None, datetime | None]]
    pipeline_statuses: list[str]
    events: int


async def snapshot() -> Snapshot:
    return Snapshot(
        tasks=[
            (
                task.id,
                task.status.value,
                task.version,
                task.statement,
                task.approved_by,
                task.not_before,
                task.cancel_requested_at,
            )
            for task in await Task.all().order_by("id")
        ],
        pipeline_statuses=[pipeline.status.value for pipeline in await Pipeline.all()],
        events=await Event.all().count(),
    )
