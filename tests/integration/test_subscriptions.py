"""Live updates: subscriptions over real WebSockets to a real `conveyor serve`, and the hub
that feeds them, against real PostgreSQL."""

import asyncio
import contextlib
import dataclasses
import json
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import asyncpg
import httpx
import psutil
import pytest
from strawberry import relay
from tortoise.context import TortoiseContext
from tortoise.transactions import in_transaction
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from conveyor.db.events import EventFilter, NewEvent, record_events
from conveyor.db.models import Event, Issue, Pipeline
from conveyor.domain.permissions import SYSTEM, Principal, Role
from conveyor.domain.statuses import EventKind, PipelineStatus
from conveyor.events.hub import HUB_READ_BATCH_SIZE, EventHub, HubSubscription, SubscriberTooSlow
from conveyor.events.listener import APPLICATION_NAME
from conveyor.events.shared import Sharing
from conveyor.graphql.context import Context
from conveyor.graphql.schema import schema
from conveyor.settings import Settings
from tests.conftest import ConveyorProcess, GraphQLClient, conveyor_env, start_server
from tests.integration.conftest import EngineCatalog, build_engine_catalog, eventually
from tests.integration.subscribers import (
    LEGACY_WS,
    MESSAGE_WAIT_SECONDS,
    TRANSPORT_WS,
    bearer,
    raw_subscribe,
    subscribed,
    websocket_url,
)

#: Events written per transaction by the slow-subscriber test: fewer than its buffer of 20.
EVENTS_PER_CHANGE = 10

TASK_CHANGES = """
subscription($pipelineId: ID, $stageId: ID, $taskId: ID, $after: Int, $snapshot: Boolean! = false) {
  taskStatusChanged(pipelineId: $pipelineId, stageId: $stageId, taskId: $taskId, after: $after,
                    snapshot: $snapshot) {
    __typename
    sequence
    ... on TaskStatusSnapshot { tasks { id name status } }
    ... on TaskStatusChange { kind taskId oldStatus newStatus actor at task { id name status } }
  }
}
"""
PIPELINE_CHANGES = """
subscription($pipelineId: ID, $issueId: ID, $after: Int) {
  pipelineStatusChanged(pipelineId: $pipelineId, issueId: $issueId, after: $after) {
    sequence kind oldStatus newStatus issueId pipeline { id status }
  }
}
"""
CREATE_ISSUE = """
mutation($input: CreateIssueInput!) {
  createIssue(input: $input) { id pipeline { id stages { id tasks { id name } } } }
}
"""


@pytest.fixture
async def catalog(graphql: GraphQLClient, server_url: str) -> EngineCatalog:
    # The registered database is never created: tasks of the MANUAL stage used below wait
    # for an approval that these tests never give.
    return await build_engine_catalog(graphql, server_url, {"main": "conveyor_never_created"})


async def create_issue(
    graphql: GraphQLClient,
    catalog: EngineCatalog,
    environment: str = "prod",
    statements: tuple[str, ...] = ("SELECT 1",),
    database: str = "main",
    task_type: str = "DATA_UPDATE",
) -> dict[str, Any]:
    """An issue of one stage in `environment`; returns its id, pipeline, stage and task ids."""
    tasks = [
        {
            "type": task_type,
            "name": f"task-{index}",
            "instanceId": catalog.instance,
            "databaseId": catalog.databases[database],
            "statement": statement,
        }
        for index, statement in enumerate(statements)
    ]
    data = await graphql.ok(
        CREATE_ISSUE,
        {
            "input": {
                "title": "live",
                "stages": [{"environmentId": catalog.environments[environment], "tasks": tasks}],
            }
        },
    )
    issue = data["createIssue"]
    stage = issue["pipeline"]["stages"][0]
    return {
        "id": issue["id"],
        "pipeline": issue["pipeline"]["id"],
        "stage": stage["id"],
        "tasks": [task["id"] for task in stage["tasks"]],
    }


async def act_on_task(graphql: GraphQLClient, action: str, task_id: str) -> None:
    await graphql.ok(
        f"mutation($i: TaskActionInput!) {{ {action}(input: $i) {{ status }} }}",
        {"i": {"taskId": task_id}},
    )


async def cancel_then_retry(graphql: GraphQLClient, task_id: str, changes: int) -> None:
    """`changes` status changes of a waiting task: canceled, back to its gate, and so on."""
    assert changes % 2 == 0, "start and end at the gate"
    for index in range(changes):
        await act_on_task(graphql, "cancelTask" if index % 2 == 0 else "retryTask", task_id)


def row_key(global_id: str) -> int:
    """The row id behind a global id."""
    return int(relay.GlobalID.from_id(global_id).node_id)


async def status_events(pipeline_id: str, after: int) -> list[tuple[int, str, str]]:
    """(sequence, old, new) of the pipeline's task status events after `after`."""
    rows = await Event.filter(
        kind=EventKind.TASK_STATUS_CHANGED, pipeline_id=row_key(pipeline_id), id__gt=after
    ).order_by("id")
    return [(row.id, str(row.old_status), str(row.new_status)) for row in rows]


def changes_of(messages: list[dict[str, Any]]) -> list[tuple[int, str, str]]:
    return [(m["sequence"], m["oldStatus"], m["newStatus"]) for m in messages]


# --- end to end, over a real server ------------------------------------------------------


async def test_a_subscriber_sees_every_status_change_of_a_pipeline_run_in_order(
    graphql: GraphQLClient,
    live_server: ConveyorProcess,
    server_url: str,
    target_databases: Callable[[], Awaitable[str]],
) -> None:
    catalog = await build_engine_catalog(graphql, server_url, {"main": await target_databases()})
    issue = await create_issue(
        graphql,
        catalog,
        statements=("CREATE TABLE orders (id int)", "SELECT 1"),
        task_type="SCHEMA_UPDATE",
    )
    url = websocket_url(live_server)

    token = live_server.token
    async with (
        subscribed(
            url, TASK_CHANGES, {"pipelineId": issue["pipeline"], "snapshot": True}, token=token
        ) as tasks,
        subscribed(
            url, PIPELINE_CHANGES, {"issueId": issue["id"], "after": 0}, token=token
        ) as pipeline,
    ):
        snapshot = await tasks.next()
        assert snapshot["__typename"] == "TaskStatusSnapshot"
        assert [task["status"] for task in snapshot["tasks"]] == ["PENDING_APPROVAL"] * 2
        await graphql.ok(
            "mutation($i: StageActionInput!) { approveStage(input: $i) { status } }",
            {"i": {"stageId": issue["stage"]}},
        )
        # Each task: approved (PENDING), claimed (RUNNING), finished (DONE).
        received = await tasks.take(6)
        pipeline_done = await pipeline.next()

    assert changes_of(received) == await status_events(issue["pipeline"], snapshot["sequence"])
    assert {m["__typename"] for m in received} == {"TaskStatusChange"}
    assert (
        sorted(m["newStatus"] for m in received) == ["DONE"] * 2 + ["PENDING"] * 2 + ["RUNNING"] * 2
    )
    assert [m["sequence"] for m in received] == sorted(m["sequence"] for m in received)
    assert {m["task"]["name"] for m in received} == {"task-0", "task-1"}
    assert pipeline_done["oldStatus"] == "OPEN"
    assert pipeline_done["newStatus"] == "DONE"
    assert pipeline_done["pipeline"] == {"id": issue["pipeline"], "status": "DONE"}
    # Committed with the last task's DONE, after it.
    assert pipeline_done["sequence"] > received[-1]["sequence"]


async def test_a_resumed_subscription_gets_exactly_the_missed_changes_then_live_ones(
    graphql: GraphQLClient, live_server: ConveyorProcess, catalog: EngineCatalog
) -> None:
    issue = await create_issue(graphql, catalog)
    task_id = issue["tasks"][0]
    url = websocket_url(live_server)
    token = live_server.token
    async with subscribed(
        url, TASK_CHANGES, {"taskId": task_id, "snapshot": True}, token=token
    ) as first:
        snapshot = await first.next()
        await cancel_then_retry(graphql, task_id, 2)
        seen = await first.take(2)
    last_seen = seen[-1]["sequence"]

    await cancel_then_retry(graphql, task_id, 4)
    async with subscribed(
        url, TASK_CHANGES, {"taskId": task_id, "after": last_seen}, token=token
    ) as resumed:
        missed = await resumed.take(4)
        await cancel_then_retry(graphql, task_id, 2)
        live = await resumed.take(2)
        await resumed.assert_nothing_more()

    every_change = await status_events(issue["pipeline"], snapshot["sequence"])
    assert changes_of(seen) == every_change[:2]
    assert changes_of(missed) == every_change[2:6]
    assert changes_of(live) == every_change[6:]
    assert len(every_change) == 8


async def test_a_change_made_through_one_replica_reaches_a_subscriber_on_another(
    graphql: GraphQLClient,
    live_server: ConveyorProcess,
    catalog: EngineCatalog,
    settings: Settings,
    tmp_path: Path,
) -> None:
    other = start_server(
        conveyor_env(
            settings,
            CONVEYOR_RUN_WORKER="false",
        ),
        tmp_path / "other.log",
    )
    try:
        issue = await create_issue(graphql, catalog)
        task_id = issue["tasks"][0]
        created = await graphql.ok(
            "mutation($i: CreateApiTokenInput!) { createApiToken(input: $i) { token } }",
            {"i": {"actor": "someone-on-replica-a", "role": "DBA"}},
        )
        replica_a_token = created["createApiToken"]["token"]
        async with subscribed(
            websocket_url(other),
            TASK_CHANGES,
            {"taskId": task_id, "snapshot": True},
            token=other.token,
        ) as live:
            await live.next()
            async with httpx.AsyncClient() as client:
                response = await client.post(
                    f"{live_server.url}/graphql",
                    json={
                        "query": "mutation($i: TaskActionInput!) { cancelTask(input: $i) "
                        "{ status } }",
                        "variables": {"i": {"taskId": task_id}},
                    },
                    headers=bearer(replica_a_token),
                )
            assert response.json()["data"]["cancelTask"]["status"] == "CANCELED"
            change = await live.next()
    finally:
        other.stop()

    assert (change["oldStatus"], change["newStatus"]) == ("PENDING_APPROVAL", "CANCELED")
    assert change["actor"] == "someone-on-replica-a"


async def listener_pids(server_url: str, database: str) -> list[int]:
    connection = await asyncpg.connect(server_url)
    try:
        rows = await connection.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND datname = $2",
            APPLICATION_NAME,
            database,
        )
    finally:
        await connection.close()
    return [row["pid"] for row in rows]


async def terminate_listeners(server_url: str, database: str) -> int:
    connection = await asyncpg.connect(server_url)
    try:
        terminated: int = await connection.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = $1 AND datname = $2",
            APPLICATION_NAME,
            database,
        )
    finally:
        await connection.close()
    return terminated


async def test_subscribers_get_every_event_while_the_listen_connection_is_killed(
    graphql: GraphQLClient,
    live_server: ConveyorProcess,
    catalog: EngineCatalog,
    server_url: str,
    database_url: str,
) -> None:
    database = urlparse(database_url).path.lstrip("/")
    issue = await create_issue(graphql, catalog)
    task_id = issue["tasks"][0]
    before = await listener_pids(server_url, database)
    assert len(before) == 1, "one LISTEN connection per process, shared by hub and worker"

    async with subscribed(
        websocket_url(live_server),
        TASK_CHANGES,
        {"taskId": task_id, "snapshot": True},
        token=live_server.token,
    ) as live:
        snapshot = await live.next()
        terminated = []
        for _ in range(3):
            terminated.append(await terminate_listeners(server_url, database))
            # Changes land while the listener is down or reconnecting: their notifications
            # are lost for good, and only the hub's re-read and poll can deliver them.
            await cancel_then_retry(graphql, task_id, 2)
        received = await live.take(6)
        await live.assert_nothing_more()

    assert terminated[0] == 1
    assert changes_of(received) == await status_events(issue["pipeline"], snapshot["sequence"])

    async def reconnected() -> bool:
        pids = await listener_pids(server_url, database)
        return len(pids) == 1 and pids != before

    await eventually(reconnected, within=10, what="the listener to reconnect")


async def test_a_slow_subscriber_is_closed_while_the_others_keep_up_and_memory_stays_bounded(
    graphql: GraphQLClient, catalog: EngineCatalog, settings: Settings, tmp_path: Path
) -> None:
    server = start_server(
        conveyor_env(
            settings,
            CONVEYOR_RUN_WORKER="false",
            CONVEYOR_SUBSCRIBER_BUFFER="20",
            # The slow client stops reading, so it stops answering pings too: on a loaded
            # machine the ping timeout could close it before the buffer overflows.
            CONVEYOR_WEBSOCKET_KEEP_ALIVE_SECONDS="600",
        ),
        tmp_path / "server.log",
    )
    # A large statement makes every message the slow client asks for large, so the socket
    # buffers between it and the server fill after a few hundred events.
    issue = await create_issue(graphql, catalog, statements=("SELECT 1 -- " + "x" * 20_000,))
    task_id = issue["tasks"][0]
    url = websocket_url(server)
    heavy = TASK_CHANGES.replace("task {", "task { statement")
    assert heavy != TASK_CHANGES
    small_receive_buffer = socket.socket()
    small_receive_buffer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    small_receive_buffer.connect(("127.0.0.1", int(urlparse(server.url).port or 0)))
    process = psutil.Process(server.process.pid)
    event_count = 2000
    try:
        slow = await raw_subscribe(
            url,
            heavy,
            {"taskId": task_id, "snapshot": True},
            token=server.token,
            sock=small_receive_buffer,
            compression=None,
            max_queue=1,
        )
        assert '"TaskStatusSnapshot"' in str(await slow.recv())
        async with subscribed(
            url, TASK_CHANGES, {"taskId": task_id, "snapshot": True}, token=server.token
        ) as fast:
            await fast.next()
            rss_before = process.memory_info().rss
            peak_rss = rss_before
            fast_received: list[dict[str, Any]] = []
            for batch in range(event_count // EVENTS_PER_CHANGE):
                old, new = ("PENDING", "RUNNING") if batch % 2 == 0 else ("RUNNING", "PENDING")
                async with in_transaction() as connection:
                    await record_events(
                        connection,
                        "load",
                        [
                            NewEvent(
                                EventKind.TASK_STATUS_CHANGED,
                                issue_id=row_key(issue["id"]),
                                pipeline_id=row_key(issue["pipeline"]),
                                task_id=row_key(task_id),
                                old_status=old,
                                new_status=new,
                            )
                        ]
                        * EVENTS_PER_CHANGE,
                    )
                # A subscriber that keeps up never holds more than one change's events.
                fast_received += await fast.take(EVENTS_PER_CHANGE)
                peak_rss = max(peak_rss, process.memory_info().rss)

        # The slow client reads at last: what the sockets held, then the reason it was closed.
        slow_sequences: list[int] = []
        closing: dict[str, Any] = {}
        while not closing:
            message = json.loads(await asyncio.wait_for(slow.recv(), MESSAGE_WAIT_SECONDS))
            payload = message.get("payload", {})
            if payload.get("errors"):
                closing = payload["errors"][0]
            else:
                slow_sequences.append(payload["data"]["taskStatusChanged"]["sequence"])
        assert json.loads(await slow.recv())["type"] == "complete"
        await slow.close()
    finally:
        server.stop()

    sequences = [m["sequence"] for m in fast_received]
    assert sequences == sorted(sequences)
    assert len(set(sequences)) == event_count
    assert closing["extensions"]["code"] == "SUBSCRIBER_TOO_SLOW"
    assert closing["extensions"]["lastSequence"] == slow_sequences[-1]
    assert len(slow_sequences) < event_count
    # The dropped subscriber's buffer is freed: the server does not hold thousands of
    # undelivered 20 kB messages for it.
    assert peak_rss - rss_before < 60 * 2**20, (rss_before, peak_rss)
    assert "closed a subscriber that fell 20 messages behind" in server.log()


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_both_websocket_protocols_carry_subscriptions(
    graphql: GraphQLClient, live_server: ConveyorProcess, catalog: EngineCatalog, protocol: str
) -> None:
    issue = await create_issue(graphql, catalog)
    task_id = issue["tasks"][0]
    async with subscribed(
        websocket_url(live_server),
        TASK_CHANGES,
        {"stageId": issue["stage"], "snapshot": True},
        token=live_server.token,
        protocol=protocol,
    ) as live:
        snapshot = await live.next()
        received = []
        for action in ("cancelTask", "retryTask"):
            await act_on_task(graphql, action, task_id)
            received.append(await live.next())

    assert snapshot["tasks"] == [{"id": task_id, "name": "task-0", "status": "PENDING_APPROVAL"}]
    assert [(m["oldStatus"], m["newStatus"]) for m in received] == [
        ("PENDING_APPROVAL", "CANCELED"),
        ("CANCELED", "PENDING_APPROVAL"),
    ]
    # Nested fields are read afresh for every message, not cached for the connection.
    assert [m["task"]["status"] for m in received] == ["CANCELED", "PENDING_APPROVAL"]


async def test_a_socket_without_connection_init_is_closed_with_4408(
    live_server: ConveyorProcess,
) -> None:
    started = time.monotonic()
    async with connect(websocket_url(live_server), subprotocols=[TRANSPORT_WS]) as connection:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(connection.recv(), 10)

    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4408
    # The default CONVEYOR_CONNECTION_INIT_TIMEOUT_SECONDS.
    assert 2.5 < time.monotonic() - started < 6


async def test_a_websocket_from_a_foreign_origin_is_refused(live_server: ConveyorProcess) -> None:
    url = websocket_url(live_server)
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, origin=Origin("https://evil.example"), subprotocols=[TRANSPORT_WS]):
            pass
    async with connect(
        url, origin=Origin(live_server.url), subprotocols=[TRANSPORT_WS]
    ) as same_origin:
        assert same_origin.subprotocol == TRANSPORT_WS

    assert refused.value.response.status_code == 403


# --- refusals, in-process ------------------------------------------------------------------


async def first_result(graphql: GraphQLClient, variables: dict[str, Any]) -> Any:
    context = Context(
        request=None,
        response=None,
        settings=graphql.settings,
        cipher=graphql.cipher,
        principal=Principal(actor="tester", role=Role.VIEWER),
    )
    stream = await schema.subscribe(TASK_CHANGES, variable_values=variables, context_value=context)
    async with contextlib.aclosing(stream):
        return await anext(stream)


@pytest.mark.parametrize(
    ("variables", "code", "field"),
    [
        ({}, "INVALID_INPUT", ["pipelineId"]),
        ({"pipelineId": "UGlwZWxpbmU6OTk5OQ==", "taskId": "VGFzazox"}, "INVALID_INPUT", ["taskId"]),
        ({"pipelineId": "UGlwZWxpbmU6OTk5OQ=="}, "NOT_FOUND", ["pipelineId"]),
        ({"stageId": "VGFzazox"}, "NOT_FOUND", ["stageId"]),
        ({"taskId": "VGFzazox", "after": -1}, "INVALID_INPUT", ["after"]),
        ({"taskId": "VGFzazox", "after": 1, "snapshot": True}, "INVALID_INPUT", ["snapshot"]),
        ({"stageId": "not-an-id"}, "INVALID_INPUT", ["stageId"]),
    ],
    ids=[
        "no-scope",
        "two-scopes",
        "unknown-pipeline",
        "wrong-type",
        "negative-after",
        "both",
        "malformed",
    ],
)
async def test_bad_subscription_arguments_are_refused_with_typed_errors(
    graphql: GraphQLClient,
    catalog: EngineCatalog,
    variables: dict[str, Any],
    code: str,
    field: list[str],
) -> None:
    # Task 1 exists: only the argument under test is wrong.
    await create_issue(graphql, catalog)

    result = await first_result(graphql, variables)

    assert result.data is None
    [error] = [error.formatted for error in result.errors]
    assert error["extensions"]["code"] == code, error
    assert error["extensions"]["field"] == field


async def test_an_internal_failure_of_a_subscription_reveals_nothing(
    graphql: GraphQLClient, catalog: EngineCatalog
) -> None:
    issue = await create_issue(graphql, catalog)

    # In-process there is no event hub: the arguments are fine, the server is not.
    result = await first_result(graphql, {"taskId": issue["tasks"][0]})

    [error] = [error.formatted for error in result.errors]
    assert error["message"] == "Internal server error"
    assert error["extensions"]["code"] == "INTERNAL"
    assert "hub" not in str(error)


# --- the hub, in-process ------------------------------------------------------------------


@pytest.fixture
async def pipeline(db: TortoiseContext) -> Pipeline:
    issue = await Issue.create(title="events", creator="tester")
    return await Pipeline.create(issue=issue, status=PipelineStatus.OPEN)


async def write_events(pipeline: Pipeline, count: int, task_id: int = 1) -> list[int]:
    async with in_transaction() as connection:
        return await record_events(
            connection,
            "tester",
            [
                NewEvent(
                    EventKind.TASK_STATUS_CHANGED,
                    issue_id=pipeline.issue_id,
                    pipeline_id=pipeline.id,
                    task_id=task_id,
                    old_status="PENDING",
                    new_status="RUNNING",
                )
            ]
            * count,
        )


async def read_through(hub: EventHub, sequence: int) -> None:
    async def caught_up() -> bool:
        return hub.last_read >= sequence

    await eventually(caught_up, within=5, what=f"the hub to read event {sequence}")


def task_filter(pipeline: Pipeline, task_id: int | None = None) -> EventFilter:
    return EventFilter(
        frozenset({EventKind.TASK_STATUS_CHANGED}), pipeline_id=pipeline.id, task_id=task_id
    )


async def take(subscription: HubSubscription, after: int | None, count: int) -> list[int]:
    stream = subscription.events(after)
    async with contextlib.aclosing(stream):
        return [(await asyncio.wait_for(anext(stream), 5)).id for _ in range(count)]


async def test_the_hub_replays_the_backlog_then_live_events_each_once(
    hub: EventHub, pipeline: Pipeline
) -> None:
    backlog = await write_events(pipeline, 3)
    async with hub.subscription(task_filter(pipeline), SYSTEM) as subscription:
        # Read by the hub after the subscription started, so both buffered and in the table.
        both = await write_events(pipeline, 2)
        await read_through(hub, both[-1])
        stream = subscription.events(after=backlog[0])
        async with contextlib.aclosing(stream):
            replayed = [(await anext(stream)).id for _ in range(4)]
            live = await write_events(pipeline, 2)
            delivered = [(await asyncio.wait_for(anext(stream), 5)).id for _ in range(2)]

    assert replayed == [*backlog[1:], *both]
    assert delivered == live


async def test_the_hub_fans_out_only_matching_events(hub: EventHub, pipeline: Pipeline) -> None:
    async with (
        hub.subscription(task_filter(pipeline, task_id=1), SYSTEM) as first_task,
        hub.subscription(task_filter(pipeline, task_id=2), SYSTEM) as second_task,
    ):
        of_first = await write_events(pipeline, 2, task_id=1)
        of_second = await write_events(pipeline, 1, task_id=2)

        assert await take(first_task, None, 2) == of_first
        assert await take(second_task, None, 1) == of_second


async def test_the_hub_drops_a_subscriber_that_falls_behind_and_feeds_the_others(
    hub: EventHub, pipeline: Pipeline
) -> None:
    async with (
        hub.subscription(task_filter(pipeline), SYSTEM) as slow,
        hub.subscription(task_filter(pipeline), SYSTEM) as fast,
    ):
        first = await write_events(pipeline, 1)
        assert await take(slow, None, 1) == first
        fast_received = list(first)
        for _ in range(3):
            await write_events(pipeline, 3)
            fast_received += await take(fast, None, 3)
        # Buffer of 5: the slow one overflowed at its sixth undelivered event.
        assert hub.subscriber_count == 1
        with pytest.raises(SubscriberTooSlow) as too_slow:
            await take(slow, None, 1)

    assert len(fast_received) == 10
    assert too_slow.value.last_sequence == first[0]
    assert too_slow.value.details == {"lastSequence": first[0]}


async def test_the_hub_keeps_replaying_from_the_table_when_it_overflows_during_a_replay(
    hub: EventHub, pipeline: Pipeline
) -> None:
    backlog = await write_events(pipeline, 3)
    async with hub.subscription(task_filter(pipeline), SYSTEM) as subscription:
        during = await write_events(pipeline, 8)
        await read_through(hub, during[-1])
        assert subscription.overflowed
        stream = subscription.events(after=0)
        async with contextlib.aclosing(stream):
            replayed = [(await anext(stream)).id for _ in range(11)]
            live = await write_events(pipeline, 2)
            delivered = [(await asyncio.wait_for(anext(stream), 5)).id for _ in range(2)]

    assert replayed == [*backlog, *during]
    assert delivered == live


async def test_subscribers_of_one_key_share_one_rendering_of_each_event(
    hub: EventHub, pipeline: Pipeline
) -> None:
    rendered: list[list[int]] = []

    async def render(events: list[Event]) -> list[bytes]:
        rendered.append([event.id for event in events])
        return [f'{{"sequence":{event.id}}}'.encode() for event in events]

    delivered: dict[int, list[tuple[int, bytes]]] = {index: [] for index in range(50)}

    def deliverer(index: int) -> Callable[[int, bytes], bool]:
        def deliver(sequence: int, payload: bytes) -> bool:
            delivered[index].append((sequence, payload))
            return True

        return deliver

    async def subscriber(index: int, ready: asyncio.Event) -> None:
        async with hub.subscription(task_filter(pipeline), SYSTEM) as subscription:
            sharing = Sharing(key="one document", render=render, deliver=deliverer(index))
            stream = subscription.events(None, sharing)
            async with contextlib.aclosing(stream):
                waiting = asyncio.ensure_future(anext(stream))
                ready.set()
                await waiting

    readies = [asyncio.Event() for _ in delivered]
    tasks = [asyncio.create_task(subscriber(index, readies[index])) for index in delivered]
    try:
        for ready in readies:
            await ready.wait()

        async def all_shared() -> bool:
            return sum(len(stream.members) for stream in hub._streams.values()) == len(delivered)

        await eventually(all_shared, within=5, what="every subscriber to join the stream")
        written = await write_events(pipeline, 5) + await write_events(pipeline, 5)

        async def all_delivered() -> bool:
            return all(len(messages) == len(written) for messages in delivered.values())

        await eventually(all_delivered, within=5, what="every subscriber to get every event")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # Each event rendered once, however many subscribers; each got the same payload object.
    assert sorted(sequence for batch in rendered for sequence in batch) == written
    first = delivered[0]
    assert [sequence for sequence, _ in first] == written
    for messages in delivered.values():
        assert all(mine is theirs for (_, mine), (_, theirs) in zip(messages, first, strict=True))

    async def stream_closed() -> bool:
        return not hub._streams

    await eventually(stream_closed, within=5, what="the stream to close with its last member")


async def test_a_shared_stream_serves_thousands_of_subscribers_without_holding_the_loop(
    hub: EventHub, pipeline: Pipeline
) -> None:
    members = 5_000

    async def render(events: list[Event]) -> list[bytes]:
        return [str(event.id).encode() for event in events]

    delivered = 0

    def deliver(sequence: int, payload: bytes) -> bool:
        nonlocal delivered
        # A socket write's worth of work (~20 µs): 5,000 of them take ~0.1 s in all.
        deadline = time.perf_counter() + 20e-6
        while time.perf_counter() < deadline:
            pass
        delivered += 1
        return True

    async with contextlib.AsyncExitStack() as stack:
        for _ in range(members):
            subscription = await stack.enter_async_context(
                hub.subscription(task_filter(pipeline), SYSTEM)
            )
            hub.share(subscription, Sharing(key="one", render=render, deliver=deliver))
        longest_gap = 0.0

        async def tick() -> None:
            nonlocal longest_gap
            last = time.perf_counter()
            while True:
                await asyncio.sleep(0)
                now = time.perf_counter()
                longest_gap = max(longest_gap, now - last)
                last = now

        ticker = asyncio.create_task(tick())
        await write_events(pipeline, 1)

        async def all_delivered() -> bool:
            return delivered == members

        await eventually(all_delivered, within=10, what="every subscriber to get the event")
        ticker.cancel()

    # Other work gets the loop between slices of the delivery, not after all of it.
    assert longest_gap < 0.05, f"the loop was held for {longest_gap * 1000:.0f} ms"


async def test_a_burst_is_read_whole_before_its_stream_renders_and_other_pipelines_go_first(
    hub: EventHub, pipeline: Pipeline
) -> None:
    other = await Pipeline.create(
        issue=await Issue.create(title="other", creator="tester"), status=PipelineStatus.OPEN
    )
    renders: list[tuple[str, int, int]] = []

    def renderer(name: str) -> Callable[[list[Event]], Awaitable[list[bytes]]]:
        async def render(events: list[Event]) -> list[bytes]:
            # Which stream, the first event of the batch, and how far the hub had read.
            renders.append((name, events[0].id, hub.last_read))
            return [str(event.id).encode() for event in events]

        return render

    async with contextlib.AsyncExitStack() as stack:
        for name, watched in (("burst", pipeline), ("other", other)):
            subscription = await stack.enter_async_context(
                hub.subscription(task_filter(watched), SYSTEM)
            )
            hub.share(
                subscription,
                Sharing(key=name, render=renderer(name), deliver=lambda sequence, payload: True),
            )
        # One commit: more than two of the hub's reads of a burst, then another pipeline's
        # event, which the hub reads last.
        async with in_transaction() as connection:
            event = NewEvent(
                EventKind.TASK_STATUS_CHANGED,
                issue_id=pipeline.issue_id,
                pipeline_id=pipeline.id,
                task_id=1,
                old_status="PENDING",
                new_status="RUNNING",
            )
            burst = await record_events(
                connection, "tester", [event] * (2 * HUB_READ_BATCH_SIZE + 5)
            )
            [last] = await record_events(
                connection,
                "tester",
                [dataclasses.replace(event, issue_id=other.issue_id, pipeline_id=other.id)],
            )

        async def burst_rendered() -> bool:
            return any(name == "burst" and first == burst[-5] for name, first, _ in renders)

        await eventually(burst_rendered, within=20, what="the burst's last batch to render")

    # The other pipeline's event first, then the burst's batches, each once the hub had read
    # the whole commit: none rendered on the loop while it read.
    assert renders[0] == ("other", last, last)
    assert renders[1] == ("burst", burst[0], last)
    assert {read for _, _, read in renders} == {last}


@dataclasses.dataclass(eq=False)
class SocketSeat:
    """A seat on a real socket pair: the stream writes into one end's asyncio transport, the
    test reads what arrived at the other. Counts the stream's writes."""

    transport: "CountingTransport"
    envelope: "LineEnvelope"
    open: bool = True
    last_written: int = 0


class LineEnvelope:
    def wrap(self, payloads: list[bytes]) -> bytes:
        return b"".join(payload + b"\n" for payload in payloads)


class CountingTransport:
    def __init__(self, transport: asyncio.WriteTransport) -> None:
        self._transport = transport
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        self._transport.write(data)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()

    def is_closing(self) -> bool:
        return self._transport.is_closing()


async def test_open_seats_get_each_batch_in_one_write_and_closed_ones_go_through_deliver(
    hub: EventHub, pipeline: Pipeline
) -> None:
    async def render(events: list[Event]) -> list[bytes]:
        return [str(event.id).encode() for event in events]

    loop = asyncio.get_running_loop()
    delivered: dict[str, list[int]] = {"seated": [], "closed": [], "seatless": []}
    seats: dict[str, SocketSeat] = {}
    readers: dict[str, socket.socket] = {}

    def deliverer(name: str) -> Callable[[int, bytes], bool]:
        def deliver(sequence: int, payload: bytes) -> bool:
            assert payload == str(sequence).encode()
            delivered[name].append(sequence)
            return True

        return deliver

    async with contextlib.AsyncExitStack() as stack:
        for name in delivered:
            seat = None
            if name != "seatless":
                ours, theirs = socket.socketpair()
                theirs.setblocking(False)
                readers[name] = theirs
                stack.callback(theirs.close)
                transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
                stack.callback(transport.close)
                seat = seats[name] = SocketSeat(
                    CountingTransport(transport), LineEnvelope(), open=name == "seated"
                )
            subscription = await stack.enter_async_context(
                hub.subscription(task_filter(pipeline), SYSTEM)
            )
            hub.share(
                subscription,
                Sharing(key="one", render=render, deliver=deliverer(name), seat=seat),
            )

        received = {name: b"" for name in readers}

        def arrived(name: str) -> list[int]:
            """The sequences that reached the far end of the seat's socket so far."""
            with contextlib.suppress(BlockingIOError):
                received[name] += readers[name].recv(65536)
            return [int(line) for line in received[name].splitlines()]

        first = await write_events(pipeline, 5)

        async def first_batch_arrived() -> bool:
            return arrived("seated") == first and delivered["seatless"] == first

        await eventually(first_batch_arrived, within=5, what="the first events to arrive")
        assert delivered["closed"] == first
        assert arrived("closed") == []
        # Five events rendered in one batch: one write to the open seat.
        assert seats["seated"].transport.writes == 1
        assert seats["seated"].last_written == first[-1]

        # The seats change places: nothing is given twice, nothing skipped.
        seats["seated"].open = False
        seats["closed"].open = True
        seats["closed"].last_written = first[-1]
        second = await write_events(pipeline, 3)

        async def second_batch_arrived() -> bool:
            return arrived("closed") == second and delivered["seatless"] == first + second

        await eventually(second_batch_arrived, within=5, what="the next events to arrive")
        assert delivered["seated"] == second
        assert delivered["closed"] == first
        assert arrived("seated") == first
