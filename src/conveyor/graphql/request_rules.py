"""Operations refused whole, before anything runs, for how they arrive or what they carry:
a subscription over HTTP, and text PostgreSQL cannot store (NUL characters, unpaired UTF-16
surrogates) in a literal or a variable."""

from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from graphql import (
    DocumentNode,
    OperationDefinitionNode,
    OperationType,
    StringValueNode,
    ValidationContext,
)
from starlette.requests import Request
from strawberry.extensions import SchemaExtension

from conveyor.errors import ErrorCode, FieldPath
from conveyor.graphql.context import Context
from conveyor.graphql.errors import SUBSCRIPTION_NEEDS_WEBSOCKET, document_refused
from conveyor.graphql.validation_cache import PerRequestRule

UNSTORABLE_TEXT = (
    "text may not contain NUL characters or unpaired surrogates: PostgreSQL cannot store them"
)


def is_storable(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # an unpaired surrogate
        return False
    return True


def unstorable_paths(value: Any, path: FieldPath) -> Iterator[FieldPath]:
    """The paths inside a variable's value to strings PostgreSQL cannot store."""
    if isinstance(value, str):
        if not is_storable(value):
            yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from unstorable_paths(item, (*path, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from unstorable_paths(item, (*path, index))


class RequestRules(SchemaExtension):
    def on_operation(self) -> Iterator[None]:
        execution_context = self.execution_context
        self.over_http = isinstance(execution_context.context, Context) and isinstance(
            execution_context.context.request, Request
        )
        self.variables: dict[str, Any] = execution_context.variables or {}
        execution_context.validation_rules = (*execution_context.validation_rules, _Rule)
        yield

    def on_validate(self) -> Iterator[None]:
        # graphql-core makes a rule from the validation context alone: the rule finds the
        # request's extension here (a class made for each request cost more than the rule).
        reset = _validating.set(self)
        try:
            yield
        finally:
            _validating.reset(reset)


_validating: ContextVar[RequestRules] = ContextVar("request_rules_validating")


class _Rule(PerRequestRule):
    def __init__(self, context: ValidationContext) -> None:
        super().__init__(context)
        rules = _validating.get()
        self.over_http = rules.over_http
        self.variables = rules.variables

    def enter_operation_definition(self, node: OperationDefinitionNode, *_args: object) -> None:
        if self.over_http and node.operation is OperationType.SUBSCRIPTION:
            self.report_error(
                document_refused(
                    SUBSCRIPTION_NEEDS_WEBSOCKET,
                    "subscriptions run over a WebSocket at /graphql "
                    "(graphql-transport-ws or graphql-ws), not over HTTP",
                )
            )

    def enter_string_value(self, node: StringValueNode, *_args: object) -> None:
        if not is_storable(node.value):
            self.report_error(document_refused(ErrorCode.INVALID_INPUT, UNSTORABLE_TEXT))

    def leave_document(self, node: DocumentNode, *_args: object) -> None:
        for name, value in self.variables.items():
            for path in unstorable_paths(value, (name,)):
                self.report_error(document_refused(ErrorCode.INVALID_INPUT, UNSTORABLE_TEXT, path))
