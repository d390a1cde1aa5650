"""The GraphQL schema Conveyor serves, with its limits against hostile documents."""

import contextlib
import copy
import functools
from collections.abc import Callable, Iterator
from typing import Any

import strawberry
from graphql import ASTValidationRule, DirectiveNode, DocumentNode, ValidationContext, parse
from graphql.error import GraphQLError
from strawberry.extensions import (
    AddValidationRules,
    DisableIntrospection,
    MaxTokensLimiter,
    SchemaExtension,
)
from strawberry.extensions.runner import SchemaExtensionsRunner
from strawberry.types import ExecutionContext

from conveyor.graphql.authentication import RequireUsableToken
from conveyor.graphql.commit_sequence import CommitSequence
from conveyor.graphql.compiled.extension import CompiledReads, PlanCache
from conveyor.graphql.cost import DocumentLimits, MeasuredDocuments
from conveyor.graphql.errors import (
    TOO_MANY_DIRECTIVES,
    ConveyorErrors,
    limit_exceeded,
    stop_validation_after,
)
from conveyor.graphql.extension_hooks import CachedHooksRunner
from conveyor.graphql.mutations import Mutation
from conveyor.graphql.queries import Query
from conveyor.graphql.request_rules import RequestRules
from conveyor.graphql.subscriptions import Subscription
from conveyor.graphql.types.task_status_update import TaskStatusChange, TaskStatusSnapshot
from conveyor.graphql.validation_cache import (
    CachedParsing,
    CachedValidation,
    ParsedDocuments,
    ValidatedDocuments,
)
from conveyor.operations.requests import RecordOperation
from conveyor.settings import Settings

ExtensionFactory = type[SchemaExtension] | Callable[[], SchemaExtension]

#: Compiled plans kept per schema (distinct documents and operations).
PLAN_CACHE_SIZE = 256
#: Document texts whose document-only validation is remembered, per schema.
VALIDATED_DOCUMENTS = 256
#: Parsed document texts remembered, per schema.
PARSED_DOCUMENTS = 256
#: Measures (cost, depth, aliases) kept: by document, operation and the variables they read.
MEASURED_DOCUMENTS = 256


class ConveyorSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # ConveyorErrors already logged each internal failure under its correlation id;
        # the default would log every client mistake with a stack trace.
        return None

    def create_extensions_runner(
        self, execution_context: ExecutionContext, extensions: list[SchemaExtension]
    ) -> SchemaExtensionsRunner:
        return CachedHooksRunner(execution_context=execution_context, extensions=extensions)


def max_directives_rule(max_directives: int) -> type[ASTValidationRule]:
    """A validation rule refusing a document that uses more than `max_directives` directives
    (each `@name` counts, wherever it stands; graphql-core and strawberry have no such rule)."""

    class MaxDirectivesRule(ASTValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            self.count = 0

        def enter_directive(self, node: DirectiveNode, *_args: object) -> None:
            self.count += 1

        def leave_document(self, node: DocumentNode, *_args: object) -> None:
            if self.count > max_directives:
                self.report_error(
                    limit_exceeded(
                        TOO_MANY_DIRECTIVES,
                        f"the document uses {self.count} directives; this server allows at "
                        f"most {max_directives}",
                        max_directives,
                        count=self.count,
                    )
                )

    return MaxDirectivesRule


#: Documents kept parsed, and the longest kept: the cache holds at most a few megabytes.
SHARED_DOCUMENTS = 256
SHARED_DOCUMENT_MAX_CHARS = 10_000


@functools.lru_cache(maxsize=SHARED_DOCUMENTS)
def _parse_once(query: str, **options: Any) -> DocumentNode:
    return parse(query, **options)


class SharedDocuments(SchemaExtension):
    """One syntax tree for every request of the same text: ten thousand subscribers of one
    page's subscription hold one tree (34 kB for the README's), not ten thousand. A document
    that does not parse is left to strawberry, which reports the error as usual."""

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        if context.query and len(context.query) <= SHARED_DOCUMENT_MAX_CHARS:
            with contextlib.suppress(GraphQLError):
                context.graphql_document = _parse_once(context.query, **context.parse_options)
        yield


def extensions_for(settings: Settings) -> list[ExtensionFactory]:
    """The extensions that format errors and refuse documents past the limits of `settings`:
    factories, so that each request gets its own instances."""
    rules = [
        max_directives_rule(settings.max_directives),
        stop_validation_after(settings.max_errors),
    ]
    # The measures of documents (cost, depth, aliases) for all the requests of this schema.
    measured = MeasuredDocuments(MEASURED_DOCUMENTS)
    extensions: list[ExtensionFactory] = [
        lambda: ConveyorErrors(settings),
        RequireUsableToken,
        RequestRules,
        CommitSequence,
        lambda: MaxTokensLimiter(max_token_count=settings.max_tokens),
        # After the token limit, which sets the parse options it is keyed by.
        SharedDocuments,
        lambda: DocumentLimits(settings, measured),
        lambda: AddValidationRules(rules),
    ]
    if not settings.introspection_enabled:
        extensions.append(DisableIntrospection)
    # One cache of parsed and one of validated documents for all the requests of this schema.
    parsed = ParsedDocuments(PARSED_DOCUMENTS)
    extensions.append(lambda: CachedParsing(parsed))
    documents = ValidatedDocuments(VALIDATED_DOCUMENTS)
    extensions.append(lambda: CachedValidation(documents))
    # After every refusal before execution (its on_execute notes that the operation runs),
    # before the compiled reads, which may answer it.
    extensions.append(RecordOperation)
    if settings.compiled_reads:
        # Last, so that every check above has run when it answers; one plan cache for all
        # the requests of this schema.
        plans = PlanCache(PLAN_CACHE_SIZE)
        extensions.append(lambda: CompiledReads(plans))
    return extensions


# strawberry converts the types once: a second Schema of the same types fails (the relay
# connection fields are changed in place), so the limited schemas are copies of this one.
_schema = ConveyorSchema(
    query=Query,
    mutation=Mutation,
    subscription=Subscription,
    # The implementations of interfaces that only subscriptions return.
    types=[TaskStatusSnapshot, TaskStatusChange],
)


def build_schema(settings: Settings | None = None) -> ConveyorSchema:
    """The schema with the document limits of `settings` (the defaults when None, without
    reading the environment). The limits do not change the SDL."""
    limited = copy.copy(_schema)
    limits = settings if settings is not None else Settings.model_construct()
    limited.extensions = tuple(extensions_for(limits))
    return limited


#: The schema with the default limits: `conveyor export-schema` and the tests use it.
schema = build_schema()
