"""`pipelineActivity`: every kind of event of a pipeline, live and resumable, with payloads a
normalized client cache can trust (global ids, `lastSequence`), over a real server."""

import asyncio
import json
import re
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
from gql.transport.exceptions import TransportQueryError
from tortoise.transactions import in_transaction

from conveyor.db.events import NewEvent, latest_event_sequence, record_events
from conveyor.db.models import Event, Task
from conveyor.domain.statuses import EventKind
from conveyor.settings import Settings
from tests.conftest import ConveyorProcess, GraphQLClient, conveyor_env, start_server
from tests.integration.conftest import build_engine_catalog, eventually
from tests.integration.subscribers import (
    MESSAGE_WAIT_SECONDS,
    LiveSubscription,
    raw_subscribe,
    subscribed,
    websocket_url,
)
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


async def change_status(issue: dict[str, Any], count: int) -> list[int]:
    """`count` status events of the issue's first task, written in one transaction."""
    async with in_transaction() as connection:
        return await record_events(
            connection,
            "load",
            [
                NewEvent(
                    EventKind.TASK_STATUS_CHANGED,
                    issue_id=row_key(issue["id"]),
                    pipeline_id=row_key(issue["pipeline"]),
                    stage_id=row_key(issue["stage"]),
                    task_id=row_key(issue["tasks"][0]),
                    old_status="PENDING_APPROVAL",
                    new_status="PENDING_APPROVAL",
                )
            ]
            * count,
        )


async def checked(issue: dict[str, Any]) -> int:
    """The newest sequence once the worker has checked the issue's tasks: from then on, only
    what a test does writes the pipeline's events."""

    async def done() -> bool:
        return not await Task.filter(
            pipeline_id=row_key(issue["pipeline"]), checked_version__isnull=True
        ).exists()

    await eventually(done, what="the checks of the issue's tasks")
    return await latest_event_sequence()


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
        task_type="SCHEMA_UPDATE",
    )
    script, sleeper, skipped = issue["tasks"]
    created = await checked(issue)
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
    # The edit's new checks may finish before the skip, or find the task skipped already.
    assert {m["kind"] for m in messages} - {"TASK_CHECKED"} == {
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
    await checked(issue)
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
    # Every copy is labelled with the pipeline's position, derived fields included.
    assert task["lastSequence"] == committed[0].id
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


async def slow_subscribers_closed(server: ConveyorProcess) -> int:
    # An operator sees it too (the metrics answer loopback without a token).
    async with httpx.AsyncClient(timeout=10) as client:
        metrics = (await client.get(f"{server.url}/metrics")).text
    found = re.search(r"^conveyor_slow_subscribers_closed_total (\d+)\.0$", metrics, re.M)
    assert found is not None, metrics
    return int(found.group(1))


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        # Pinged every second: before, the ping it could not answer closed it with 1011.
        pytest.param(
            {
                "CONVEYOR_WEBSOCKET_KEEP_ALIVE_SECONDS": "1",
                "CONVEYOR_SUBSCRIBER_BUFFER_BYTES": str(2**30),
            },
            "closed a subscriber that read nothing for",
            id="its-socket-stalls",
        ),
        pytest.param(
            {
                "CONVEYOR_WEBSOCKET_KEEP_ALIVE_SECONDS": "600",
                "CONVEYOR_SUBSCRIBER_BUFFER_BYTES": str(256 * 1024),
            },
            "bytes waiting for its socket",
            id="bytes-wait-for-it",
        ),
    ],
)
async def test_a_never_reading_subscriber_learns_where_to_resume_and_loses_nothing(
    graphql: GraphQLClient,
    settings: Settings,
    tmp_path: Path,
    server_url: str,
    limits: dict[str, str],
    reason: str,
) -> None:
    server = start_server(
        conveyor_env(settings, CONVEYOR_RUN_WORKER="false", **limits), tmp_path / "server.log"
    )
    try:
        catalog = await build_engine_catalog(
            graphql, server_url, {"main": "conveyor_never_created"}
        )
        # Large messages fill the socket buffers between the server and the client quickly.
        issue = await create_issue(graphql, catalog, statements=("SELECT 1 -- " + "x" * 20_000,))
        start = await latest_event_sequence()
        heavy = ACTIVITY.replace("task { id", "task { statement id")
        small_receive_buffer = socket.socket()
        small_receive_buffer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        small_receive_buffer.connect(("127.0.0.1", int(urlparse(server.url).port or 0)))
        slow = await raw_subscribe(
            websocket_url(server),
            heavy,
            {"pipelineId": issue["pipeline"], "after": start},
            token=server.token,
            sock=small_receive_buffer,
            compression=None,
            max_queue=1,
        )
        # The client reads nothing while events are written until the server gives up on it,
        # however much the kernel's socket buffers take first. The writing has its deadline.
        written: list[int] = []
        deadline = time.monotonic() + 60
        while not await slow_subscribers_closed(server):
            assert time.monotonic() < deadline, f"not closed as too slow after {len(written)}"
            written += await change_status(issue, count=10)
            await asyncio.sleep(0.05)
        written += await change_status(issue, count=10)

        received: list[int] = []
        closing: dict[str, Any] = {}
        while not closing:
            message = json.loads(await asyncio.wait_for(slow.recv(), MESSAGE_WAIT_SECONDS))
            if message["type"] == "ping":
                continue
            payload = message["payload"]
            if payload.get("errors"):
                closing = payload["errors"][0]
            else:
                received.append(payload["data"]["pipelineActivity"]["sequence"])
        assert json.loads(await slow.recv())["type"] == "complete"
        await slow.close()

        assert closing["extensions"]["code"] == "SUBSCRIBER_TOO_SLOW"
        last = closing["extensions"]["lastSequence"]
        assert last == (received[-1] if received else start)
        assert len(received) < len(written)
        async with subscribed(
            websocket_url(server),
            ACTIVITY,
            {"pipelineId": issue["pipeline"], "after": last},
            token=server.token,
        ) as resumed:
            missed = len([sequence for sequence in written if sequence > last])
            rest = [message["sequence"] for message in await resumed.take(missed)]
        assert received + rest == written
        assert reason in server.log()
        assert await slow_subscribers_closed(server) == 1
    finally:
        server.stop()


async def test_a_client_reconnecting_with_the_same_variables_resumes_from_connection_params(
    graphql: GraphQLClient, live_server: ConveyorProcess, server_url: str
) -> None:
    catalog = await build_engine_catalog(graphql, server_url, {"main": "conveyor_never_created"})
    issue = await create_issue(graphql, catalog)
    await checked(issue)
    pipeline = issue["pipeline"]
    # graphql-ws's retry sends the first subscribe message again; its connectionParams, a
    # function, is evaluated on each connect and carries the newest position seen.
    variables = {"pipelineId": pipeline}
    url = websocket_url(live_server)
    start = await latest_event_sequence()
    async with subscribed(
        url,
        ACTIVITY,
        variables,
        token=live_server.token,
        connection_params={"resume": {pipeline: start}},
    ) as first:
        seen = await first.take(len(await change_status(issue, count=3)))
    last_seen = seen[-1]["sequence"]
    missed = await change_status(issue, count=4)

    async with subscribed(
        url,
        ACTIVITY,
        variables,
        token=live_server.token,
        connection_params={"resume": {pipeline: last_seen}},
    ) as again:
        resumed = await again.take(len(missed))
        live = await change_status(issue, count=2)
        resumed += await again.take(len(live))
        await again.assert_nothing_more()

    assert [message["sequence"] for message in resumed] == missed + live


async def test_a_resume_position_that_is_no_sequence_number_is_refused(
    graphql: GraphQLClient, live_server: ConveyorProcess, server_url: str
) -> None:
    catalog = await build_engine_catalog(graphql, server_url, {"main": "conveyor_never_created"})
    issue = await create_issue(graphql, catalog)
    async with subscribed(
        websocket_url(live_server),
        ACTIVITY,
        {"pipelineId": issue["pipeline"]},
        token=live_server.token,
        connection_params={"resume": {issue["pipeline"]: "yesterday"}},
    ) as refused:
        with pytest.raises(TransportQueryError) as error:
            await refused.next()

    assert error.value.errors is not None
    extensions = error.value.errors[0]["extensions"]
    assert extensions["code"] == "INVALID_INPUT"
    assert extensions["field"] == ["connectionParams", "resume"]


async def test_a_quiet_client_is_pinged_and_kept_whether_it_answers_or_not(
    graphql: GraphQLClient, settings: Settings, tmp_path: Path, server_url: str
) -> None:
    server = start_server(
        conveyor_env(
            settings, CONVEYOR_RUN_WORKER="false", CONVEYOR_WEBSOCKET_KEEP_ALIVE_SECONDS="0.5"
        ),
        tmp_path / "server.log",
    )
    try:
        catalog = await build_engine_catalog(
            graphql, server_url, {"main": "conveyor_never_created"}
        )
        issue = await create_issue(graphql, catalog)
        variables = {"pipelineId": issue["pipeline"]}
        url = websocket_url(server)
        clients = [
            await raw_subscribe(url, ACTIVITY, variables, token=server.token) for _ in range(2)
        ]
        await asyncio.sleep(3)
        written = await change_status(issue, count=1)
        received = []
        for answers, client in zip((True, False), clients, strict=True):
            pings = 0
            message = json.loads(await asyncio.wait_for(client.recv(), MESSAGE_WAIT_SECONDS))
            while message["type"] == "ping":
                pings += 1
                if answers:
                    await client.send(json.dumps({"type": "pong"}))
                message = json.loads(await asyncio.wait_for(client.recv(), MESSAGE_WAIT_SECONDS))
            received.append((pings, message["payload"]["data"]["pipelineActivity"]["sequence"]))
            await client.close()
    finally:
        server.stop()

    # Pinged every half second, neither was closed (uvicorn's own ping would have closed
    # the one that does not answer with 1011); both got the event.
    assert all(pings >= 4 for pings, _ in received)
    assert [sequence for _, sequence in received] == [written[0]] * 2
