"""A text that is no global id, wherever an id goes in: INVALID_INPUT at the field it came
in, with `problems`, like an id of the wrong type (NOT_FOUND at its field)."""

from typing import Any

import pytest

from tests.api.support import Catalog, global_id, the_error
from tests.conftest import GraphQLClient

MALFORMED = "not-an-id"
MESSAGE = "not a valid id of this API"

#: (document, its variables with MALFORMED in the id's place, the field the id is in)
CASES: dict[str, tuple[str, dict[str, Any], list[str]]] = {
    "updateTaskStatement": (
        "mutation($input: UpdateTaskStatementInput!) { updateTaskStatement(input: $input) { id } }",
        {"input": {"taskId": MALFORMED, "statement": "SELECT 1"}},
        ["input", "taskId"],
    ),
    "approveTask": (
        "mutation($input: TaskActionInput!) { approveTask(input: $input) { id } }",
        {"input": {"taskId": MALFORMED}},
        ["input", "taskId"],
    ),
    "skipTask": (
        "mutation($input: SkipTaskInput!) { skipTask(input: $input) { id } }",
        {"input": {"taskId": MALFORMED, "reason": "not needed"}},
        ["input", "taskId"],
    ),
    "approveStage": (
        "mutation($input: StageActionInput!) { approveStage(input: $input) { id } }",
        {"input": {"stageId": MALFORMED}},
        ["input", "stageId"],
    ),
    "cancelIssue": (
        "mutation($input: IssueActionInput!) { cancelIssue(input: $input) { id } }",
        {"input": {"issueId": MALFORMED}},
        ["input", "issueId"],
    ),
    "updateEnvironment": (
        "mutation($input: UpdateEnvironmentInput!) { updateEnvironment(input: $input) { id } }",
        {"input": {"id": MALFORMED, "name": "qa"}},
        ["input", "id"],
    ),
    "registerDatabase": (
        "mutation($input: RegisterDatabaseInput!) { registerDatabase(input: $input) { id } }",
        {"input": {"instanceId": MALFORMED, "name": "reports"}},
        ["input", "instanceId"],
    ),
    "revokeApiToken": (
        "mutation($input: RevokeApiTokenInput!) { revokeApiToken(input: $input) { id } }",
        {"input": {"id": MALFORMED}},
        ["input", "id"],
    ),
    "issues": (
        "query($id: ID) { issues(environmentId: $id) { totalCount } }",
        {"id": MALFORMED},
        ["environmentId"],
    ),
    "databases": (
        "query($id: ID) { databases(instanceId: $id) { totalCount } }",
        {"id": MALFORMED},
        ["instanceId"],
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_a_malformed_id_is_refused_at_its_field(
    graphql: GraphQLClient, case: tuple[str, dict[str, Any], list[str]]
) -> None:
    document, variables, field = case

    error = the_error(await graphql(document, variables))

    assert error["message"] == MESSAGE
    assert error["extensions"]["code"] == "INVALID_INPUT"
    assert error["extensions"]["field"] == field
    assert error["extensions"]["problems"] == [
        {"message": MESSAGE, "code": "INVALID_INPUT", "field": field}
    ]


async def test_an_id_of_another_type_is_still_not_found_at_its_field(
    graphql: GraphQLClient, catalog: Catalog
) -> None:
    document, variables, field = CASES["approveTask"]
    variables = {"input": {"taskId": global_id("Stage", 1)}}

    error = the_error(await graphql(document, variables))

    assert error["extensions"]["code"] == "NOT_FOUND"
    assert error["extensions"]["field"] == field
