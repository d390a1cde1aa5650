"""Writing Event rows: the audit trail and the source of every live update."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from conveyor.db.models import Event
from conveyor.domain.statuses import EventKind

#: The channel that carries the newest sequence number to every listening process.
CHANNEL = "conveyor_events"
#: Any constant unique to Conveyor; the key of the advisory lock that orders event writers.
EVENT_ORDER_LOCK_KEY = 7_437_812_001


@dataclass(frozen=True)
class NewEvent:
    kind: EventKind
    issue_id: int
    pipeline_id: int
    stage_id: int | None = None
    task_id: int | None = None
    old_status: str | None = None
    new_status: str | None = None
    detail: dict[str, Any] | None = field(default=None)


async def record_events(
    connection: BaseDBAsyncClient, actor: str, events: Sequence[NewEvent]
) -> list[int]:
    """Append `events` in the caller's transaction and announce the newest sequence number."""
    if not events:
        return []
    # A subscriber resumes "after sequence N": a row that committed later with a smaller
    # number would be missed for good. Serialising event writers until commit makes the
    # sequence order the commit order.
    await connection.execute_query("SELECT pg_advisory_xact_lock($1)", [EVENT_ORDER_LOCK_KEY])
    sequence_numbers = []
    for event in events:
        row = await Event.create(
            using_db=connection,
            kind=event.kind,
            actor=actor,
            issue_id=event.issue_id,
            pipeline_id=event.pipeline_id,
            stage_id=event.stage_id,
            task_id=event.task_id,
            old_status=event.old_status,
            new_status=event.new_status,
            detail=event.detail,
        )
        sequence_numbers.append(row.id)
    # NOTIFY is delivered on commit only, so listeners never see a number before its row.
    await connection.execute_query("SELECT pg_notify($1, $2)", [CHANNEL, str(sequence_numbers[-1])])
    return sequence_numbers
