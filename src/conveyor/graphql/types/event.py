from datetime import datetime
from typing import Self, cast

import strawberry
from strawberry import relay
from strawberry.scalars import JSON

from conveyor.db import models
from conveyor.graphql.types.enums import EventKind


@strawberry.type(description="An entry of the audit trail; `sequence` only ever grows.")
class Event:
    sequence: int = strawberry.field(description="Strictly increasing across all events.")
    kind: EventKind
    actor: str
    created_at: datetime
    task_id: relay.GlobalID | None = strawberry.field(description="The task it concerns, if any.")
    stage_id: relay.GlobalID | None
    old_status: str | None
    new_status: str | None
    detail: JSON | None

    @classmethod
    def from_row(cls, row: models.Event) -> Self:
        return cls(
            sequence=row.id,
            kind=row.kind,
            actor=row.actor,
            created_at=row.created_at,
            task_id=None if row.task_id is None else relay.GlobalID("Task", str(row.task_id)),
            stage_id=None if row.stage_id is None else relay.GlobalID("Stage", str(row.stage_id)),
            old_status=row.old_status,
            new_status=row.new_status,
            detail=cast(JSON, row.detail),
        )
