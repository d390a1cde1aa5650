"""What one request is, as the logs and the metrics tell it: set by the GraphQL view when the
request arrives, filled in as it is served, and read (through a context variable) by every
log line written meanwhile."""

import time
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

#: How the operation's data was made (see `RequestRecord.read_path`).
RESOLVERS = "resolvers"
COMPILED = "compiled"


@dataclass
class RequestRecord:
    started: float = field(default_factory=time.monotonic)
    #: The operation's name (None for an anonymous one, or before the document is parsed).
    operation: str | None = None
    #: Who the token acts as, once it is known.
    actor: str | None = None
    #: The type of the operation that ran: None when it was refused before execution.
    executed: OperationType | None = None
    #: How a query's data was made: graphql-core's resolvers, unless the compiled read path
    #: (graphql/compiled) answered it and said so.
    read_path: str = RESOLVERS
    #: The codes of the response's errors, in order.
    error_codes: list[str] = field(default_factory=list)

    _correlation_id: str | None = field(default=None, repr=False)

    @property
    def correlation_id(self) -> str:
        """Logged with every line of the request, and with an internal error's report: made
        when first asked for (most requests log nothing, and uuid4 reads the OS's random
        source: a hundredth of a small read's CPU)."""
        if self._correlation_id is None:
            self._correlation_id = uuid.uuid4().hex
        return self._correlation_id

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started


current_request: ContextVar[RequestRecord | None] = ContextVar("current_request", default=None)


class RecordOperation(SchemaExtension):
    """Notes the operation's name once the document is parsed, and its type once it runs."""

    def on_parse(self) -> Iterator[None]:
        yield
        record = current_request.get()
        if record is not None:
            name = self.execution_context.operation_name
            # The request's own `operationName`, as the client sent it: any JSON at all.
            record.operation = name if isinstance(name, str) else None

    def on_execute(self) -> Iterator[None]:
        record = current_request.get()
        if record is not None:
            record.executed = self.execution_context.operation_type
        yield
