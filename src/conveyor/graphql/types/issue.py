from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Self

import strawberry
from strawberry import relay

from conveyor.db import models
from conveyor.graphql.context import Info
from conveyor.graphql.types.enums import PipelineStatus
from conveyor.graphql.types.event import Event
from conveyor.graphql.types.node import LoadedNode

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

    @strawberry.field(description="The audit trail of this issue, oldest first.")
    async def events(self, info: Info) -> list[Event]:
        return [
            Event.from_row(row) for row in await info.context.loaders.events_by_issue.load(self.id)
        ]

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
