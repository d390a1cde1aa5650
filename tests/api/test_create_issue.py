from typing import Any

from tests.api.support import Catalog, instance_task, issue_plan, orders_tasks
from tests.conftest import GraphQLClient

CREATE_ISSUE = """
mutation($input: CreateIssueInput!) {
  createIssue(input: $input) {
    id title status creator
    pipeline {
      status
      stages {
        name position status
        environment { name approvalPolicy }
        taskCounts { pendingApproval pending total }
        tasks { name type status statement blockedBy { name } instance { name } database { name } }
      }
    }
  }
}
"""


def plan(catalog: Catalog) -> dict[str, Any]:
    return issue_plan(
        catalog,
        {
            "dev": orders_tasks(catalog, name="seed"),
            "prod": [instance_task(catalog, "INSTANCE_SYNC", "beta")],
        },
    )


async def test_creates_the_whole_tree_with_tasks_at_their_gate(
    graphql: GraphQLClient, catalog: Catalog
) -> None:
    data = await graphql.ok(CREATE_ISSUE, {"input": plan(catalog)}, actor="ada")

    issue = data["createIssue"]
    assert issue["status"] == "OPEN"
    assert issue["creator"] == "ada"
    dev, prod = issue["pipeline"]["stages"]
    assert (dev["name"], dev["position"], dev["status"]) == ("dev", 0, "PENDING")
    assert [task["status"] for task in dev["tasks"]] == ["PENDING", "PENDING"]
    assert dev["tasks"][1]["blockedBy"] == [{"name": "schema_update-1"}]
    assert dev["tasks"][0]["database"] == {"name": "alpha_db"}
    assert (prod["status"], prod["taskCounts"]) == (
        "PENDING_APPROVAL",
        {"pendingApproval": 1, "pending": 0, "total": 1},
    )
    assert prod["tasks"][0]["database"] is None
