"""createIssue refuses every plan that breaks a rule: a typed error naming the field, and no row.

Nothing a refused plan could write is left behind, so all the tests of this module share one
database and one catalog (made once): each compares the row counts before and after its own
request.
"""

import json
import re
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from tortoise.context import TortoiseContext
from tortoise.models import Model

from conveyor.db.config import tortoise_config
from conveyor.db.models import Event, Issue, Pipeline, Stage, Task, TaskDependency
from conveyor.settings import Settings
from tests.api.support import (
    CREATE_ISSUE,
    Catalog,
    create_catalog,
    global_id,
    instance_task,
    issue_plan,
    orders_tasks,
    the_error,
)
from tests.conftest import GraphQLClient, Response

WRITTEN_BY_CREATE_ISSUE: tuple[type[Model], ...] = (
    Issue,
    Pipeline,
    Stage,
    Task,
    TaskDependency,
    Event,
)

# What an error must never show a client: SQL, the driver's or ORM's name, a stack trace, where
# the database lives.
LEAKS = re.compile(
    r"\b("
    + "|".join(
        [
            "insert",
            "select",
            "update",
            "delete",
            "asyncpg",
            "tortoise",
            "traceback",
            "postgres(ql)?",
            re.escape("127.0.0.1"),
            "localhost",
            re.escape(socket.gethostname()),
        ]
    )
    + r")\b",
    re.IGNORECASE,
)


# --- one database and one catalog for the whole module ----------------------------------------


@pytest.fixture(scope="module")
async def shared_graphql(
    module_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[GraphQLClient]:
    async with TortoiseContext() as context:
        await context.init(config=tortoise_config(module_database_url, pool_max_size=4))
        data_dir: Path = tmp_path_factory.mktemp("data")
        yield GraphQLClient(
            Settings(
                database_url=module_database_url,
                data_dir=data_dir,
                secret_key=Fernet.generate_key().decode(),
            )
        )


@pytest.fixture(scope="module")
async def shared_catalog(shared_graphql: GraphQLClient) -> Catalog:
    """The catalog of tests.api.conftest's `catalog`, made once for the whole module."""
    return await create_catalog(shared_graphql)


# --- helpers ----------------------------------------------------------------------------------


def valid_plan(catalog: Catalog) -> dict[str, Any]:
    """A plan createIssue accepts; each refusal below breaks exactly one thing in it."""
    return issue_plan(
        catalog,
        {
            "dev": [
                *orders_tasks(catalog, ref="dml"),
                instance_task(
                    catalog, "DATABASE_CREATE", "beta", ref="create", databaseName="reports"
                ),
            ],
            "prod": [instance_task(catalog, "INSTANCE_SYNC", "beta", ref="sync")],
        },
    )


async def row_counts() -> dict[str, int]:
    return {model.__name__: await model.all().count() for model in WRITTEN_BY_CREATE_ISSUE}


def assert_tells_nothing_internal(response: Response) -> None:
    for error in response.errors:
        text = json.dumps(error)
        assert LEAKS.search(text) is None, text


async def refusal(
    graphql: GraphQLClient, document: str, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The one error of a refused request, after checking that it wrote nothing at all."""
    before = await row_counts()
    response = await graphql(document, variables)
    assert await row_counts() == before
    error = the_error(response)
    assert_tells_nothing_internal(response)
    return error


def unknown_id(type_name: str) -> Callable[[Catalog], str]:
    return lambda catalog: global_id(type_name, 987_654)


#: Stands for "leave the key out of the input".
OMIT = object()

InputPath = tuple[str | int, ...]


def changed(plan: dict[str, Any], path: InputPath, value: Any) -> None:
    """Set (or, given OMIT, remove) the value at `path` inside `plan`, in place."""
    parent: Any = plan
    for part in path[:-1]:
        parent = parent[part]
    if value is OMIT:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value


@dataclass(frozen=True)
class Refusal:
    """One broken rule: what to change in the valid plan, and the error it must give."""

    changes: Mapping[InputPath, Any]
    message: str
    #: Where the error points, below "input".
    points_at: InputPath
    code: str = "INVALID_INPUT"
    #: The limit the value went past, for a refusal by a limit (`extensions.limit`).
    limit: int | None = None
    #: Changes whose value depends on the catalog.
    catalog_changes: Mapping[InputPath, Callable[[Catalog], Any]] = field(default_factory=dict)

    def plan(self, catalog: Catalog) -> dict[str, Any]:
        plan = valid_plan(catalog)
        for path, value in self.changes.items():
            changed(plan, path, value)
        for path, make_value in self.catalog_changes.items():
            changed(plan, path, make_value(catalog))
        return plan


DDL = ("stages", 0, "tasks", 0)
DML = ("stages", 0, "tasks", 1)
CREATE = ("stages", 0, "tasks", 2)
SYNC = ("stages", 1, "tasks", 0)

REFUSALS: dict[str, Refusal] = {
    "stage without environment": Refusal(
        {("stages", 0, "environmentId"): OMIT},
        "a stage needs an environment",
        ("stages", 0, "environmentId"),
    ),
    "task without instance": Refusal(
        {(*DML, "instanceId"): OMIT}, "a task needs an instance", (*DML, "instanceId")
    ),
    "schema update without database": Refusal(
        {(*DDL, "databaseId"): OMIT}, "a SCHEMA_UPDATE task needs a database", (*DDL, "databaseId")
    ),
    "data update without database": Refusal(
        {(*DML, "databaseId"): OMIT}, "a DATA_UPDATE task needs a database", (*DML, "databaseId")
    ),
    "instance sync given a database": Refusal(
        {},
        "an INSTANCE_SYNC task takes no database",
        (*SYNC, "databaseId"),
        catalog_changes={(*SYNC, "databaseId"): lambda catalog: catalog.databases["beta"]},
    ),
    "database create given a database": Refusal(
        {},
        "a DATABASE_CREATE task takes no database",
        (*CREATE, "databaseId"),
        catalog_changes={(*CREATE, "databaseId"): lambda catalog: catalog.databases["beta"]},
    ),
    "database on another instance": Refusal(
        {},
        "the database is not on the task's instance",
        (*DML, "databaseId"),
        catalog_changes={(*DML, "databaseId"): lambda catalog: catalog.databases["beta"]},
    ),
    "unknown environment": Refusal(
        {},
        "environment does not exist",
        ("stages", 1, "environmentId"),
        code="NOT_FOUND",
        catalog_changes={("stages", 1, "environmentId"): unknown_id("Environment")},
    ),
    "unknown instance": Refusal(
        {},
        "instance does not exist",
        (*SYNC, "instanceId"),
        code="NOT_FOUND",
        catalog_changes={(*SYNC, "instanceId"): unknown_id("Instance")},
    ),
    "unknown database": Refusal(
        {},
        "database does not exist",
        (*DML, "databaseId"),
        code="NOT_FOUND",
        catalog_changes={(*DML, "databaseId"): unknown_id("Database")},
    ),
    "instance id past the integer range": Refusal(
        {},
        "instance does not exist",
        (*SYNC, "instanceId"),
        code="NOT_FOUND",
        catalog_changes={(*SYNC, "instanceId"): lambda catalog: global_id("Instance", 2**40)},
    ),
    "instance id as environment": Refusal(
        {},
        "environment does not exist",
        ("stages", 0, "environmentId"),
        code="NOT_FOUND",
        catalog_changes={("stages", 0, "environmentId"): lambda c: c.instances["alpha"]},
    ),
    "database id as instance": Refusal(
        {},
        "instance does not exist",
        (*DDL, "instanceId"),
        code="NOT_FOUND",
        catalog_changes={(*DDL, "instanceId"): lambda catalog: catalog.databases["alpha"]},
    ),
    "environment id as database": Refusal(
        {},
        "database does not exist",
        (*DDL, "databaseId"),
        code="NOT_FOUND",
        catalog_changes={(*DDL, "databaseId"): lambda catalog: catalog.environments["dev"]},
    ),
    "malformed environment id": Refusal(
        {("stages", 1, "environmentId"): "not-an-id"},
        "not a valid id of this API",
        ("stages", 1, "environmentId"),
    ),
    "malformed instance id": Refusal(
        {(*SYNC, "instanceId"): "not-an-id"}, "not a valid id of this API", (*SYNC, "instanceId")
    ),
    "malformed database id": Refusal(
        {(*DML, "databaseId"): "not-an-id"}, "not a valid id of this API", (*DML, "databaseId")
    ),
    "two-task cycle": Refusal(
        {(*DDL, "blockedBy"): ["dml"]},
        "blocked-by links form a cycle: ddl -> dml -> ddl",
        (*DML, "blockedBy"),
    ),
    "three-task cycle": Refusal(
        {(*DDL, "blockedBy"): ["create"], (*CREATE, "blockedBy"): ["dml"]},
        "blocked-by links form a cycle: ddl -> create -> dml -> ddl",
        (*DML, "blockedBy"),
    ),
    "blocked by a ref of no task": Refusal(
        {(*DML, "blockedBy"): ["ddl", "nope"]},
        "blocked by 'nope', but no task of this pipeline has that ref",
        (*DML, "blockedBy", 1),
    ),
    "blocked by the same task twice": Refusal(
        {(*DML, "blockedBy"): ["ddl", "ddl"]}, "blocked by 'ddl' twice", (*DML, "blockedBy", 1)
    ),
    "empty ref": Refusal({(*DML, "ref"): " "}, "must not be empty", (*DML, "ref")),
    "blocked by itself": Refusal(
        {(*DML, "blockedBy"): ["dml"]}, "a task cannot be blocked by itself", (*DML, "blockedBy", 0)
    ),
    "blocked by a task of a later stage": Refusal(
        {(*CREATE, "blockedBy"): ["sync"]},
        "blocked by 'sync', which belongs to a later stage",
        (*CREATE, "blockedBy", 0),
    ),
    "duplicate ref": Refusal(
        {(*CREATE, "ref"): "ddl"},
        "ref 'ddl' is used by another task of this pipeline",
        (*CREATE, "ref"),
    ),
    "no stages": Refusal({("stages",): []}, "a pipeline needs at least one stage", ("stages",)),
    "stage without tasks": Refusal(
        {("stages", 1, "tasks"): []}, "a stage needs at least one task", ("stages", 1, "tasks")
    ),
    "title too long": Refusal(
        {("title",): "t" * 201}, "must be at most 200 characters", ("title",), limit=200
    ),
    "empty title": Refusal({("title",): ""}, "must not be empty", ("title",)),
    "blank title": Refusal({("title",): " \t\n "}, "must not be empty", ("title",)),
    "stage name too long": Refusal(
        {("stages", 1, "name"): "s" * 101},
        "must be at most 100 characters",
        ("stages", 1, "name"),
        limit=100,
    ),
    "empty stage name": Refusal(
        {("stages", 1, "name"): ""}, "must not be empty", ("stages", 1, "name")
    ),
    "blank stage name": Refusal(
        {("stages", 1, "name"): "   "}, "must not be empty", ("stages", 1, "name")
    ),
    "task name too long": Refusal(
        {(*DML, "name"): "n" * 101}, "must be at most 100 characters", (*DML, "name"), limit=100
    ),
    "empty task name": Refusal({(*DML, "name"): ""}, "must not be empty", (*DML, "name")),
    "blank task name": Refusal({(*DML, "name"): "  "}, "must not be empty", (*DML, "name")),
    "missing statement": Refusal(
        {(*DDL, "statement"): OMIT}, "the statement must not be empty", (*DDL, "statement")
    ),
    "blank statement": Refusal(
        {(*DML, "statement"): " \n"}, "the statement must not be empty", (*DML, "statement")
    ),
    "statement of only comments": Refusal(
        {(*DML, "statement"): "-- nothing here\n/* still nothing */"},
        "the statement holds no SQL, only comments",
        (*DML, "statement"),
    ),
    "statement with its own transaction": Refusal(
        {(*DDL, "statement"): "BEGIN; CREATE TABLE t (x int); COMMIT;"},
        "the statement must not begin or end transactions (BEGIN, COMMIT, ROLLBACK...): "
        "Conveyor runs each change in a transaction of its own",
        (*DDL, "statement"),
    ),
    "database create without database name": Refusal(
        {(*CREATE, "databaseName"): OMIT},
        "the new database needs a name",
        (*CREATE, "databaseName"),
    ),
}


# --- tests ------------------------------------------------------------------------------------


async def test_the_valid_plan_is_accepted(
    shared_graphql: GraphQLClient, shared_catalog: Catalog
) -> None:
    # The control for every refusal below: each breaks one rule of this very plan.
    before = await row_counts()
    data = await shared_graphql.ok(CREATE_ISSUE, {"input": valid_plan(shared_catalog)})

    stages = data["createIssue"]["pipeline"]["stages"]
    assert [len(stage["tasks"]) for stage in stages] == [3, 1]
    after = await row_counts()
    assert {name: after[name] - before[name] for name in after} == {
        "Issue": 1,
        "Pipeline": 1,
        "Stage": 2,
        "Task": 4,
        "TaskDependency": 1,
        "Event": 1,
    }


async def test_names_at_their_length_limit_are_accepted(
    shared_graphql: GraphQLClient, shared_catalog: Catalog
) -> None:
    plan = valid_plan(shared_catalog)
    plan["title"] = "t" * 200
    plan["stages"][1]["name"] = "s" * 100
    plan["stages"][0]["tasks"][1]["name"] = "n" * 100

    await shared_graphql.ok(CREATE_ISSUE, {"input": plan})


@pytest.mark.parametrize("case", list(REFUSALS.values()), ids=list(REFUSALS))
async def test_refuses_a_plan_that_breaks_a_rule(
    shared_graphql: GraphQLClient, shared_catalog: Catalog, case: Refusal
) -> None:
    error = await refusal(shared_graphql, CREATE_ISSUE, {"input": case.plan(shared_catalog)})

    assert error["message"] == case.message
    assert error["extensions"]["code"] == case.code
    assert error["extensions"]["field"] == ["input", *case.points_at]
    limit = {} if case.limit is None else {"limit": case.limit}
    assert error["extensions"].get("limit") == case.limit
    assert error["extensions"]["problems"] == [
        {"message": case.message, "code": case.code, "field": ["input", *case.points_at], **limit}
    ]


async def test_reports_every_problem_of_a_plan_in_input_order(
    shared_graphql: GraphQLClient, shared_catalog: Catalog
) -> None:
    plan = valid_plan(shared_catalog)
    plan["title"] = ""
    del plan["stages"][0]["tasks"][1]["instanceId"]
    del plan["stages"][0]["tasks"][1]["statement"]
    plan["stages"][1]["tasks"][0]["blockedBy"] = ["nope"]
    plan["stages"][1]["tasks"][0]["instanceId"] = global_id("Environment", 1)

    error = await refusal(shared_graphql, CREATE_ISSUE, {"input": plan})

    assert error["extensions"]["code"] == "INVALID_INPUT"
    assert error["extensions"]["field"] == ["input", "title"]
    assert [
        (problem["code"], problem["field"], problem["message"])
        for problem in error["extensions"]["problems"]
    ] == [
        ("INVALID_INPUT", ["input", "title"], "must not be empty"),
        ("INVALID_INPUT", ["input", *DML, "instanceId"], "a task needs an instance"),
        ("INVALID_INPUT", ["input", *DML, "statement"], "the statement must not be empty"),
        ("NOT_FOUND", ["input", *SYNC, "instanceId"], "instance does not exist"),
        (
            "INVALID_INPUT",
            ["input", *SYNC, "blockedBy", 0],
            "blocked by 'nope', but no task of this pipeline has that ref",
        ),
    ]


async def test_refuses_an_unknown_task_type_written_in_the_document(
    shared_graphql: GraphQLClient, shared_catalog: Catalog
) -> None:
    document = """
    mutation($environment: ID!, $instance: ID!) {
      createIssue(input: {
        title: "Sync"
        stages: [{
          environmentId: $environment
          tasks: [{type: TRUNCATE_EVERYTHING, instanceId: $instance}]
        }]
      }) { id }
    }
    """
    variables = {
        "environment": shared_catalog.environments["dev"],
        "instance": shared_catalog.instances["alpha"],
    }

    error = await refusal(shared_graphql, document, variables)

    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert error["message"] == "Value 'TRUNCATE_EVERYTHING' does not exist in 'TaskType' enum."
    # Validation of a literal locates the error in the document, not in the input.
    assert error["extensions"]["field"] is None
    assert error["locations"] is not None


async def test_refuses_an_unknown_task_type_passed_in_a_variable(
    shared_graphql: GraphQLClient, shared_catalog: Catalog
) -> None:
    plan = valid_plan(shared_catalog)
    plan["stages"][0]["tasks"][1]["type"] = "TRUNCATE_EVERYTHING"

    error = await refusal(shared_graphql, CREATE_ISSUE, {"input": plan})

    assert error["extensions"]["code"] == "INVALID_INPUT"
    assert "'TRUNCATE_EVERYTHING' does not exist in 'TaskType' enum" in error["message"]
    assert error["extensions"]["field"] == ["input", *DML, "type"]


async def test_refuses_an_id_that_is_no_global_id(
    shared_graphql: GraphQLClient, shared_catalog: Catalog
) -> None:
    plan = valid_plan(shared_catalog)
    plan["stages"][0]["tasks"][1]["databaseId"] = "not-a-global-id"
    plan["stages"][1]["tasks"][0]["instanceId"] = global_id("Environment", 1)

    error = await refusal(shared_graphql, CREATE_ISSUE, {"input": plan})

    assert error["extensions"]["code"] == "INVALID_INPUT"
    assert error["message"] == "not a valid id of this API"
    assert error["extensions"]["field"] == ["input", *DML, "databaseId"]
    assert [
        (problem["code"], problem["field"], problem["message"])
        for problem in error["extensions"]["problems"]
    ] == [
        ("INVALID_INPUT", ["input", *DML, "databaseId"], "not a valid id of this API"),
        ("NOT_FOUND", ["input", *SYNC, "instanceId"], "instance does not exist"),
    ]
