"""The root Subscription: live changes, resumable from any sequence number."""

from collections.abc import AsyncGenerator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Annotated, TypeVar

import strawberry
from tortoise.models import Model

from conveyor.db import events as event_log
from conveyor.db import models, reads
from conveyor.db.events import EventFilter
from conveyor.domain.permissions import Operation, require
from conveyor.domain.statuses import EventKind
from conveyor.errors import invalid_input, not_found
from conveyor.events.hub import EventHub, HubSubscription
from conveyor.graphql.context import Info
from conveyor.graphql.inputs import node_key
from conveyor.graphql.live_socket import current_operation
from conveyor.graphql.shared_render import shared_rendering
from conveyor.graphql.types.event import Event
from conveyor.graphql.types.pipeline_status_change import PipelineStatusChange
from conveyor.graphql.types.task import Task
from conveyor.graphql.types.task_status_update import (
    TaskStatusChange,
    TaskStatusSnapshot,
    TaskStatusUpdate,
)

Message = TypeVar("Message")


@dataclass(frozen=True)
class _Scope:
    """A scope argument of a subscription: its name, the node type, the event's column."""

    argument: str
    model: type[Model]
    column: str


_TASK_SCOPES = (
    _Scope("pipelineId", models.Pipeline, "pipeline_id"),
    _Scope("stageId", models.Stage, "stage_id"),
    _Scope("taskId", models.Task, "task_id"),
)
_PIPELINE_SCOPES = (
    _Scope("pipelineId", models.Pipeline, "pipeline_id"),
    _Scope("issueId", models.Issue, "issue_id"),
)


def _scope_argument(noun: str) -> object:
    return strawberry.argument(description=f"Only the changes of this {noun}.")


AfterArgument = Annotated[
    int | None,
    strawberry.argument(
        description="Resume: first send every matching event after this sequence number, "
        "in order, then live ones; nothing is missed and nothing sent twice."
    ),
]


def _subscribe(
    info: Info, event_filter: EventFilter
) -> AbstractAsyncContextManager[HubSubscription]:
    """A hub subscription for the request's principal, checked again on each event."""
    return _hub(info).subscription(event_filter, info.context.acting)


def _hub(info: Info) -> EventHub:
    hub = info.context.hub
    if hub is None:
        raise RuntimeError("live updates need the application's event hub")
    return hub


async def _scope(
    scopes: tuple[_Scope, ...], values: tuple[strawberry.ID | None, ...]
) -> tuple[str, int]:
    """The event column and row id of the one scope argument given, which must exist."""
    given = [
        (scope, value) for scope, value in zip(scopes, values, strict=True) if value is not None
    ]
    if len(given) != 1:
        # Point at the first argument missing, or at the first one too many.
        field = scopes[0].argument if not given else given[1][0].argument
        names = ", ".join(scope.argument for scope in scopes)
        raise invalid_input(f"give exactly one of {names}", (field,))
    scope, global_id = given[0]
    key = node_key(global_id, scope.model.__name__, (scope.argument,))
    assert key is not None, "a global id was given"
    if key not in await reads.rows_by_id(scope.model, [key]):
        raise not_found(scope.model.__name__.lower(), (scope.argument,))
    return scope.column, key


def _check_after(after: int | None) -> None:
    if after is not None and after < 0:
        raise invalid_input("`after` is a sequence number: 0 or more", ("after",))


#: The connection_init key of the resume positions (see `pipelineActivity`).
RESUME_PARAMETER = "resume"


def _resume_position(info: Info, scope_id: strawberry.ID) -> int | None:
    """The position connection_init's `resume` gives the scope, if any: a client whose
    library reconnects on its own (graphql-ws's retry re-sends the first variables)
    evaluates its connectionParams on each connect, so it carries the newest position."""
    params = info.context.connection_params
    positions = params.get(RESUME_PARAMETER) if isinstance(params, dict) else None
    if positions is None:
        return None
    position = positions.get(str(scope_id)) if isinstance(positions, dict) else None
    if position is None:
        return None
    if not isinstance(position, int) or isinstance(position, bool) or position < 0:
        raise invalid_input(
            f"connection_init's `{RESUME_PARAMETER}` maps scope ids to sequence numbers "
            "(0 or more)",
            ("connectionParams", RESUME_PARAMETER),
        )
    return position


async def _changes(
    info: Info,
    subscription: HubSubscription,
    after: int | None,
    message_of: Callable[[models.Event], Message],
) -> AsyncGenerator[Message, None]:
    live = current_operation.get()
    sharing = None
    if live is not None:
        # Until a message is written, the client's resume position is where it started.
        live.last_written = after if after is not None else subscription.last_delivered
        sharing = shared_rendering(info, live, message_of)
    async for event in subscription.events(after, sharing):
        # A WebSocket's context lives as long as the connection: without this, nested fields
        # would show what the loaders cached for an earlier message.
        info.context.loaders.forget()
        if live is not None:
            live.sequence_in_flight = event.id
        yield message_of(event)


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="Status changes of the tasks of one pipeline, stage or task (give exactly "
        "one of the three ids), in sequence order."
    )
    async def task_status_changed(
        self,
        info: Info,
        pipeline_id: Annotated[strawberry.ID | None, _scope_argument("pipeline's tasks")] = None,
        stage_id: Annotated[strawberry.ID | None, _scope_argument("stage's tasks")] = None,
        task_id: Annotated[strawberry.ID | None, _scope_argument("task")] = None,
        after: AfterArgument = None,
        snapshot: Annotated[
            bool,
            strawberry.argument(
                description="Send first the current statuses of the tasks, tagged with the "
                "sequence number they are consistent with, then every change after it. "
                "Not with `after`."
            ),
        ] = False,
    ) -> AsyncGenerator[TaskStatusUpdate, None]:
        require(info.context.acting, Operation.READ)
        column, key = await _scope(_TASK_SCOPES, (pipeline_id, stage_id, task_id))
        _check_after(after)
        if snapshot and after is not None:
            raise invalid_input("give either `after` or `snapshot`, not both", ("snapshot",))
        event_filter = EventFilter(frozenset({EventKind.TASK_STATUS_CHANGED}), **{column: key})
        # Registered before the snapshot or the backlog is read, so that no event falls
        # between them and the live ones.
        async with _subscribe(info, event_filter) as subscription:
            if snapshot:
                taken = await event_log.task_snapshot(**{column: key})
                after = taken.sequence
                info.context.loaders.forget()
                yield TaskStatusSnapshot(
                    sequence=taken.sequence, tasks=[Task.from_row(row) for row in taken.tasks]
                )
            async for change in _changes(info, subscription, after, TaskStatusChange.from_event):
                yield change

    @strawberry.subscription(
        description="Status changes of one pipeline and its issue (give exactly one of the "
        "two ids), in sequence order."
    )
    async def pipeline_status_changed(
        self,
        info: Info,
        pipeline_id: Annotated[strawberry.ID | None, _scope_argument("pipeline")] = None,
        issue_id: Annotated[strawberry.ID | None, _scope_argument("issue's pipeline")] = None,
        after: AfterArgument = None,
    ) -> AsyncGenerator[PipelineStatusChange, None]:
        require(info.context.acting, Operation.READ)
        column, key = await _scope(_PIPELINE_SCOPES, (pipeline_id, issue_id))
        _check_after(after)
        event_filter = EventFilter(frozenset({EventKind.PIPELINE_STATUS_CHANGED}), **{column: key})
        async with _subscribe(info, event_filter) as subscription:
            async for change in _changes(
                info, subscription, after, PipelineStatusChange.from_event
            ):
                yield change

    @strawberry.subscription(
        description="Everything that happens in one pipeline (give exactly one of "
        "`pipelineId`, `issueId`), in sequence order, one `Event` per message: task status "
        "changes (skips and failures with their reason), approvals, edits, cancel requests, "
        "stage and pipeline status roll-ups, and a running task's log lines as they happen. "
        "Without `after`, a position given for the scope's id in connection_init's "
        "`resume` map resumes from there."
    )
    async def pipeline_activity(
        self,
        info: Info,
        pipeline_id: Annotated[strawberry.ID | None, _scope_argument("pipeline")] = None,
        issue_id: Annotated[strawberry.ID | None, _scope_argument("issue's pipeline")] = None,
        after: AfterArgument = None,
    ) -> AsyncGenerator[Event, None]:
        require(info.context.acting, Operation.READ)
        column, key = await _scope(_PIPELINE_SCOPES, (pipeline_id, issue_id))
        _check_after(after)
        if after is None:
            scope_id = pipeline_id if pipeline_id is not None else issue_id
            assert scope_id is not None, "_scope checked that one was given"
            after = _resume_position(info, scope_id)
        event_filter = EventFilter(frozenset(EventKind), **{column: key})
        async with _subscribe(info, event_filter) as subscription:
            async for message in _changes(info, subscription, after, Event.from_row):
                yield message

    @strawberry.subscription(
        description="What happens in every pipeline, in sequence order, one `Event` per "
        "message: the events of the `kinds` given (every kind when null). Made for lists of "
        "issues; a page about one pipeline follows `pipelineActivity`, which sends only its "
        "pipeline's events."
    )
    async def activity(
        self, info: Info, kinds: list[EventKind] | None = None, after: AfterArgument = None
    ) -> AsyncGenerator[Event, None]:
        require(info.context.acting, Operation.READ)
        _check_after(after)
        if kinds is not None and not kinds:
            raise invalid_input("give at least one kind, or null for every kind", ("kinds",))
        event_filter = EventFilter(frozenset(EventKind if kinds is None else kinds))
        async with _subscribe(info, event_filter) as subscription:
            async for message in _changes(info, subscription, after, Event.from_row):
                yield message
