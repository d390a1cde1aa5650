"""A validated query document, compiled into the tree of reads `db.compiled_reads` runs.

The compiler collects fields exactly as graphql-core's executor does (its own
`collect_fields` / `collect_subfields`: fragments, inline fragments, `@skip`/`@include`,
merged response keys in first-seen order), so the keys of the JSON PostgreSQL builds come in
the order the resolvers would give them. Every field it does not know, every argument value
it is not sure of, raises `Uncovered`: the whole operation then goes to the resolvers.
"""

import re
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    GraphQLField,
    GraphQLObjectType,
    GraphQLSchema,
    OperationDefinitionNode,
    get_named_type,
)
from graphql.execution.collect_fields import (
    FieldDetailsList,
    FragmentDetails,
    GroupedFieldSet,
    collect_fields,
    collect_subfields,
)
from graphql.execution.values import VariableValues, get_argument_values
from strawberry import relay

from conveyor.db.compiled_reads import (
    ACCESS_KEY,
    ROW_ID_KEY,
    SCHEDULING_KEY,
    STATUSES_KEY,
    TYPE_KEY,
    ActiveStage,
    Column,
    ConnectionRead,
    Constant,
    Derived,
    EventsRead,
    NodeRead,
    ObjectRead,
    Read,
    Relation,
    Uncovered,
    relation_target,
)
from conveyor.errors import ConveyorError
from conveyor.graphql.bounded_cache import BoundedCache
from conveyor.graphql.inputs import node_key
from conveyor.graphql.types.pagination import decode_cursor, page_size
from conveyor.settings import Settings

#: The scalar fields read straight from a row, by GraphQL type.
_COLUMNS = {
    "Environment": "id name order approvalPolicy developersMayApprove creatorMayApprove "
    "createdAt updatedAt",
    "Instance": "id name engine host port username maxRunningTasks createdAt updatedAt",
    "Database": "id name createdAt updatedAt",
    "Issue": "id title description creator createdAt updatedAt status",
    "Pipeline": "id status createdAt updatedAt lastSequence",
    "Stage": "id name position lastSequence",
    "Task": "id name type status statement databaseName notBefore version statusReason "
    "approvedBy approvedAt cancelRequested createdAt updatedAt statementVersion dryRunRequested "
    "lastSequence",
    "TaskRun": "id attempt status startedAt endedAt errorCode errorMessage result log",
    "Event": "id sequence kind actor createdAt issueId pipelineId taskId stageId oldStatus "
    "newStatus reason detail",
}
COLUMNS = {type_name: frozenset(names.split()) for type_name, names in _COLUMNS.items()}
#: The columns whose values are JSON a client wrote: their keys could be anything, so a read
#: of one is never spliced (db.compiled_reads.Statement).
_JSON_COLUMNS = frozenset({("TaskRun", "result"), ("TaskRun", "log"), ("Event", "detail")})

#: The relations that stay inside one pipeline: a task below one of them takes its waiting
#: reason from the scheduling facts read once for the object above.
_SAME_PIPELINE = frozenset(
    {
        ("Issue", "pipeline"),
        ("Pipeline", "issue"),
        ("Pipeline", "stages"),
        ("Stage", "pipeline"),
        ("Stage", "tasks"),
        ("Task", "stage"),
        ("Task", "pipeline"),
        ("Event", "task"),
        ("Event", "stage"),
        ("Event", "pipeline"),
    }
)
_TASK_COUNTS = frozenset(
    {"pendingApproval", "pending", "running", "done", "failed", "canceled", "skipped", "total"}
)
_WAITING_REASON = frozenset({"kind", "message", "notBefore", "limit", "rules"})
#: The objects a waiting reason names, by field: the candidates' kind and type.
_WAITING_OBJECTS = {"stage": ("stage", "Stage"), "blockingTask": ("task", "Task")}
_PAGE_INFO = frozenset({"hasNextPage", "hasPreviousPage", "startCursor", "endCursor"})
_CONNECTIONS = frozenset({"issues", "pipelines", "environments", "instances", "databases"})
_CANONICAL_KEY = re.compile(r"[1-9][0-9]{0,9}")


def snake_case(name: str) -> str:
    return re.sub("([A-Z])", r"_\1", name).lower()


@dataclass(frozen=True, eq=False)
class ArgumentSource:
    """Where a field's arguments come from: resolved for each request's variables."""

    kind: str
    definition: GraphQLField
    node: FieldNode


@dataclass(frozen=True)
class Plan:
    reads: tuple[tuple[str, Read], ...]
    #: The objects (by id) whose JSON holds derived fields or hidden facts below them: only
    #: their parts are walked in Python; a plan with none passes PostgreSQL's JSON through.
    walked: frozenset[int]
    #: Whether its derived fields are spliced into PostgreSQL's text (db.compiled_reads.
    #: Statement): not when it reads a JSON column, nor when an active stage holds derived
    #: fields (the spliced form reads the active stage's candidates as they are).
    spliced: bool = False
    #: How to fill in each walked object, worked out on first use (graphql.compiled.derived).
    steps: dict[int, Any] = field(default_factory=dict, compare=False)
    #: Its statements' texts, built once per form and shape of arguments
    #: (db.compiled_reads.statement).
    texts: dict[bool, list[Any]] = field(default_factory=dict, compare=False)
    #: The JSON text of the derived values that are functions of their marker's text alone
    #: (and, for actions, of who asks): a stage's status and counts, a task's actions
    #: (graphql.compiled.derived.SplicedFields.value). Few differ across all the pipelines a
    #: plan reads, so they are worked out once for the process, not once per request.
    marker_values: BoundedCache[Hashable, str] = field(
        default_factory=lambda: BoundedCache(MARKER_VALUES_PER_PLAN), compare=False
    )


#: Marker texts and their values are about a hundred bytes each: at most ~50 kB a plan.
MARKER_VALUES_PER_PLAN = 256


@dataclass
class _Compiler:
    schema: GraphQLSchema
    fragments: dict[str, FragmentDetails]
    variables: VariableValues
    operation: OperationDefinitionNode
    walked: set[int] = field(default_factory=set)
    #: The objects named by waiting reasons met and not yet taken by the object that reads
    #: their scheduling facts: (number, what, read), numbered in the whole plan.
    waiting_objects: list[tuple[int, str, ObjectRead]] = field(default_factory=list)
    waiting_objects_met: int = 0
    #: Something the spliced form does not take (see Plan.spliced).
    not_spliced: bool = False

    def plan(self) -> Plan:
        query = self.schema.query_type
        assert query is not None
        collected = collect_fields(
            self.schema, self.fragments, self.variables, query, self.operation
        )
        if collected.new_defer_usages:
            raise Uncovered("@defer")
        reads = tuple(
            (key, self.root_field(query, details))
            for key, details in collected.grouped_field_set.items()
        )
        return Plan(reads, frozenset(self.walked), spliced=not self.not_spliced)

    def subscription_events(self) -> Plan:
        """The plan of a subscription whose messages are events: its one root field read
        for the events a batch names (`EventsRead`)."""
        subscription = self.schema.subscription_type
        assert subscription is not None
        collected = collect_fields(
            self.schema, self.fragments, self.variables, subscription, self.operation
        )
        if collected.new_defer_usages or len(collected.grouped_field_set) != 1:
            raise Uncovered("not one root field")
        ((key, details),) = collected.grouped_field_set.items()
        definition = subscription.fields.get(details[0].node.name.value)
        if definition is None or get_named_type(definition.type).name != "Event":
            raise Uncovered("a subscription whose messages are not events")
        read, _ = self.object(self.object_type("Event"), details, inherit=False)
        return Plan(
            ((key, EventsRead(read)),), frozenset(self.walked), spliced=not self.not_spliced
        )

    def subfields(self, parent: GraphQLObjectType, details: FieldDetailsList) -> GroupedFieldSet:
        for detail in details:
            if detail.defer_usage is not None or detail.fragment_variable_values is not None:
                raise Uncovered("@defer or fragment variables")
        collected = collect_subfields(
            self.schema, self.fragments, self.variables, self.operation, parent, details
        )
        if collected.new_defer_usages:
            raise Uncovered("@defer")
        return collected.grouped_field_set

    def object_type(self, name: str) -> GraphQLObjectType:
        found = self.schema.get_type(name)
        assert isinstance(found, GraphQLObjectType), name
        return found

    def root_field(self, query: GraphQLObjectType, details: FieldDetailsList) -> Read:
        node = details[0].node
        name = node.name.value
        if name == "__typename":
            return Constant(query.name)
        definition = query.fields.get(name)
        if definition is None:
            raise Uncovered(name)
        if name in ("node", "nodes"):
            return self.node_field(name, definition, details)
        if name in _CONNECTIONS:
            return self.connection(name, definition, details)
        raise Uncovered(name)

    def node_field(self, name: str, definition: GraphQLField, details: FieldDetailsList) -> Read:
        by_type = {}
        for type_name in COLUMNS:
            if type_name == "Event":
                continue
            waiting_objects_from = len(self.waiting_objects)
            try:
                read, _ = self.object(self.object_type(type_name), details, inherit=False)
            except Uncovered:
                del self.waiting_objects[waiting_objects_from:]
                continue
            if id(read) in self.walked:
                read = replace(read, facts=read.facts | {TYPE_KEY})
                self.walked.add(id(read))
            by_type[type_name] = read
        return NodeRead(name == "nodes", by_type, ArgumentSource(name, definition, details[0].node))

    def connection(self, name: str, definition: GraphQLField, details: FieldDetailsList) -> Read:
        connection_type = get_named_type(definition.type)
        assert isinstance(connection_type, GraphQLObjectType)
        edge_type = get_named_type(connection_type.fields["edges"].type)
        assert isinstance(edge_type, GraphQLObjectType)
        model = connection_type.name.removesuffix("Connection")
        parts: list[tuple[str, Any]] = []
        for key, part_details in self.subfields(connection_type, details).items():
            part = part_details[0].node.name.value
            if part in ("totalCount", "__typename"):
                parts.append((key, part))
            elif part == "edges":
                edge: list[tuple[str, Any]] = []
                for edge_key, edge_details in self.subfields(edge_type, part_details).items():
                    edge_part = edge_details[0].node.name.value
                    if edge_part in ("cursor", "__typename"):
                        edge.append((edge_key, edge_part))
                    elif edge_part == "node":
                        read, _ = self.object(self.object_type(model), edge_details, inherit=False)
                        edge.append((edge_key, read))
                    else:
                        raise Uncovered(edge_part)
                parts.append((key, ("edges", tuple(edge))))
            elif part == "pageInfo":
                page_info = []
                for info_key, info_details in self.subfields(
                    self.object_type("PageInfo"), part_details
                ).items():
                    info = info_details[0].node.name.value
                    if info not in _PAGE_INFO and info != "__typename":
                        raise Uncovered(info)
                    page_info.append((info_key, info))
                parts.append((key, ("pageInfo", tuple(page_info))))
            else:
                raise Uncovered(part)
        return ConnectionRead(
            name,
            tuple(parts),
            connection_type.name,
            edge_type.name,
            ArgumentSource(name, definition, details[0].node),
        )

    def object(
        self, object_type: GraphQLObjectType, details: FieldDetailsList, *, inherit: bool
    ) -> tuple[ObjectRead, bool]:
        """The read of one object, and whether it leaves its scheduling facts to the object
        above it (`inherit`: it hangs from a relation inside the same pipeline)."""
        model = object_type.name
        columns = COLUMNS.get(model)
        if columns is None:
            raise Uncovered(model)
        fields: list[tuple[str, Read]] = []
        facts: set[str] = set()
        wants_scheduling = False
        walked = False
        waiting_objects_from = len(self.waiting_objects)
        for key, field_details in self.subfields(object_type, details).items():
            node = field_details[0].node
            name = node.name.value
            definition = object_type.fields.get(name)
            if name == "__typename":
                fields.append((key, Constant(model)))
            elif node.arguments and name not in ("tasks", "events"):
                raise Uncovered(f"arguments of {model}.{name}")
            elif name in columns:
                fields.append((key, Column(snake_case(name))))
                if (model, name) in _JSON_COLUMNS:
                    self.not_spliced = True
            elif (model, name) in (("Stage", "status"), ("Stage", "taskCounts")):
                selection = self.leaves(definition, field_details, _TASK_COUNTS)
                fields.append((key, Derived(snake_case(name), selection)))
                facts.add(STATUSES_KEY)
            elif (model, name) == ("Task", "waitingReason"):
                reason = self.waiting_reason(definition, field_details)
                fields.append((key, Derived("waiting_reason", reason)))
                facts.add(ROW_ID_KEY)
                wants_scheduling = True
            elif (model, name) == ("Task", "availableActions"):
                fields.append((key, Derived("available_actions")))
                facts.add(ACCESS_KEY)
            elif (model, name) == ("Pipeline", "activeStage"):
                stage, stage_wants = self.object(
                    self.object_type("Stage"), field_details, inherit=True
                )
                fields.append((key, ActiveStage(stage)))
                if id(stage) in self.walked:
                    self.not_spliced = True
                wants_scheduling = wants_scheduling or stage_wants
            else:
                target = relation_target(model, snake_case(name))
                if target is None or definition is None:
                    raise Uncovered(f"{model}.{name}")
                same_pipeline = (model, name) in _SAME_PIPELINE
                read, child_wants = self.object(
                    self.object_type(target[0]), field_details, inherit=same_pipeline
                )
                arguments = (
                    ArgumentSource(f"{model}.{name}", definition, node)
                    if name in ("tasks", "events")
                    else None
                )
                fields.append((key, Relation(snake_case(name), read, arguments)))
                wants_scheduling = wants_scheduling or child_wants
                walked = walked or id(read) in self.walked
        waiting_objects: tuple[tuple[int, str, ObjectRead], ...] = ()
        if wants_scheduling and not inherit:
            facts.add(SCHEDULING_KEY)
            wants_scheduling = False
            waiting_objects = tuple(self.waiting_objects[waiting_objects_from:])
            del self.waiting_objects[waiting_objects_from:]
        read = ObjectRead(model, tuple(fields), frozenset(facts), waiting_objects)
        if walked or facts or any(isinstance(value, ActiveStage | Derived) for _, value in fields):
            self.walked.add(id(read))
        return read, wants_scheduling

    def waiting_reason(
        self, definition: GraphQLField | None, details: FieldDetailsList
    ) -> tuple[tuple[str, str, int | None], ...]:
        """A waiting reason's selection: (key, field, number of the objects it may name
        among the plan's waiting objects, for `stage` and `blockingTask`)."""
        if definition is None:
            raise Uncovered("unknown field")
        reason_type = get_named_type(definition.type)
        assert isinstance(reason_type, GraphQLObjectType)
        selection: list[tuple[str, str, int | None]] = []
        for key, leaf_details in self.subfields(reason_type, details).items():
            name = leaf_details[0].node.name.value
            if name in _WAITING_OBJECTS:
                what, type_name = _WAITING_OBJECTS[name]
                read, _ = self.object(self.object_type(type_name), leaf_details, inherit=False)
                if id(read) in self.walked:
                    # Its JSON is read as PostgreSQL builds it: nothing below it is filled in.
                    raise Uncovered(f"derived fields below WaitingReason.{name}")
                number = self.waiting_objects_met
                self.waiting_objects_met += 1
                self.waiting_objects.append((number, what, read))
                selection.append((key, name, number))
            elif name in _WAITING_REASON or name == "__typename":
                selection.append((key, name, None))
            else:
                raise Uncovered(f"WaitingReason.{name}")
        return tuple(selection)

    def leaves(
        self, definition: GraphQLField | None, details: FieldDetailsList, known: frozenset[str]
    ) -> tuple[tuple[str, str], ...] | None:
        """The (key, field) pairs a derived object's selection asks for; None for a leaf."""
        if definition is None:
            raise Uncovered("unknown field")
        named = get_named_type(definition.type)
        if not isinstance(named, GraphQLObjectType):
            return None
        selection = []
        for key, leaf_details in self.subfields(named, details).items():
            name = leaf_details[0].node.name.value
            if name not in known and name != "__typename":
                raise Uncovered(f"{named.name}.{name}")
            selection.append((key, name))
        return tuple(selection)


def compile_plan(
    schema: GraphQLSchema,
    document_definitions: tuple[Any, ...],
    operation: OperationDefinitionNode,
    variables: VariableValues,
) -> Plan:
    """The plan of `operation`, for the @skip/@include values `variables` give."""
    return _Compiler(schema, _fragments(document_definitions), variables, operation).plan()


def _fragments(document_definitions: tuple[Any, ...]) -> dict[str, FragmentDetails]:
    fragments = {}
    for definition in document_definitions:
        if isinstance(definition, FragmentDefinitionNode):
            if definition.variable_definitions:
                raise Uncovered("fragment variables")
            fragments[definition.name.value] = FragmentDetails(definition)
    return fragments


def compile_subscription_plan(
    schema: GraphQLSchema,
    document_definitions: tuple[Any, ...],
    operation: OperationDefinitionNode,
    variables: VariableValues,
) -> Plan:
    """The plan of a subscription `operation` whose messages are events, for the
    @skip/@include values `variables` give: one read renders a batch of its messages."""
    return _Compiler(
        schema, _fragments(document_definitions), variables, operation
    ).subscription_events()


def _global_id(value: Any) -> relay.GlobalID | None:
    if value is None or isinstance(value, relay.GlobalID):
        return value
    try:
        return relay.GlobalID.from_id(value)
    except Exception as error:
        raise Uncovered("not a global id") from error


def _node(value: Any) -> tuple[str, int]:
    """A global id's type and key, for ids whose resolver answer is certain to be a row of
    that type or null; others (malformed, unknown types, odd keys) raise Uncovered."""
    global_id = _global_id(value)
    assert global_id is not None, "node ids are not null"
    if global_id.type_name not in COLUMNS or global_id.type_name == "Event":
        raise Uncovered(f"node of type {global_id.type_name}")
    if not _CANONICAL_KEY.fullmatch(global_id.node_id) or int(global_id.node_id) >= 2**31:
        raise Uncovered("not a key")
    return global_id.type_name, int(global_id.node_id)


def _enum_value(value: Any) -> Any:
    return getattr(value, "value", value)


def arguments_of(
    source: ArgumentSource, variables: VariableValues, settings: Settings
) -> Mapping[str, Any]:
    """The arguments of `source` for this request, as db.compiled_reads takes them. Values
    the resolvers would refuse raise Uncovered, so that they refuse them."""
    try:
        given = get_argument_values(source.definition, source.node, variables)
    except Exception as error:
        raise Uncovered("arguments") from error
    try:
        match source.kind:
            case "node":
                return {"ids": [_node(given["id"])]}
            case "nodes":
                return {"ids": [_node(value) for value in given["ids"]]}
            case "Stage.tasks":
                if given.get("after") is not None:
                    raise Uncovered("tasks after a task")
                return {"first": page_size(given.get("first"), settings)}
            case "Issue.events":
                after = given.get("afterSequence")
                return {"first": page_size(given.get("first"), settings), "after_sequence": after}
        return {
            "first": page_size(given.get("first"), settings),
            "after": decode_cursor(given.get("after")),
            "status": _enum_value(given.get("status")),
            "environment_id": node_key(given.get("environmentId"), "Environment", ()),
            "instance_id": node_key(given.get("instanceId"), "Instance", ()),
        }
    except ConveyorError as error:
        raise Uncovered("refused arguments") from error
