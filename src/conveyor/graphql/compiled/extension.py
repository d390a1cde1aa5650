"""The compiled read path: a query the compiler covers is answered by one SQL statement in
which PostgreSQL builds the response, instead of graphql-core resolving field by field.

It runs as the last step before execution (`on_execute`), after parsing, validation, the
document limits, the cost, the rate limits and authentication, which so apply to both paths
alike. Setting `execution_context.result` there makes strawberry skip graphql-core's
execution (strawberry 0.341.2, `Schema._execute_operation`). Anything not covered, or any
doubt, leaves the result unset: the resolvers answer the whole operation.
"""

import gc
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from graphql import (
    DirectiveNode,
    DocumentNode,
    ExecutionResult,
    OperationDefinitionNode,
    OperationType,
    VariableNode,
    Visitor,
    visit,
)
from graphql.execution.values import VariableValues, get_variable_values
from graphql.utilities import get_operation_ast
from strawberry.extensions import SchemaExtension

from conveyor.db.compiled_reads import Arguments, Uncovered, fetch_data_json, statement
from conveyor.domain.permissions import Principal
from conveyor.graphql.bounded_cache import BoundedCache
from conveyor.graphql.compiled.derived import DerivedFields, SplicedFields
from conveyor.graphql.compiled.plan import Plan, arguments_of, compile_plan
from conveyor.graphql.context import Context

# COMPILED and RESOLVERS are re-exported: callers count `served` by them.
from conveyor.operations.requests import COMPILED as COMPILED
from conveyor.operations.requests import RESOLVERS as RESOLVERS
from conveyor.operations.requests import current_request

logger = logging.getLogger(__name__)

#: How many operations each path served in this process: {"compiled": n, "resolvers": m}.
served: Counter[str] = Counter()


@dataclass(frozen=True)
class EncodedData:
    """A response's `data`, already JSON: the HTTP view sends it as it is."""

    json: bytes


class _DirectiveVariables(Visitor):
    """The variables @skip/@include read: the plan depends on their values."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def enter_directive(self, node: DirectiveNode, *_args: object) -> None:
        for argument in node.arguments or ():
            if isinstance(argument.value, VariableNode):
                self.names.append(argument.value.name.value)


class PlanCache:
    """Plans by document text, operation name and the values of the variables @skip and
    @include read; None for an operation the compiler does not cover. Least recently used
    entries go first past `size`."""

    def __init__(self, size: int) -> None:
        self._directive_variables: BoundedCache[Hashable, tuple[str, ...]] = BoundedCache(size)
        self._plans: BoundedCache[Hashable, Plan | None] = BoundedCache(size)

    def plan(
        self,
        text: str,
        document: DocumentNode,
        operation: OperationDefinitionNode,
        variables: VariableValues,
        compile_plan_for: Callable[[], Plan],
    ) -> Plan | None:
        name = operation.name.value if operation.name else None

        def directive_variables() -> tuple[str, ...]:
            finder = _DirectiveVariables()
            visit(document, finder)
            return tuple(dict.fromkeys(finder.names))

        def compiled() -> Plan | None:
            try:
                return compile_plan_for()
            except Uncovered as reason:
                logger.debug("not compiled (%s)", reason)
                return None

        names = self._directive_variables.get((text, name), directive_variables)
        values = tuple(repr(variables.coerced.get(variable)) for variable in names)
        return self._plans.get((text, name, values), compiled)


class CompiledReads(SchemaExtension):
    """Answers the queries the compiler covers, as the module says."""

    def __init__(self, cache: PlanCache) -> None:
        self.cache = cache

    async def on_execute(self) -> AsyncIterator[None]:
        execution_context = self.execution_context
        try:
            result = await self._answer()
        except Uncovered as reason:
            logger.debug("answered by the resolvers (%s)", reason)
            result = None
        except Exception as error:
            # Raised here, an error would reach the client as a request error, its text
            # included; the resolvers meet the same failure and report it as the API does
            # (INTERNAL, logged under a correlation id).
            logger.debug(
                "the compiled read failed (%s); the resolvers answer", type(error).__name__
            )
            result = None
        path = RESOLVERS if result is None else COMPILED
        served[path] += 1
        record = current_request.get()
        if record is not None:
            # For the process's metrics (conveyor_graphql_reads_total).
            record.read_path = path
        logger.debug("operation %r served by %s", execution_context.operation_name, path)
        if result is not None:
            execution_context.result = result
        yield

    async def _answer(self) -> ExecutionResult | None:
        execution_context = self.execution_context
        context = execution_context.context
        document = execution_context.graphql_document
        text = execution_context.query
        if not isinstance(context, Context) or context.principal is None:
            return None
        if document is None or text is None:
            return None
        operation = get_operation_ast(document, execution_context.operation_name)
        if operation is None or operation.operation is not OperationType.QUERY:
            return None
        graphql_schema = self.execution_context.schema._schema
        coerced = get_variable_values(
            graphql_schema, operation.variable_definitions or (), execution_context.variables or {}
        )
        if isinstance(coerced, list):
            return None  # graphql-core words the refusal
        variables = coerced

        def compile_for() -> Plan:
            return compile_plan(graphql_schema, tuple(document.definitions), operation, variables)

        plan = self.cache.plan(text, document, operation, variables, compile_for)
        if plan is None:
            return None
        data_json = await answer_json(
            plan,
            lambda source: arguments_of(source, variables, context.settings),
            context.principal,
            context.now,
        )
        # Over HTTP the view sends encoded data as it is (a WebSocket message and an
        # in-process caller get the dict they always get).
        data: Any = (
            EncodedData(data_json) if context.response is not None else orjson.loads(data_json)
        )
        return ExecutionResult(data=data)


async def answer_json(
    plan: Plan,
    arguments: Arguments,
    principal: Principal,
    now: datetime,
    *,
    generic_plan: bool = False,
) -> bytes:
    """The JSON of the `data` of `plan` for these arguments, read in one statement (see
    `fetch_data_json` for `generic_plan`), its derived fields filled in for `principal` as
    of `now`."""
    built = statement(
        plan.reads, arguments, spliced=plan.spliced and bool(plan.walked), texts=plan.texts
    )
    data_json = await fetch_data_json(built.sql, built.parameters, generic_plan=generic_plan)
    if not plan.walked:
        return data_json.encode()
    with _no_garbage_collection():
        derived = DerivedFields(plan, principal, now)
        if built.markers is not None:
            return SplicedFields(built.markers, derived).answer(data_json)
        data = orjson.loads(data_json)
        derived.fill(data)
        return orjson.dumps(data)


@contextmanager
def _no_garbage_collection() -> Iterator[None]:
    """The collector off while a response's tree is built and filled in: a large tree makes
    hundreds of thousands of objects, none of them in a cycle, and each full collection
    they trigger walks the whole heap (measured: parsing the 5,000-task page took 11 ms
    without collections, up to 54 ms with them). Nothing awaits inside, so no other request
    runs meanwhile."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
