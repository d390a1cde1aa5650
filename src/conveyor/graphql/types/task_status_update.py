"""The messages of the taskStatusChanged subscription."""

from datetime import datetime
from typing import Self

import strawberry
from strawberry import relay

from conveyor.db import models
from conveyor.graphql.context import Info
from conveyor.graphql.types.enums import EventKind, TaskStatus
from conveyor.graphql.types.task import Task


@strawberry.interface(
    description="A message of `taskStatusChanged`: a snapshot of statuses or one change."
)
class TaskStatusUpdate:
    sequence: int = strawberry.field(
        description="The event sequence number the message is consistent with; subscribe "
        "again with `after` set to the last one you received to resume without gaps."
    )


@strawberry.type(
    description="The current statuses of every subscribed task, as of event `sequence`; "
    "sent first when the subscription asked for a snapshot."
)
class TaskStatusSnapshot(TaskStatusUpdate):
    tasks: list[Task] = strawberry.field(
        description="The subscribed tasks, by stage and position, with their statuses as of "
        "`sequence` (their other fields are read when the message is sent)."
    )


@strawberry.type(description="One task changed status.")
class TaskStatusChange(TaskStatusUpdate):
    kind: EventKind = strawberry.field(description="What the event records: a status change.")
    task_id: relay.GlobalID = strawberry.field(description="The id of the task that changed.")
    old_status: TaskStatus = strawberry.field(description="The status it left.")
    new_status: TaskStatus = strawberry.field(description="The status it entered.")
    reason: str | None = strawberry.field(description="Why, for a task that was skipped or failed.")
    actor: str = strawberry.field(description="Who made the change (a person or a worker).")
    at: datetime = strawberry.field(description="When the change was committed.")
    task_key: strawberry.Private[int]

    @strawberry.field(
        description="The task as it is when the message is sent, which may be past `newStatus`."
    )
    async def task(self, info: Info) -> Task | None:
        return await Task.load_optional(info, self.task_key)

    @classmethod
    def from_event(cls, event: models.Event) -> Self:
        assert event.task_id is not None, "a task status event names its task"
        assert event.old_status is not None, "a status change has an old status"
        assert event.new_status is not None, "and a new one"
        return cls(
            sequence=event.id,
            kind=event.kind,
            task_id=relay.GlobalID("Task", str(event.task_id)),
            old_status=TaskStatus(event.old_status),
            new_status=TaskStatus(event.new_status),
            reason=None if event.detail is None else event.detail.get("reason"),
            actor=event.actor,
            at=event.created_at,
            task_key=event.task_id,
        )
