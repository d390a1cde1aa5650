"""The event log, written and read: the audit trail and the source of every live update."""

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.connection import get_connection
from tortoise.fields.data import JSON_DUMPS
from tortoise.transactions import in_transaction

from conveyor.db.models import Event, Task
from conveyor.domain.statuses import EventKind

#: The channel that carries the newest sequence number to every listening process.
CHANNEL = "conveyor_events"
#: The same, for what the workers write themselves (a claim, the end of an attempt and the
#: roll-ups it brings, a task's log lines, checks and dry runs recorded): hundreds a second
#: under load, and nothing a listener waiting only for people's changes (the checks: a new
#: issue, an edited statement, a dry run asked for) needs to wake up for.
RUNNER_CHANNEL = "conveyor_events_runner"
#: Any constant unique to Conveyor; the key of the advisory lock that orders event writers.
EVENT_ORDER_LOCK_KEY = 7_437_812_001


#: Where the sequences written in the current context are noted (see `noting_sequences`).
_noted_sequences: ContextVar[list[int] | None] = ContextVar("noted_sequences", default=None)


@contextmanager
def noting_sequences() -> Iterator[list[int]]:
    """A list that receives the sequence numbers of every event written within the block (in
    this context), so that an answer can say which sequence its commit reached."""
    noted: list[int] = []
    token = _noted_sequences.set(noted)
    try:
        yield noted
    finally:
        _noted_sequences.reset(token)


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
    connection: BaseDBAsyncClient,
    actor: str,
    events: Sequence[NewEvent],
    channel: str = CHANNEL,
) -> list[int]:
    """Append `events` in the caller's transaction and announce the newest sequence number
    on `channel`."""
    if not events:
        return []
    # A subscriber resumes "after sequence N": a row that committed later with a smaller
    # number would be missed for good. Serialising event writers until commit makes the
    # sequence order the commit order: the lock is taken in the statement's first step,
    # before the insert draws a number (each inserted row is joined with the lock's one row),
    # and held until commit, every other writer of events waiting for it meanwhile. Lock,
    # rows and NOTIFY in one statement: one round trip where three were.
    rows = await connection.execute_query_dict(
        """
        WITH ordered AS (
            SELECT pg_advisory_xact_lock($10) AS held
        ), inserted AS (
            INSERT INTO event (kind, actor, issue_id, pipeline_id, stage_id, task_id,
                old_status, new_status, detail, created_at)
            SELECT e.kind, $1, e.issue_id, e.pipeline_id, e.stage_id, e.task_id, e.old_status,
                e.new_status, e.detail, now()
            FROM ordered, unnest($2::text[], $3::int[], $4::int[], $5::int[], $6::int[],
                $7::text[], $8::text[], $9::jsonb[]) WITH ORDINALITY
                AS e(kind, issue_id, pipeline_id, stage_id, task_id, old_status, new_status,
                     detail, n)
            ORDER BY e.n
            RETURNING id
        ), notified AS (
            -- NOTIFY is delivered on commit only, so listeners never see a number before
            -- its row.
            SELECT pg_notify($11, max(id)::text) AS sent FROM inserted
        )
        SELECT id, (SELECT count(*) FROM notified) AS notified FROM inserted
        """,
        [
            actor,
            [event.kind.value for event in events],
            [event.issue_id for event in events],
            [event.pipeline_id for event in events],
            [event.stage_id for event in events],
            [event.task_id for event in events],
            [event.old_status for event in events],
            [event.new_status for event in events],
            [None if event.detail is None else JSON_DUMPS(event.detail) for event in events],
            EVENT_ORDER_LOCK_KEY,
            channel,
        ],
    )
    sequence_numbers = sorted(row["id"] for row in rows)
    noted = _noted_sequences.get()
    if noted is not None:
        noted.extend(sequence_numbers)
    return sequence_numbers


async def record_task_logs(actor: str, entries_by_task: Mapping[int, list[dict[str, Any]]]) -> None:
    """One TASK_LOG event per task with its new log entries, all in one transaction: a
    worker's running tasks cost one commit and one NOTIFY per batch, not per line."""
    if not entries_by_task:
        return
    async with in_transaction() as connection:
        places = await (
            Task.filter(id__in=list(entries_by_task))
            .using_db(connection)
            .values_list("id", "stage_id", "pipeline_id", "pipeline__issue_id")
        )
        await record_events(
            connection,
            actor,
            [
                NewEvent(
                    EventKind.TASK_LOG,
                    issue_id=issue_id,
                    pipeline_id=pipeline_id,
                    stage_id=stage_id,
                    task_id=task_id,
                    detail={"entries": entries_by_task[task_id]},
                )
                for task_id, stage_id, pipeline_id, issue_id in sorted(places)
            ],
            RUNNER_CHANNEL,
        )


@dataclass(frozen=True)
class EventFilter:
    """Which events a subscriber wants: of these kinds, about this issue, pipeline, stage or
    task (each None matches any)."""

    kinds: frozenset[EventKind]
    issue_id: int | None = None
    pipeline_id: int | None = None
    stage_id: int | None = None
    task_id: int | None = None

    def matches(self, event: "Event | EventHeader") -> bool:
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


class EventHeader:
    """An event as the hub reads it: what a filter looks at, and the row, built on first use.

    The hub reads every event of a burst before any event after it: building the rows of
    7,000 events cost ~50 ms of that wait (a tenth of it to read their routing), so each row
    is built by whoever hands it over, a batch at a time, and once for all who are given it.
    """

    __slots__ = ("_record", "_row", "id", "issue_id", "kind", "pipeline_id", "stage_id", "task_id")

    def __init__(self, record: Mapping[str, Any]) -> None:
        self.id: int = record["id"]
        self.kind = EventKind(record["kind"])
        self.issue_id: int | None = record["issue_id"]
        self.pipeline_id: int | None = record["pipeline_id"]
        self.stage_id: int | None = record["stage_id"]
        self.task_id: int | None = record["task_id"]
        self._record: Mapping[str, Any] | None = record
        self._row: Event | None = None

    def row(self) -> Event:
        if self._row is None:
            assert self._record is not None
            self._row = Event._init_from_db(**self._record)
            self._record = None
        return self._row


async def event_headers_after(sequence: int, limit: int) -> list[EventHeader]:
    """The first `limit` events after `sequence`, in sequence order, their rows unbuilt."""
    return [EventHeader(record) for record in await _event_records_after(sequence, limit, None)]


async def events_after(
    sequence: int, limit: int, event_filter: EventFilter | None = None
) -> list[Event]:
    """The first `limit` events (matching the filter) after `sequence`, in sequence order."""
    return [
        Event._init_from_db(**record)
        for record in await _event_records_after(sequence, limit, event_filter)
    ]


async def _event_records_after(
    sequence: int, limit: int, event_filter: EventFilter | None
) -> list[Mapping[str, Any]]:
    # Read without the ORM's query building and row handling: the hub reads every event of
    # a burst (7,000 rows: ~130 ms through the ORM, ~60 ms so) before any event after it.
    conditions = ["id > $1"]
    parameters: list[Any] = [sequence, limit]
    if event_filter is not None:
        parameters.append([kind.value for kind in event_filter.kinds])
        conditions.append(f"kind = ANY(${len(parameters)}::text[])")
        for column in ("issue_id", "pipeline_id", "stage_id", "task_id"):
            value = getattr(event_filter, column)
            if value is not None:
                parameters.append(value)
                conditions.append(f"{column} = ${len(parameters)}")
    columns = ", ".join(Event._meta.fields_db_projection.values())
    sql = f"SELECT {columns} FROM event WHERE {' AND '.join(conditions)} ORDER BY id LIMIT $2"
    client: Any = get_connection("default")
    async with client.acquire_connection() as connection:
        # Logged as tortoise logs each statement it sends, for whoever counts them.
        client.log.debug("%s: %s", sql, parameters)
        records: list[Mapping[str, Any]] = await connection.fetch(sql, *parameters)
    return records


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
