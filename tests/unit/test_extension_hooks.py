"""CachedHooksRunner enters and leaves extension hooks exactly as strawberry's own runner does:
same order, same errors seen by the hooks, for generator, async generator and plain hooks."""

from collections.abc import AsyncIterator, Iterator

import pytest
import strawberry
from strawberry.extensions import SchemaExtension
from strawberry.extensions.runner import SchemaExtensionsRunner
from strawberry.types import ExecutionContext

from conveyor.graphql.extension_hooks import CachedHooksRunner


@strawberry.type
class Query:
    @strawberry.field
    def fine(self) -> str:
        return "yes"

    @strawberry.field
    def broken(self) -> str:
        raise ValueError("broken field")


def recording_extensions(log: list[str]) -> list[type[SchemaExtension]]:
    class Generators(SchemaExtension):
        def on_operation(self) -> Iterator[None]:
            log.append("generator operation enter")
            yield
            log.append(f"generator operation leave {self.execution_context.result is not None}")

        def on_parse(self) -> Iterator[None]:
            log.append("generator parse enter")
            yield
            log.append("generator parse leave")

    class AsyncGenerators(SchemaExtension):
        async def on_validate(self) -> AsyncIterator[None]:
            log.append("async validate enter")
            yield
            errors = self.execution_context.pre_execution_errors or []
            log.append(f"async validate leave {len(errors)}")

        async def on_execute(self) -> AsyncIterator[None]:
            log.append("async execute enter")
            try:
                yield
            except Exception as error:
                log.append(f"async execute saw {type(error).__name__}")
                raise
            log.append("async execute leave")

    class Plain(SchemaExtension):
        def on_execute(self) -> None:  # type: ignore[override]
            log.append("plain execute")

    class Refusing(SchemaExtension):
        def on_execute(self) -> Iterator[None]:
            if "refuse" in (self.execution_context.query or ""):
                raise RuntimeError("refused before execution")
            yield

    return [Generators, AsyncGenerators, Plain, Refusing]


class CachedHooksSchema(strawberry.Schema):
    def create_extensions_runner(
        self, execution_context: ExecutionContext, extensions: list[SchemaExtension]
    ) -> SchemaExtensionsRunner:
        return CachedHooksRunner(execution_context=execution_context, extensions=extensions)


@pytest.mark.parametrize(
    "query", ["{ fine }", "{ broken }", "{ nothing }", "{ fine", "{ fine refuse: fine }"]
)
async def test_hooks_run_as_strawberrys_own_runner_runs_them(query: str) -> None:
    outcomes = []
    for schema_class in (strawberry.Schema, CachedHooksSchema):
        log: list[str] = []
        schema = schema_class(query=Query, extensions=recording_extensions(log))
        # Twice: the second request of a class uses the hooks found by the first.
        results = [await schema.execute(query) for _ in range(2)]
        outcomes.append(
            (
                log,
                [
                    (result.data, [error.message for error in result.errors or []])
                    for result in results
                ],
            )
        )

    strawberrys, cached = outcomes
    assert cached == strawberrys
    assert strawberrys[0], "the extensions ran"
