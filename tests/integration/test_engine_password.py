"""A wrong instance password ends the task FAILED, with the server's reason and no secret; the
right one runs it. Neither password is ever shown or logged: not in a log record (Conveyor's,
tortoise's or asyncpg's, at DEBUG), not in a GraphQL response, not in a row of Conveyor's."""

import json
import logging
from typing import Any

import asyncpg
import pytest

from conveyor.db.embedded import EmbeddedPostgres
from conveyor.runner.worker import Worker
from tests.conftest import GraphQLClient
from tests.integration.conftest import build_engine_catalog, eventually, require_password_for
from tests.integration.test_engine import CREATE_ISSUE, issue_state, tasks_by_name

WRONG_PASSWORD = "not-the-password-4711"
RIGHT_PASSWORD = "the-right-one-0815"
#: Every logger that could see a connection being made or an instance being saved.
LOGGERS = ("conveyor", "tortoise", "asyncpg", "")
UPDATE_INSTANCE = "mutation($i: UpdateInstanceInput!) { updateInstance(input: $i) { id } }"
RETRY_TASK = "mutation($i: TaskActionInput!) { retryTask(input: $i) { status } }"


class RecordingClient:
    """The test's GraphQL client, keeping every response it got."""

    def __init__(self, graphql: GraphQLClient) -> None:
        self.graphql = graphql
        self.responses: list[Any] = []

    async def ok(self, document: str, variables: dict[str, Any]) -> dict[str, Any]:
        data = await self.graphql.ok(document, variables)
        self.responses.append(data)
        return data


async def rows_of_conveyor(database_url: str) -> str:
    """Every row of every table of Conveyor's, as text."""
    connection = await asyncpg.connect(database_url)
    try:
        tables = await connection.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        )
        dumped = []
        for table in tables:
            rows = await connection.fetch(f'SELECT t::text AS row FROM "{table["tablename"]}" t')
            dumped += [row["row"] for row in rows]
        return "\n".join(dumped)
    finally:
        await connection.close()


def logged(caplog: pytest.LogCaptureFixture) -> str:
    """Each record's message, and its arguments as given, in case a handler formats them."""
    return "\n".join(
        f"{record.getMessage()} {record.args!r} {record.exc_text or ''}"
        for record in caplog.records
    )


async def test_a_wrong_password_fails_the_task_and_no_password_is_ever_shown_or_logged(
    graphql: GraphQLClient,
    worker: Worker,
    password_server: EmbeddedPostgres,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    admin = await asyncpg.connect(password_server.url("postgres"))
    try:
        await admin.execute(f"CREATE ROLE app LOGIN PASSWORD '{RIGHT_PASSWORD}'")
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
    client = RecordingClient(graphql)
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
    issue_id = (await client.ok(CREATE_ISSUE, {"input": plan}))["createIssue"]["id"]

    async def sync_is(*statuses: str) -> dict[str, Any] | None:
        issue = await issue_state(graphql, issue_id)
        client.responses.append(issue)
        task = tasks_by_name(issue)["sync"]
        return task if task["status"] in statuses else None

    failed = await eventually(lambda: sync_is("FAILED"), what="the task to fail")
    await client.ok(UPDATE_INSTANCE, {"i": {"id": catalog.instance, "password": RIGHT_PASSWORD}})
    await client.ok(RETRY_TASK, {"i": {"taskId": failed["id"]}})
    done = await eventually(lambda: sync_is("DONE", "FAILED"), what="the retry to end")

    assert failed["runs"][0]["errorCode"] == "28P01"
    assert 'password authentication failed for user "app"' in str(failed["statusReason"])
    assert done["status"] == "DONE", done["statusReason"]
    assert "password_encrypted" in logged(caplog), "the saving of the password was heard"
    shown = json.dumps(client.responses)
    stored = await rows_of_conveyor(database_url)
    for password in (WRONG_PASSWORD, RIGHT_PASSWORD):
        assert password not in shown
        assert password not in logged(caplog)
        assert password not in stored
