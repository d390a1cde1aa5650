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
    ASTValidationRule,
    DocumentNode,
    GraphQLError,
    GraphQLSchema,
    ParallelVisitor,
    TypeInfo,
    ValidationContext,
    ValidationRule,
    visit,
)
from graphql.validation.validate import ValidationAbortedError
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document

from conveyor.graphql.bounded_cache import BoundedCache


class PerRequestRule(ValidationRule):
    """A validation rule made for one request, or one that must see every request's errors:
    it runs each time, never from the cache."""


def _per_request_errors(
    schema: GraphQLSchema, document: DocumentNode, rules: Sequence[type[ASTValidationRule]]
) -> list[GraphQLError]:
    errors: list[GraphQLError] = []
    context = ValidationContext(schema, document, TypeInfo(schema), errors.append)
    try:
        visit(document, ParallelVisitor([rule(context) for rule in rules]))
    except ValidationAbortedError as aborted:
        errors.append(aborted)
    return errors


class ValidatedDocuments:
    """Which document texts passed which document-only rules."""

    def __init__(self, size: int) -> None:
        self._valid: BoundedCache[tuple[str, tuple[type[ASTValidationRule], ...]], bool] = (
            BoundedCache(size)
        )

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
                    schema, document, per_request
                )
        yield
