"""Parsing once per document text; validation split in two: what depends on the document
alone, done once per document text, and the rules made for each request (its variables, its
token: cost, rate limits, unstorable text), done for every request.

graphql-core's validation walks the document with type information for every rule: for a
pipeline read that is most of the Python time a small request takes (about 60 %, measured
in-process on the benchmark's 100-task read). A document that passed the document-only
rules once passes them again; only the per-request rules have to run, and they need no type
information. A document that failed them is validated whole, as before, so that its errors
come in the same order and number.
"""

from collections.abc import Hashable, Iterator, Mapping, Sequence
from typing import Any

from graphql import (
    BREAK,
    SKIP,
    ASTValidationRule,
    DocumentNode,
    GraphQLError,
    GraphQLSchema,
    Node,
    ParallelVisitor,
    TypeInfo,
    ValidationContext,
    ValidationRule,
    Visitor,
    visit,
)
from graphql.validation.validate import ValidationAbortedError
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document

from conveyor.graphql.bounded_cache import BoundedCache


class PerRequestRule(ValidationRule):
    """A validation rule made for one request, or one that must see every request's errors:
    it runs each time, never from the cache.

    On a document that passed the document-only rules it does not walk the document: its
    kind-specific hooks (`enter_<kind>`, `leave_<kind>`) are called on the nodes of those
    kinds, in the order and with the arguments a walk would give (see `_Walks`). So it must
    not define the generic `enter`/`leave`, and its hooks may return None, SKIP or BREAK,
    never a node (a rule does not edit the document)."""


#: One hook call of a walk: (enter or leave, the node's kind, node, key, parent, path,
#: ancestors).
_Event = tuple[str, str, Node, Any, Any, tuple[Any, ...], tuple[Any, ...]]


class _Recorder(Visitor):
    """Records the enter and leave events of the nodes of `kinds`."""

    def __init__(self, kinds: frozenset[str]) -> None:
        super().__init__()
        self.kinds = kinds
        self.events: list[_Event] = []

    def enter(self, node: Node, key: Any, parent: Any, path: Any, ancestors: Any) -> None:
        if node.kind in self.kinds:
            self.events.append(
                ("enter", node.kind, node, key, parent, tuple(path), tuple(ancestors))
            )

    def leave(self, node: Node, key: Any, parent: Any, path: Any, ancestors: Any) -> None:
        if node.kind in self.kinds:
            self.events.append(
                ("leave", node.kind, node, key, parent, tuple(path), tuple(ancestors))
            )


def _hooked_kinds(rules: Sequence[type[ASTValidationRule]]) -> frozenset[str] | None:
    """The node kinds the rules have hooks for; None if one has a generic hook."""
    kinds: set[str] = set()
    for rule in rules:
        hooked = _kinds_hooked_by(rule)
        if hooked is None:
            return None
        kinds |= hooked
    return frozenset(kinds)


def _kinds_hooked_by(rule: type[ASTValidationRule]) -> frozenset[str] | None:
    # Most per-request rules are classes made anew for each request, from the same code: the
    # kinds are remembered by where the class is defined.
    key = (rule.__module__, rule.__qualname__, tuple(vars(rule)))
    if key not in _HOOKED_KINDS:
        kinds: set[str] = set()
        for name in dir(rule):
            if name in ("enter", "leave"):
                _HOOKED_KINDS[key] = None
                break
            event, _, kind = name.partition("_")
            if event in ("enter", "leave") and kind:
                kinds.add(kind)
        else:
            _HOOKED_KINDS[key] = frozenset(kinds)
    return _HOOKED_KINDS[key]


_HOOKED_KINDS: dict[tuple[str, str, tuple[str, ...]], frozenset[str] | None] = {}


class _Walks:
    """What a walk of a document meets of the node kinds per-request rules hook, by document
    text: replaying it costs a call per hooked node, where graphql-core's `visit` costs
    several per node of every kind (most of the time a small cached request spent in
    validation, measured with py-spy on the 100-task read)."""

    def __init__(self, size: int) -> None:
        self._events: BoundedCache[tuple[str, frozenset[str]], tuple[_Event, ...]] = BoundedCache(
            size
        )

    def events(
        self, text: str, document: DocumentNode, kinds: frozenset[str]
    ) -> tuple[_Event, ...]:
        def record() -> tuple[_Event, ...]:
            recorder = _Recorder(kinds)
            visit(document, recorder)
            return tuple(recorder.events)

        return self._events.get((text, kinds), record)


def _replay(events: Sequence[_Event], visitors: Sequence[Visitor]) -> None:
    """Calls the visitors' hooks as ParallelVisitor would over the walk `events` record."""
    skipping: list[Node | None] = [None] * len(visitors)
    broken = [False] * len(visitors)
    for event, kind, node, key, parent, path, ancestors in events:
        for index, visitor in enumerate(visitors):
            if broken[index]:
                continue
            if skipping[index] is not None:
                if event == "leave" and skipping[index] is node:
                    skipping[index] = None
                continue
            hook = getattr(visitor, f"{event}_{kind}", None)
            if hook is None:
                continue
            result = hook(node, key, parent, list(path), list(ancestors))
            if result is BREAK:
                broken[index] = True
            elif result is SKIP and event == "enter":
                skipping[index] = node
            elif result is not None and result is not SKIP:
                raise AssertionError(f"{type(visitor).__name__} edits the document")


def _per_request_errors(
    schema: GraphQLSchema,
    text: str,
    document: DocumentNode,
    rules: Sequence[type[ASTValidationRule]],
    walks: _Walks,
) -> list[GraphQLError]:
    errors: list[GraphQLError] = []
    context = ValidationContext(schema, document, TypeInfo(schema), errors.append)
    kinds = _hooked_kinds(rules)
    try:
        visitors = [rule(context) for rule in rules]
        if kinds is None:
            visit(document, ParallelVisitor(visitors))
        else:
            _replay(walks.events(text, document, kinds), visitors)
    except ValidationAbortedError as aborted:
        errors.append(aborted)
    return errors


class ValidatedDocuments:
    """Which document texts passed which document-only rules."""

    def __init__(self, size: int) -> None:
        self._valid: BoundedCache[tuple[str, tuple[type[ASTValidationRule], ...]], bool] = (
            BoundedCache(size)
        )
        self.walks = _Walks(size)

    def valid(
        self,
        schema: GraphQLSchema,
        text: str,
        document: DocumentNode,
        rules: tuple[type[ASTValidationRule], ...],
    ) -> bool:
        return self._valid.get(
            (text, rules), lambda: not validate_document(schema, document, rules)
        )


class ParsedDocuments:
    """Documents by text and parse options (e.g. the token limit); nothing changes a parsed
    document. Only documents that parsed are kept: a text that fails, fails again in
    strawberry's own parsing, with the same error, each time."""

    def __init__(self, size: int) -> None:
        self._parsed: BoundedCache[Hashable, DocumentNode] = BoundedCache(size)

    @staticmethod
    def key(text: str, options: Mapping[str, Any]) -> Hashable:
        return (text, tuple(sorted(options.items())))

    def find(self, text: str, options: Mapping[str, Any]) -> DocumentNode | None:
        return self._parsed.find(self.key(text, options))

    def keep(self, text: str, options: Mapping[str, Any], document: DocumentNode) -> None:
        self._parsed.put(self.key(text, options), document)


class CachedParsing(SchemaExtension):
    """Gives strawberry the document of a text it parsed before (it then skips parsing), and
    keeps what it parses."""

    def __init__(self, documents: ParsedDocuments) -> None:
        self.documents = documents

    def on_parse(self) -> Iterator[None]:
        execution_context = self.execution_context
        text = execution_context.query
        options = execution_context.parse_options
        cached = False
        if text and execution_context.graphql_document is None:
            execution_context.graphql_document = self.documents.find(text, options)
            cached = execution_context.graphql_document is not None
        yield
        document = execution_context.graphql_document
        if text and document is not None and not cached:
            self.documents.keep(text, options, document)


class CachedValidation(SchemaExtension):
    """Validates as the module says; strawberry then skips its own validation."""

    def __init__(self, documents: ValidatedDocuments) -> None:
        self.documents = documents

    def on_validate(self) -> Iterator[None]:
        execution_context = self.execution_context
        document = execution_context.graphql_document
        text = execution_context.query
        if document is not None and text is not None:
            rules = execution_context.validation_rules
            per_request = [rule for rule in rules if issubclass(rule, PerRequestRule)]
            document_only = tuple(rule for rule in rules if not issubclass(rule, PerRequestRule))
            schema = execution_context.schema._schema
            if self.documents.valid(schema, text, document, document_only):
                execution_context.pre_execution_errors = _per_request_errors(
                    schema, text, document, per_request, self.documents.walks
                )
        yield
