"""Validation split in two: what depends on the document alone, done once per document text,
and the rules made for each request (its variables, its token: cost, rate limits,
unstorable text), done for every request.

graphql-core's validation walks the document with type information for every rule: for a
pipeline read that is most of the Python time a small request takes (about 60 %, measured
in-process on the benchmark's 100-task read). A document that passed the document-only
rules once passes them again; only the per-request rules have to run, and they need no type
information. A document that failed them is validated whole, as before, so that its errors
come in the same order and number.
"""

from collections.abc import Iterator, Sequence

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
