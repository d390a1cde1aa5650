"""The errors Conveyor reports to a client: a machine-readable code, a message, a field."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum


class ErrorCode(StrEnum):
    NOT_FOUND = "NOT_FOUND"
    INVALID_INPUT = "INVALID_INPUT"
    CONFLICT = "CONFLICT"
    #: No valid token: missing, unknown, revoked or expired.
    UNAUTHENTICATED = "UNAUTHENTICATED"
    #: The token is valid, but its role (or the environment's policy) does not allow this.
    FORBIDDEN = "FORBIDDEN"
    #: The token spent its allowance of requests or query cost; retry after `retryAfter`.
    RATE_LIMITED = "RATE_LIMITED"
    #: A subscriber fell too far behind; it resumes with `after` set to `lastSequence`.
    SUBSCRIBER_TOO_SLOW = "SUBSCRIBER_TOO_SLOW"
    #: Conveyor's own database cannot be reached for now; retry after `retryAfter` seconds.
    UNAVAILABLE = "UNAVAILABLE"
    INTERNAL = "INTERNAL"


#: The path of an input field, e.g. ("input", "stages", 0, "tasks", 1, "databaseId").
FieldPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a request."""

    code: ErrorCode
    message: str
    field: FieldPath | None = None
    #: The number a value went past, when a limit refused it (`extensions.limit`).
    limit: int | None = None


class ConveyorError(Exception):
    """A refusal the client caused and can act on; `problems` holds every reason found."""

    def __init__(
        self, problems: Sequence[Problem], details: Mapping[str, object] | None = None
    ) -> None:
        if not problems:
            raise ValueError("a ConveyorError needs at least one problem")
        super().__init__(problems[0].message)
        self.problems = tuple(problems)
        #: Extra machine-readable facts for the client, e.g. {"lastSequence": 41}.
        self.details: Mapping[str, object] = details or {}

    @property
    def first(self) -> Problem:
        return self.problems[0]

    @classmethod
    def single(
        cls, code: ErrorCode, message: str, field: FieldPath | None = None
    ) -> "ConveyorError":
        return cls([Problem(code, message, field)])


def not_found(noun: str, field: FieldPath | None = None) -> ConveyorError:
    return ConveyorError.single(ErrorCode.NOT_FOUND, f"{noun} does not exist", field)


def invalid_input(message: str, field: FieldPath | None = None) -> ConveyorError:
    return ConveyorError.single(ErrorCode.INVALID_INPUT, message, field)


def conflict(message: str, field: FieldPath | None = None) -> ConveyorError:
    return ConveyorError.single(ErrorCode.CONFLICT, message, field)


def forbidden(message: str, field: FieldPath | None = None) -> ConveyorError:
    return ConveyorError.single(ErrorCode.FORBIDDEN, message, field)


def unauthenticated(message: str) -> ConveyorError:
    return ConveyorError.single(ErrorCode.UNAUTHENTICATED, message)
