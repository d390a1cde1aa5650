"""Errors about variables: the document's (unused, undefined, misplaced) are validation
failures; only a variable's value is the client's INVALID_INPUT, naming where it went wrong."""

from typing import Any

import httpx
import pytest

from tests.conftest import ConveyorProcess, GraphQLClient

DOCUMENT_ERRORS = {
    "never used": (
        "query Q($id: ID!) { __typename }",
        {"id": "x"},
        "Variable '$id' is never used in operation 'Q'.",
    ),
    "not defined": (
        "query Q { node(id: $x) { id } }",
        {},
        "Variable '$x' is not defined by operation 'Q'.",
    ),
    "used where another type is expected": (
        "query Q($x: String) { node(id: $x) { id } }",
        {"x": "y"},
        "Variable '$x' of type 'String' used in position expecting type 'ID!'.",
    ),
}


@pytest.mark.parametrize("case", DOCUMENT_ERRORS.values(), ids=DOCUMENT_ERRORS.keys())
async def test_a_document_error_about_a_variable_is_a_validation_failure(
    graphql: GraphQLClient, case: tuple[str, dict[str, Any], str]
) -> None:
    document, variables, message = case

    response = await graphql(document, variables)

    [error] = response.errors
    assert error["message"] == message
    assert error["extensions"] == {"code": "GRAPHQL_VALIDATION_FAILED", "field": None}


async def test_a_bad_variable_value_is_invalid_input_at_its_field(graphql: GraphQLClient) -> None:
    response = await graphql(
        "mutation($input: CreateIssueInput!) { createIssue(input: $input) { id } }",
        {"input": {"title": "t", "stages": [{"tasks": [{"type": "NOPE"}]}]}},
    )

    [error] = response.errors
    assert error["message"].startswith("Variable '$input' has invalid value")
    assert error["extensions"]["code"] == "INVALID_INPUT"
    assert error["extensions"]["field"] == ["input", "stages", 0, "tasks", 0, "type"]


async def test_a_missing_required_variable_is_invalid_input(graphql: GraphQLClient) -> None:
    response = await graphql("query Q($id: ID!) { node(id: $id) { id } }", {})

    [error] = response.errors
    assert error["extensions"] == {"code": "INVALID_INPUT", "field": ["id"]}


def test_over_http_a_variable_document_error_answers_as_any_validation_failure(
    live_server: ConveyorProcess,
) -> None:
    def post(document: str, variables: dict[str, Any]) -> httpx.Response:
        return httpx.post(
            f"{live_server.url}/graphql",
            json={"query": document, "variables": variables},
            headers=live_server.auth,
            timeout=30,
        )

    unused = post("query Q($id: ID!) { __typename }", {"id": "x"})
    unknown_field = post("query Q { issuez { totalCount } }", {})

    assert unused.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert unknown_field.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert unused.status_code == unknown_field.status_code
