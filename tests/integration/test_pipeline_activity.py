"""`pipelineActivity`: every kind of event of a pipeline, live and resumable, with payloads a
normalized client cache can trust (global ids, `lastSequence`), over a real server."""

from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from conveyor.db.models import Event
from tests.conftest import ConveyorProcess, GraphQLClient
from tests.integration.conftest import build_engine_catalog
from tests.integration.subscribers import LiveSubscription, subscribed, websocket_url
from tests.integration.test_subscriptions import create_issue, row_key

#: The selection a pipeline page subscribes with (README, "Live updates").
ACTIVITY = """
subscription($pipelineId: ID, $issueId: ID, $after: Int) {
  pipelineActivity(pipelineId: $pipelineId, issueId: $issueId, after: $after) {
    id sequence kind actor createdAt taskId stageId oldStatus newStatus reason detail
    task { id status version statement statusReason approvedBy cancelRequested lastSequence
           waitingReason { kind message } availableActions }
    stage { id status lastSequence taskCounts { pendingApproval pending running done failed
            canceled skipped total } }
    pipeline { id status lastSequence activeStage { id } }
  }
}
"""


async def post(server: ConveyorProcess, document: str, variables: dict[str, Any]) -> Any:
    """The whole JSON answer of a document sent over HTTP, extensions included."""
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            f"{server.url}/graphql",
            json={"query": document, "variables": variables},
            headers={"Authorization": f"Bearer {server.token}"},
        )
    body = answer.json()
    assert "errors" not in body, body
    return body


async def take_until(
    live: LiveSubscription, done: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    messages = [await live.next()]
    while not done(messages[-1]):
        messages.append(await live.next())
    return messages


async def test_pipeline_activity_delivers_every_kind_of_event_as_it_happens(
    graphql: GraphQLClient,
    live_server: ConveyorProcess,
    server_url: str,
    target_databases: Callable[[], Awaitable[str]],
) -> None:
    catalog = await build_engine_catalog(graphql, server_url, {"main": await target_databases()})
    issue = await create_issue(
        graphql,
        catalog,
        statements=(
            "CREATE TABLE a (id int); DO $$ BEGIN RAISE NOTICE 'half way'; END $$; "
            "INSERT INTO a VALUES (1)",
            "SELECT pg_sleep(60)",
            "SELECT 2",
        ),
    )
    script, sleeper, skipped = issue["tasks"]
    created = max(row.id for row in await Event.filter(pipeline_id=row_key(issue["pipeline"])))
    url = websocket_url(live_server)
    async with subscribed(
        url, ACTIVITY, {"pipelineId": issue["pipeline"], "after": created}, token=live_server.token
    ) as live:
        await graphql.ok(
            "mutation($i: UpdateTaskStatementInput!) { updateTaskStatement(input: $i) { id } }",
            {"i": {"taskId": skipped, "statement": "SELECT 3"}},
        )
        await graphql.ok(
            "mutation($i: SkipTaskInput!) { skipTask(input: $i) { id } }",
            {"i": {"taskId": skipped, "reason": "not needed"}},
        )
        await graphql.ok(
            "mutation($i: TaskActionInput!) { approveTask(input: $i) { id } }",
            {"i": {"taskId": script}},
        )
        messages = await take_until(
            live, lambda m: m["taskId"] == script and m["newStatus"] == "DONE"
        )
        await graphql.ok(
            "mutation($i: TaskActionInput!) { approveTask(input: $i) { id } }",
            {"i": {"taskId": sleeper}},
        )
        messages += await take_until(
            live, lambda m: m["taskId"] == sleeper and m["newStatus"] == "RUNNING"
        )
        await graphql.ok(
            "mutation($i: TaskActionInput!) { cancelTask(input: $i) { id } }",
            {"i": {"taskId": sleeper}},
        )
        messages += await take_until(
            live, lambda m: m["taskId"] == sleeper and m["newStatus"] == "CANCELED"
        )
        messages += await take_until(live, lambda m: m["kind"] == "STAGE_STATUS_CHANGED")
        await live.assert_nothing_more()

    logged = await Event.filter(pipeline_id=row_key(issue["pipeline"]), id__gt=created).order_by(
        "id"
    )
    assert [m["sequence"] for m in messages] == [row.id for row in logged]
    assert {m["kind"] for m in messages} == {
        "TASK_EDITED",
        "TASK_STATUS_CHANGED",
        "TASK_APPROVED",
        "TASK_LOG",
        "TASK_CANCEL_REQUESTED",
        "STAGE_STATUS_CHANGED",
    }
    by_kind = {(m["kind"], m["taskId"]): m for m in messages}
    assert by_kind[("TASK_EDITED", skipped)]["task"]["statement"] == "SELECT 3"
    skip = next(m for m in messages if m["newStatus"] == "SKIPPED")
    assert skip["reason"] == "not needed"
    assert by_kind[("TASK_APPROVED", script)]["actor"] == "tester"
    assert (
        by_kind[("TASK_CANCEL_REQUESTED", sleeper)]["task"]["lastSequence"]
        >= (by_kind[("TASK_CANCEL_REQUESTED", sleeper)]["sequence"])
    )
    # The script's log, live: each statement started then finished (with its tag and
    # duration), and the server's notice in between, all before the task's DONE.
    entries = [
        entry
        for m in messages
        if m["kind"] == "TASK_LOG" and m["taskId"] == script
        for entry in m["detail"]["entries"]
    ]
    finished = [entry for entry in entries if entry.get("phase") == "FINISHED"]
    assert [entry["statusTag"] for entry in finished][-3:] == ["CREATE TABLE", "DO", "INSERT 0 1"]
    assert all(entry["durationMs"] >= 0 for entry in finished)
    assert any(entry["kind"] == "notice" and entry["text"] == "half way" for entry in entries)
    done = next(m for m in messages if m["taskId"] == script and m["newStatus"] == "DONE")
    assert (
        max(m["sequence"] for m in messages if m["kind"] == "TASK_LOG" and m["taskId"] == script)
        < done["sequence"]
    )
    # The stage's roll-up: RUNNING while the sleeper ran, CANCELED after.
    stage_changes = [
        (m["oldStatus"], m["newStatus"]) for m in messages if m["kind"] == "STAGE_STATUS_CHANGED"
    ]
    assert stage_changes[-1] == ("RUNNING", "CANCELED")
    # Every object a message carries is at least as new as the event.
    for message in messages:
        assert message["id"]
        assert message["pipeline"]["lastSequence"] >= message["sequence"]
        assert message["stage"]["lastSequence"] >= message["sequence"]
        if message["task"] is not None:
            assert message["task"]["lastSequence"] >= message["sequence"]


async def test_a_mutation_answer_says_the_sequence_its_commit_reached(
    graphql: GraphQLClient, live_server: ConveyorProcess, server_url: str
) -> None:
    catalog = await build_engine_catalog(graphql, server_url, {"main": "conveyor_never_created"})
    issue = await create_issue(graphql, catalog)
    task_id = issue["tasks"][0]

    answer = await post(
        live_server,
        "mutation($i: TaskActionInput!) { approveTask(input: $i) { status lastSequence "
        "stage { lastSequence } pipeline { lastSequence } } }",
        {"i": {"taskId": task_id}},
    )
    # The approval, the task's status change, and the stage's roll-up: one commit.
    committed = await Event.filter(pipeline_id=row_key(issue["pipeline"])).order_by("-id").limit(3)
    task = answer["data"]["approveTask"]
    assert [row.kind for row in committed] == [
        "STAGE_STATUS_CHANGED",
        "TASK_STATUS_CHANGED",
        "TASK_APPROVED",
    ]
    assert answer["extensions"]["sequence"] == committed[0].id
    assert task["lastSequence"] == committed[1].id
    assert task["stage"]["lastSequence"] == committed[0].id
    assert task["pipeline"]["lastSequence"] == committed[0].id
    # A query writes nothing, so its answer has no sequence to report.
    query = await post(live_server, "{ __typename }", {})
    assert "sequence" not in query.get("extensions", {})


async def test_an_event_is_a_node(graphql: GraphQLClient, server_url: str) -> None:
    catalog = await build_engine_catalog(graphql, server_url, {"main": "conveyor_never_created"})
    issue = await create_issue(graphql, catalog)
    data = await graphql.ok(
        "query($id: ID!) { node(id: $id) { ... on Issue { events { id sequence kind } } } }",
        {"id": issue["id"]},
    )
    event = data["node"]["events"][0]
    again = await graphql.ok(
        "query($id: ID!) { node(id: $id) { ... on Event { id sequence kind } } }",
        {"id": event["id"]},
    )
    assert again["node"] == event
