"""Bad WebSocket frames against a real `conveyor serve`: each closes its own connection with a
reason the protocol defines, writes one warning line and no traceback, and the server goes on."""

import asyncio
import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from conveyor.graphql.websocket import LEGACY_WS_MESSAGES, TRANSPORT_WS_MESSAGES, message_problem
from tests.conftest import ConveyorProcess
from tests.integration.subscribers import (
    LEGACY_WS,
    MESSAGE_WAIT_SECONDS,
    TRANSPORT_WS,
    bearer,
    websocket_url,
)

#: Frames that are no message of either protocol, whatever the connection's state.
BAD_FRAMES = [
    "{not json",
    "42",
    "null",
    "[]",
    '"connection_init"',
    "1" * 5000,  # an integer past Python's digit limit
    "[" * 100_000,  # nesting past the recursion limit
    '{"payload": {}}',
    '{"type": ["subscribe"]}',
    '{"type": "unknown"}',
]
#: Frames about an operation that are malformed, per protocol (the start message's name).
BAD_OPERATION_FRAMES = [
    '{"type": "%s"}',
    '{"type": "%s", "id": {}, "payload": {"query": "{ viewer { actor } }"}}',
    '{"type": "%s", "id": "1", "payload": 42}',
    '{"type": "%s", "id": "1", "payload": {"query": 42}}',
    '{"type": "%s", "id": "1", "payload": {"query": "{ viewer { actor } }", "variables": []}}',
]
VIEWER = {"query": "{ viewer { actor } }"}


async def received(connection: ClientConnection) -> dict[str, Any]:
    message = json.loads(await asyncio.wait_for(connection.recv(), MESSAGE_WAIT_SECONDS))
    assert isinstance(message, dict)
    return message


async def close_code(connection: ClientConnection) -> int | None:
    """The code the server closed `connection` with (None: no close frame), after reading
    and ignoring any message before it."""
    try:
        while True:
            await asyncio.wait_for(connection.recv(), MESSAGE_WAIT_SECONDS)
    except ConnectionClosed as closed:
        return None if closed.rcvd is None else closed.rcvd.code


async def acknowledged(url: str, protocol: Subprotocol, token: str) -> ClientConnection:
    connection = await connect(url, subprotocols=[protocol], max_size=None)
    await connection.send(json.dumps({"type": "connection_init", "payload": bearer(token)}))
    assert (await received(connection))["type"] == "connection_ack"
    return connection


def assert_one_warning_per_connection_and_no_traceback(log: str, connections: int) -> None:
    assert "Traceback" not in log
    assert "Exception in ASGI application" not in log
    warnings = [line for line in log.splitlines() if "sent a bad message" in line]
    assert len(warnings) == connections, warnings
    assert all(" WARNING " in line for line in warnings)


async def test_a_bad_frame_closes_a_graphql_transport_ws_connection_with_4400(
    live_server: ConveyorProcess,
) -> None:
    url = websocket_url(live_server)
    frames = BAD_FRAMES + [frame % "subscribe" for frame in BAD_OPERATION_FRAMES]
    closes = {}
    for frame in frames:
        connection = await acknowledged(url, TRANSPORT_WS, live_server.token)
        await connection.send(frame)
        closes[frame[:100]] = (await close_code(connection), connection.close_reason)
    before_ack = await connect(url, subprotocols=[TRANSPORT_WS])
    await before_ack.send("{not json")
    before_ack_close = await close_code(before_ack)
    # The server still serves.
    after = await acknowledged(url, TRANSPORT_WS, live_server.token)
    await after.send(json.dumps({"id": "1", "type": "subscribe", "payload": VIEWER}))
    answer = await received(after)
    await after.close()

    assert {frame: code for frame, (code, _) in closes.items()} == dict.fromkeys(closes, 4400)
    assert all(reason for _, reason in closes.values())
    assert before_ack_close == 4400
    assert answer == {
        "id": "1",
        "type": "next",
        "payload": {"data": {"viewer": {"actor": "admin"}}},
    }
    assert_one_warning_per_connection_and_no_traceback(live_server.log(), len(frames) + 1)


async def test_a_bad_frame_gets_the_legacy_graphql_ws_error_then_a_close(
    live_server: ConveyorProcess,
) -> None:
    url = websocket_url(live_server)
    answers = {}
    for frame in BAD_FRAMES + [frame % "start" for frame in BAD_OPERATION_FRAMES]:
        connection = await acknowledged(url, LEGACY_WS, live_server.token)
        await connection.send(frame)
        answer = await received(connection)
        while answer["type"] == "ka":
            answer = await received(connection)
        answers[frame[:100]] = (answer, await close_code(connection))
    before_ack = await connect(url, subprotocols=[LEGACY_WS])
    await before_ack.send(json.dumps({"type": "start", "id": "1", "payload": 42}))
    before_ack_answer = await received(before_ack)
    before_ack_close = await close_code(before_ack)

    operation_errors = [
        frame for frame, (answer, _) in answers.items() if answer["type"] == "error"
    ]
    # A message about an operation that has an id gets `error` with that id; others
    # `connection_error`.
    assert operation_errors == [frame % "start" for frame in BAD_OPERATION_FRAMES[2:]]
    assert all(answers[frame][0]["id"] == "1" for frame in operation_errors)
    assert {answer["type"] for answer, _ in answers.values()} == {"connection_error", "error"}
    assert all(
        answer["payload"]["extensions"]["code"] == "BAD_REQUEST_BODY"
        and answer["payload"]["message"]
        for answer, _ in answers.values()
    )
    assert {frame: code for frame, (_, code) in answers.items()} == dict.fromkeys(answers, 4400)
    assert before_ack_answer["type"] == "connection_error"
    assert before_ack_close == 4400
    assert_one_warning_per_connection_and_no_traceback(live_server.log(), len(answers) + 1)


async def test_a_legacy_graphql_ws_connection_without_a_token_is_closed_with_4403(
    live_server: ConveyorProcess,
) -> None:
    async with connect(websocket_url(live_server), subprotocols=[LEGACY_WS]) as legacy:
        await legacy.send(json.dumps({"type": "connection_init", "payload": {}}))
        answer = await received(legacy)
        code = await close_code(legacy)

    assert answer["type"] == "connection_error"
    assert answer["payload"]["extensions"]["code"] == "UNAUTHENTICATED"
    assert code == 4403
    assert "Traceback" not in live_server.log()


def test_message_shapes_are_checked_per_protocol() -> None:
    subscribe = {"type": "subscribe", "id": "1", "payload": VIEWER}
    start = {**subscribe, "type": "start"}

    assert message_problem(subscribe, TRANSPORT_WS_MESSAGES) is None
    assert message_problem(start, LEGACY_WS_MESSAGES) is None
    assert message_problem(start, TRANSPORT_WS_MESSAGES) == "unknown message type"
    assert message_problem(subscribe, LEGACY_WS_MESSAGES) == "unknown message type"
    assert message_problem({"type": "complete", "id": 1}, TRANSPORT_WS_MESSAGES) is not None
    assert message_problem({"type": "ping"}, TRANSPORT_WS_MESSAGES) is None
    assert message_problem({"type": "connection_terminate"}, LEGACY_WS_MESSAGES) is None


async def test_a_client_that_hangs_up_right_after_a_bad_frame_leaves_no_traceback(
    live_server: ConveyorProcess,
) -> None:
    url = websocket_url(live_server)
    connections = 0
    for protocol in (TRANSPORT_WS, LEGACY_WS):
        for frame in ("{not json", "42"):
            for _ in range(15):
                connection = await acknowledged(url, protocol, live_server.token)
                await connection.send(frame)
                # Gone before the server answers: no close handshake, no reading.
                connection.transport.abort()
                await connection.close()
                connections += 1
    # The last connection's warning is written once the server has seen it go.
    deadline = asyncio.get_running_loop().time() + MESSAGE_WAIT_SECONDS
    while live_server.log().count("sent a bad message") < connections:
        assert asyncio.get_running_loop().time() < deadline, live_server.log()
        await asyncio.sleep(0.1)

    assert_one_warning_per_connection_and_no_traceback(live_server.log(), connections)
