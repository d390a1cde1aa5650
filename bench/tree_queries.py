"""The nested read of bench/tree_reads.py as each server spells it, and its content."""

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PAGE_SIZE = 20
#: A stage's tasks are a bounded list in Conveyor: the largest stage of the data set is
#: asked for whole (the servers run with CONVEYOR_MAX_PAGE_SIZE at least this).
TASKS_PER_STAGE = 500

CONVEYOR_TREE = f"""
fragment Tree on Pipeline {{
  id status
  stages {{
    id name position
    environment {{ id name approvalPolicy }}
    tasks(first: {TASKS_PER_STAGE}) {{
      id name type status statement version
      instance {{ id name host port }}
      database {{ id name }}
    }}
  }}
}}
"""
CONVEYOR_ONE = CONVEYOR_TREE + "query($id: ID!) { node(id: $id) { ... on Pipeline { ...Tree } } }"
CONVEYOR_PAGE = (
    CONVEYOR_TREE
    + "query($first: Int!) { pipelines(first: $first) { edges { node { ...Tree } } } }"
)
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

    def body(self, server: str) -> bytes:
        if server == "limit":
            payload: dict[str, Any] = (
                {"first": PAGE_SIZE} if self.pipeline_id is None else {"id": self.pipeline_id}
            )
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
    tasks: str
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


CONVEYOR_SHAPE = Shape(
    "stages", "environment", "tasks", "instance", "database", _conveyor_pipelines
)
SHAPES = {
    "limit": CONVEYOR_SHAPE,
    "conveyor": CONVEYOR_SHAPE,
    "postgraphile": Shape(
        "stagesByPipelineIdList",
        "environmentByEnvironmentId",
        "tasksByStageIdList",
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
                        for task in stage[shape.tasks]
                    ],
                ]
                for stage in pipeline[shape.stages]
            ],
        ]
        for pipeline in shape.pipelines(data)
    ]


def task_count(tree: list[Any]) -> int:
    return sum(len(stage[4]) for pipeline in tree for stage in pipeline[1])
