"""`extensions.sequence` on a mutation's answer: the sequence number its commit reached."""

from collections.abc import Iterator

from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from conveyor.db.events import noting_sequences


class CommitSequence(SchemaExtension):
    """Says in the answer's extensions the newest event sequence the operation wrote, so that a
    client can order the answer among subscription messages (keep the newer by sequence)."""

    def __init__(self) -> None:
        self._written: list[int] = []

    def on_execute(self) -> Iterator[None]:
        # Around execution only, not the whole operation: a subscription's stream may be
        # closed in another context than the one it was opened in.
        if self.execution_context.operation_type is not OperationType.MUTATION:
            yield
            return
        with noting_sequences() as written:
            self._written = written
            yield

    def get_results(self) -> dict[str, object]:
        return {"sequence": max(self._written)} if self._written else {}
