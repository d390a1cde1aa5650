"""The reads of bench/tree_reads.py as each server spells it, and their content.

Every GraphQL document the read benchmarks send is written here, so that a change of the
schema's shape (e.g. paging on `Stage.tasks`) is one edit: `stage_tasks` spells a stage's
tasks in a selection, `CONVEYOR_SHAPE.tasks_of` reads them back from a response.
"""

import base64
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

import tree_seed

PAGE_SIZE = 20
#: A stage's tasks are a bounded list in Conveyor: the largest stage of the data set is asked
#: for whole (the servers run with CONVEYOR_MAX_PAGE_SIZE at least this).
TASKS_PER_STAGE = tree_seed.LARGE_TASKS_PER_STAGE
#: The issue whose 100-task pipeline the one-pipeline reads take.
SMALL_TITLE = "bench 500"


def stage_tasks(selection: str) -> str:
    """A stage's tasks, all of them, with `selection` on each task (Conveyor's spelling)."""
    return f"tasks(first: {TASKS_PER_STAGE}) {{ {selection} }}"


#: The plain read's task: its own columns and its instance and database.
TREE_TASK = (
    "id name type status statement version instance { id name host port } database { id name }"
)
#: What a pipeline page shows of a task: its state, what the caller may do, why it waits,
#: what it waits for, its target, and its runs (the page shows the last one's status and error).
PAGE_TASK = """
id name type status version
waitingReason { kind message stage { id name } blockingTask { id name } }
availableActions
blockedBy { id name status }
database { id name }
instance { id name }
runs { attempt status errorCode errorMessage }
"""


def conveyor_tree(task_selection: str) -> str:
    """The plain read: a pipeline, its stages, their environment and tasks."""
    return f"""
fragment Tree on Pipeline {{
  id status
  stages {{
    id name position
    environment {{ id name approvalPolicy }}
    {stage_tasks(task_selection)}
  }}
}}
"""


def conveyor_one(task_selection: str = TREE_TASK) -> str:
    return (
        conveyor_tree(task_selection)
        + "query($id: ID!) { node(id: $id) { ... on Pipeline { ...Tree } } }"
    )


CONVEYOR_ONE = conveyor_one()
CONVEYOR_PAGE = (
    conveyor_tree(TREE_TASK)
    + "query($first: Int!) { pipelines(first: $first) { edges { node { ...Tree } } } }"
)
#: The pipeline page: the plain read's tree with the derived fields a page shows (stage
#: status and counts, the active stage, each task's waiting reason, actions and blockers).
CONVEYOR_PIPELINE_PAGE = f"""
query PipelinePage($id: ID!) {{
  node(id: $id) {{
    ... on Pipeline {{
      id status
      activeStage {{ id }}
      stages {{
        id name position status
        environment {{ id name approvalPolicy }}
        taskCounts {{ pendingApproval pending running done failed canceled skipped total }}
        {stage_tasks(PAGE_TASK)}
      }}
    }}
  }}
}}
"""
POSTGRAPHILE_TREE = """
fragment Tree on Pipeline {
  id status
  stagesByPipelineIdList(orderBy: POSITION_ASC) {
    id name position
    environmentByEnvironmentId { id name approvalPolicy }
    tasksByStageIdList(orderBy: POSITION_ASC) {
      id name type status statement version
      instanceByInstanceId { id name host port }
      databaseByDatabaseId { id name }
    }
  }
}
"""
POSTGRAPHILE_ONE = POSTGRAPHILE_TREE + "query($id: Int!) { pipelineById(id: $id) { ...Tree } }"
POSTGRAPHILE_PAGE = (
    POSTGRAPHILE_TREE
    + "query($first: Int!) { allPipelinesList(first: $first, orderBy: ID_DESC) { ...Tree } }"
)


@dataclass(frozen=True)
class Case:
    name: str
    #: The pipeline read by id; None reads the newest page of PAGE_SIZE pipelines.
    pipeline_id: int | None
    #: The pipeline page (derived fields included) instead of the plain read: Conveyor only,
    #: since the limit and PostGraphile have no derived fields.
    page: bool = False

    def servers(self, names: list[str]) -> list[str]:
        """Which of the servers `names` answer this case."""
        return ["conveyor"] if self.page else names

    def body(self, server: str) -> bytes:
        if self.page:
            if server != "conveyor" or self.pipeline_id is None:
                raise ValueError(f"the pipeline page is one pipeline read by Conveyor: {self}")
            payload: dict[str, Any] = {
                "query": CONVEYOR_PIPELINE_PAGE,
                "variables": {"id": relay_id("Pipeline", self.pipeline_id)},
            }
        elif server == "limit":
            payload = {"first": PAGE_SIZE} if self.pipeline_id is None else {"id": self.pipeline_id}
        elif server == "conveyor":
            payload = (
                {"query": CONVEYOR_PAGE, "variables": {"first": PAGE_SIZE}}
                if self.pipeline_id is None
                else {
                    "query": CONVEYOR_ONE,
                    "variables": {"id": relay_id("Pipeline", self.pipeline_id)},
                }
            )
        else:
            payload = (
                {"query": POSTGRAPHILE_PAGE, "variables": {"first": PAGE_SIZE}}
                if self.pipeline_id is None
                else {"query": POSTGRAPHILE_ONE, "variables": {"id": self.pipeline_id}}
            )
        return json.dumps(payload).encode()


def relay_id(type_name: str, key: int) -> str:
    return base64.b64encode(f"{type_name}:{key}".encode()).decode()


@dataclass(frozen=True)
class Shape:
    """Where each server puts the parts of the tree."""

    stages: str
    environment: str
    tasks_of: Callable[[dict[str, Any]], list[dict[str, Any]]]
    instance: str
    database: str
    pipelines: Callable[[dict[str, Any]], list[dict[str, Any]]]


def _conveyor_pipelines(data: dict[str, Any]) -> list[dict[str, Any]]:
    if "node" in data:
        return [data["node"]]
    return [edge["node"] for edge in data["pipelines"]["edges"]]


def _postgraphile_pipelines(data: dict[str, Any]) -> list[dict[str, Any]]:
    if "pipelineById" in data:
        return [data["pipelineById"]]
    pipelines: list[dict[str, Any]] = data["allPipelinesList"]
    return pipelines


def _conveyor_tasks(stage: dict[str, Any]) -> list[dict[str, Any]]:
    """A stage's tasks in a response to a selection made with `stage_tasks`."""
    tasks: list[dict[str, Any]] = stage["tasks"]
    return tasks


def _postgraphile_tasks(stage: dict[str, Any]) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = stage["tasksByStageIdList"]
    return tasks


CONVEYOR_SHAPE = Shape(
    "stages", "environment", _conveyor_tasks, "instance", "database", _conveyor_pipelines
)
SHAPES = {
    "limit": CONVEYOR_SHAPE,
    "conveyor": CONVEYOR_SHAPE,
    "postgraphile": Shape(
        "stagesByPipelineIdList",
        "environmentByEnvironmentId",
        _postgraphile_tasks,
        "instanceByInstanceId",
        "databaseByDatabaseId",
        _postgraphile_pipelines,
    ),
}
LABELS = {
    "limit": "limit (SQL builds the JSON)",
    "conveyor": "Conveyor",
    "postgraphile": "PostGraphile",
}


def normalized(data: dict[str, Any], shape: Shape) -> list[Any]:
    """The tree's content with each server's field names and id formats taken out."""
    return [
        [
            pipeline["status"],
            [
                [
                    stage["name"],
                    stage["position"],
                    stage[shape.environment]["name"],
                    stage[shape.environment]["approvalPolicy"],
                    [
                        [
                            task["name"],
                            task["type"],
                            task["status"],
                            task["statement"],
                            task["version"],
                            task[shape.instance]["name"],
                            task[shape.instance]["host"],
                            task[shape.instance]["port"],
                            None if task[shape.database] is None else task[shape.database]["name"],
                        ]
                        for task in shape.tasks_of(stage)
                    ],
                ]
                for stage in pipeline[shape.stages]
            ],
        ]
        for pipeline in shape.pipelines(data)
    ]


def task_count(tree: list[Any]) -> int:
    return sum(len(stage[4]) for pipeline in tree for stage in pipeline[1])


def page_task_count(data: dict[str, Any]) -> int:
    """The tasks in Conveyor's answer to the pipeline page."""
    return sum(
        len(CONVEYOR_SHAPE.tasks_of(stage))
        for pipeline in CONVEYOR_SHAPE.pipelines(data)
        for stage in pipeline["stages"]
    )


async def find_cases(database_url: str) -> list[Case]:
    """The reads on the seeded data set: three plain reads, then the pipeline page of the
    100-task and the 5,000-task pipelines."""
    connection = await asyncpg.connect(database_url)
    try:
        pipeline_of = (
            "SELECT p.id FROM pipeline p JOIN issue i ON i.id = p.issue_id WHERE i.title = $1"
        )
        small = await connection.fetchval(pipeline_of, SMALL_TITLE)
        large = await connection.fetchval(pipeline_of, tree_seed.LARGE_TITLE)
        server_version = await connection.fetchval("SHOW server_version")
    finally:
        await connection.close()
    print(f"PostgreSQL {server_version}", file=sys.stderr)
    small_tasks = tree_seed.STAGES * tree_seed.TASKS_PER_STAGE
    large_tasks = tree_seed.LARGE_STAGES * tree_seed.LARGE_TASKS_PER_STAGE
    return [
        Case(f"1 pipeline, {small_tasks} tasks", small),
        Case(f"{PAGE_SIZE} pipelines, {PAGE_SIZE * small_tasks:,} tasks", None),
        Case(f"1 pipeline, {large_tasks:,} tasks", large),
        Case(f"pipeline page, {small_tasks} tasks", small, page=True),
        Case(f"pipeline page, {large_tasks:,} tasks", large, page=True),
    ]


def plain_case(page: Case, cases: list[Case]) -> Case:
    """The plain read of the pipeline that `page` reads as a pipeline page."""
    return next(c for c in cases if not c.page and c.pipeline_id == page.pipeline_id)
