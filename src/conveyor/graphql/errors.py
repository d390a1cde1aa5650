"""How errors reach a client: typed and actionable when the client caused them, opaque
(with a correlation id for the server's log) when Conveyor did."""

import logging
import re
import uuid
from typing import Any

from graphql.error import GraphQLError
from strawberry.exceptions import MissingQueryError
from strawberry.extensions import MaskErrors
from strawberry.relay import GlobalIDValueError
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError

from conveyor.errors import ConveyorError, ErrorCode, FieldPath

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
REQUEST_TOO_LARGE = "REQUEST_TOO_LARGE"
BATCHING_NOT_SUPPORTED = "BATCHING_NOT_SUPPORTED"
INTROSPECTION_DISABLED = "INTROSPECTION_DISABLED"
LIMIT_CODES = frozenset(
    {QUERY_TOO_DEEP, TOO_MANY_ALIASES, TOO_MANY_TOKENS, TOO_MANY_DIRECTIVES, REQUEST_TOO_LARGE}
)

# The messages of the limiters strawberry and graphql-core ship, which set no code.
_TOO_DEEP = re.compile(r"^'(.*)' exceeds maximum operation depth of (\d+)$", re.DOTALL)
_TOO_MANY_ALIASES = re.compile(r"^(\d+) aliases found\. Allowed: (\d+)$")
_TOO_MANY_TOKENS = re.compile(
    r"^Syntax Error: Document contains more than (\d+) tokens\. Parsing aborted\.$"
)
_INTROSPECTION_DISABLED = "GraphQL introspection has been disabled, "

# graphql-core names the offending part of a variable only in the message text. 3.2 writes
# "Variable '$input' got invalid value 'X' at 'input.stages[0].tasks[1].type'; ...", 3.3
# "Variable '$input' has invalid value at .stages[0].tasks[1].type: ..." (without the name).
_VARIABLE_PATH = re.compile(r"^Variable '\$\w+' got invalid value .*? at '([^']+)';")
_VARIABLE_PATH_3_3 = re.compile(r"^Variable '\$(\w+)' has invalid value at ((?:\.\w+|\[\d+\])+): ")
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


def limit_exceeded(code: str, message: str, limit: int, **details: object) -> GraphQLError:
    """The error of a document past one of the limits (its code is one of LIMIT_CODES)."""
    return GraphQLError(
        message, extensions={**_problem_extensions(code, None), "limit": limit, **details}
    )


def _limit_refusal(error: GraphQLError) -> tuple[str, dict[str, Any]] | None:
    """The message and extensions of `error` if a limit (or disabled introspection) refused
    the document, in words a person understands."""
    extensions = error.extensions or {}
    if extensions.get("code") in LIMIT_CODES and error.original_error is None:
        return error.message, dict(extensions)
    message = error.message
    if match := _TOO_DEEP.match(message):
        limit = int(match.group(2))
        name = match.group(1)
        operation = "the operation" if name == "anonymous" else f"operation '{name}'"
        return (
            f"{operation} nests fields more than {limit} level{'s' if limit != 1 else ''} "
            "deep, the most this server "
            "allows; ask for less at once",
            {**_problem_extensions(QUERY_TOO_DEEP, None), "limit": limit},
        )
    if match := _TOO_MANY_ALIASES.match(message):
        count, limit = int(match.group(1)), int(match.group(2))
        return (
            f"the document uses {count} aliases; this server allows at most {limit}",
            {**_problem_extensions(TOO_MANY_ALIASES, None), "limit": limit, "count": count},
        )
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


class ConveyorErrors(MaskErrors):
    """Formats every error of a response; internal failures never leak their text."""

    def __init__(self) -> None:
        super().__init__(error_message="Internal server error")

    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        formatted: list[GraphQLError] = []
        seen_refusals: set[str] = set()
        for error in errors:
            error = self._format(error)
            # The depth limiter reports every branch that is too deep: one error says it.
            if (error.extensions or {}).get("code") in LIMIT_CODES:
                if error.message in seen_refusals:
                    continue
                seen_refusals.add(error.message)
            formatted.append(error)
        return formatted

    def _format(self, error: GraphQLError) -> GraphQLError:
        original = error.original_error
        if error.path is None and (refusal := _limit_refusal(error)) is not None:
            return self._rebuild(error, *refusal)
        if isinstance(original, ConveyorError):
            first = original.first
            extensions = _problem_extensions(first.code, first.field)
            extensions["problems"] = [
                {"message": problem.message, **_problem_extensions(problem.code, problem.field)}
                for problem in original.problems
            ]
            extensions.update(original.details)
            return self._rebuild(error, first.message, extensions)
        if error.path is None and not _raised_by_a_subscription(error):
            # Found while reading the request (syntax, validation, variable values): the
            # message is graphql-core's own description of the client's document.
            if error.message.startswith("Syntax Error"):
                return self._rebuild(error, error.message, _problem_extensions(PARSE_FAILED, None))
            if error.message.startswith("Variable '$"):
                extensions = _problem_extensions(
                    ErrorCode.INVALID_INPUT, _field_path_in(error.message)
                )
                return self._rebuild(error, error.message, extensions)
            return self._rebuild(error, error.message, _problem_extensions(VALIDATION_FAILED, None))
        if isinstance(original, GlobalIDValueError):
            # An id the client sent that is no global id, or names no node type of this schema:
            # found only while resolving the field (so it has a path), yet the client's mistake.
            return self._rebuild(
                error,
                "not a valid id of this API",
                _problem_extensions(ErrorCode.INVALID_INPUT, None),
            )
        correlation_id = uuid.uuid4().hex
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
