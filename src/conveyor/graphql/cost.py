"""What a document asks of the server, measured before it runs: cost, depth and aliases.

Cost: every field costs 1. A field that returns a Relay connection (one with a `first` or
`last` argument) multiplies the cost of everything inside it by the page it asks for: the
value of `first`/`last` (a literal, or a variable's value), else the default page size, at
most the largest page size, and at least 1 (a page of 0 items still resolves `pageInfo` and
`totalCount`). So `{ issues(first: 10) { edges { node { id } } } }` costs
1 + 10 * (1 + 1 + 1) = 31; `nodes(ids:)` multiplies likewise, by the number of ids. Plain
lists (`Issue.events`, `Pipeline.stages`, `Task.runs`, ...) are not multiplied: they cannot be
paged, their length is set by the data, and a client cannot make them longer by asking. Fields
under `@skip`/`@include` count as if included: the cost is an upper bound known before execution.

Depth: the most fields nested inside one another (`{ issues { edges { node { title } } } }`
is 3; introspection fields do not count). Aliases: every alias, once for each place its
fragment is spread.

Fragments are expanded, each measured once: strawberry's depth and alias limiters walk a
fragment again at every spread, so a kilobyte of fragments each spreading the next twice kept
the server busy for minutes; here the walk is as long as the document. A spread that closes a
cycle (which validation refuses anyway) counts nothing instead of looping.
"""

from collections.abc import AsyncIterator, Hashable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLNamedType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    ListValueNode,
    NullValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValueNode,
    VariableNode,
    get_named_type,
    is_composite_type,
)
from graphql.utilities import get_operation_ast
from strawberry.extensions import SchemaExtension

from conveyor.errors import ErrorCode
from conveyor.graphql.bounded_cache import BoundedCache
from conveyor.graphql.context import Context
from conveyor.graphql.errors import (
    QUERY_TOO_COSTLY,
    QUERY_TOO_DEEP,
    TOO_MANY_ALIASES,
    limit_exceeded,
)
from conveyor.graphql.validation_cache import PerRequestRule
from conveyor.settings import Settings

#: The arguments that make a field a connection: they say how many items a page holds.
PAGE_ARGUMENTS = ("first", "last")
#: Fields like `nodes(ids:)` multiply what is inside them by the number of ids.
IDS_ARGUMENT = "ids"


@dataclass(frozen=True)
class Measure:
    """What a selection set asks for, with its fragments expanded."""

    cost: int = 0
    depth: int = 0
    aliases: int = 0

    def beside(self, other: "Measure") -> "Measure":
        """The measure of two selections side by side."""
        return Measure(
            self.cost + other.cost, max(self.depth, other.depth), self.aliases + other.aliases
        )


class _Walk:
    """Measures the operations of one document, for one set of variable values."""

    def __init__(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        variables: Mapping[str, Any],
        variable_defaults: Mapping[str, ValueNode | None],
        settings: Settings,
    ) -> None:
        self.schema = schema
        self.fragments = {
            definition.name.value: definition
            for definition in document.definitions
            if isinstance(definition, FragmentDefinitionNode)
        }
        self.variables = variables
        self.variable_defaults = variable_defaults
        self.settings = settings
        self.measured_fragments: dict[str, Measure] = {}
        self.entered_fragments: set[str] = set()

    def operation(self, operation: OperationDefinitionNode) -> Measure:
        return self.selections(
            operation.selection_set, self.schema.get_root_type(operation.operation)
        )

    def selections(
        self, selection_set: SelectionSetNode, parent: GraphQLNamedType | None
    ) -> Measure:
        measure = Measure()
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                measure = measure.beside(self.field(selection, parent))
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                measure = measure.beside(
                    self.selections(
                        selection.selection_set,
                        self.schema.get_type(condition.name.value) if condition else parent,
                    )
                )
            elif isinstance(selection, FragmentSpreadNode):
                measure = measure.beside(self.fragment(selection.name.value))
        return measure

    def field(self, node: FieldNode, parent: GraphQLNamedType | None) -> Measure:
        # An unknown field (which validation refuses) costs 1, like its fields inside.
        definition = (
            self.schema.get_field(parent, node.name.value) if is_composite_type(parent) else None
        )
        alias = 1 if node.alias else 0
        if node.selection_set is None:
            return Measure(cost=1, aliases=alias)
        inside = self.selections(
            node.selection_set, get_named_type(definition.type) if definition else None
        )
        page = 1
        if definition is not None and any(name in definition.args for name in PAGE_ARGUMENTS):
            page = self.page_size(node)
        elif definition is not None and IDS_ARGUMENT in definition.args:
            page = self.id_count(node)
        return Measure(
            cost=1 + page * inside.cost,
            depth=0 if node.name.value.startswith("__") else 1 + inside.depth,
            aliases=alias + inside.aliases,
        )

    def fragment(self, name: str) -> Measure:
        if name in self.measured_fragments:
            return self.measured_fragments[name]
        definition = self.fragments.get(name)
        if definition is None or name in self.entered_fragments:
            return Measure()
        self.entered_fragments.add(name)
        measure = self.selections(
            definition.selection_set, self.schema.get_type(definition.type_condition.name.value)
        )
        self.measured_fragments[name] = measure
        return measure

    def page_size(self, node: FieldNode) -> int:
        requested = [
            size
            for argument in node.arguments or ()
            if argument.name.value in PAGE_ARGUMENTS
            and (size := self.requested_size(argument.value)) is not None
        ]
        size = max(requested) if requested else self.settings.default_page_size
        return min(max(size, 1), self.settings.max_page_size)

    def id_count(self, node: FieldNode) -> int:
        """How many objects a field like `nodes(ids:)` asks for: a list as long as it likes."""
        for argument in node.arguments or ():
            if argument.name.value != IDS_ARGUMENT:
                continue
            value = argument.value
            if isinstance(value, ListValueNode):
                return max(len(value.values), 1)
            if isinstance(value, VariableNode):
                given = self.variables.get(value.name.value)
                return max(len(given), 1) if isinstance(given, list) else 1
        return 1

    def requested_size(self, value: ValueNode | None) -> int | None:
        """The page size `value` asks for; None for the default page size. A value that is
        no integer (refused later, by validation or by the variable's coercion) counts as
        the largest page."""
        if value is None or isinstance(value, NullValueNode):
            return None
        if isinstance(value, IntValueNode):
            # Past the largest page anyway; and Python refuses to convert very long ones.
            return int(value.value) if len(value.value) < 10 else self.settings.max_page_size
        if isinstance(value, VariableNode):
            name = value.name.value
            if name not in self.variables:
                return self.requested_size(self.variable_defaults.get(name))
            given = self.variables[name]
            if given is None:
                return None
            if isinstance(given, int) and not isinstance(given, bool):
                return given
        return self.settings.max_page_size


def measure_operations(
    schema: GraphQLSchema,
    document: DocumentNode,
    executed: OperationDefinitionNode | None,
    variables: Mapping[str, Any] | None,
    settings: Settings,
) -> dict[OperationDefinitionNode, Measure]:
    """Every operation of `document` measured in one walk, as the module says. Depth and
    aliases do not depend on variables; the cost, which does, is that of the executed
    operation with `variables` and the executed operation's variable defaults."""
    defaults = {
        definition.variable.name.value: definition.default_value
        for definition in (executed.variable_definitions if executed is not None else None) or ()
    }
    walk = _Walk(schema, document, {} if variables is None else variables, defaults, settings)
    return {
        operation: walk.operation(operation)
        for operation in document.definitions
        if isinstance(operation, OperationDefinitionNode)
    }


class _ReadVariables(Mapping[str, Any]):
    """Variable values that remember which of them were looked at."""

    def __init__(self, given: Mapping[str, Any]) -> None:
        self.given = given
        self.read: dict[str, None] = {}

    def __getitem__(self, name: str) -> Any:
        self.read[name] = None
        return self.given[name]

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str):
            self.read[name] = None
        return name in self.given

    def __iter__(self) -> Iterator[str]:
        self.read.update(dict.fromkeys(self.given))
        return iter(self.given)

    def __len__(self) -> int:
        return len(self.given)


_ABSENT = object()


class MeasuredDocuments:
    """`measure_operations`' answers by document text and executed operation, and the values
    of the variables its cost read (the names it reads follow from the document alone): a
    request that sends a document again is measured again only if those values differ."""

    def __init__(self, size: int) -> None:
        self._names: BoundedCache[Hashable, tuple[str, ...]] = BoundedCache(size)
        self._measures: BoundedCache[Hashable, tuple[Measure, ...]] = BoundedCache(size)

    def measure(
        self,
        schema: GraphQLSchema,
        text: str,
        document: DocumentNode,
        executed: OperationDefinitionNode | None,
        variables: Mapping[str, Any] | None,
        settings: Settings,
    ) -> list[tuple[OperationDefinitionNode, Measure]]:
        """Each operation of the document with its measure, in the document's order (pairs,
        not a dict: a syntax node hashes its whole subtree, each time)."""
        operations = [
            definition
            for definition in document.definitions
            if isinstance(definition, OperationDefinitionNode)
        ]
        position = None if executed is None else operations.index(executed)
        given = variables or {}
        names = self._names.find((text, position))
        if names is None:
            read = _ReadVariables(given)
            measures = measure_operations(schema, document, executed, read, settings)
            names = tuple(read.read)
            self._names.put((text, position), names)
            values = tuple(repr(given.get(name, _ABSENT)) for name in names)
            self._measures.put(
                (text, position, values), tuple(measures[operation] for operation in operations)
            )
            return list(measures.items())
        values = tuple(repr(given.get(name, _ABSENT)) for name in names)
        found = self._measures.get(
            (text, position, values),
            lambda: tuple(measure_operations(schema, document, executed, given, settings).values()),
        )
        return list(zip(operations, found, strict=True))


def _operation_called(operation: OperationDefinitionNode) -> str:
    return f"operation '{operation.name.value}'" if operation.name else "the operation"


class DocumentLimits(SchemaExtension):
    """Refuses documents past the limits of `settings`: an operation nesting fields deeper
    than `max_query_depth` (QUERY_TOO_DEEP), a document with more than `max_aliases` aliases
    (TOO_MANY_ALIASES), and an executed operation (query, mutation or subscription) costing
    more than `max_query_cost` (QUERY_TOO_COSTLY), whose cost it records on the request's
    Context (`query_cost`).

    The limits are checked by a validation rule, so a refusal is one more validation error.
    graphql-core gives validation rules no variable values, which the cost needs: the rule
    finds the request's execution context through this extension, while it validates."""

    def __init__(self, settings: Settings, measured: MeasuredDocuments) -> None:
        self.settings = settings
        self.measured = measured

    def on_operation(self) -> Iterator[None]:
        self.execution_context.validation_rules = (
            *self.execution_context.validation_rules,
            _DocumentLimitsRule,
        )
        yield

    def on_validate(self) -> Iterator[None]:
        # graphql-core makes a rule from the validation context alone: the rule finds the
        # request's extension here (a class made for each request cost more than the rule).
        reset = _validating.set(self)
        try:
            yield
        finally:
            _validating.reset(reset)

    async def on_execute(self) -> AsyncIterator[None]:
        # Only an operation that passed validation spends the token's allowance: here,
        # before it runs, since the (shared) counters are asynchronous and validation is not.
        # A refusal raised here ends the operation, a subscription's too, before it starts.
        context = self.execution_context.context
        if isinstance(context, Context):
            limited = await context.spend(context.query_cost)
            if limited is not None:
                raise limit_exceeded(
                    ErrorCode.RATE_LIMITED,
                    limited.first.message,
                    limited.allowance.limit,
                    **limited.details,
                )
        yield


_validating: ContextVar[DocumentLimits] = ContextVar("document_limits_validating")


class _DocumentLimitsRule(PerRequestRule):
    def __init__(self, context: ValidationContext) -> None:
        super().__init__(context)
        limits = _validating.get()
        self.execution_context = limits.execution_context
        self.settings = limits.settings
        self.measured = limits.measured

    # On leaving the document: graphql-core has then checked that fragments do not nest too
    # deep for the walk's recursion.
    def leave_document(self, node: DocumentNode, *_args: object) -> None:
        execution_context = self.execution_context
        executed = get_operation_ast(node, execution_context.operation_name)
        text = execution_context.query
        measures = (
            list(
                measure_operations(
                    self.context.schema, node, executed, execution_context.variables, self.settings
                ).items()
            )
            if text is None
            else self.measured.measure(
                self.context.schema,
                text,
                node,
                executed,
                execution_context.variables,
                self.settings,
            )
        )
        self.check_depth_and_aliases(measures)
        for operation, measure in measures:
            if operation is executed:
                self.check_cost(executed, measure.cost)

    def check_depth_and_aliases(
        self, measures: list[tuple[OperationDefinitionNode, Measure]]
    ) -> None:
        settings = self.settings
        aliases = 0
        for operation, measure in measures:
            aliases += measure.aliases
            limit = settings.max_query_depth
            if measure.depth > limit:
                self.report_error(
                    limit_exceeded(
                        QUERY_TOO_DEEP,
                        f"{_operation_called(operation)} nests fields more than "
                        f"{limit} level{'s' if limit != 1 else ''} deep, the most this "
                        "server allows; ask for less at once",
                        limit,
                    )
                )
        if aliases > settings.max_aliases:
            self.report_error(
                limit_exceeded(
                    TOO_MANY_ALIASES,
                    f"the document uses {aliases} aliases; this server allows at most "
                    f"{settings.max_aliases}",
                    settings.max_aliases,
                    count=aliases,
                )
            )

    def check_cost(self, executed: OperationDefinitionNode, cost: int) -> None:
        settings = self.settings
        context = self.execution_context.context
        if isinstance(context, Context):
            context.query_cost = cost
        if cost > settings.max_query_cost:
            self.report_error(
                limit_exceeded(
                    QUERY_TOO_COSTLY,
                    f"{_operation_called(executed)} costs {cost}; this server allows at "
                    f"most {settings.max_query_cost} (each field counts 1, and "
                    "everything inside a connection counts once per item of the page "
                    "it asks for): ask for smaller pages or fewer fields",
                    settings.max_query_cost,
                    cost=cost,
                )
            )
