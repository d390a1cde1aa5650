"""The derived fields of a compiled read, filled in from the hidden facts PostgreSQL read,
by the same `domain` functions the resolvers call; the hidden keys are removed."""

import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from conveyor.db.compiled_reads import (
    ACCESS_KEY,
    ACTIVE_STAGE_KEY,
    ROW_ID_KEY,
    SCHEDULING_KEY,
    STATUSES_KEY,
    TYPE_KEY,
    ActiveStage,
    ConnectionRead,
    Derived,
    EventsRead,
    NodeRead,
    ObjectRead,
    Relation,
    Uncovered,
    available_actions,
    scheduling_decision,
)
from conveyor.domain.permissions import Principal
from conveyor.domain.rollup import active_stage_index, count_task_statuses, derive_stage_status
from conveyor.domain.scheduling import SchedulingDecision, WaitingReason
from conveyor.domain.statuses import TaskStatus
from conveyor.graphql.compiled.plan import Plan

_COUNTED = {
    "pendingApproval": TaskStatus.PENDING_APPROVAL,
    "pending": TaskStatus.PENDING,
    "running": TaskStatus.RUNNING,
    "done": TaskStatus.DONE,
    "failed": TaskStatus.FAILED,
    "canceled": TaskStatus.CANCELED,
    "skipped": TaskStatus.SKIPPED,
}
_HIDDEN = (ROW_ID_KEY, ACCESS_KEY, TYPE_KEY)
_TASK_STATUSES = {status.value: status for status in TaskStatus}

Json = dict[str, Any]

#: The spliced form's markers (db.compiled_reads.Statement), found by their literal start
#: (a pattern that does not start with one scans the text several times slower). The few
#: with nested facts: a pipeline's scheduling facts (a last key, cut out with the comma
#: before it) and an active stage's candidates; their facts are decoded where they start.
_NESTED_MARKERS = re.compile(r'"#([fuv])([0-9]+)" : ')
#: The many with flat facts, a number or an array of numbers, booleans, null and strings
#: without "]" (statuses, kinds), and what the key carries after its number: a task's
#: waiting reason and actions, a stage's status and counts. `split` keeps each marker's text
#: (from "#" to the facts' end) between the text's pieces: most repeat one already met, and
#: are looked up whole; _FLAT_MARKER_PARTS takes a new one apart.
_FLAT_MARKERS = re.compile(r'\{"(#[wasc][0-9]+[^"]*" : (?:\[[^\]]*\]|[0-9]+))\}')
_FLAT_MARKER_PARTS = re.compile(r'#([wasc])([0-9]+)([^"]*)" : (.*)', re.DOTALL)


@dataclass(frozen=True, eq=False)
class _Scheduling:
    """One pipeline's scheduling decision, and the objects its waiting reasons may name
    (JSON objects by row id, by their number in the plan)."""

    decision: SchedulingDecision
    objects: dict[int, dict[str, Json]]
    #: Many tasks wait for the same reason (an earlier stage): worded once, copied each.
    reasons: dict[tuple[WaitingReason, Any], Json] = field(default_factory=dict)


def _named(objects: dict[str, Json], key: int | None) -> Json | None:
    if key is None:
        return None
    named = objects.get(str(key))
    if named is None:
        # Not among the rows read: the resolvers answer, as they load it.
        raise Uncovered("a waiting reason names a row not read")
    return named


def _waiting_reason(
    reason: WaitingReason,
    selection: Sequence[tuple[str, str, int | None]],
    objects: dict[int, dict[str, Json]],
) -> Json:
    values = {
        "kind": reason.kind.value,
        "message": reason.message,
        "notBefore": None if reason.not_before is None else reason.not_before.isoformat(),
        "limit": reason.limit,
        "rules": list(reason.rules),
        "__typename": "WaitingReason",
    }
    return {
        key: values[name]
        if number is None
        else _named(objects[number], reason.stage_id if name == "stage" else reason.task_id)
        for key, name, number in selection
    }


def _task_counts(statuses: list[TaskStatus], selection: Sequence[tuple[str, str]]) -> Json:
    counts = count_task_statuses(statuses)
    values: dict[str, Any] = {name: counts[status] for name, status in _COUNTED.items()}
    values["total"] = len(statuses)
    values["__typename"] = "TaskStatusCounts"
    return {key: values[name] for key, name in selection}


@dataclass(frozen=True)
class _Steps:
    """What filling in one object of a plan takes, worked out once per plan."""

    scheduling: bool
    statuses: bool
    #: (what, key, detail), in selection order; what is one of the names below.
    fields: tuple[tuple[str, str, Any], ...]
    hidden: tuple[str, ...]


def _steps_of(read: ObjectRead, walked: frozenset[int]) -> _Steps:
    fields: list[tuple[str, str, Any]] = []
    for key, part in read.fields:
        match part:
            case Derived(name, selection):
                fields.append((name, key, selection))
            case ActiveStage(target):
                fields.append(("active_stage", key, target))
            case Relation(_, target) if id(target) in walked:
                fields.append(("relation", key, target))
    return _Steps(
        scheduling=SCHEDULING_KEY in read.facts,
        statuses=STATUSES_KEY in read.facts,
        fields=tuple(fields),
        hidden=tuple(key for key in _HIDDEN if key in read.facts),
    )


@dataclass
class DerivedFields:
    plan: Plan
    principal: Principal
    #: When the request arrived: scheduling is decided as of this moment, as Loaders.now.
    now: datetime
    decisions: dict[int, SchedulingDecision] = field(default_factory=dict)
    actions: dict[tuple[Any, ...], list[str]] = field(default_factory=dict)

    def fill(self, data: Json) -> None:
        """Fill in `data` (the JSON of the plan's reads), in place."""
        for key, read in self.plan.reads:
            value = data[key]
            if value is None:
                continue
            if isinstance(read, NodeRead):
                for item in value if read.many else [value]:
                    if item is not None and TYPE_KEY in item:
                        self.object(item, read.by_type[item[TYPE_KEY]])
            elif isinstance(read, EventsRead):
                for item in value:
                    self.object(item, read.target)
            elif isinstance(read, ConnectionRead):
                for part_key, part in read.parts:
                    if isinstance(part, tuple) and part[0] == "edges":
                        for edge in value[part_key]:
                            for edge_key, edge_part in part[1]:
                                if isinstance(edge_part, ObjectRead):
                                    self.object(edge[edge_key], edge_part)

    def steps(self, read: ObjectRead) -> _Steps | None:
        if id(read) not in self.plan.walked:
            return None
        steps: _Steps | None = self.plan.steps.get(id(read))
        if steps is None:
            steps = self.plan.steps[id(read)] = _steps_of(read, self.plan.walked)
        return steps

    def object(self, value: Json, read: ObjectRead, scheduling: _Scheduling | None = None) -> None:
        steps = self.steps(read)
        if steps is None:
            return
        if steps.scheduling:
            facts = value.pop(SCHEDULING_KEY)
            scheduling = _Scheduling(
                self.decision(facts),
                {
                    number: objects
                    for (number, _, _), objects in zip(
                        read.waiting_objects, facts[-len(read.waiting_objects) :], strict=True
                    )
                }
                if read.waiting_objects
                else {},
            )
        statuses = (
            [_TASK_STATUSES[status] for status in value.pop(STATUSES_KEY)] if steps.statuses else []
        )
        for what, key, detail in steps.fields:
            if what == "relation":
                related = value[key]
                if isinstance(related, list):
                    for item in related:
                        self.object(item, detail, scheduling)
                elif related is not None:
                    self.object(related, detail, scheduling)
            elif what == "waiting_reason":
                assert scheduling is not None, "the plan reads the scheduling facts above"
                reason = scheduling.decision.waiting.get(value[ROW_ID_KEY])
                value[key] = (
                    None if reason is None else self.waiting_reason(reason, detail, scheduling)
                )
            elif what == "available_actions":
                value[key] = self.available_actions(value[ACCESS_KEY])
            elif what == "status":
                value[key] = derive_stage_status(statuses).value
            elif what == "task_counts":
                value[key] = _task_counts(statuses, detail)
            else:
                stage_statuses, stages = value.pop(f"{ACTIVE_STAGE_KEY}:{key}")
                index = active_stage_index(
                    [[_TASK_STATUSES[status] for status in each] for each in stage_statuses]
                )
                value[key] = None if index is None else stages[index]
                if index is not None:
                    self.object(stages[index], detail, scheduling)
        for hidden in steps.hidden:
            del value[hidden]

    def decision(self, facts: list[Any]) -> SchedulingDecision:
        pipeline_id = facts[0]
        if pipeline_id not in self.decisions:
            self.decisions[pipeline_id] = scheduling_decision(facts, self.now)
        return self.decisions[pipeline_id]

    @staticmethod
    def waiting_reason(
        reason: WaitingReason,
        selection: Sequence[tuple[str, str, int | None]],
        scheduling: _Scheduling,
    ) -> Json:
        memo_key = (reason, selection)
        if memo_key not in scheduling.reasons:
            scheduling.reasons[memo_key] = _waiting_reason(reason, selection, scheduling.objects)
        return dict(scheduling.reasons[memo_key])

    def available_actions(self, facts: list[Any]) -> list[str]:
        # Few tasks differ in what decides their actions: decided once for each kind.
        memo_key = tuple(facts)
        actions = self.actions.get(memo_key)
        if actions is None:
            actions = self.actions[memo_key] = [
                action.value for action in available_actions(facts, self.principal)
            ]
        return list(actions)


def _stage_access_facts(key_rest: str) -> list[Any]:
    """The stage's part of a task's access facts from the text its marker's key carries
    (db.compiled_reads._stage_access_facts_sql), as the hidden-keys form reads them."""
    _, pipeline_status, creator, developers_may_approve, creator_may_approve = key_rest.split(":")
    booleans = {"true": True, "false": False, "": None}
    return [
        pipeline_status or None,
        creator,
        booleans[developers_may_approve],
        booleans[creator_may_approve],
    ]


@dataclass
class SplicedFields:
    """The derived fields of a statement of the spliced form (db.compiled_reads.Statement),
    spliced into PostgreSQL's text as JSON: the rest of the text is never parsed."""

    markers: Sequence[tuple[str, Any]]
    derived: DerivedFields
    #: Per pipeline id: the objects its waiting reasons may name, by their number in the plan.
    objects: dict[int, dict[int, dict[str, Json]]] = field(default_factory=dict)
    #: Per pipeline id: its stages' task statuses, in order, from its scheduling facts.
    stage_statuses: dict[int, list[list[str]]] = field(default_factory=dict)
    #: The JSON text of each value by its marker's text (many tasks share their actions,
    #: many stages their statuses; a pipeline's waiting reasons are worded at once).
    texts: dict[str, str] = field(default_factory=dict)
    #: The (pipeline id, marker number) whose waiting reasons are in `texts`.
    worded: set[tuple[str, str]] = field(default_factory=set)

    def answer(self, text: str) -> bytes:
        pieces: list[str] = []
        active_stages: list[tuple[int, str, list[Any]]] = []
        position = 0
        for match in _NESTED_MARKERS.finditer(text):
            start = match.start()
            if start < position:
                continue  # inside facts already decoded
            # [length, facts]: the facts' text cut out by its length, decoded alone.
            length_end = text.index(", ", match.end())
            facts_start = length_end + 2
            end = facts_start + int(text[match.end() + 1 : length_end])
            facts = orjson.loads(text[facts_start:end])
            if text[end] != "]":
                raise Uncovered("nested facts not of their length")
            end += 1
            read = self.markers[int(match.group(2))][1]
            if match.group(1) == "f":
                if text[start - 2 : start] != ", ":
                    raise Uncovered("a scheduling marker not after a key")
                pieces.append(text[position : start - 2])
                self.scheduling_facts(read, facts)
                position = end
            else:
                if text[start - 1] != "{" or text[end] != "}":
                    raise Uncovered("an active stage's marker not alone in its object")
                pieces.append(text[position : start - 1])
                active_stages.append((len(pieces), match.group(1), facts))
                pieces.append("")
                position = end + 1
        pieces.append(text[position:])
        for index, kind, (first, stages) in active_stages:
            stage_statuses = first if kind == "v" else self.stage_statuses.get(first)
            if stage_statuses is None or len(stage_statuses) != len(stages):
                raise Uncovered("an active stage's candidates without their statuses")
            chosen = active_stage_index(
                [[_TASK_STATUSES[status] for status in each] for each in stage_statuses]
            )
            pieces[index] = "null" if chosen is None else orjson.dumps(stages[chosen]).decode()
        out: list[str] = []
        texts, value = self.texts, self.value
        for piece in pieces:
            # [text, marker, text, marker, ..., text]: the values go where the markers were.
            parts = _FLAT_MARKERS.split(piece)
            parts[1::2] = [texts[m] if m in texts else value(m) for m in parts[1::2]]
            out += parts
        answer = "".join(out)
        if '{"#' in answer:
            # A marker the patterns did not take: never send it.
            raise Uncovered("a marker left in the spliced text")
        return answer.encode()

    def waiting_texts(self, pipeline: str, number: str, prefix: str) -> dict[str, str]:
        """The JSON of each waiting reason of `pipeline`'s decision for marker `number`'s
        selection, by `prefix` and the task id as the facts write it (the marker's text):
        worded once for each reason (many tasks share theirs, e.g. a later stage's wait for
        the active one)."""
        decision = self.derived.decisions.get(int(pipeline))
        if decision is None:
            raise Uncovered("a waiting reason without its pipeline's facts")
        selection = self.markers[int(number)][1]
        objects = self.objects[int(pipeline)]
        # By identity first (tasks waiting for an earlier stage share one object), then by
        # value: the decision makes a new object for each task waiting for its checks or for
        # a busy database, and most of those are equal.
        by_identity: dict[int, str] = {}
        by_value: dict[WaitingReason, str] = {}
        texts = {}
        for task_id, reason in decision.waiting.items():
            text = by_identity.get(id(reason))
            if text is None:
                text = by_value.get(reason)
                if text is None:
                    text = by_value[reason] = orjson.dumps(
                        _waiting_reason(reason, selection, objects)
                    ).decode()
                by_identity[id(reason)] = text
            texts[f"{prefix}{task_id}"] = text
        return texts

    def scheduling_facts(self, read: ObjectRead, facts: list[Any]) -> None:
        self.derived.decision(facts)
        self.stage_statuses[facts[0]] = [columns[1] or [] for _, _, columns in facts[2]]
        objects = self.objects.setdefault(facts[0], {})
        if read.waiting_objects:
            for (number, _, _), named in zip(
                read.waiting_objects, facts[-len(read.waiting_objects) :], strict=True
            ):
                objects[number] = named

    def value(self, marker: str) -> str:
        """The JSON text of a marker's value, from its text (its kind and number, what its
        key carries after the number, its facts: db.compiled_reads.Statement), kept in
        `texts`."""
        parts = _FLAT_MARKER_PARTS.fullmatch(marker)
        if parts is None:
            raise Uncovered("a marker not of its form")
        kind, number, key_rest, facts = parts.groups()
        if kind == "w":
            pipeline = key_rest[1:]
            if (pipeline, number) not in self.worded:
                # Every waiting task of the pipeline at once, by the marker it will meet.
                self.worded.add((pipeline, number))
                self.texts.update(self.waiting_texts(pipeline, number, marker[: -len(facts)]))
            return self.texts.setdefault(marker, "null")
        key: Hashable
        if kind == "a":
            principal = self.derived.principal
            key = (marker, principal.actor, principal.role)
        elif kind == "c":
            # The counts' selection, in case two statements of the plan number it apart.
            key = (marker, self.markers[int(number)][1])
        else:
            key = marker
        known = self.derived.plan.marker_values
        found = known.find(key)
        if found is None:
            found = orjson.dumps(self._flat_value(kind, number, key_rest, facts)).decode()
            known.put(key, found)
        self.texts[marker] = found
        return found

    def _flat_value(self, kind: str, number: str, key_rest: str, facts: str) -> Any:
        if kind == "a":
            return self.derived.available_actions(
                [*orjson.loads(facts), *_stage_access_facts(key_rest)]
            )
        statuses = [_TASK_STATUSES[status] for status in orjson.loads(facts)]
        if kind == "s":
            return derive_stage_status(statuses).value
        return _task_counts(statuses, self.markers[int(number)][1])
