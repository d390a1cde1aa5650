from collections.abc import Iterator

import strawberry
from graphql import DocumentNode
from strawberry.extensions import MaxTokensLimiter, SchemaExtension

from conveyor.graphql.validation_cache import CachedParsing, ParsedDocuments


@strawberry.type
class Query:
    @strawberry.field
    def greeting(self) -> str:
        return "hello"


class SeenDocuments(SchemaExtension):
    """Records the document each operation is validated with."""

    seen: list[DocumentNode | None] = []

    def on_validate(self) -> Iterator[None]:
        SeenDocuments.seen.append(self.execution_context.graphql_document)
        yield


def schema_with(parsed: ParsedDocuments, max_tokens: int = 100) -> strawberry.Schema:
    return strawberry.Schema(
        query=Query,
        extensions=[
            lambda: MaxTokensLimiter(max_token_count=max_tokens),
            lambda: CachedParsing(parsed),
            SeenDocuments,
        ],
    )


def test_a_document_text_is_parsed_once() -> None:
    parsed = ParsedDocuments(4)
    schema = schema_with(parsed)
    SeenDocuments.seen = []

    first = schema.execute_sync("{ greeting }")
    second = schema.execute_sync("{ greeting }")
    other = schema.execute_sync("{ other: greeting }")

    assert first.data == second.data == {"greeting": "hello"}
    assert other.data == {"other": "hello"}
    assert SeenDocuments.seen[0] is SeenDocuments.seen[1]
    assert SeenDocuments.seen[2] is not SeenDocuments.seen[0]


def test_a_text_that_fails_to_parse_fails_each_time_alike() -> None:
    schema = schema_with(ParsedDocuments(4))

    first = schema.execute_sync("{ greeting")
    second = schema.execute_sync("{ greeting")

    assert first.errors is not None
    assert second.errors is not None
    assert [error.formatted for error in first.errors] == [
        error.formatted for error in second.errors
    ]
    assert "Syntax Error" in first.errors[0].message


def test_a_document_parsed_under_a_larger_token_limit_is_parsed_again() -> None:
    parsed = ParsedDocuments(4)
    text = "{ a: greeting b: greeting c: greeting }"

    assert schema_with(parsed, max_tokens=100).execute_sync(text).errors is None
    refused = schema_with(parsed, max_tokens=5).execute_sync(text)

    assert refused.errors is not None
    assert "more than 5 tokens" in refused.errors[0].message
