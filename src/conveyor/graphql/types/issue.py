from bisect import bisect_right
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Self

import strawberry
from strawberry import relay

from conveyor.db import models
from conveyor.graphql.context import Info
from conveyor.graphql.types.enums import PipelineStatus
from conveyor.graphql.types.event import Event
from conveyor.graphql.types.node import LoadedNode
from conveyor.graphql.types.pagination import bounded

if TYPE_CHECKING:
    from conveyor.graphql.types.pipeline import Pipeline


@strawberry.type(description="The collaboration record of a change; it owns one pipeline.")
class Issue(LoadedNode):
    loader_name = "issue"

    id: relay.NodeID[int]
    title: str
    description: str
    creator: str = strawberry.field(description="Who opened the issue.")
    created_at: datetime
    updated_at: datetime

    @strawberry.field(description="The pipeline of this issue.")
    async def pipeline(
        self, info: Info
    ) -> Annotated["Pipeline", strawberry.lazy("conveyor.graphql.types.pipeline")]:
        from conveyor.graphql.types.pipeline import Pipeline

        row = await info.context.loaders.pipeline_by_issue.load(self.id)
        assert row is not None, "every issue has a pipeline"
        return Pipeline.from_row(row)

    @strawberry.field(description="The issue's status: always its pipeline's status.")
    async def status(self, info: Info) -> PipelineStatus:
        row = await info.context.loaders.pipeline_by_issue.load(self.id)
        assert row is not None
        return row.status

    @strawberry.field(
        description="The audit trail of this issue, oldest first: `first` events (default "
        "CONVEYOR_DEFAULT_PAGE_SIZE, 20; at most CONVEYOR_MAX_PAGE_SIZE, 100) after the one "
        "numbered `afterSequence` (the last `sequence` of the previous page)."
    )
    async def events(
        self, info: Info, first: int | None = None, after_sequence: int | None = None
    ) -> list[Event]:
        rows = await info.context.loaders.events_by_issue.load(self.id)
        sequences = [row.id for row in rows]
        start = 0 if after_sequence is None else bisect_right(sequences, after_sequence)
        return [Event.from_row(row) for row in bounded(rows, first, start, info.context.settings)]

    @classmethod
    def from_row(cls, row: models.Issue) -> Self:
        return cls(
            id=row.id,
            title=row.title,
            description=row.description,
            creator=row.creator,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
