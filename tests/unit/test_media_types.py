"""Which media type answers a GraphQL request, from its Accept header."""

import pytest

from conveyor.graphql.media_types import (
    GRAPHQL_RESPONSE_JSON,
    JSON,
    failed_before_execution,
    response_media_type,
)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, JSON),
        ("", JSON),
        ("*/*", JSON),
        ("application/*", JSON),
        ("application/json", JSON),
        ("text/html", JSON),
        (GRAPHQL_RESPONSE_JSON, GRAPHQL_RESPONSE_JSON),
        ("Application/GraphQL-Response+JSON; charset=utf-8", GRAPHQL_RESPONSE_JSON),
        # Apollo Client's header.
        ("application/graphql-response+json,application/json;q=0.9", GRAPHQL_RESPONSE_JSON),
        ("application/json, application/graphql-response+json", GRAPHQL_RESPONSE_JSON),
        ("application/graphql-response+json;q=0.5, application/json", JSON),
        ("application/graphql-response+json;q=0.5, */*;q=0.1", GRAPHQL_RESPONSE_JSON),
        ("application/graphql-response+json;q=0.5, application/*;q=0.8, */*;q=0.1", JSON),
        ("application/graphql-response+json;q=0, */*", JSON),
        ("application/graphql-response+json;q=high", JSON),
    ],
)
def test_the_response_media_type_follows_the_accept_header(
    accept: str | None, expected: str
) -> None:
    assert response_media_type(accept) == expected


def test_only_a_response_without_data_and_without_field_errors_failed_before_execution() -> None:
    syntax_error = {"message": "Syntax Error", "locations": [{"line": 1, "column": 2}]}
    field_error = {"message": "not found", "path": ["issue"]}

    assert failed_before_execution({"data": None, "errors": [syntax_error]})
    assert failed_before_execution({"errors": [syntax_error]})
    assert not failed_before_execution({"data": None, "errors": [field_error]})
    assert not failed_before_execution({"data": None, "errors": [syntax_error, field_error]})
    assert not failed_before_execution({"data": {"issue": None}, "errors": [field_error]})
    assert not failed_before_execution({"data": {"__typename": "Query"}})
