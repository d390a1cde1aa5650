"""A wrong instance password ends the task FAILED, with the server's reason and no secret."""

import asyncpg

from conveyor.db.embedded import EmbeddedPostgres
from conveyor.runner.worker import Worker
from tests.conftest import GraphQLClient
from tests.integration.conftest import build_engine_catalog, eventually, require_password_for
from tests.integration.test_engine import CREATE_ISSUE, issue_state, tasks_by_name

WRONG_PASSWORD = "not-the-password-4711"


async def test_a_wrong_password_ends_the_task_failed(
    graphql: GraphQLClient, worker: Worker, password_server: EmbeddedPostgres
) -> None:
    admin = await asyncpg.connect(password_server.url("postgres"))
    try:
        await admin.execute("CREATE ROLE app LOGIN PASSWORD 'the-right-one'")
        require_password_for(password_server.pgdata, "app")
        await admin.execute("SELECT pg_reload_conf()")
    finally:
        await admin.close()
    catalog = await build_engine_catalog(
        graphql,
        password_server.url("postgres"),
        {},
        username="app",
        password=WRONG_PASSWORD,
    )
    plan = {
        "title": "sync with a wrong password",
        "stages": [
            {
                "environmentId": catalog.environments["dev"],
                "tasks": [
                    {"type": "INSTANCE_SYNC", "name": "sync", "instanceId": catalog.instance}
                ],
            }
        ],
    }
    issue_id = (await graphql.ok(CREATE_ISSUE, {"input": plan}))["createIssue"]["id"]

    async def failed() -> dict[str, object] | None:
        task = tasks_by_name(await issue_state(graphql, issue_id))["sync"]
        return task if task["status"] == "FAILED" else None

    task = await eventually(failed, what="the task to fail")

    assert task["runs"][0]["errorCode"] == "28P01"
    assert 'password authentication failed for user "app"' in str(task["statusReason"])
    assert WRONG_PASSWORD not in str(task)
