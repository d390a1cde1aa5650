"""The messages of the pipelineStatusChanged subscription."""

from datetime import datetime
from typing import Self

import strawberry
from strawberry import relay

from conveyor.db import models
from conveyor.graphql.context import Info
from conveyor.graphql.types.enums import EventKind, PipelineStatus
from conveyor.graphql.types.pipeline import Pipeline


@strawberry.type(description="A pipeline (and so its issue) changed status.")
class PipelineStatusChange:
    sequence: int = strawberry.field(
        description="The event's sequence number; subscribe again with `after` set to the "
        "last one you received to resume without gaps."
    )
    kind: EventKind = strawberry.field(description="What the event records: a status change.")
    pipeline_id: relay.GlobalID = strawberry.field(description="The pipeline that changed.")
    issue_id: relay.GlobalID = strawberry.field(description="The pipeline's issue.")
    old_status: PipelineStatus = strawberry.field(description="The status it left.")
    new_status: PipelineStatus = strawberry.field(description="The status it entered.")
    actor: str = strawberry.field(description="Who made the change (a person or a worker).")
    at: datetime = strawberry.field(description="When the change was committed.")
    pipeline_key: strawberry.Private[int]

    @strawberry.field(description="The pipeline as it is when the message is sent.")
    async def pipeline(self, info: Info) -> Pipeline | None:
        return await Pipeline.load_optional(info, self.pipeline_key)

    @classmethod
    def from_event(cls, event: models.Event) -> Self:
        assert event.old_status is not None, "a status change has an old status"
        assert event.new_status is not None, "and a new one"
        return cls(
            sequence=event.id,
            kind=event.kind,
            pipeline_id=relay.GlobalID("Pipeline", str(event.pipeline_id)),
            issue_id=relay.GlobalID("Issue", str(event.issue_id)),
            old_status=PipelineStatus(event.old_status),
            new_status=PipelineStatus(event.new_status),
            actor=event.actor,
            at=event.created_at,
            pipeline_key=event.pipeline_id,
        )
