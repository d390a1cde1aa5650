from datetime import datetime
from typing import Self, cast

import strawberry
from strawberry import relay
from strawberry.scalars import JSON

from conveyor.db import models
from conveyor.graphql.types.enums import TaskRunStatus
from conveyor.graphql.types.node import LoadedNode


@strawberry.type(description="One attempt at running a task.")
class TaskRun(LoadedNode):
    loader_name = "task_run"

    id: relay.NodeID[int]
    attempt: int = strawberry.field(description="1 for the first attempt, then 2, 3, ...")
    status: TaskRunStatus
    started_at: datetime
    ended_at: datetime | None
    error_code: str | None = strawberry.field(
        description="The target's SQLSTATE, or Conveyor's own code, when the attempt failed."
    )
    error_message: str | None
    result: JSON | None = strawberry.field(description="E.g. rows affected and duration.")
    log: JSON = strawberry.field(description="Statements executed and server notices, in order.")

    @classmethod
    def from_row(cls, row: models.TaskRun) -> Self:
        return cls(
            id=row.id,
            attempt=row.attempt,
            status=row.status,
            started_at=row.started_at,
            ended_at=row.ended_at,
            error_code=row.error_code,
            error_message=row.error_message,
            result=cast(JSON, row.result),
            log=cast(JSON, row.log),
        )
