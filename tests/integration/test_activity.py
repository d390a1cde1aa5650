"""`activity`: what happens in every pipeline, of the kinds asked for, over a real server (the
pipeline page's list of issues follows it)."""

from collections.abc import Awaitable, Callable

import pytest
from gql.transport.exceptions import TransportQueryError

from tests.conftest import ConveyorProcess, GraphQLClient
from tests.integration.conftest import build_engine_catalog
from tests.integration.subscribers import subscribed, websocket_url
from tests.integration.test_subscriptions import create_issue

ACTIVITY = """
subscription($kinds: [EventKind!], $after: Int) {
  activity(kinds: $kinds, after: $after) { sequence kind issueId taskId newStatus }
}
"""
SKIP_TASK = "mutation($i: SkipTaskInput!) { skipTask(input: $i) { id } }"


async def test_activity_sends_the_kinds_asked_for_from_every_pipeline(
    graphql: GraphQLClient,
    live_server: ConveyorProcess,
    server_url: str,
    target_databases: Callable[[], Awaitable[str]],
) -> None:
    catalog = await build_engine_catalog(graphql, server_url, {"main": await target_databases()})
    url = websocket_url(live_server)
    kinds = ["ISSUE_CREATED", "PIPELINE_STATUS_CHANGED"]
    async with subscribed(url, ACTIVITY, {"kinds": kinds}, token=live_server.token) as live:
        first = await create_issue(graphql, catalog)
        second = await create_issue(graphql, catalog)
        await graphql.ok(SKIP_TASK, {"i": {"taskId": second["tasks"][0], "reason": "by hand"}})
        messages = await live.take(3)

    # Two issues' events, in sequence order; the task's own status changes are not asked for.
    assert [(m["kind"], m["issueId"]) for m in messages] == [
        ("ISSUE_CREATED", first["id"]),
        ("ISSUE_CREATED", second["id"]),
        ("PIPELINE_STATUS_CHANGED", second["id"]),
    ]
    assert messages[-1]["newStatus"] == "DONE"
    sequences = [m["sequence"] for m in messages]
    assert sequences == sorted(sequences)

    # Resumed from the first message: the rest again, nothing twice.
    async with subscribed(
        url, ACTIVITY, {"kinds": kinds, "after": sequences[0]}, token=live_server.token
    ) as resumed:
        assert [m["sequence"] for m in await resumed.take(2)] == sequences[1:]


async def test_activity_refuses_an_empty_list_of_kinds(live_server: ConveyorProcess) -> None:
    async with subscribed(
        websocket_url(live_server), ACTIVITY, {"kinds": []}, token=live_server.token
    ) as refused:
        with pytest.raises(TransportQueryError) as error:
            await refused.next()
    assert error.value.errors is not None
    assert error.value.errors[0]["extensions"]["code"] == "INVALID_INPUT"
    assert error.value.errors[0]["extensions"]["field"] == ["kinds"]
