"""Rendering a subscription's live events once for every subscriber of the same document.

Two subscriptions share a rendering when their document, operation, variables (but the
resume position, `after`) and caller (actor and role: `availableActions` depends on them)
are the same. A batch of events is rendered together, in one snapshot and with one read of
the rows its messages show: each message shows the rows as they are when it is rendered, at
or past its event, and their `lastSequence` says exactly how far.

A subscription whose messages are events (`pipelineActivity`, `activity`) is rendered by the
compiled read path when the compiler covers its selection: one statement builds the batch's
messages. Any other, or any doubt, is rendered by the resolvers, as a query would be.
"""

import asyncio
import inspect
import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from graphql import (
    DocumentNode,
    ExecutionResult,
    Executor,
    OperationDefinitionNode,
    VariableNode,
    execute_subscription_event,
)
from graphql.execution.values import get_variable_values
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from tortoise.transactions import in_transaction

from conveyor.db.compiled_reads import EVENT_BATCH, Uncovered
from conveyor.db.models import Event
from conveyor.db.outages import database_unavailable
from conveyor.events.shared import Sharing
from conveyor.graphql.compiled.extension import COMPILED, RESOLVERS, PlanCache, answer_json
from conveyor.graphql.compiled.plan import (
    ArgumentSource,
    Plan,
    arguments_of,
    compile_subscription_plan,
)
from conveyor.graphql.context import Context, Info
from conveyor.graphql.errors import ConveyorErrors
from conveyor.graphql.live_socket import LiveOperation

logger = logging.getLogger(__name__)

#: How many batches each path rendered in this process: {"compiled": n, "resolvers": m}.
rendered: Counter[str] = Counter()

#: The plans of subscription documents, for all the renderers of the process (a renderer is
#: made for each scope: many share one document).
_PLANS = PlanCache(256)

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
        operation = self._document.definitions[0]
        assert isinstance(operation, OperationDefinitionNode)
        variables = get_variable_values(
            self._schema, operation.variable_definitions or (), live.variables or {}
        )
        # graphql-core refused the variables when the subscription started: never here.
        assert not isinstance(variables, list), "the variables were coerced when subscribed"
        self._variables = variables
        self._plan: Plan | None = None
        if info.context.settings.compiled_reads:
            try:
                self._plan = self._compiled_plan(operation)
            except Exception as error:
                # The resolvers render whatever the compiler could not plan.
                logger.debug("not compiled (%s)", type(error).__name__)

    def _compiled_plan(self, operation: OperationDefinitionNode) -> Plan | None:
        schema, document, variables = self._schema, self._document, self._variables

        def compile_for() -> Plan:
            return compile_subscription_plan(
                schema, tuple(document.definitions), operation, variables
            )

        return _PLANS.plan(self._live.query, document, operation, variables, compile_for)

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
        if self._plan is not None:
            try:
                messages = await self._compiled(self._plan, events)
            except Exception as error:
                if database_unavailable(error):
                    raise  # the stream renders the batch again once the database answers
                # Uncovered, or a failure the resolvers will meet and report as the API does.
                logger.debug(
                    "compiled render failed (%s); the resolvers render", type(error).__name__
                )
            else:
                rendered[COMPILED] += 1
                return messages
        rendered[RESOLVERS] += 1
        return await self._resolved(events)

    async def _compiled(self, plan: Plan, events: list[Event]) -> list[bytes]:
        """The batch's messages in one statement (the compiled read path's)."""
        sequences = [event.id for event in events]

        def arguments(source: ArgumentSource | str) -> Mapping[str, Any]:
            if source == EVENT_BATCH:
                return {"sequences": sequences}
            assert isinstance(source, ArgumentSource)
            return arguments_of(source, self._variables, self._settings)

        data_json = await answer_json(
            plan, arguments, self._principal, datetime.now(UTC), generic_plan=True
        )
        ((key, _),) = plan.reads
        messages = orjson.loads(data_json)[key]
        if len(messages) != len(events):
            raise Uncovered("an event of the batch not read")
        return [orjson.dumps({"data": {key: message}}) for message in messages]

    async def _resolved(self, events: list[Event]) -> list[bytes]:
        """The batch's messages executed by graphql-core, in one snapshot."""
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
