"""An entry of the event log: the audit trail, and the message of `pipelineActivity`."""

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Self, cast

import strawberry
from strawberry import relay
from strawberry.scalars import JSON

from conveyor.db import models
from conveyor.graphql.context import Info
from conveyor.graphql.types.enums import EventKind
from conveyor.graphql.types.node import LoadedNode

if TYPE_CHECKING:
    from conveyor.graphql.types.pipeline import Pipeline
    from conveyor.graphql.types.stage import Stage
    from conveyor.graphql.types.task import Task


def _global_id(type_name: str, key: int | None) -> relay.GlobalID | None:
    return None if key is None else relay.GlobalID(type_name, str(key))


@strawberry.type(
    description="An entry of the audit trail; `sequence` only ever grows. One type for every "
    "kind (no interface or union, so a normalized client cache needs no `possibleTypes`): "
    "`kind` says what it records, and the fields that do not apply are null."
)
class Event(LoadedNode):
    loader_name = "event"

    id: relay.NodeID[int]
    sequence: int = strawberry.field(description="Strictly increasing across all events.")
    kind: EventKind
    actor: str = strawberry.field(description="Who made the change (a person or a worker).")
    created_at: datetime = strawberry.field(description="When the change was committed.")
    issue_id: relay.GlobalID = strawberry.field(description="The issue it concerns.")
    pipeline_id: relay.GlobalID = strawberry.field(description="The pipeline it concerns.")
    stage_id: relay.GlobalID | None = strawberry.field(description="The stage it concerns, if any.")
    task_id: relay.GlobalID | None = strawberry.field(description="The task it concerns, if any.")
    old_status: str | None = strawberry.field(
        description="The status left, for a status change (of a task, stage or pipeline)."
    )
    new_status: str | None = strawberry.field(description="The status entered, likewise.")
    reason: str | None = strawberry.field(
        description="Why, for a task that was skipped (a person's words), failed, or whose "
        "failed checks a DBA overrode."
    )
    detail: JSON | None = strawberry.field(
        description="What else the event records, by kind: TASK_EDITED the changed fields; "
        'TASK_LOG `{"entries": [...]}`, each entry `{at, kind, text}` where kind is '
        '"statement" (with `phase` STARTED or FINISHED, and once finished `statusTag` and '
        '`durationMs`), "notice" (with `severity`), "info" or "error"; TASK_CHECKED '
        "`{statementVersion, counts, blockingRules}` (counts by level); TASK_CHECKS_OVERRIDDEN "
        "`{reason, statementVersion, rules}`; TASK_DRY_RUN_FINISHED the dry run's outcome "
        "(`executed`, `rowsAffected`, `durationMs`, `statements`, or `sqlstate`, `error`, "
        "`failedStatement`)."
    )
    stage_key: strawberry.Private[int | None]
    task_key: strawberry.Private[int | None]
    pipeline_key: strawberry.Private[int]

    @strawberry.field(
        description="The task as it is when the message is rendered: its `lastSequence` is at "
        "least this event's `sequence`."
    )
    async def task(
        self, info: Info
    ) -> Annotated["Task", strawberry.lazy("conveyor.graphql.types.task")] | None:
        from conveyor.graphql.types.task import Task

        return await Task.load_optional(info, self.task_key)

    @strawberry.field(description="The stage as it is when the message is rendered.")
    async def stage(
        self, info: Info
    ) -> Annotated["Stage", strawberry.lazy("conveyor.graphql.types.stage")] | None:
        from conveyor.graphql.types.stage import Stage

        return await Stage.load_optional(info, self.stage_key)

    @strawberry.field(description="The pipeline as it is when the message is rendered.")
    async def pipeline(
        self, info: Info
    ) -> Annotated["Pipeline", strawberry.lazy("conveyor.graphql.types.pipeline")]:
        from conveyor.graphql.types.pipeline import Pipeline

        return await Pipeline.load(info, self.pipeline_key)

    @classmethod
    def from_row(cls, row: models.Event) -> Self:
        detail = row.detail
        return cls(
            id=row.id,
            sequence=row.id,
            kind=row.kind,
            actor=row.actor,
            created_at=row.created_at,
            issue_id=relay.GlobalID("Issue", str(row.issue_id)),
            pipeline_id=relay.GlobalID("Pipeline", str(row.pipeline_id)),
            stage_id=_global_id("Stage", row.stage_id),
            task_id=_global_id("Task", row.task_id),
            old_status=row.old_status,
            new_status=row.new_status,
            reason=None if detail is None else detail.get("reason"),
            detail=cast(JSON, detail),
            stage_key=row.stage_id,
            task_key=row.task_id,
            pipeline_key=row.pipeline_id,
        )
