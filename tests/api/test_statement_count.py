"""The read path's SQL statement count depends on the query's shape, never on the data's size."""

from typing import Any

from tortoise.connection import get_connection
from tortoise.context import TortoiseContext

from conveyor.graphql.compiled import extension
from tests.api.support import Catalog
from tests.conftest import GraphQLClient, counting_statements

CREATE_ISSUE = (
    "mutation($input: CreateIssueInput!) { createIssue(input: $input) { pipeline { id } } }"
)

TREE = """
fragment Tree on Pipeline {
  id status
  activeStage { name }
  issue { title status }
  stages {
    name status
    taskCounts { pending total }
    environment { name approvalPolicy }
    tasks(first: $tasks) {
      name status type statement
      instance { name environment { name } }
      database { name instance { name } }
      blockedBy { name status }
      runs { attempt status }
      stage { name }
      pipeline { id }
      waitingReason { kind message }
      availableActions
    }
  }
}
"""
# About 11 for the tree itself, and 6 for the scheduling decisions behind waitingReason: 4 for
# the pipelines' states, 2 for the occupancy of their instances.
MAX_STATEMENTS = 17

ONE_PIPELINE = (
    TREE + "query($id: ID!, $tasks: Int!) { node(id: $id) { ... on Pipeline { ...Tree } } }"
)
PAGE_OF_PIPELINES = (
    TREE
    + "query($first: Int!, $tasks: Int!) "
    + "{ pipelines(first: $first) { edges { node { ...Tree } } } }"
)


def pipeline_plan(catalog: Catalog, stages: int, tasks_per_stage: int) -> dict[str, Any]:
    environments = list(catalog.environments.values())
    return {
        "title": f"{stages} x {tasks_per_stage}",
        "stages": [
            {
                "environmentId": environments[stage % len(environments)],
                "tasks": [
                    {
                        "type": "DATA_UPDATE",
                        "ref": f"s{stage}t{task}",
                        "instanceId": catalog.instances["alpha"],
                        "databaseId": catalog.databases["alpha"],
                        "statement": "UPDATE t SET x = 1",
                        "blockedBy": [f"s{stage}t{task - 1}"] if task % 50 else [],
                    }
                    for task in range(tasks_per_stage)
                ],
            }
            for stage in range(stages)
        ],
    }


async def create_pipeline(graphql: GraphQLClient, plan: dict[str, Any]) -> str:
    data = await graphql.ok(CREATE_ISSUE, {"input": plan})
    pipeline_id: str = data["createIssue"]["pipeline"]["id"]
    return pipeline_id


async def count_statements(graphql: GraphQLClient, document: str, variables: dict[str, Any]) -> int:
    with counting_statements() as counter:
        await graphql.ok(document, variables)
    return len(counter.statements)


async def test_a_pipeline_of_5000_tasks_costs_what_one_of_1_task_does(
    graphql: GraphQLClient, catalog: Catalog
) -> None:
    small = await create_pipeline(graphql, pipeline_plan(catalog, stages=1, tasks_per_stage=1))
    # A stage shows at most 100 tasks (CONVEYOR_MAX_PAGE_SIZE): 50 stages of 100.
    large = await create_pipeline(graphql, pipeline_plan(catalog, stages=50, tasks_per_stage=100))

    small_count = await count_statements(graphql, ONE_PIPELINE, {"id": small, "tasks": 100})
    large_count = await count_statements(graphql, ONE_PIPELINE, {"id": large, "tasks": 100})

    assert small_count == large_count
    assert large_count <= MAX_STATEMENTS


async def test_a_page_of_50_pipelines_costs_what_a_page_of_1_does(
    graphql: GraphQLClient, catalog: Catalog
) -> None:
    for _ in range(50):
        await create_pipeline(graphql, pipeline_plan(catalog, stages=3, tasks_per_stage=4))

    one = await count_statements(graphql, PAGE_OF_PIPELINES, {"first": 1, "tasks": 4})
    fifty = await count_statements(graphql, PAGE_OF_PIPELINES, {"first": 50, "tasks": 4})

    assert one == fifty
    assert fifty <= MAX_STATEMENTS


async def test_a_compiled_read_sends_one_statement(
    graphql: GraphQLClient, catalog: Catalog
) -> None:
    small = await create_pipeline(graphql, pipeline_plan(catalog, stages=2, tasks_per_stage=3))
    served = extension.served[extension.COMPILED]

    count = await count_statements(graphql, ONE_PIPELINE, {"id": small, "tasks": 100})

    assert extension.served[extension.COMPILED] == served + 1
    assert count == 1


async def test_a_pooled_connection_is_released_without_a_reset_query(
    db: TortoiseContext,
) -> None:
    client: Any = get_connection("default")
    sent: list[str] = []
    async with client.acquire_connection() as connection:
        connection.add_query_logger(lambda record: sent.append(record.query))
        await connection.fetchval("SELECT 1")

    # Released: asyncpg would send "SELECT pg_advisory_unlock_all(); CLOSE ALL; ..." here.
    assert sent == ["SELECT 1"]
