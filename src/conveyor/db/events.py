"""Reading the event log: the source of live updates and of their replay."""

from dataclasses import dataclass

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from conveyor.db.models import Event, Task
from conveyor.domain.statuses import EventKind


@dataclass(frozen=True)
class EventFilter:
    """Which events a subscriber wants: of these kinds, about this issue, pipeline, stage or
    task (each None matches any)."""

    kinds: frozenset[EventKind]
    issue_id: int | None = None
    pipeline_id: int | None = None
    stage_id: int | None = None
    task_id: int | None = None

    def matches(self, event: Event) -> bool:
        return (
            event.kind in self.kinds
            and (self.issue_id is None or event.issue_id == self.issue_id)
            and (self.pipeline_id is None or event.pipeline_id == self.pipeline_id)
            and (self.stage_id is None or event.stage_id == self.stage_id)
            and (self.task_id is None or event.task_id == self.task_id)
        )


async def latest_event_sequence(connection: BaseDBAsyncClient | None = None) -> int:
    """The newest committed sequence number (0 while the log is empty)."""
    latest = await Event.all().using_db(connection).order_by("-id").only("id").first()
    return 0 if latest is None else latest.id


async def events_after(
    sequence: int, limit: int, event_filter: EventFilter | None = None
) -> list[Event]:
    """The first `limit` events (matching the filter) after `sequence`, in sequence order."""
    queryset = Event.filter(id__gt=sequence)
    if event_filter is not None:
        queryset = queryset.filter(kind__in=list(event_filter.kinds))
        for column in ("issue_id", "pipeline_id", "stage_id", "task_id"):
            value = getattr(event_filter, column)
            if value is not None:
                queryset = queryset.filter(**{column: value})
    return await queryset.order_by("id").limit(limit)


@dataclass(frozen=True)
class TaskSnapshot:
    """Tasks as they were when event `sequence` was the newest one committed."""

    sequence: int
    tasks: list[Task]


async def task_snapshot(
    *, pipeline_id: int | None = None, stage_id: int | None = None, task_id: int | None = None
) -> TaskSnapshot:
    """The tasks in scope and the sequence number their statuses are consistent with."""
    async with in_transaction() as connection:
        # One snapshot for both reads: every status change commits with its event, so the
        # statuses read are exactly those after event `sequence` and before the next one.
        await connection.execute_query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        sequence = await latest_event_sequence(connection)
        queryset = Task.all().using_db(connection)
        if pipeline_id is not None:
            queryset = queryset.filter(pipeline_id=pipeline_id)
        if stage_id is not None:
            queryset = queryset.filter(stage_id=stage_id)
        if task_id is not None:
            queryset = queryset.filter(id=task_id)
        tasks = await queryset.order_by("stage__position", "position")
    return TaskSnapshot(sequence=sequence, tasks=tasks)
