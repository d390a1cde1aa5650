"""Rendering a subscription's live events once for every subscriber of the same document.

Two subscriptions share a rendering when their document, operation, variables (but the
resume position, `after`) and caller (actor and role: `availableActions` depends on them)
are the same. A batch of events is rendered together, in one snapshot and with one read of
the rows its messages show: each message shows the rows as they are when it is rendered, at
or past its event, and their `lastSequence` says exactly how far.
"""

import asyncio
import inspect
import json
from collections.abc import Callable
from typing import Any

from graphql import (
    DocumentNode,
    ExecutionResult,
    Executor,
    VariableNode,
    execute_subscription_event,
)
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from tortoise.transactions import in_transaction

from conveyor.db.models import Event
from conveyor.events.shared import Sharing
from conveyor.graphql.context import Context, Info
from conveyor.graphql.errors import ConveyorErrors
from conveyor.graphql.live_socket import LiveOperation

#: The subscriptions' argument that says where to resume; it does not change what is sent.
_RESUME_ARGUMENT = "after"


def _sharing_key(info: Info, live: LiveOperation) -> tuple[object, ...]:
    resume_variables = {
        argument.value.name.value
        for node in info._raw_info.field_nodes
        for argument in node.arguments or ()
        if argument.name.value == _RESUME_ARGUMENT and isinstance(argument.value, VariableNode)
    }
    variables = {
        name: value
        for name, value in (live.variables or {}).items()
        if name not in resume_variables
    }
    principal = info.context.acting
    return (
        live.query,
        live.operation_name,
        json.dumps(variables, sort_keys=True, default=str),
        principal.actor,
        principal.role,
    )


class _Renderer:
    """Renders the live events of one subscription document, for all who share it. Built
    from the first subscriber's request, it outlives that subscriber: it has a context of
    its own, made at its first render (most subscribers join a renderer already made)."""

    def __init__(
        self, info: Info, live: LiveOperation, message_of: Callable[[Event], object]
    ) -> None:
        # graphql-core's view of the field: the document and schema strawberry's Info wraps.
        raw = info._raw_info
        self._schema = raw.schema
        self._document = DocumentNode(definitions=(raw.operation, *raw.fragments.values()))
        self._live = live
        self._message_of = message_of
        self._settings = info.context.settings
        self._cipher = info.context.cipher
        self._principal = info.context.acting
        self._hub = info.context.hub
        self._executor: Executor[Context] | None = None
        self._errors = ConveyorErrors(info.context.settings)

    def _executor_for_events(self) -> Executor[Context]:
        if self._executor is None:
            context = Context(
                request=None,
                response=None,
                settings=self._settings,
                cipher=self._cipher,
                principal=self._principal,
                hub=self._hub,
            )
            executor = StrawberryGraphQLCoreExecutionContext.build(
                self._schema,
                self._document,
                context_value=context,
                raw_variable_values=self._live.variables,
                operation_name=self._live.operation_name,
            )
            assert not isinstance(executor, list), "the document was validated when subscribed"
            self._executor = executor
        return self._executor

    def _encode(self, result: ExecutionResult) -> bytes:
        payload: dict[str, Any] = {"data": result.data}
        if result.errors:
            payload["errors"] = [error.formatted for error in self._errors.format(result.errors)]
        return json.dumps(payload, separators=(",", ":")).encode()

    async def __call__(self, events: list[Event]) -> list[bytes]:
        executor = self._executor_for_events()
        # One read of the rows for the whole batch (the loaders batch across its messages),
        # in one snapshot: each `lastSequence` says exactly which state a message shows.
        executor.context_value.loaders.forget()
        async with in_transaction() as connection:
            await connection.execute_query(
                "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"
            )
            results = [
                execute_subscription_event(
                    executor.build_per_event_executor(self._message_of(event))
                )
                for event in events
            ]
            pending = [result for result in results if inspect.isawaitable(result)]
            done = iter(await asyncio.gather(*pending))
        return [
            self._encode(next(done) if inspect.isawaitable(result) else result)
            for result in results
        ]


def shared_rendering(
    info: Info, live: LiveOperation, message_of: Callable[[Event], object]
) -> Sharing:
    """How the subscription `live` shares the rendering of its live events."""
    return Sharing(
        key=_sharing_key(info, live),
        render=_Renderer(info, live, message_of),
        deliver=live.deliver,
        seat=live.seat,
    )
