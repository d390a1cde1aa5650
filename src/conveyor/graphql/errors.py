"""How errors reach a client: typed and actionable when the client caused them, opaque
(with a correlation id for the server's log) when Conveyor did."""

import logging
import re
import uuid
from typing import Any

from graphql import FieldNode, ValidationContext, ValidationRule
from graphql.error import GraphQLError
from graphql.validation.validate import ValidationAbortedError
from strawberry.exceptions import MissingQueryError
from strawberry.extensions import MaskErrors
from strawberry.relay import GlobalIDValueError
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError

from conveyor.db.outages import database_unavailable
from conveyor.domain.plan import MALFORMED_ID_MESSAGE
from conveyor.errors import ConveyorError, ErrorCode, FieldPath, Problem, invalid_input
from conveyor.graphql.validation_cache import PerRequestRule
from conveyor.operations.requests import current_request
from conveyor.settings import Settings

logger = logging.getLogger(__name__)

#: Codes of errors found before execution, in the spirit of Apollo's.
PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"

#: Codes of documents and requests refused by the limits against hostile documents (those
#: of LIMIT_CODES also carry the limit in `extensions.limit`).
QUERY_TOO_DEEP = "QUERY_TOO_DEEP"
TOO_MANY_ALIASES = "TOO_MANY_ALIASES"
TOO_MANY_TOKENS = "TOO_MANY_TOKENS"
TOO_MANY_DIRECTIVES = "TOO_MANY_DIRECTIVES"
QUERY_TOO_COSTLY = "QUERY_TOO_COSTLY"
REQUEST_TOO_LARGE = "REQUEST_TOO_LARGE"
BATCHING_NOT_SUPPORTED = "BATCHING_NOT_SUPPORTED"
UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
BAD_REQUEST_BODY = "BAD_REQUEST_BODY"
#: A subscription sent over HTTP: subscriptions run over WebSocket only.
SUBSCRIPTION_NEEDS_WEBSOCKET = "SUBSCRIPTION_NEEDS_WEBSOCKET"
INTROSPECTION_DISABLED = "INTROSPECTION_DISABLED"
LIMIT_CODES = frozenset(
    {
        QUERY_TOO_DEEP,
        TOO_MANY_ALIASES,
        TOO_MANY_TOKENS,
        TOO_MANY_DIRECTIVES,
        QUERY_TOO_COSTLY,
        REQUEST_TOO_LARGE,
        # A token's allowance of query cost, spent while the document is validated.
        ErrorCode.RATE_LIMITED,
    }
)
#: Refusals of a whole document, made by Conveyor's validation rules: passed on as they are.
_DOCUMENT_REFUSAL_CODES = LIMIT_CODES | {
    ErrorCode.UNAUTHENTICATED,
    ErrorCode.INVALID_INPUT,
    SUBSCRIPTION_NEEDS_WEBSOCKET,
}
#: What a client is told while Conveyor's database is unreachable, and when to try again.
DATABASE_UNAVAILABLE = "Conveyor's database cannot be reached right now; retry shortly"
RETRY_AFTER_SECONDS = 2
#: The last error of a response that had more than `max_errors`: it says how many were left
#: out (`extensions.leftOut`, a lower bound when validation stopped early) and carries the
#: limit.
TOO_MANY_ERRORS = "TOO_MANY_ERRORS"

# The messages of the limiters strawberry and graphql-core ship, which set no code.
_TOO_MANY_TOKENS = re.compile(
    r"^Syntax Error: Document contains more than (\d+) tokens\. Parsing aborted\.$"
)
_INTROSPECTION_DISABLED = "GraphQL introspection has been disabled, "
# graphql-core's validation stops with this error once it has found its maximum of errors.
_VALIDATION_STOPPED = "Too many validation errors, error limit reached. Validation aborted."

# graphql-core's suggestions of names of the schema (its `did_you_mean` helper): " Did you
# mean 'a', 'b', or 'c'?", optionally with "to use an inline fragment on " or "the enum
# value " before the names. Unknown input fields read "...field 'x'. Did you mean 'y'? Found:
# ..." with a suggestion and "...field 'x', found: ..." without one.
_NAME = r"'[_A-Za-z][_0-9A-Za-z]*'"
_SUGGESTION = (
    r" Did you mean (?:to use an inline fragment on |the enum value )?"
    rf"{_NAME}(?:, {_NAME})*(?:,? or {_NAME})?\?"
)
_SUGGESTION_BEFORE_FOUND = re.compile(rf"\.{_SUGGESTION} Found: ")
_SUGGESTION_ANYWHERE = re.compile(_SUGGESTION)


# graphql-core quotes the text of a Python exception raised while coercing a literal; this one
# (an integer literal past Python's 4300-digit conversion limit) names Python internals.
_INTEGER_TOO_LONG = re.compile(r"encountered error 'Exceeds the limit \(\d+ digits\)[^']*'")


def _without_python_text(message: str) -> str:
    return _INTEGER_TOO_LONG.sub("encountered an integer with too many digits", message)


def without_suggestions(message: str) -> str:
    """`message` without graphql-core's suggestions of names of the schema, as graphql-core
    writes it when asked to hide them (which strawberry does not ask)."""
    return _SUGGESTION_ANYWHERE.sub("", _SUGGESTION_BEFORE_FOUND.sub(", found: ", message))


# graphql-core names the offending part of a variable only in the message text. 3.2 writes
# "Variable '$input' got invalid value 'X' at 'input.stages[0].tasks[1].type'; ...", 3.3
# "Variable '$input' has invalid value at .stages[0].tasks[1].type: ..." (without the name).
_VARIABLE_PATH = re.compile(r"^Variable '\$\w+' got invalid value .*? at '([^']+)';")
_VARIABLE_PATH_3_3 = re.compile(r"^Variable '\$(\w+)' has invalid value at ((?:\.\w+|\[\d+\])+): ")
# Errors of a variable's value, as opposed to errors of the document about its variables
# ("Variable '$x' is never used", "... is not defined", "... of type 'X' used in position ..."),
# which start with the same words.
_VARIABLE_VALUE = re.compile(r"^Variable '\$\w+' (?:got|has) invalid value")
_PATH_PART = re.compile(r"([A-Za-z_]\w*)|\[(\d+)\]")


def _path_parts(text: str) -> FieldPath:
    return tuple(name if name else int(index) for name, index in _PATH_PART.findall(text))


def _field_path_in(message: str) -> FieldPath | None:
    match = _VARIABLE_PATH_3_3.match(message)
    if match is not None:
        return (match.group(1), *_path_parts(match.group(2)))
    match = _VARIABLE_PATH.match(message)
    if match is None:
        variable = re.match(r"^Variable '\$(\w+)'", message)
        return (variable.group(1),) if variable else None
    return _path_parts(match.group(1))


#: What strawberry refuses before execution: the client's doing, described safely.
_PRE_EXECUTION_REFUSALS = (
    CannotGetOperationTypeError,
    InvalidOperationTypeError,
    MissingQueryError,
    GraphQLError,
)


def _raised_by_a_subscription(error: GraphQLError) -> bool:
    """Whether strawberry wrapped an exception that a subscription's stream raised: such an
    error has neither a path nor a place in the document."""
    return (
        error.path is None
        and error.nodes is None
        and error.original_error is not None
        and not isinstance(error.original_error, _PRE_EXECUTION_REFUSALS)
    )


def _problem_extensions(code: str, field: FieldPath | None) -> dict[str, Any]:
    return {"code": code, "field": list(field) if field is not None else None}


def database_unavailable_extensions() -> dict[str, Any]:
    return {**_problem_extensions(ErrorCode.UNAVAILABLE, None), "retryAfter": RETRY_AFTER_SECONDS}


def failed_for_unavailable_database(data: object, errors: list[GraphQLError] | None) -> bool:
    """Whether an operation got nothing done (no field has a value) and only because
    Conveyor's database was unreachable."""
    if not errors or any(
        (error.extensions or {}).get("code") != ErrorCode.UNAVAILABLE for error in errors
    ):
        return False
    return data is None or (isinstance(data, dict) and all(v is None for v in data.values()))


def _problem_of(problem: Problem) -> dict[str, Any]:
    extensions = _problem_extensions(problem.code, problem.field)
    if problem.limit is not None:
        extensions["limit"] = problem.limit
    return extensions


def _only_argument(error: GraphQLError) -> FieldPath | None:
    """The name of the one argument of the field `error` is about, if it has one only."""
    field = error.nodes[0] if error.nodes else None
    if isinstance(field, FieldNode) and field.arguments and len(field.arguments) == 1:
        return (field.arguments[0].name.value,)
    return None


def document_refused(code: str, message: str, field: FieldPath | None = None) -> GraphQLError:
    """The refusal of a whole document by one of Conveyor's validation rules."""
    return GraphQLError(message, extensions=_problem_extensions(code, field))


def limit_exceeded(code: str, message: str, limit: int, **details: object) -> GraphQLError:
    """The error of a document past one of the limits (its code is one of LIMIT_CODES)."""
    return GraphQLError(
        message, extensions={**_problem_extensions(code, None), "limit": limit, **details}
    )


def _limit_refusal(error: GraphQLError) -> tuple[str, dict[str, Any]] | None:
    """The message and extensions of `error` if a limit (or disabled introspection) refused
    the document, in words a person understands."""
    extensions = error.extensions or {}
    if extensions.get("code") in _DOCUMENT_REFUSAL_CODES and error.original_error is None:
        return error.message, dict(extensions)
    message = error.message
    if match := _TOO_MANY_TOKENS.match(message):
        limit = int(match.group(1))
        return (
            f"the document has more than {limit} tokens (names, punctuation and values), the "
            "most this server allows; pass large inputs as variables",
            {**_problem_extensions(TOO_MANY_TOKENS, None), "limit": limit},
        )
    if message.startswith(_INTROSPECTION_DISABLED):
        return message, _problem_extensions(INTROSPECTION_DISABLED, None)
    return None


def stop_validation_after(max_errors: int) -> type[ValidationRule]:
    """A validation rule that makes validation stop after `max_errors` errors, the way
    graphql-core stops after 100 (a limit strawberry does not let one change): once more are
    found, validation ends with graphql-core's own error, which ConveyorErrors turns into
    TOO_MANY_ERRORS."""

    # Per request: it must count the errors of every validation, cached or not.
    class StopValidationAfter(PerRequestRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            # Every rule reports through the context's callback (graphql-core's design: the
            # callback replaces the method), looked up when it reports.
            report = context.on_error
            found = 0

            def on_error(error: GraphQLError) -> None:
                nonlocal found
                if found >= max_errors:
                    raise ValidationAbortedError(_VALIDATION_STOPPED)
                found += 1
                report(error)

            context.on_error = on_error  # type: ignore[method-assign]

    return StopValidationAfter


def _stopped_validation(error: GraphQLError) -> bool:
    return isinstance(error, ValidationAbortedError) and error.message == _VALIDATION_STOPPED


def _left_out(count: int, limit: int, *, at_least: bool) -> GraphQLError:
    errors = "error was" if count == 1 else "errors were"
    return GraphQLError(
        f"{'at least ' if at_least else ''}{count} more {errors} left out: this server "
        f"reports at most {limit} errors in one response",
        extensions={**_problem_extensions(TOO_MANY_ERRORS, None), "limit": limit, "leftOut": count},
    )


def _at_most(errors: list[GraphQLError], limit: int) -> list[GraphQLError]:
    """`errors`, of which the first `limit` - 1 are kept and the rest replaced by one error
    saying how many were left out, when there are more than `limit` (or validation stopped
    before finding them all)."""
    stopped = any(_stopped_validation(error) for error in errors)
    found = [error for error in errors if not _stopped_validation(error)]
    if not stopped and len(found) <= limit:
        return found
    kept = found[: limit - 1]
    # Validation stopped at the error after the last one it reported.
    left_out = len(found) - len(kept) + (1 if stopped else 0)
    return [*kept, _left_out(left_out, limit, at_least=stopped)]


class ConveyorErrors(MaskErrors):
    """Formats every error of a response; internal failures never leak their text, names of
    the schema are suggested only when `settings.field_suggestions_enabled`, and a response
    carries at most `settings.max_errors` errors."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(error_message="Internal server error")
        self.max_errors = settings.max_errors
        self.suggestions = settings.field_suggestions_enabled

    def format(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        """The errors as a response shows them (for messages rendered outside a request)."""
        return self._process_errors(errors)

    def _process_result(self, result: object) -> None:
        # MaskErrors first asks whether `result` has errors through a runtime-checkable
        # Protocol, which costs ~0.2 ms per request; a result without errors needs nothing.
        if getattr(result, "errors", None):
            super()._process_result(result)

    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        formatted = [
            error if _stopped_validation(error) else self._format(error) for error in errors
        ]
        return _at_most(formatted, self.max_errors)

    def _format(self, error: GraphQLError) -> GraphQLError:
        original = error.original_error
        if error.path is None and (refusal := _limit_refusal(error)) is not None:
            return self._rebuild(error, *refusal)
        if isinstance(original, GlobalIDValueError):
            # An id the client sent that is no global id, or names no node type of this schema:
            # found only while resolving the field (so it has a path), yet the client's mistake.
            # Only relay's `node` and `nodes` still decode ids this way (Conveyor's inputs decode
            # their own), and the id is their one argument.
            original = invalid_input(MALFORMED_ID_MESSAGE, _only_argument(error))
        if isinstance(original, ConveyorError):
            extensions = _problem_of(original.first)
            extensions["problems"] = [
                {"message": problem.message, **_problem_of(problem)}
                for problem in original.problems
            ]
            extensions.update(original.details)
            return self._rebuild(error, original.first.message, extensions)
        if original is not None and database_unavailable(original):
            # Not logged here: the process's event listener logs the outage once.
            return self._rebuild(error, DATABASE_UNAVAILABLE, database_unavailable_extensions())
        if error.path is None and not _raised_by_a_subscription(error):
            # Found while reading the request (syntax, validation, variable values): the
            # message is graphql-core's own description of the client's document.
            message = _without_python_text(error.message)
            if not self.suggestions:
                message = without_suggestions(message)
            if message.startswith("Syntax Error"):
                return self._rebuild(error, message, _problem_extensions(PARSE_FAILED, None))
            if _VARIABLE_VALUE.match(message):
                extensions = _problem_extensions(ErrorCode.INVALID_INPUT, _field_path_in(message))
                return self._rebuild(error, message, extensions)
            return self._rebuild(error, message, _problem_extensions(VALIDATION_FAILED, None))
        # The request's own, which its log lines carry too.
        record = current_request.get()
        correlation_id = record.correlation_id if record is not None else uuid.uuid4().hex
        # The type only: the exception's text may hold SQL, host names or secrets.
        logger.error(
            "internal error %s in %s: %s",
            correlation_id,
            ".".join(str(part) for part in error.path or ["subscription"]),
            type(original).__name__ if original is not None else "GraphQLError",
        )
        return self._rebuild(
            error,
            self.error_message,
            {"code": ErrorCode.INTERNAL.value, "correlationId": correlation_id},
        )

    @staticmethod
    def _rebuild(error: GraphQLError, message: str, extensions: dict[str, Any]) -> GraphQLError:
        return GraphQLError(
            message=message,
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            original_error=None,
            extensions=extensions,
        )
