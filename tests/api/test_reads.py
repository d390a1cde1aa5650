"""The read side: nodes by global id, paginated and filtered lists, derived fields."""

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from strawberry import relay

from conveyor.db.models import TaskRun
from conveyor.domain.statuses import TaskRunStatus, TaskStatus
from conveyor.settings import Settings
from tests.api.support import (
    CANCEL_ISSUE,
    CREATE_INSTANCE,
    Catalog,
    CreatedIssue,
    create_issue,
    database_task,
    global_id,
    issue_plan,
    only_error,
    put_task_in,
    row_key,
)
from tests.conftest import GraphQLClient


@pytest.fixture
def database_url(emptied_module_database_url: str) -> str:
    """The module's one database, emptied for each test: creating one costs more than a test."""
    return emptied_module_database_url


NODE = """
query($id: ID!) {
  node(id: $id) {
    __typename id
    ... on Environment { name }
    ... on Instance { name }
    ... on Database { name }
    ... on Issue { title }
    ... on Pipeline { status }
    ... on Stage { name }
    ... on Task { name }
    ... on TaskRun { attempt }
  }
}
"""
NODES = "query($ids: [ID!]!) { nodes(ids: $ids) { __typename id } }"


def task_plan(catalog: Catalog, ref: str, **fields: Any) -> dict[str, Any]:
    return database_task(
        catalog,
        "DATA_UPDATE",
        ref=ref,
        name=ref,
        statement=f"UPDATE t SET step = '{ref}'",
        **fields,
    )


async def create_simple_issue(
    graphql: GraphQLClient,
    catalog: Catalog,
    title: str = "Add orders",
    environments: tuple[str, ...] = ("dev",),
    *,
    actor: str = "tester",
    checked: bool = True,
) -> CreatedIssue:
    """An issue with one stage per environment, each with a task named '<environment>-task'."""
    return await create_issue(
        graphql,
        catalog,
        {environment: [task_plan(catalog, f"{environment}-task")] for environment in environments},
        title=title,
        actor=actor,
        checked=checked,
    )


# --- nodes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Nodes:
    """A global id of each node type, and what `NODE` must read back for it."""

    expected: dict[str, dict[str, Any]]


@pytest.fixture
async def one_of_each(graphql: GraphQLClient, catalog: Catalog) -> Nodes:
    issue = await create_simple_issue(graphql, catalog, "Add orders")
    task_id = issue.tasks["dev-task"]
    run = await TaskRun.create(
        task_id=row_key(task_id),
        attempt=1,
        status=TaskRunStatus.FAILED,
        started_at=datetime.now(UTC),
    )
    run_id = global_id("TaskRun", run.id)
    return Nodes(
        {
            "Environment": {"id": catalog.environments["dev"], "name": "dev"},
            "Instance": {"id": catalog.instances["beta"], "name": "beta"},
            "Database": {"id": catalog.databases["beta"], "name": "beta_db"},
            "Issue": {"id": issue.id, "title": "Add orders"},
            "Pipeline": {"id": issue.pipeline_id, "status": "OPEN"},
            "Stage": {"id": issue.stages["dev"], "name": "dev"},
            "Task": {"id": task_id, "name": "dev-task"},
            "TaskRun": {"id": run_id, "attempt": 1},
        }
    )


NODE_TYPES = [
    "Environment",
    "Instance",
    "Database",
    "Issue",
    "Pipeline",
    "Stage",
    "Task",
    "TaskRun",
]


@pytest.mark.parametrize("type_name", NODE_TYPES)
async def test_node_fetches_each_type_by_its_global_id(
    graphql: GraphQLClient, one_of_each: Nodes, type_name: str
) -> None:
    expected = one_of_each.expected[type_name]

    data = await graphql.ok(NODE, {"id": expected["id"]})

    assert data["node"] == {"__typename": type_name, **expected}


async def test_nodes_fetches_every_type_at_once_in_the_order_asked(
    graphql: GraphQLClient, one_of_each: Nodes
) -> None:
    asked = list(reversed(NODE_TYPES))
    ids = [one_of_each.expected[type_name]["id"] for type_name in asked]

    data = await graphql.ok(NODES, {"ids": ids})

    assert data["nodes"] == [
        {"__typename": type_name, "id": node_id}
        for type_name, node_id in zip(asked, ids, strict=True)
    ]


@pytest.mark.parametrize("type_name", NODE_TYPES)
async def test_node_of_an_unknown_number_is_null(graphql: GraphQLClient, type_name: str) -> None:
    data = await graphql.ok(NODE, {"id": global_id(type_name, 987_654)})

    assert data["node"] is None


@pytest.mark.parametrize(
    "node_id",
    [
        str(relay.GlobalID("Environment", "not-a-number")),
        str(relay.GlobalID("Environment", "0")),
        str(relay.GlobalID("Environment", str(2**40))),
    ],
    ids=["not a number", "zero", "past the integer range"],
)
async def test_node_of_an_impossible_number_is_null(
    graphql: GraphQLClient, catalog: Catalog, node_id: str
) -> None:
    data = await graphql.ok(NODE, {"id": node_id})

    assert data["node"] is None


@pytest.mark.parametrize(
    "node_id",
    [
        "garbage",
        base64.b64encode(b"no colon").decode(),
        str(relay.GlobalID("Warehouse", "1")),
        str(relay.GlobalID("PageInfo", "1")),
    ],
    ids=["not base64", "no type part", "no such type", "not a node type"],
)
async def test_node_of_a_malformed_id_is_null_with_an_input_error(
    graphql: GraphQLClient, node_id: str
) -> None:
    response = await graphql(NODE, {"id": node_id})

    assert response.data == {"node": None}
    error = only_error(response)
    assert error["extensions"]["code"] == "INVALID_INPUT"
    assert error["extensions"]["field"] == ["id"]
    assert error["extensions"]["problems"] == [
        {"message": "not a valid id of this API", "code": "INVALID_INPUT", "field": ["id"]}
    ]
    assert error["message"] == "not a valid id of this API"


async def test_nodes_gives_null_in_place_of_each_unknown_id(
    graphql: GraphQLClient, catalog: Catalog
) -> None:
    ids = [
        catalog.environments["dev"],
        global_id("Environment", 987_654),
        catalog.instances["alpha"],
        global_id("Task", 987_654),
    ]

    data = await graphql.ok(NODES, {"ids": ids})

    assert data["nodes"] == [
        {"__typename": "Environment", "id": ids[0]},
        None,
        {"__typename": "Instance", "id": ids[2]},
        None,
    ]


# --- pagination -------------------------------------------------------------------------------

ISSUE_PAGE = """
query($first: Int, $after: String) {
  issues(first: $first, after: $after) {
    totalCount
    edges { cursor node { title } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}
"""


async def test_pages_through_issues_newest_first(graphql: GraphQLClient, catalog: Catalog) -> None:
    for number in range(1, 6):
        await create_simple_issue(graphql, catalog, f"issue {number}")

    pages = []
    after = None
    while True:
        data = await graphql.ok(ISSUE_PAGE, {"first": 2, "after": after})
        pages.append(data["issues"])
        if not data["issues"]["pageInfo"]["hasNextPage"]:
            break
        after = data["issues"]["pageInfo"]["endCursor"]

    assert [[edge["node"]["title"] for edge in page["edges"]] for page in pages] == [
        ["issue 5", "issue 4"],
        ["issue 3", "issue 2"],
        ["issue 1"],
    ]
    assert [
        (page["pageInfo"]["hasPreviousPage"], page["pageInfo"]["hasNextPage"]) for page in pages
    ] == [(False, True), (True, True), (True, False)]
    assert {page["totalCount"] for page in pages} == {5}
    for page in pages:
        assert page["pageInfo"]["startCursor"] == page["edges"][0]["cursor"]
        assert page["pageInfo"]["endCursor"] == page["edges"][-1]["cursor"]


async def test_a_page_past_the_last_is_empty(graphql: GraphQLClient, catalog: Catalog) -> None:
    await create_simple_issue(graphql, catalog, "only")
    first = await graphql.ok(ISSUE_PAGE, {"first": 1})

    data = await graphql.ok(
        ISSUE_PAGE, {"first": 1, "after": first["issues"]["pageInfo"]["endCursor"]}
    )

    assert data["issues"]["edges"] == []
    assert data["issues"]["pageInfo"] == {
        "hasNextPage": False,
        "hasPreviousPage": True,
        "startCursor": None,
        "endCursor": None,
    }


async def test_the_page_size_defaults_to_the_configured_one(
    graphql: GraphQLClient, catalog: Catalog, settings: Settings
) -> None:
    for number in range(4):
        await create_simple_issue(graphql, catalog, f"issue {number}")
    configured = GraphQLClient(settings.model_copy(update={"default_page_size": 3}))

    data = await configured.ok(ISSUE_PAGE)

    assert len(data["issues"]["edges"]) == 3
    assert data["issues"]["pageInfo"]["hasNextPage"] is True


async def test_the_largest_page_size_is_allowed(graphql: GraphQLClient, settings: Settings) -> None:
    data = await graphql.ok(ISSUE_PAGE, {"first": settings.max_page_size})

    assert data["issues"]["totalCount"] == 0


@pytest.mark.parametrize("excess", [1, 10_000])
async def test_refuses_a_page_larger_than_the_maximum(
    graphql: GraphQLClient, settings: Settings, excess: int
) -> None:
    response = await graphql(ISSUE_PAGE, {"first": settings.max_page_size + excess})

    error = only_error(response)
    assert error["extensions"]["code"] == "INVALID_INPUT"
    assert error["extensions"]["field"] == ["first"]
    assert error["message"] == f"first must be between 0 and {settings.max_page_size}"


async def test_refuses_a_negative_page_size(graphql: GraphQLClient) -> None:
    response = await graphql(ISSUE_PAGE, {"first": -1})

    error = only_error(response)
    assert (error["extensions"]["code"], error["extensions"]["field"]) == (
        "INVALID_INPUT",
        ["first"],
    )


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage!",
        base64.urlsafe_b64encode(b"offset:3").decode(),
        "",
        base64.urlsafe_b64encode(b"cursor:not-an-int").decode(),
    ],
    ids=["not base64", "another api's cursor", "empty", "no number"],
)
async def test_refuses_a_cursor_this_api_did_not_make(graphql: GraphQLClient, cursor: str) -> None:
    response = await graphql(ISSUE_PAGE, {"first": 2, "after": cursor})

    error = only_error(response)
    assert error["extensions"]["code"] == "INVALID_INPUT"
    assert error["extensions"]["field"] == ["after"]
    assert error["message"] == "not a cursor from this API"


# --- filters ----------------------------------------------------------------------------------

FILTERED_ISSUES = """
query($status: PipelineStatus, $environmentId: ID) {
  issues(status: $status, environmentId: $environmentId) { totalCount edges { node { title } } }
}
"""
FILTERED_PIPELINES = """
query($status: PipelineStatus, $environmentId: ID) {
  pipelines(status: $status, environmentId: $environmentId) {
    totalCount edges { node { issue { title } } }
  }
}
"""


@pytest.fixture
async def three_issues(graphql: GraphQLClient, catalog: Catalog) -> None:
    """'dev only' (OPEN), 'dev and prod' (OPEN), 'canceled' (CANCELED, test and prod)."""
    await create_simple_issue(graphql, catalog, "dev only", ("dev",))
    await create_simple_issue(graphql, catalog, "dev and prod", ("dev", "prod"))
    canceled = await create_simple_issue(graphql, catalog, "canceled", ("test", "prod"))
    await graphql.ok(CANCEL_ISSUE, {"id": canceled.id})


@pytest.mark.parametrize(
    ("status", "environment", "titles"),
    [
        (None, None, ["canceled", "dev and prod", "dev only"]),
        ("OPEN", None, ["dev and prod", "dev only"]),
        ("CANCELED", None, ["canceled"]),
        ("DONE", None, []),
        (None, "dev", ["dev and prod", "dev only"]),
        (None, "prod", ["canceled", "dev and prod"]),
        ("OPEN", "prod", ["dev and prod"]),
        ("CANCELED", "dev", []),
    ],
)
async def test_filters_issues_and_pipelines_by_status_and_environment(
    graphql: GraphQLClient,
    catalog: Catalog,
    three_issues: None,
    status: str | None,
    environment: str | None,
    titles: list[str],
) -> None:
    variables = {
        "status": status,
        "environmentId": None if environment is None else catalog.environments[environment],
    }

    issues = (await graphql.ok(FILTERED_ISSUES, variables))["issues"]
    pipelines = (await graphql.ok(FILTERED_PIPELINES, variables))["pipelines"]

    assert [edge["node"]["title"] for edge in issues["edges"]] == titles
    assert [edge["node"]["issue"]["title"] for edge in pipelines["edges"]] == titles
    assert issues["totalCount"] == pipelines["totalCount"] == len(titles)


async def test_filters_instances_by_environment(graphql: GraphQLClient, catalog: Catalog) -> None:
    await graphql.ok(
        CREATE_INSTANCE,
        {
            "input": {
                "name": "gamma",
                "environmentId": catalog.environments["prod"],
                "host": "10.0.0.3",
                "username": "postgres",
                "password": "secret",
            }
        },
    )
    query = """
    query($environmentId: ID) {
      instances(environmentId: $environmentId) { totalCount edges { node { name } } }
    }
    """

    def names(data: dict[str, Any]) -> list[str]:
        return [edge["node"]["name"] for edge in data["instances"]["edges"]]

    every = await graphql.ok(query)
    dev = await graphql.ok(query, {"environmentId": catalog.environments["dev"]})
    prod = await graphql.ok(query, {"environmentId": catalog.environments["prod"]})
    test = await graphql.ok(query, {"environmentId": catalog.environments["test"]})

    assert names(every) == ["alpha", "beta", "gamma"]
    assert names(dev) == ["alpha", "beta"]
    assert names(prod) == ["gamma"]
    assert (names(test), test["instances"]["totalCount"]) == ([], 0)


async def test_filters_databases_by_instance(graphql: GraphQLClient, catalog: Catalog) -> None:
    query = """
    query($instanceId: ID) {
      databases(instanceId: $instanceId) { totalCount edges { node { name instance { name } } } }
    }
    """

    beta = await graphql.ok(query, {"instanceId": catalog.instances["beta"]})
    every = await graphql.ok(query)

    assert beta["databases"] == {
        "totalCount": 1,
        "edges": [{"node": {"name": "beta_db", "instance": {"name": "beta"}}}],
    }
    assert every["databases"]["totalCount"] == 2


async def test_a_filter_by_an_id_of_another_type_is_not_found(
    graphql: GraphQLClient, catalog: Catalog
) -> None:
    response = await graphql(FILTERED_ISSUES, {"environmentId": catalog.instances["alpha"]})

    error = only_error(response)
    assert error["extensions"]["code"] == "NOT_FOUND"
    assert error["extensions"]["field"] == ["environmentId"]


# --- derived fields ---------------------------------------------------------------------------

STATUSES = """
query($id: ID!) {
  node(id: $id) {
    ... on Issue {
      status
      pipeline {
        status
        stages {
          status
          taskCounts { pendingApproval pending running done failed canceled skipped total }
        }
      }
    }
  }
}
"""


@pytest.mark.parametrize("cancel", [False, True], ids=["open", "canceled"])
async def test_an_issue_has_its_pipelines_status(
    graphql: GraphQLClient, catalog: Catalog, cancel: bool
) -> None:
    issue = await create_simple_issue(graphql, catalog)
    if cancel:
        await graphql.ok(CANCEL_ISSUE, {"id": issue.id})

    data = await graphql.ok(STATUSES, {"id": issue.id})

    expected = "CANCELED" if cancel else "OPEN"
    assert data["node"]["status"] == data["node"]["pipeline"]["status"] == expected


async def set_statuses(task_ids: list[str], statuses: list[TaskStatus]) -> None:
    """Put tasks in statuses only the runner could give them (it does not exist yet)."""
    for task_id, status in zip(task_ids, statuses, strict=True):
        await put_task_in(row_key(task_id), status)


async def create_stage_of(graphql: GraphQLClient, catalog: Catalog, size: int) -> CreatedIssue:
    return await create_issue(
        graphql,
        catalog,
        {"dev": [task_plan(catalog, f"t{index}") for index in range(size)]},
        title="Many tasks",
    )


@pytest.mark.parametrize(
    ("statuses", "stage_status"),
    [
        ([TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.RUNNING, TaskStatus.PENDING], "RUNNING"),
        ([TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.CANCELED, TaskStatus.PENDING], "FAILED"),
        (
            [TaskStatus.SKIPPED, TaskStatus.CANCELED, TaskStatus.PENDING, TaskStatus.DONE],
            "CANCELED",
        ),
        (
            [TaskStatus.DONE, TaskStatus.PENDING, TaskStatus.PENDING_APPROVAL, TaskStatus.DONE],
            "PENDING_APPROVAL",
        ),
        ([TaskStatus.DONE, TaskStatus.SKIPPED, TaskStatus.PENDING, TaskStatus.DONE], "PENDING"),
        ([TaskStatus.SKIPPED] * 4, "SKIPPED"),
        ([TaskStatus.SKIPPED, TaskStatus.DONE, TaskStatus.SKIPPED, TaskStatus.SKIPPED], "DONE"),
    ],
    ids=["running", "failed", "canceled", "pending approval", "pending", "skipped", "done"],
)
async def test_a_stage_status_is_derived_from_its_tasks(
    graphql: GraphQLClient, catalog: Catalog, statuses: list[TaskStatus], stage_status: str
) -> None:
    issue = await create_stage_of(graphql, catalog, len(statuses))
    await set_statuses(list(issue.tasks.values()), statuses)

    data = await graphql.ok(STATUSES, {"id": issue.id})

    (stage,) = data["node"]["pipeline"]["stages"]
    assert stage["status"] == stage_status


async def test_a_stage_counts_its_tasks_in_each_status(
    graphql: GraphQLClient, catalog: Catalog
) -> None:
    issue = await create_stage_of(graphql, catalog, 6)
    statuses = [
        TaskStatus.DONE,
        TaskStatus.DONE,
        TaskStatus.FAILED,
        TaskStatus.SKIPPED,
        TaskStatus.PENDING,
        TaskStatus.CANCELED,
    ]
    await set_statuses(list(issue.tasks.values()), statuses)

    data = await graphql.ok(STATUSES, {"id": issue.id})

    (stage,) = data["node"]["pipeline"]["stages"]
    assert stage["taskCounts"] == {
        "pendingApproval": 0,
        "pending": 1,
        "running": 0,
        "done": 2,
        "failed": 1,
        "canceled": 1,
        "skipped": 1,
        "total": 6,
    }


async def test_a_task_lists_the_tasks_it_is_blocked_by(
    graphql: GraphQLClient, catalog: Catalog
) -> None:
    plan = issue_plan(
        catalog,
        {
            "dev": [
                task_plan(catalog, "first"),
                task_plan(catalog, "second"),
                task_plan(catalog, "third", blockedBy=["second", "first"]),
            ],
            "prod": [task_plan(catalog, "later", blockedBy=["third"])],
        },
        title="Chain",
    )
    document = """
    mutation($input: CreateIssueInput!) {
      createIssue(input: $input) {
        pipeline { stages { tasks { name blockedBy { name stage { name } } } } }
      }
    }
    """

    data = await graphql.ok(document, {"input": plan})

    tasks = [task for stage in data["createIssue"]["pipeline"]["stages"] for task in stage["tasks"]]
    blocked_by = {
        task["name"]: sorted(blocker["name"] for blocker in task["blockedBy"]) for task in tasks
    }
    assert blocked_by == {
        "first": [],
        "second": [],
        "third": ["first", "second"],
        "later": ["third"],
    }
    assert tasks[3]["blockedBy"][0]["stage"] == {"name": "dev"}


async def test_an_issue_lists_its_creation_event_with_the_actor(
    graphql: GraphQLClient, catalog: Catalog
) -> None:
    # Unchecked: a worker's checks would add their own events.
    issue = await create_simple_issue(graphql, catalog, actor="ada", checked=False)
    document = """
    query($id: ID!) {
      node(id: $id) {
        ... on Issue { creator events { sequence kind actor taskId oldStatus newStatus } }
      }
    }
    """

    data = await graphql.ok(document, {"id": issue.id})

    assert data["node"]["creator"] == "ada"
    (event,) = data["node"]["events"]
    assert isinstance(event.pop("sequence"), int)
    assert event == {
        "kind": "ISSUE_CREATED",
        "actor": "ada",
        "taskId": None,
        "oldStatus": None,
        "newStatus": "OPEN",
    }


# --- bounded lists ----------------------------------------------------------------------------

STAGE_TASKS = """
query($id: ID!, $first: Int, $after: ID) {
  node(id: $id) {
    ... on Stage { taskCounts { total } tasks(first: $first, after: $after) { name } }
  }
}
"""


async def test_a_stage_lists_a_page_of_its_tasks(graphql: GraphQLClient, catalog: Catalog) -> None:
    names = [f"task-{n:02}" for n in range(25)]
    issue = await create_issue(graphql, catalog, {"dev": [task_plan(catalog, n) for n in names]})
    stage = issue.stages["dev"]

    async def page(**arguments: Any) -> list[str]:
        data = await graphql.ok(STAGE_TASKS, {"id": stage, **arguments})
        assert data["node"]["taskCounts"] == {"total": 25}
        return [task["name"] for task in data["node"]["tasks"]]

    # The default page is CONVEYOR_DEFAULT_PAGE_SIZE (20).
    assert await page() == names[:20]
    assert await page(first=3) == names[:3]
    assert await page(first=10, after=issue.tasks["task-19"]) == names[20:]
    assert await page(first=0) == []

    too_many = await graphql(STAGE_TASKS, {"id": stage, "first": 101})
    assert only_error(too_many)["extensions"]["code"] == "INVALID_INPUT"
    assert only_error(too_many)["message"] == "first must be between 0 and 100"
    other_stage = await create_simple_issue(graphql, catalog, "Other")
    foreign = await graphql(STAGE_TASKS, {"id": stage, "after": other_stage.tasks["dev-task"]})
    assert only_error(foreign)["message"] == "not a task of this stage"
    not_a_task = await graphql(STAGE_TASKS, {"id": stage, "after": stage})
    assert only_error(not_a_task)["extensions"]["code"] == "NOT_FOUND"


async def test_an_issue_lists_a_page_of_its_events(
    graphql: GraphQLClient, catalog: Catalog
) -> None:
    issue = await create_simple_issue(graphql, catalog)
    reopen = "mutation($id: ID!) { reopenIssue(input: {issueId: $id}) { status } }"
    for _ in range(12):
        await graphql.ok(CANCEL_ISSUE, {"id": issue.id})
        await graphql.ok(reopen, {"id": issue.id})
    document = """
    query($id: ID!, $first: Int, $after: Int) {
      node(id: $id) { ... on Issue { events(first: $first, afterSequence: $after) { sequence } } }
    }
    """

    async def page(**arguments: Any) -> list[int]:
        data = await graphql.ok(document, {"id": issue.id, **arguments})
        return [event["sequence"] for event in data["node"]["events"]]

    everything = await page(first=100)
    assert len(everything) > 20
    assert everything == sorted(everything)
    assert await page() == everything[:20]
    assert await page(first=2, after=everything[4]) == everything[5:7]
    assert await page(after=everything[-1]) == []


async def test_a_task_lists_a_page_of_its_own_events(
    graphql: GraphQLClient, catalog: Catalog
) -> None:
    issue = await create_issue(
        graphql, catalog, {"dev": [task_plan(catalog, "first"), task_plan(catalog, "second")]}
    )
    reopen = "mutation($id: ID!) { reopenIssue(input: {issueId: $id}) { status } }"
    for _ in range(12):
        await graphql.ok(CANCEL_ISSUE, {"id": issue.id})
        await graphql.ok(reopen, {"id": issue.id})
    task = issue.tasks["first"]
    whole_trail = await graphql.ok(
        "query($id: ID!) { node(id: $id) {"
        "  ... on Issue { events(first: 100) { sequence taskId } } } }",
        {"id": issue.id},
    )
    assert len(whole_trail["node"]["events"]) < 100, "the issue's whole trail, in one page"
    trail = [event for event in whole_trail["node"]["events"] if event["taskId"] == task]
    document = """
    query($id: ID!, $first: Int, $after: Int) {
      node(id: $id) { ... on Task { events(first: $first, afterSequence: $after) { sequence } } }
    }
    """

    async def page(**arguments: Any) -> list[int]:
        data = await graphql.ok(document, {"id": task, **arguments})
        return [event["sequence"] for event in data["node"]["events"]]

    own = [event["sequence"] for event in trail]
    assert len(own) > 20, "each cancel and reopen changes the task"
    assert await page(first=100) == own
    assert await page() == own[:20]
    assert await page(first=2, after=own[4]) == own[5:7]
    assert await page(after=own[-1]) == []
    too_many = await graphql(document, {"id": task, "first": 101})
    assert only_error(too_many)["extensions"]["code"] == "INVALID_INPUT"
