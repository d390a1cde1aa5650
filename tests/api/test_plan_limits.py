"""Every limit of a plan, and of the other inputs: accepted at the limit, refused one past it
with the limit in `extensions.limit`, at the field that went past it, among the other problems."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from conveyor.domain.plan import (
    DATABASE_NAME_MAX_LENGTH,
    DESCRIPTION_MAX_LENGTH,
    MAX_BLOCKED_BY,
    MAX_STAGES,
    MAX_TASKS_PER_STAGE,
    NAME_MAX_LENGTH,
    STATEMENT_MAX_LENGTH,
    TITLE_MAX_LENGTH,
)
from conveyor.domain.task_actions import REASON_MAX_LENGTH
from tests.api.support import (
    CREATE_ISSUE,
    Catalog,
    create_issue,
    database_task,
    instance_task,
    issue_plan,
    the_error,
)
from tests.conftest import GraphQLClient

InputPath = tuple[str | int, ...]


def sync(catalog: Catalog, **fields: Any) -> dict[str, Any]:
    return instance_task(catalog, "INSTANCE_SYNC", "alpha", **fields)


def one_task(catalog: Catalog, **fields: Any) -> dict[str, Any]:
    return issue_plan(catalog, {"dev": [sync(catalog, **fields)]})


def statement_of(length: int) -> str:
    script = "SELECT 1 -- "
    return script + "x" * (length - len(script))


def blocked_by(catalog: Catalog, count: int) -> dict[str, Any]:
    blockers = [sync(catalog, ref=f"r{index}") for index in range(count)]
    blocked = sync(catalog, blockedBy=[f"r{index}" for index in range(count)])
    return issue_plan(catalog, {"dev": blockers, "test": [blocked]})


@dataclass(frozen=True)
class Limit:
    limit: int
    #: A plan whose value is `n`.
    plan: Callable[[Catalog, int], dict[str, Any]]
    #: Where the refusal points, below "input".
    points_at: InputPath
    message: str


LIMITS = {
    "title": Limit(
        TITLE_MAX_LENGTH,
        lambda catalog, n: {**one_task(catalog), "title": "t" * n},
        ("title",),
        f"must be at most {TITLE_MAX_LENGTH} characters",
    ),
    "description": Limit(
        DESCRIPTION_MAX_LENGTH,
        lambda catalog, n: {**one_task(catalog), "description": "d" * n},
        ("description",),
        f"must be at most {DESCRIPTION_MAX_LENGTH} characters",
    ),
    "stages": Limit(
        MAX_STAGES,
        lambda catalog, n: {
            "title": "Many stages",
            "stages": [{"environmentId": catalog.environments["dev"], "tasks": [sync(catalog)]}]
            * n,
        },
        ("stages",),
        f"a pipeline has at most {MAX_STAGES} stages",
    ),
    "tasks per stage": Limit(
        MAX_TASKS_PER_STAGE,
        lambda catalog, n: issue_plan(catalog, {"dev": [sync(catalog)] * n}),
        ("stages", 0, "tasks"),
        f"a stage has at most {MAX_TASKS_PER_STAGE} tasks",
    ),
    "stage name": Limit(
        NAME_MAX_LENGTH,
        lambda catalog, n: {
            "title": "Named stage",
            "stages": [
                {
                    "environmentId": catalog.environments["dev"],
                    "name": "s" * n,
                    "tasks": [sync(catalog)],
                }
            ],
        },
        ("stages", 0, "name"),
        f"must be at most {NAME_MAX_LENGTH} characters",
    ),
    "task name": Limit(
        NAME_MAX_LENGTH,
        lambda catalog, n: one_task(catalog, name="n" * n),
        ("stages", 0, "tasks", 0, "name"),
        f"must be at most {NAME_MAX_LENGTH} characters",
    ),
    "ref": Limit(
        NAME_MAX_LENGTH,
        lambda catalog, n: one_task(catalog, ref="r" * n),
        ("stages", 0, "tasks", 0, "ref"),
        f"must be at most {NAME_MAX_LENGTH} characters",
    ),
    "statement": Limit(
        STATEMENT_MAX_LENGTH,
        lambda catalog, n: issue_plan(
            catalog, {"dev": [database_task(catalog, "DATA_UPDATE", statement=statement_of(n))]}
        ),
        ("stages", 0, "tasks", 0, "statement"),
        f"the statement must be at most {STATEMENT_MAX_LENGTH} characters",
    ),
    "database name": Limit(
        DATABASE_NAME_MAX_LENGTH,
        lambda catalog, n: issue_plan(
            catalog,
            {"dev": [instance_task(catalog, "DATABASE_CREATE", "alpha", databaseName="d" * n)]},
        ),
        ("stages", 0, "tasks", 0, "databaseName"),
        f"must be at most {DATABASE_NAME_MAX_LENGTH} characters",
    ),
    "blocked by": Limit(
        MAX_BLOCKED_BY,
        blocked_by,
        ("stages", 1, "tasks", 0, "blockedBy"),
        f"a task is blocked by at most {MAX_BLOCKED_BY} tasks",
    ),
}


@pytest.mark.parametrize("case", LIMITS.values(), ids=LIMITS.keys())
async def test_a_plan_at_a_limit_is_accepted(
    graphql: GraphQLClient, catalog: Catalog, case: Limit
) -> None:
    await graphql.ok(CREATE_ISSUE, {"input": case.plan(catalog, case.limit)})


@pytest.mark.parametrize("case", LIMITS.values(), ids=LIMITS.keys())
async def test_a_plan_past_a_limit_is_refused_with_the_limit(
    graphql: GraphQLClient, catalog: Catalog, case: Limit
) -> None:
    error = the_error(await graphql(CREATE_ISSUE, {"input": case.plan(catalog, case.limit + 1)}))

    field = ["input", *case.points_at]
    assert error["message"] == case.message
    assert error["extensions"]["code"] == "INVALID_INPUT"
    assert error["extensions"]["field"] == field
    assert error["extensions"]["limit"] == case.limit
    assert error["extensions"]["problems"] == [
        {"message": case.message, "code": "INVALID_INPUT", "field": field, "limit": case.limit}
    ]


async def test_a_limit_is_reported_among_the_other_problems(
    graphql: GraphQLClient, catalog: Catalog
) -> None:
    plan = one_task(catalog, name="n" * (NAME_MAX_LENGTH + 1))
    plan["title"] = ""

    error = the_error(await graphql(CREATE_ISSUE, {"input": plan}))

    assert error["extensions"]["problems"] == [
        {"message": "must not be empty", "code": "INVALID_INPUT", "field": ["input", "title"]},
        {
            "message": f"must be at most {NAME_MAX_LENGTH} characters",
            "code": "INVALID_INPUT",
            "field": ["input", "stages", 0, "tasks", 0, "name"],
            "limit": NAME_MAX_LENGTH,
        },
    ]


# --- the limits of other inputs ---------------------------------------------------------------

SKIP_TASK = "mutation($input: SkipTaskInput!) { skipTask(input: $input) { id } }"
CREATE_TOKEN = "mutation($input: CreateApiTokenInput!) { createApiToken(input: $input) { token } }"
CREATE_ENVIRONMENT = (
    "mutation($input: CreateEnvironmentInput!) { createEnvironment(input: $input) { id } }"
)


@dataclass(frozen=True)
class InputLimit:
    limit: int
    document: str
    #: The input whose value is `n`.
    input: Callable[[Catalog, dict[str, str], int], dict[str, Any]]
    field: str


INPUT_LIMITS = {
    "skip reason": InputLimit(
        REASON_MAX_LENGTH,
        SKIP_TASK,
        lambda catalog, tasks, n: {"taskId": tasks["instance_sync-1"], "reason": "r" * n},
        "reason",
    ),
    "token description": InputLimit(
        TITLE_MAX_LENGTH,
        CREATE_TOKEN,
        lambda catalog, tasks, n: {"actor": "vera", "role": "VIEWER", "description": "d" * n},
        "description",
    ),
    "environment name": InputLimit(
        NAME_MAX_LENGTH,
        CREATE_ENVIRONMENT,
        lambda catalog, tasks, n: {"name": "e" * n, "order": 9},
        "name",
    ),
}


@pytest.mark.parametrize("case", INPUT_LIMITS.values(), ids=INPUT_LIMITS.keys())
async def test_other_inputs_are_refused_past_their_limit_with_it(
    graphql: GraphQLClient, catalog: Catalog, case: InputLimit
) -> None:
    tasks = (await create_issue(graphql, catalog, {"dev": [sync(catalog)]})).tasks

    error = the_error(
        await graphql(case.document, {"input": case.input(catalog, tasks, case.limit + 1)})
    )

    assert error["extensions"]["field"] == ["input", case.field]
    assert error["extensions"]["limit"] == case.limit
    assert error["extensions"]["problems"][0]["limit"] == case.limit
    await graphql.ok(case.document, {"input": case.input(catalog, tasks, case.limit)})
