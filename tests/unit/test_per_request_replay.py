"""Per-request validation rules on a cached document are called from a recorded walk: the
calls, their arguments and the effect of SKIP and BREAK are those of graphql-core's walk."""

from typing import Any

import pytest
from graphql import BREAK, SKIP, Node, ParallelVisitor, build_schema, parse, visit
from graphql.utilities import TypeInfo
from graphql.validation import ValidationContext

from conveyor.graphql.validation_cache import (
    PerRequestRule,
    _hooked_kinds,
    _replay,
    _Walks,
)

SCHEMA = build_schema("type Query { a(x: String): A  b: String } type A { c: String d: A }")
DOCUMENT_TEXT = """
query One($v: String = "default") { a(x: "one") { c d { c d { c } } } b }
query Two { ...F a(x: "two") { d { c } } }
fragment F on Query { b a(x: "three") { c } }
"""


def rules(calls: list[Any]) -> list[type[PerRequestRule]]:
    """Three rules: one that records, one that skips each field named d, one that stops at
    the second string."""

    def note(rule: str, event: str, node: Node, args: tuple[Any, ...]) -> None:
        key, parent, path, ancestors = args
        calls.append((rule, event, node.kind, key, id(parent), tuple(path), len(ancestors)))

    class Records(PerRequestRule):
        def enter_field(self, node: Node, *args: Any) -> None:
            note("records", "enter", node, args)

        def leave_field(self, node: Node, *args: Any) -> None:
            note("records", "leave", node, args)

        def leave_document(self, node: Node, *args: Any) -> None:
            note("records", "leave", node, args)

    class Skips(PerRequestRule):
        def enter_field(self, node: Any, *args: Any) -> Any:
            note("skips", "enter", node, args)
            return SKIP if node.name.value == "d" else None

        def leave_field(self, node: Node, *args: Any) -> None:
            note("skips", "leave", node, args)

    class Breaks(PerRequestRule):
        seen = 0

        def enter_string_value(self, node: Node, *args: Any) -> Any:
            note("breaks", "enter", node, args)
            self.seen += 1
            return BREAK if self.seen == 2 else None

        def enter_operation_definition(self, node: Node, *args: Any) -> None:
            note("breaks", "enter", node, args)

    return [Records, Skips, Breaks]


def test_a_replay_calls_what_a_walk_calls() -> None:
    document = parse(DOCUMENT_TEXT)
    walked: list[Any] = []
    context = ValidationContext(SCHEMA, document, TypeInfo(SCHEMA), lambda _error: None)
    visit(document, ParallelVisitor([rule(context) for rule in rules(walked)]))
    replayed: list[Any] = []
    replay_rules = rules(replayed)
    kinds = _hooked_kinds(replay_rules)
    assert kinds == frozenset({"field", "document", "string_value", "operation_definition"})
    events = _Walks(4).events(DOCUMENT_TEXT, document, kinds)
    _replay(events, [rule(context) for rule in replay_rules])
    assert replayed == walked
    assert ("skips", "enter", "field") in [call[:3] for call in walked]
    assert len([call for call in walked if call[0] == "breaks" and call[2] == "string_value"]) == 2


def test_a_rule_with_a_generic_hook_is_walked() -> None:
    class Generic(PerRequestRule):
        def enter(self, *_args: Any) -> None:
            pass

    assert _hooked_kinds([Generic]) is None


def test_a_rule_that_edits_the_document_is_refused() -> None:
    document = parse(DOCUMENT_TEXT)
    context = ValidationContext(SCHEMA, document, TypeInfo(SCHEMA), lambda _error: None)

    class Edits(PerRequestRule):
        def enter_field(self, node: Node, *_args: Any) -> Any:
            return node

    events = _Walks(4).events(DOCUMENT_TEXT, document, frozenset({"field"}))
    with pytest.raises(AssertionError, match="edits the document"):
        _replay(events, [Edits(context)])
