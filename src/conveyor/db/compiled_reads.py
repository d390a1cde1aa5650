"""The compiled read path's SQL: one statement in which PostgreSQL builds a whole response.

`conveyor.graphql.compiled` turns a GraphQL document into a tree of reads (the classes below,
named by the models' attribute names, not the API's); `statement` turns that tree into one
SQL statement whose single value is the JSON object of the response's `data`, keys in
selection order. Fields derived by a rule (a stage's status, a task's waiting reason or
available actions, a pipeline's active stage) are emitted as null in their place, and the
facts their rule needs ride along under hidden keys (`#...`, which no GraphQL name can be):
the caller fills them in with the same `domain` functions as the resolvers, through
`scheduling_decision` and `task_for_actions` here.
"""

from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from itertools import repeat
from typing import Any

from tortoise.connection import get_connection

from conveyor.domain.check_review import CheckFacts, CheckGate
from conveyor.domain.permissions import ApprovalRules, Principal
from conveyor.domain.scheduling import (
    OCCUPYING_STATUSES,
    Occupancy,
    PipelineState,
    SchedulingDecision,
    StageState,
    TaskState,
    decide,
)
from conveyor.domain.statuses import (
    FINISHED_TASK_STATUSES,
    PipelineStatus,
    TaskStatus,
    TaskType,
)
from conveyor.domain.task_actions import TaskAccess, TaskFacts, actions_for
from conveyor.domain.transitions import TaskAction

#: The hidden keys: facts for the rules, removed before the response leaves.
STATUSES_KEY = "#statuses"
SCHEDULING_KEY = "#scheduling"
ACCESS_KEY = "#access"
ACTIVE_STAGE_KEY = "#active"
ROW_ID_KEY = "#id"
TYPE_KEY = "#type"

#: json_build_object takes at most 100 arguments: 50 keys.
MAX_KEYS_PER_OBJECT = 50


# --- the tree of reads ------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """A scalar of the row, by the model's attribute name (`id` is the global id)."""

    name: str


@dataclass(frozen=True)
class Constant:
    """A fixed string, such as `__typename`."""

    value: str


@dataclass(frozen=True)
class Derived:
    """Null here, filled in by the caller from the object's hidden facts."""

    name: str
    #: What the caller needs to know about the derived value's own selection (opaque here).
    selection: Any = None


@dataclass(frozen=True)
class ObjectRead:
    model: str
    fields: tuple[tuple[str, "Read"], ...]
    #: Hidden facts the caller asked for (the *_KEY constants).
    facts: frozenset[str] = frozenset()
    #: With SCHEDULING_KEY: the objects a waiting reason below may name, read along with the
    #: scheduling facts as JSON objects by row id, one for each (number, what, read): what is
    #: "stage" (the pipeline's stages) or "task" (the tasks that may block one of its tasks).
    waiting_objects: tuple[tuple[int, str, "ObjectRead"], ...] = ()


@dataclass(frozen=True)
class Relation:
    """A related object (`one`) or list of them, by the relation's attribute name."""

    name: str
    target: ObjectRead
    #: Opaque to this module: handed back to `Arguments` to get the relation's arguments.
    arguments: Any = None


@dataclass(frozen=True)
class ActiveStage:
    """`Pipeline.activeStage`: null here; every stage and their task statuses are hidden facts,
    and the caller picks the stage by the domain's rule."""

    target: ObjectRead


@dataclass(frozen=True)
class ConnectionRead:
    """A root connection (`issues`, `pipelines`, ...): parts by response key."""

    name: str
    #: (key, part): part is "totalCount", "__typename" (its value in `typename`), or a
    #: tuple for `edges` ((key, "cursor" | "__typename" | ObjectRead) ...) or `pageInfo`
    #: ((key, field name) ...).
    parts: tuple[tuple[str, Any], ...]
    typename: str
    edge_typename: str
    arguments: Any = None


@dataclass(frozen=True)
class NodeRead:
    """`node(id:)` (`many` False) or `nodes(ids:)`: objects by global id, each of the type
    its id names (`by_type`)."""

    many: bool
    by_type: Mapping[str, ObjectRead]
    arguments: Any = None


#: The source of an `EventsRead`'s arguments: `Arguments` gives the batch's `sequences` for it.
EVENT_BATCH = "the events of a batch"


@dataclass(frozen=True)
class EventsRead:
    """Events by sequence number, in that order: the messages of a live subscription, one
    object each."""

    target: ObjectRead
    arguments: Any = EVENT_BATCH


Read = (
    Column
    | Constant
    | Derived
    | Relation
    | ActiveStage
    | ConnectionRead
    | NodeRead
    | EventsRead
    | ObjectRead
)


class Uncovered(Exception):
    """This read cannot be made here; the resolvers answer instead."""


#: The arguments of a read, as the caller resolves them for one request's variables. It
#: raises Uncovered for values it leaves to the resolvers (e.g. out of range, to be refused).
Arguments = Callable[[Any], Mapping[str, Any]]


# --- how each model is stored -----------------------------------------------------------------

TABLES = {
    "Environment": "environment",
    "Instance": "instance",
    "Database": "database",
    "Issue": "issue",
    "Pipeline": "pipeline",
    "Stage": "stage",
    "Task": "task",
    "TaskRun": "task_run",
    "Event": "event",
}

_TIMESTAMPS = frozenset(
    {"created_at", "updated_at", "not_before", "approved_at", "started_at", "ended_at"}
)


def global_id_sql(type_name: str, key: str) -> str:
    """Relay's global id of a row, as strawberry makes it: base64 of "Type:key". PostgreSQL
    breaks base64 lines every 76 characters; the longest id here ("Environment:" and ten
    digits) is 32, so none is broken."""
    return f"encode(convert_to('{type_name}:' || {key}, 'UTF8'), 'base64')"


def iso_timestamp_sql(column: str) -> str:
    """A timestamptz as Python's `datetime.isoformat` writes it for UTC (strawberry's
    DateTime): microseconds only when not zero, and "+00:00"."""
    utc = f"({column} AT TIME ZONE 'UTC')"
    return (
        f"(to_char({utc}, 'YYYY-MM-DD\"T\"HH24:MI:SS') || CASE WHEN "
        f"extract(microseconds FROM {utc})::bigint % 1000000 = 0 THEN '' "
        f"ELSE to_char({utc}, '.US') END || '+00:00')"
    )


def _cursor_sql(key: str) -> str:
    """graphql.types.pagination.encode_cursor in SQL: urlsafe base64 of "cursor:<key>"."""
    return f"translate(encode(convert_to('cursor:' || {key}, 'UTF8'), 'base64'), '+/', '-_')"


def _column_sql(model: str, name: str, alias: str) -> str:
    match model, name:
        case "Event", "sequence":
            return f"{alias}.id"
        case "Event", "task_id":
            return global_id_sql("Task", f"{alias}.task_id")
        case "Event", "stage_id":
            return global_id_sql("Stage", f"{alias}.stage_id")
        case "Event", "issue_id":
            return global_id_sql("Issue", f"{alias}.issue_id")
        case "Event", "pipeline_id":
            return global_id_sql("Pipeline", f"{alias}.pipeline_id")
        case "Event", "reason":
            return f"({alias}.detail ->> 'reason')"
        case _, "last_sequence":
            # The newest event of the object's pipeline (one probe of (pipeline_id, id)).
            return (
                "(SELECT coalesce(max(e.id), 0) FROM event e "
                f"WHERE e.pipeline_id = {_pipeline_id_sql(model, alias)})"
            )
        case _, "id":
            return global_id_sql(model, f"{alias}.id")
        case "Task", "cancel_requested":
            return f"({alias}.cancel_requested_at IS NOT NULL)"
        case "Task", "dry_run_requested":
            return f"({alias}.dry_run_requested_at IS NOT NULL)"
        case "Issue", "status":
            return (
                f"(SELECT p.status FROM pipeline p WHERE p.issue_id = {alias}.id "
                "ORDER BY p.id LIMIT 1)"
            )
        case "Environment", "order":
            return f'{alias}."order"'
    if name in _TIMESTAMPS:
        return iso_timestamp_sql(f"{alias}.{name}")
    return f"{alias}.{name}"


@dataclass(frozen=True)
class _Join:
    target: str
    #: For a list: FROM ... and WHERE ..., with {a} the parent's alias and {x} the target's.
    #: For one object: the join condition, the target joined as {x} (as the limit's SQL does:
    #: a join costs PostgreSQL far less than a subquery for each parent row).
    source: str
    where: str = ""
    order: str | None = None
    many: bool = False
    bounded: bool = False
    #: For a list: the column of `source` ({x}) that holds the parent's id, when the list
    #: may be read grouped for all the tasks of a stage at once (see _Builder.grouped).
    parent_key: str | None = None


def _one(target: str, condition: str) -> _Join:
    return _Join(target, condition)


def _many(
    target: str,
    source: str,
    where: str,
    order: str,
    *,
    bounded: bool = False,
    parent_key: str | None = None,
) -> _Join:
    return _Join(target, source, where, order, many=True, bounded=bounded, parent_key=parent_key)


_RELATIONS: dict[tuple[str, str], _Join] = {
    ("Task", "instance"): _one("Instance", "{x}.id = {a}.instance_id"),
    ("Task", "database"): _one("Database", "{x}.id = {a}.database_id"),
    ("Task", "stage"): _one("Stage", "{x}.id = {a}.stage_id"),
    ("Task", "pipeline"): _one("Pipeline", "{x}.id = {a}.pipeline_id"),
    ("Task", "blocked_by"): _many(
        "Task",
        "task_dependency {x}_d JOIN task {x} ON {x}.id = {x}_d.blocked_by_id",
        "{x}_d.task_id = {a}.id",
        "{x}_d.blocked_by_id",
        parent_key="{x}_d.task_id",
    ),
    ("Task", "runs"): _many(
        "TaskRun",
        "task_run {x}",
        "{x}.task_id = {a}.id",
        "{x}.attempt",
        parent_key="{x}.task_id",
    ),
    ("Stage", "environment"): _one("Environment", "{x}.id = {a}.environment_id"),
    ("Stage", "pipeline"): _one("Pipeline", "{x}.id = {a}.pipeline_id"),
    ("Stage", "tasks"): _many(
        "Task", "task {x}", "{x}.stage_id = {a}.id", "{x}.position", bounded=True
    ),
    ("Pipeline", "issue"): _one("Issue", "{x}.id = {a}.issue_id"),
    ("Pipeline", "stages"): _many("Stage", "stage {x}", "{x}.pipeline_id = {a}.id", "{x}.position"),
    # One pipeline per issue: pipeline.issue_id is unique.
    ("Issue", "pipeline"): _one("Pipeline", "{x}.issue_id = {a}.id"),
    ("Issue", "events"): _many(
        "Event", "event {x}", "{x}.issue_id = {a}.id", "{x}.id", bounded=True
    ),
    ("Event", "task"): _one("Task", "{x}.id = {a}.task_id"),
    ("Event", "stage"): _one("Stage", "{x}.id = {a}.stage_id"),
    ("Event", "pipeline"): _one("Pipeline", "{x}.id = {a}.pipeline_id"),
    ("Database", "instance"): _one("Instance", "{x}.id = {a}.instance_id"),
    ("Instance", "environment"): _one("Environment", "{x}.id = {a}.environment_id"),
}


def relation_target(model: str, name: str) -> tuple[str, bool] | None:
    """The model a relation leads to and whether it is a list; None if it is not one here."""
    join = _RELATIONS.get((model, name))
    return None if join is None else (join.target, join.many)


def _pipeline_id_sql(model: str, alias: str) -> str:
    match model:
        case "Pipeline":
            return f"{alias}.id"
        case "Issue":
            return (
                f"(SELECT p.id FROM pipeline p WHERE p.issue_id = {alias}.id ORDER BY p.id LIMIT 1)"
            )
        case _:
            return f"{alias}.pipeline_id"


# The statuses that occupy a database and an instance slot, as the domain defines them (and
# db.scheduling.occupancy reads them): literals of the enum's values, never a client's text.
_OCCUPYING = ", ".join(f"'{status.value}'" for status in sorted(OCCUPYING_STATUSES))
_FINISHED = ", ".join(f"'{status.value}'" for status in sorted(FINISHED_TASK_STATUSES))


def _instances_sql(pipeline: str) -> str:
    return f"(SELECT DISTINCT instance_id FROM task WHERE pipeline_id = {pipeline})"


def _scheduling_facts_sql(pipeline: str, waiting_objects: Sequence[str]) -> str:
    """What db.scheduling.decisions reads for one pipeline, as JSON: its status, its stages
    with their tasks' facts column by column (one array per fact: PostgreSQL builds an array
    of scalars far faster than an array for each task), its task dependencies (one read for
    the pipeline, not one for each task) and what runs on its instances (for
    scheduling_decision); then `waiting_objects`, the JSON of the objects its waiting reasons
    may name."""
    instances = _instances_sql(pipeline)
    return f"""json_build_array({pipeline},
      (SELECT status FROM pipeline WHERE id = {pipeline}),
      (SELECT coalesce(json_agg(json_build_array(s.id, s.name, (
          SELECT json_build_array(array_agg(t.id), array_agg(t.status), array_agg(t.instance_id),
              array_agg(t.database_id), array_agg({iso_timestamp_sql("t.not_before")}),
              array_agg(t.statement_version), array_agg(t.checked_version),
              array_agg(t.blocking_rules), array_agg(t.checks_overridden_version))
          FROM task t WHERE t.stage_id = s.id)) ORDER BY s.position), '[]'::json)
       FROM stage s WHERE s.pipeline_id = {pipeline}),
      (SELECT coalesce(json_agg(json_build_array(d.task_id, d.blocked_by_id)), '[]'::json)
       FROM task_dependency d JOIN task b ON b.id = d.task_id WHERE b.pipeline_id = {pipeline}),
      (SELECT coalesce(json_agg(json_build_array(r.id, r.instance_id, r.database_id)), '[]'::json)
       FROM task r WHERE r.status IN ({_OCCUPYING}) AND r.instance_id IN {instances}),
      (SELECT coalesce(json_agg(json_build_array(i.id, i.max_running_tasks)), '[]'::json)
       FROM instance i WHERE i.id IN {instances}){"".join(f", {each}" for each in waiting_objects)}
    )"""


def _waiting_candidates_sql(what: str, pipeline: str, alias: str) -> str:
    """The rows a waiting reason of the pipeline's tasks may name: its stages (an earlier
    stage), or the tasks that block one of its tasks, those running on its instances, and the
    pending tasks against a database of its active stage (the decision may start one, which
    then holds the database). A row named that is not among them sends the read to the
    resolvers."""
    if what == "stage":
        return f"{alias}.pipeline_id = {pipeline}"
    # One set of ids from three indexed reads: an OR of the three conditions scans the table.
    return (
        f"{alias}.id IN (SELECT d.blocked_by_id FROM task_dependency d JOIN task b "
        f"ON b.id = d.task_id WHERE b.pipeline_id = {pipeline} "
        f"UNION ALL SELECT r.id FROM task r WHERE r.status IN ({_OCCUPYING}) "
        f"AND r.instance_id IN {_instances_sql(pipeline)} "
        f"UNION ALL SELECT p.id FROM task p WHERE p.pipeline_id = {pipeline} "
        f"AND p.status = '{TaskStatus.PENDING.value}' AND p.database_id IS NOT NULL "
        f"AND p.stage_id = {_first_unfinished_stage_sql(pipeline)})"
    )


def _first_unfinished_stage_sql(pipeline: str) -> str:
    """The stage whose tasks a decision may start: only those of the active stage start, and
    it is the first stage with a task not finished (domain.rollup.active_stage_index). Only a
    narrowing of the candidates (4,000 of the 5,000-task pipeline's tasks are pending; 500 are
    in its active stage): should it ever disagree with the rule, the reason names a row not
    read, and the resolvers answer."""
    return (
        f"(SELECT a.id FROM stage a WHERE a.pipeline_id = {pipeline} AND EXISTS (SELECT 1 "
        f"FROM task f WHERE f.stage_id = a.id AND f.status NOT IN ({_FINISHED})) "
        "ORDER BY a.position LIMIT 1)"
    )


def _access_facts_sql(alias: str, joined: str) -> str:
    """What actions_for reads about a task beyond its row: its pipeline's status, its
    issue's creator and its environment's approval rules (for available_actions), from the
    joins `_task_about_joins` or `_stage_about_joins` aliased from `joined`."""
    # Flat and scalar: the caller decides once for each distinct array (few differ). The
    # creator, the one text a client wrote, in hex: no "]" in it, so that the spliced form
    # finds where the array ends without decoding it.
    return (
        f"json_build_array({alias}.type, {alias}.status, "
        f"{alias}.not_before IS NOT NULL, {alias}.cancel_requested_at IS NOT NULL, "
        f"{joined}p.status, encode(convert_to({joined}i.creator, 'UTF8'), 'hex'), "
        f"{joined}e.developers_may_approve, {joined}e.creator_may_approve)"
    )


def _task_access_facts_sql(alias: str) -> str:
    """The spliced form's access facts of a task: the task's own part of _access_facts_sql
    (flat, as the hidden-keys form's); its stage's part rides in the marker's key
    (_stage_access_facts_sql)."""
    return (
        f"json_build_array({alias}.type, {alias}.status, "
        f"{alias}.not_before IS NOT NULL, {alias}.cancel_requested_at IS NOT NULL)"
    )


def _stage_access_facts_sql(joined: str) -> str:
    """The part of _access_facts_sql that every task of a stage shares, as the text
    `:<pipeline status>:<creator in hex>:<developers may approve>:<creator may approve>`
    (booleans as `true`/`false`, null as empty), computed once for each stage
    (`_stage_about_joins`): a task's marker carries it in its key. Built for each task,
    the 5,000-task page's eight facts a task cost PostgreSQL about 8 ms more than its four."""
    parts = (
        f"{joined}p.status",
        f"encode(convert_to({joined}i.creator, 'UTF8'), 'hex')",
        f"{joined}e.developers_may_approve::text",
        f"{joined}e.creator_may_approve::text",
    )
    return "".join(f"':' || coalesce({part}, '') || " for part in parts).removesuffix(" || ")


def _task_about_joins(task: str, joined: str) -> str:
    """The joins that bring a task's pipeline, issue and environment, beside the task."""
    return (
        f"LEFT JOIN pipeline {joined}p ON {joined}p.id = {task}.pipeline_id "
        f"LEFT JOIN issue {joined}i ON {joined}i.id = {joined}p.issue_id "
        f"LEFT JOIN stage {joined}s ON {joined}s.id = {task}.stage_id "
        f"LEFT JOIN environment {joined}e ON {joined}e.id = {joined}s.environment_id"
    )


def _stage_about_joins(stage: str, joined: str) -> str:
    """The same for every task of a stage, joined once beside the stage: a task's pipeline
    is its stage's (task (stage_id, pipeline_id) references stage (id, pipeline_id)). Joined
    beside each task instead, PostgreSQL hashed the whole stage and pipeline tables once per
    stage (EXPLAIN ANALYZE of the 100-task page: 3 of its 4.3 ms). `{joined}a.facts`: the
    stage's part of the access facts as the spliced form's keys carry it."""
    return (
        f"LEFT JOIN pipeline {joined}p ON {joined}p.id = {stage}.pipeline_id "
        f"LEFT JOIN issue {joined}i ON {joined}i.id = {joined}p.issue_id "
        f"LEFT JOIN environment {joined}e ON {joined}e.id = {stage}.environment_id "
        f"LEFT JOIN LATERAL (SELECT {_stage_access_facts_sql(joined)} AS facts) {joined}a ON true"
    )


def _statuses_sql(alias: str) -> str:
    return (
        "(SELECT coalesce(json_agg(t.status ORDER BY t.position), '[]'::json) "
        f"FROM task t WHERE t.stage_id = {alias}.id)"
    )


# --- the statement ----------------------------------------------------------------------------


def _measured(facts: str) -> str:
    """[the length of the JSON text of `facts`, that JSON]: the spliced form's nested facts,
    which the caller then cuts out and decodes without scanning them (a json value's text
    is kept as it is, inside an array too)."""
    # OFFSET 0: unflattened, the facts would be read twice, once for each use of m.f.
    return (
        f"(SELECT json_build_array(length(m.f::text), m.f) FROM (SELECT {facts} AS f OFFSET 0) m)"
    )


@dataclass
class _Builder:
    arguments: Arguments
    #: The node types chosen for node(id:)/nodes(ids:), in the order they were met.
    parameters: list[Any] = field(default_factory=list)
    aliases: int = 0
    #: The stages (by alias) whose tasks' access facts are joined beside the stage: the
    #: alias of those joins.
    stage_about: dict[str, str] = field(default_factory=dict)
    #: The spliced form's markers, in the order of their numbers; None: the hidden-keys form.
    markers: list[tuple[str, Any]] | None = None
    #: The argument sources asked, in order, and the shapes of their answers.
    sources: list[Any] = field(default_factory=list)
    shapes: list[Hashable] = field(default_factory=list)
    #: Where each parameter's value comes from (see parameter).
    origins: list[tuple[Any, ...]] = field(default_factory=list)

    def parameter(self, value: Any, sql_type: str, origin: tuple[Any, ...]) -> str:
        """A parameter of `value`, which is the argument at `origin` (call, key[, index...])."""
        self.parameters.append(value)
        self.origins.append(origin)
        return f"${len(self.parameters)}::{sql_type}"

    def argument(self, arguments: "_Resolved", key: str, sql_type: str) -> str:
        return self.parameter(arguments[key], sql_type, (arguments.call, key))

    def resolved(self, source: Any) -> "_Resolved":
        """The arguments of `source` for this request, numbered in the order asked."""
        resolved = _Resolved(self.arguments(source), len(self.sources))
        self.sources.append(source)
        self.shapes.append(_shape(resolved))
        return resolved

    def alias(self) -> str:
        self.aliases += 1
        return f"r{self.aliases}"

    def object(self, read: ObjectRead, alias: str, stage: str | None = None) -> tuple[str, str]:
        """The JSON of one object of the row `alias`, and the joins its to-one relations
        need in the FROM clause that brings `alias`; `stage`: the alias of the stage row a
        task is read under (Stage.tasks)."""
        joins: list[str] = []
        entries = []
        # The alias of the joins that bring a task's pipeline, issue and environment.
        about = None
        if ACCESS_KEY in read.facts:
            if stage is not None:
                if stage not in self.stage_about:
                    self.stage_about[stage] = self.alias()
                about = self.stage_about[stage]
            else:
                about = self.alias()
                joins.append(_task_about_joins(alias, about))
        for key, value in read.fields:
            relation = _RELATIONS[(read.model, value.name)] if isinstance(value, Relation) else None
            if isinstance(value, Relation) and relation is not None and not relation.many:
                entries.append((key, self.joined(read.model, value, alias, joins)))
            elif relation is not None and relation.parent_key is not None and stage is not None:
                assert isinstance(value, Relation)
                entries.append((key, self.grouped(relation, value, alias, stage, joins)))
            elif self.markers is not None and isinstance(value, Derived | ActiveStage):
                entries.append((key, self.marker(value, alias, about, stage is not None, read)))
            else:
                entries.append((key, self.value(read.model, value, alias)))
        if self.markers is not None:
            if STATUSES_KEY in read.facts:
                # Read once for the stage's status and its counts.
                joins.append(
                    f"LEFT JOIN LATERAL (SELECT {_statuses_sql(alias)} AS statuses) "
                    f"{alias}_st ON true"
                )
            if SCHEDULING_KEY in read.facts:
                facts = _measured(self.fact(read, SCHEDULING_KEY, alias))
                entries.append((self.marked("f", read), facts))
        else:
            entries += [
                (f"{ACTIVE_STAGE_KEY}:{key}", self.active_stage_facts(value, alias))
                for key, value in read.fields
                if isinstance(value, ActiveStage)
            ]
            for fact in sorted(read.facts):
                if fact == ACCESS_KEY:
                    assert about is not None
                    entries.append((fact, _access_facts_sql(alias, about)))
                else:
                    entries.append((fact, self.fact(read, fact, alias)))
        if alias in self.stage_about:
            joins.append(_stage_about_joins(alias, self.stage_about[alias]))
        if len(entries) > MAX_KEYS_PER_OBJECT:
            raise Uncovered("too many keys in one object")
        pairs = ", ".join(f"'{key}', {value}" for key, value in entries)
        return f"json_build_object({pairs})", " ".join(joins)

    def marked(self, kind: str, what: Any) -> str:
        """The key of a new marker (#<kind><number>), `what` it stands for recorded."""
        assert self.markers is not None
        self.markers.append((kind, what))
        return f"#{kind}{len(self.markers) - 1}"

    def marker(
        self,
        read: "Derived | ActiveStage",
        alias: str,
        about: str | None,
        in_stage: bool,
        parent: ObjectRead,
    ) -> str:
        """A derived value's place in the spliced form: an object of one marker key whose
        value is what its rule needs (see `Statement`)."""
        if isinstance(read, ActiveStage):
            if SCHEDULING_KEY in parent.facts:
                # The pipeline's scheduling facts hold its stages' statuses already.
                facts = _measured(self.active_stage_facts(read, alias, statuses=False))
                return f"json_build_object('{self.marked('u', read)}', {facts})"
            facts = _measured(self.active_stage_facts(read, alias))
            return f"json_build_object('{self.marked('v', read)}', {facts})"
        match read.name:
            case "waiting_reason":
                key = f"'{self.marked('w', read.selection)}:' || {alias}.pipeline_id"
                facts = f"{alias}.id"
            case "available_actions":
                assert about is not None, "the plan reads the access facts of such a task"
                stage_part = f"{about}a.facts" if in_stage else _stage_access_facts_sql(about)
                key = f"'{self.marked('a', None)}' || {stage_part}"
                facts = _task_access_facts_sql(alias)
            case "status":
                key, facts = f"'{self.marked('s', None)}'", f"{alias}_st.statuses"
            case "task_counts":
                key, facts = f"'{self.marked('c', read.selection)}'", f"{alias}_st.statuses"
            case _:
                raise AssertionError(read.name)
        return f"json_build_object({key}, {facts})"

    def grouped(self, join: _Join, read: Relation, task: str, stage: str, joins: list[str]) -> str:
        """A list of each task of a stage (`runs`, `blockedBy`), read once for all the
        stage's tasks and joined beside them: as a subquery for each task, PostgreSQL starts
        an executor and an aggregate 5,000 times on the 5,000-task page (EXPLAIN ANALYZE:
        6-7 ms for each of those two lists, empty)."""
        assert join.parent_key is not None
        assert join.order is not None
        alias = self.alias()
        parent = join.parent_key.format(x=alias)
        target, nested = self.object(read.target, alias)
        joins.append(
            f"LEFT JOIN (SELECT {parent} AS parent_id, json_agg({target} ORDER BY "
            f"{join.order.format(x=alias)}) AS items FROM {join.source.format(x=alias)} "
            f"{nested} WHERE {parent} IN (SELECT t.id FROM task t WHERE t.stage_id = "
            f"{stage}.id) GROUP BY {parent}) {alias}_g ON {alias}_g.parent_id = {task}.id"
        )
        return f"coalesce({alias}_g.items, '[]'::json)"

    def joined(self, model: str, read: Relation, parent: str, joins: list[str]) -> str:
        join = _RELATIONS[(model, read.name)]
        alias = self.alias()
        target, nested = self.object(read.target, alias)
        joins.append(
            f"LEFT JOIN {TABLES[join.target]} {alias} ON {join.source.format(a=parent, x=alias)}"
        )
        if nested:
            joins.append(nested)
        return f"CASE WHEN {alias}.id IS NULL THEN NULL ELSE {target} END"

    def waiting_objects(self, what: str, read: ObjectRead, pipeline: str) -> str:
        alias = self.alias()
        built, joins = self.object(read, alias)
        return (
            f"(SELECT coalesce(json_object_agg({alias}.id, {built}), '{{}}'::json) "
            f"FROM {TABLES[read.model]} {alias} {joins} "
            f"WHERE {_waiting_candidates_sql(what, pipeline, alias)})"
        )

    def fact(self, read: ObjectRead, fact: str, alias: str) -> str:
        model = read.model
        match fact:
            case "#statuses":
                return _statuses_sql(alias)
            case "#scheduling":
                pipeline = _pipeline_id_sql(model, alias)
                return _scheduling_facts_sql(
                    pipeline,
                    [
                        self.waiting_objects(what, target, pipeline)
                        for _, what, target in read.waiting_objects
                    ],
                )
            case "#id":
                return f"{alias}.id"
            case "#type":
                return f"'{model}'"
        raise AssertionError(fact)

    def value(self, model: str, read: Read, alias: str) -> str:
        match read:
            case Column(name):
                return _column_sql(model, name, alias)
            case Constant(value):
                return f"'{value}'"
            case Derived():
                return "NULL"
            case ActiveStage():
                return "NULL"
            case Relation():
                return self.relation(model, read, alias)
        raise Uncovered(f"{type(read).__name__} inside {model}")

    def active_stage_facts(self, read: ActiveStage, alias: str, *, statuses: bool = True) -> str:
        """[each stage's task statuses, its stages as `read` selects them], in order; without
        `statuses`, [the pipeline's id, its stages]: marker #u, whose statuses are the
        pipeline's scheduling facts' (see `marker`)."""
        stage = self.alias()
        target, joins = self.object(read.target, stage)
        first = (
            f"coalesce(json_agg({_statuses_sql(stage)} ORDER BY {stage}.position), '[]'::json)"
            if statuses
            else f"{alias}.id"
        )
        return (
            f"(SELECT json_build_array({first}, coalesce(json_agg({target} "
            f"ORDER BY {stage}.position), '[]'::json)) FROM stage {stage} {joins} "
            f"WHERE {stage}.pipeline_id = {alias}.id)"
        )

    def relation(self, model: str, read: Relation, parent: str) -> str:
        """A list of related objects (to-one relations are joined: see `joined`)."""
        join = _RELATIONS[(model, read.name)]
        alias = self.alias()
        source = join.source.format(x=alias)
        where = join.where.format(a=parent, x=alias)
        order = join.order.format(x=alias) if join.order else None
        stage = parent if (model, read.name) == ("Stage", "tasks") else None
        target, joins = self.object(read.target, alias, stage)
        if not join.bounded:
            return (
                f"(SELECT coalesce(json_agg({target} ORDER BY {order}), '[]'::json) "
                f"FROM {source} {joins} WHERE {where})"
            )
        arguments = self.resolved(read.arguments)
        if arguments.get("after_sequence") is not None:
            after = self.argument(arguments, "after_sequence", "bigint")
            where += f" AND {alias}.id > {after}"
        limit = self.argument(arguments, "first", "int")
        return (
            f"(SELECT coalesce(json_agg({target} ORDER BY {order}), '[]'::json) "
            f"FROM (SELECT {alias}.* FROM {source} WHERE {where} ORDER BY {order} LIMIT {limit}) "
            f"{alias} {joins})"
        )

    def root(self, key_reads: Sequence[tuple[str, Read]]) -> str:
        entries = []
        for key, read in key_reads:
            match read:
                case Constant(value):
                    entries.append((key, f"'{value}'"))
                case NodeRead():
                    entries.append((key, self.nodes(read)))
                case ConnectionRead():
                    entries.append((key, self.connection(read)))
                case EventsRead():
                    entries.append((key, self.events(read)))
                case _:
                    raise Uncovered(f"{type(read).__name__} at the root")
        if len(entries) > MAX_KEYS_PER_OBJECT:
            raise Uncovered("too many keys in one object")
        pairs = ", ".join(f"'{key}', {value}" for key, value in entries)
        return f"SELECT json_build_object({pairs})::text"

    def nodes(self, read: NodeRead) -> str:
        arguments = self.resolved(read.arguments)
        found = [
            self.node(read, type_name, key, (arguments.call, "ids", index, 1))
            for index, (type_name, key) in enumerate(arguments["ids"])
        ]
        if not read.many:
            return found[0]
        return f"json_build_array({', '.join(found)})" if found else "'[]'::json"

    def node(self, read: NodeRead, type_name: str, key: int, origin: tuple[Any, ...]) -> str:
        target = read.by_type.get(type_name)
        if target is None:
            raise Uncovered(f"node of type {type_name}")
        alias = self.alias()
        built, joins = self.object(target, alias)
        return (
            f"(SELECT {built} FROM {TABLES[type_name]} {alias} {joins} "
            f"WHERE {alias}.id = {self.parameter(key, 'int', origin)})"
        )

    def events(self, read: EventsRead) -> str:
        arguments = self.resolved(read.arguments)
        sequences = self.argument(arguments, "sequences", "bigint[]")
        alias = self.alias()
        built, joins = self.object(read.target, alias)
        return (
            f"(SELECT coalesce(json_agg({built} ORDER BY {alias}.id), '[]'::json) "
            f"FROM event {alias} {joins} WHERE {alias}.id = ANY({sequences}))"
        )

    def connection(self, read: ConnectionRead) -> str:
        arguments = self.resolved(read.arguments)
        model = read.typename.removesuffix("Connection")
        table = TABLES[model]
        key_column = '"order"' if model == "Environment" else "id"
        descending = model in ("Issue", "Pipeline")
        first = self.argument(arguments, "first", "int")
        filters = self.filters(model, arguments)
        page = self.alias()
        conditions = [condition.format(x=page) for condition in filters]
        after = arguments.get("after")
        if after is not None:
            comparison = "<" if descending else ">"
            after_key = self.argument(arguments, "after", "int")
            conditions.append(f"{page}.{key_column} {comparison} {after_key}")
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        direction = "DESC" if descending else "ASC"
        rows = (
            f"(SELECT {page}.*, row_number() OVER (ORDER BY {page}.{key_column} {direction}) "
            f"AS page_row FROM {table} {page}{where} "
            f"ORDER BY {page}.{key_column} {direction} LIMIT {first} + 1) {page}"
        )
        in_page = f"{page}.page_row <= {first}"
        page_joins: list[str] = []
        keys = f"(array_agg({page}.{key_column} ORDER BY {page}.page_row) FILTER (WHERE {in_page}))"
        entries = []
        for key, part in read.parts:
            if part == "totalCount":
                counted = self.alias()
                counted_where = " AND ".join(condition.format(x=counted) for condition in filters)
                entries.append(
                    (
                        key,
                        f"(SELECT count(*) FROM {table} {counted}"
                        f"{' WHERE ' + counted_where if counted_where else ''})",
                    )
                )
            elif part == "__typename":
                entries.append((key, f"'{read.typename}'"))
            elif isinstance(part, tuple) and part[0] == "edges":
                edge = []
                for edge_key, edge_part in part[1]:
                    if edge_part == "cursor":
                        edge.append((edge_key, _cursor_sql(f"{page}.{key_column}")))
                    elif edge_part == "__typename":
                        edge.append((edge_key, f"'{read.edge_typename}'"))
                    else:
                        node, joins = self.object(edge_part, page)
                        edge.append((edge_key, node))
                        page_joins.append(joins)
                pairs = ", ".join(f"'{k}', {v}" for k, v in edge)
                entries.append(
                    (
                        key,
                        f"coalesce(json_agg(json_build_object({pairs}) ORDER BY {page}.page_row) "
                        f"FILTER (WHERE {in_page}), '[]'::json)",
                    )
                )
            else:
                assert isinstance(part, tuple), part
                assert part[0] == "pageInfo", part
                info = []
                for info_key, name in part[1]:
                    match name:
                        case "hasNextPage":
                            info.append((info_key, f"count(*) > {first}"))
                        case "hasPreviousPage":
                            info.append((info_key, "true" if after is not None else "false"))
                        case "startCursor":
                            info.append((info_key, _cursor_sql(f"{keys}[1]")))
                        case "endCursor":
                            info.append(
                                (info_key, _cursor_sql(f"{keys}[least(count(*), {first})]"))
                            )
                        case "__typename":
                            info.append((info_key, "'PageInfo'"))
                pairs = ", ".join(f"'{k}', {v}" for k, v in info)
                entries.append((key, f"json_build_object({pairs})"))
        pairs = ", ".join(f"'{k}', {v}" for k, v in entries)
        # GROUP BY (): one row, even for an empty page whose selection aggregates nothing.
        return f"(SELECT json_build_object({pairs}) FROM {rows} {' '.join(page_joins)} GROUP BY ())"

    def filters(self, model: str, arguments: "_Resolved") -> list[str]:
        """Conditions on the row aliased {x}, as reads.*_matching filters."""
        conditions = []
        status = arguments.get("status")
        environment = arguments.get("environment_id")
        instance = arguments.get("instance_id")
        if status is not None:
            value = self.argument(arguments, "status", "text")
            conditions.append(
                f"{{x}}.status = {value}"
                if model == "Pipeline"
                else f"EXISTS (SELECT 1 FROM pipeline p WHERE p.issue_id = {{x}}.id "
                f"AND p.status = {value})"
            )
        if instance is not None:
            conditions.append(
                f"{{x}}.instance_id = {self.argument(arguments, 'instance_id', 'int')}"
            )
        if environment is not None:
            value = self.argument(arguments, "environment_id", "int")
            conditions.append(
                {
                    "Issue": "{x}.id IN (SELECT p.issue_id FROM pipeline p JOIN stage s ON "
                    f"s.pipeline_id = p.id WHERE s.environment_id = {value})",
                    "Pipeline": "{x}.id IN (SELECT s.pipeline_id FROM stage s WHERE "
                    f"s.environment_id = {value})",
                    "Instance": f"{{x}}.environment_id = {value}",
                    "Database": "{x}.instance_id IN (SELECT i.id FROM instance i WHERE "
                    f"i.environment_id = {value})",
                }[model]
            )
        return conditions


@dataclass(frozen=True)
class Statement:
    """The SQL of a read, its parameters, and how its derived fields come out.

    In the hidden-keys form (`markers` None) a derived field is null in its place and the
    facts its rule needs ride along under hidden keys of the objects: the caller parses the
    JSON, fills it in and writes it again. In the spliced form each derived field's place
    holds an object of one marker key, `{"#<kind><n>" : facts}`, replaced whole by the
    field's JSON, and a pipeline's scheduling facts ride under a last key `"#f<n>"`, cut out:
    the caller splices the values' JSON into PostgreSQL's text, never parsing the rest.
    Nested facts (scheduling, active stage) come as [length of their JSON text, the JSON].
    markers[n] is what marker n stands for: ("w", a waiting reason's selection), its key
    `#w<n>:<pipeline id>` and its facts the task's id; ("a", None), the facts of
    `available_actions`: the task's in the value, its stage's in the key after the number
    (`_stage_access_facts_sql`); ("s", None) a stage's status and ("c", the selection) its
    task counts, with its tasks' statuses; ("v", the ActiveStage), with its facts of the
    hidden-keys form, or ("u", the ActiveStage) on a pipeline that also reads its scheduling
    facts, with [its id, its stages' objects] (their statuses are the scheduling facts'); ("f",
    the ObjectRead) the scheduling facts.

    The spliced form is sound only where no key of the data is a client's: no JSON column
    is read (their keys could be anything); every other key is one of the plan's names, and
    a string's quotes are escaped, so `"#` followed by `<kind><n>` is always a marker (what
    a key carries after its number has no quote: statuses, a hex text, booleans, numbers)."""

    sql: str
    parameters: list[Any]
    markers: tuple[tuple[str, Any], ...] | None = None


class _Resolved(dict[str, Any]):
    """A read's arguments for one request, with the number of the call that asked them."""

    def __init__(self, arguments: Mapping[str, Any], call: int) -> None:
        super().__init__(arguments)
        self.call = call


def _shape(arguments: Mapping[str, Any]) -> Hashable:
    """What of a read's arguments shapes the statement's text: which are given, and the
    types of the ids asked for (the values are parameters)."""
    return tuple(
        (key, tuple(type_name for type_name, _ in value) if key == "ids" else value is None)
        for key, value in arguments.items()
    )


def _at(resolved: Sequence[Mapping[str, Any]], origin: tuple[Any, ...]) -> Any:
    value: Any = resolved[origin[0]]
    for step in origin[1:]:
        value = value[step]
    return value


@dataclass(frozen=True)
class _Built:
    """A statement's text as built once, for the arguments of the same shapes."""

    sources: tuple[Any, ...]
    shapes: tuple[Hashable, ...]
    sql: str
    origins: tuple[tuple[Any, ...], ...]
    markers: tuple[tuple[str, Any], ...] | None


#: Texts kept per plan and form: one for each shape of arguments seen (few: a page's reads
#: keep theirs; `nodes(ids:)` with other types or counts, a filter given or not, differ).
MAX_TEXTS_PER_PLAN = 8


def statement(
    key_reads: Sequence[tuple[str, Read]],
    arguments: Arguments,
    *,
    spliced: bool = False,
    texts: dict[bool, list[Any]] | None = None,
) -> Statement:
    """The statement whose one value is the JSON text of the data object. With `texts` (a
    plan's own dict), its text is built once for each shape of the arguments and kept
    there: a request whose arguments have the shapes of one kept only picks its
    parameters. The builder's text depends on the arguments' shapes alone (_shape), so
    asking the kept text's sources in its order gives the calls the builder would make."""
    kept = texts.setdefault(spliced, []) if texts is not None else []
    for built in kept:
        resolved: list[Mapping[str, Any]] = []
        for source, shape in zip(built.sources, built.shapes, strict=True):
            answer = arguments(source)
            if _shape(answer) != shape:
                break
            resolved.append(answer)
        else:
            return Statement(
                built.sql, [_at(resolved, origin) for origin in built.origins], built.markers
            )
    builder = _Builder(arguments, markers=[] if spliced else None)
    sql = builder.root(key_reads)
    markers = None if builder.markers is None else tuple(builder.markers)
    if texts is not None and len(kept) < MAX_TEXTS_PER_PLAN:
        kept.append(
            _Built(
                tuple(builder.sources),
                tuple(builder.shapes),
                sql,
                tuple(builder.origins),
                markers,
            )
        )
    return Statement(sql, builder.parameters, markers)


async def fetch_data_json(
    sql: str, parameters: Sequence[Any], *, generic_plan: bool = False
) -> str:
    """Run a statement made by `statement` on a pooled connection: the data's JSON text.
    With `generic_plan`, PostgreSQL plans the prepared statement once, not at every
    execution: a live render's statement takes its events as an array, for which it never
    settles on a generic plan by itself (the pipeline page's rich selection: 1.4 ms to plan,
    0.3 ms to run), and the setting lasts only the transaction (pooled connections keep no
    session state)."""
    client: Any = get_connection("default")
    async with client.acquire_connection() as connection:
        # Logged as tortoise logs each statement it sends, for whoever counts them.
        client.log.debug("%s: %s", sql, parameters)
        if not generic_plan:
            text: str = await connection.fetchval(sql, *parameters)
            return text
        # BEGIN and the setting in one round trip; a statement that fails leaves the
        # transaction open, which the pool rolls back when the connection is released.
        await connection.execute(_GENERIC_PLAN_TRANSACTION)
        text = await connection.fetchval(sql, *parameters)
        await connection.execute("COMMIT")
        return text


_GENERIC_PLAN_TRANSACTION = "BEGIN READ ONLY; SET LOCAL plan_cache_mode = force_generic_plan"


# --- facts to domain --------------------------------------------------------------------------


_TASK_STATUSES = {status.value: status for status in TaskStatus}
_NO_BLOCKERS: frozenset[int] = frozenset()


def _stage_tasks(
    columns: Sequence[Any],
    blocked_by: Mapping[int, list[int]],
    gates: dict[tuple[int, int | None, int | None], tuple[bool, tuple[str, ...]]],
) -> tuple[TaskState, ...]:
    """A stage's tasks from its facts, read column by column (nulls: a stage without tasks,
    whose array_agg are null), and built column by column: the tuples are made by
    `tuple.__new__` from zipped columns, in C (TaskState's own __new__ took a third of the
    5,000-task page's decision)."""
    if columns[0] is None:
        return ()
    (
        ids,
        statuses,
        instance_ids,
        database_ids,
        not_befores,
        statement_versions,
        checked_versions,
        blocking_rules,
        overridden_versions,
    ) = columns

    def gate(
        versions: tuple[int, int | None, int | None], rules: list[str]
    ) -> tuple[bool, tuple[str, ...]]:
        # Most tasks share their versions and have no blocking rule: judged once for each.
        found = gates.get(versions) if not rules else None
        if found is None:
            statement_version, checked_version, overridden_version = versions
            check_facts = CheckFacts(
                statement_version=statement_version,
                checked_version=checked_version,
                blocking_rules=tuple(rules),
                overridden_version=overridden_version,
            )
            found = (check_facts.gate is CheckGate.PENDING, check_facts.holding_rules)
            if not rules:
                gates[versions] = found
        return found

    task_gates = list(
        map(
            gate,
            zip(statement_versions, checked_versions, overridden_versions, strict=True),
            blocking_rules,
        )
    )
    fields = zip(
        ids,
        map(_TASK_STATUSES.__getitem__, statuses),
        instance_ids,
        database_ids,
        [None if each is None else datetime.fromisoformat(each) for each in not_befores],
        [_blockers(blocked_by.get(task_id)) for task_id in ids]
        if blocked_by
        else repeat(_NO_BLOCKERS),
        [pending for pending, _ in task_gates],
        [rules for _, rules in task_gates],
        strict=False,
    )
    return tuple(map(_new_task_state, fields))


#: TaskState from a tuple of its fields in order, without a Python call.
_new_task_state: Callable[[tuple[Any, ...]], TaskState] = partial(tuple.__new__, TaskState)


def _blockers(ids: list[int] | None) -> frozenset[int]:
    return frozenset(ids) if ids else _NO_BLOCKERS


def scheduling_decision(facts: Sequence[Any], now: datetime) -> SchedulingDecision:
    """The decision db.scheduling.decisions makes, from the facts _scheduling_facts_sql read
    (whose first item is the pipeline's id; the waiting objects after them are not read)."""
    _pipeline_id, status, stages, dependencies, running, limits = facts[:6]
    blocked_by: dict[int, list[int]] = {}
    gates: dict[tuple[int, int | None, int | None], tuple[bool, tuple[str, ...]]] = {}
    for task_id, blocker_id in dependencies:
        blocked_by.setdefault(task_id, []).append(blocker_id)
    state = PipelineState(
        status=PipelineStatus(status),
        stages=tuple(
            StageState(id=stage_id, name=name, tasks=_stage_tasks(columns, blocked_by, gates))
            for stage_id, name, columns in stages
        ),
    )
    occupancy = Occupancy(
        running_task_by_database={
            database_id: task_id for task_id, _, database_id in running if database_id is not None
        },
        running_count_by_instance=Counter(instance_id for _, instance_id, _ in running),
        limit_by_instance=dict(limits),
    )
    return decide(state, occupancy, now)


def available_actions(facts: Sequence[Any], principal: Principal) -> list[TaskAction]:
    """What domain.task_actions.actions_for offers `principal` on a task, from the facts
    _access_facts_sql read (the task's row in part: what actions_for looks at)."""
    (
        task_type,
        status,
        has_not_before,
        cancel_requested,
        pipeline_status,
        creator,
        developers_may_approve,
        creator_may_approve,
    ) = facts
    task = TaskFacts(
        status=TaskStatus(status),
        type=TaskType(task_type),
        pipeline_status=PipelineStatus(pipeline_status),
        cancel_requested=cancel_requested,
        has_not_before=has_not_before,
    )
    rules = ApprovalRules(
        developers_may_approve=developers_may_approve, creator_may_approve=creator_may_approve
    )
    return actions_for(task, TaskAccess(principal, bytes.fromhex(creator).decode(), rules))
