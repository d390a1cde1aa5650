"""CSRF and cross-site WebSocket rules, rate limits per token, and the WebSocket message limit,
against a real `conveyor serve`."""

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import asyncpg
import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin, Subprotocol

from conveyor.settings import Settings
from tests.conftest import ConveyorProcess, conveyor_env, start_server

TRANSPORT_WS = Subprotocol("graphql-transport-ws")
ALLOWED_ORIGIN = "https://app.example.com"
REQUESTS_PER_MINUTE = 5
COST_PER_MINUTE = 100
CREATE_ENVIRONMENT = 'mutation { createEnvironment(input: {name: "forged", order: 99}) { id } }'


@pytest.fixture
def server(settings: Settings, tmp_path: Path) -> Iterator[ConveyorProcess]:
    server = start_server(
        conveyor_env(
            settings,
            CONVEYOR_RUN_WORKER="false",
            CONVEYOR_ALLOWED_ORIGINS=f"{ALLOWED_ORIGIN}, https://other.example.com",
            CONVEYOR_RATE_LIMIT_REQUESTS=str(REQUESTS_PER_MINUTE),
            CONVEYOR_RATE_LIMIT_COST=str(COST_PER_MINUTE),
            CONVEYOR_MAX_REQUEST_BYTES="10000",
        ),
        tmp_path / "server.log",
    )
    yield server
    server.stop()


async def environment_names(database_url: str) -> list[str]:
    connection = await asyncpg.connect(database_url)
    try:
        return [row["name"] for row in await connection.fetch("SELECT name FROM environment")]
    finally:
        await connection.close()


def error_code(response: httpx.Response) -> str:
    [error] = response.json()["errors"]
    code: str = error["extensions"]["code"]
    return code


@pytest.mark.parametrize(
    ("content_type", "content"),
    [
        ("text/plain", json.dumps({"query": CREATE_ENVIRONMENT})),
        ("text/plain;charset=UTF-8", json.dumps({"query": CREATE_ENVIRONMENT})),
        ("application/x-www-form-urlencoded", urlencode({"query": CREATE_ENVIRONMENT})),
        (
            "multipart/form-data; boundary=b",
            f'--b\r\nContent-Disposition: form-data; name="query"\r\n\r\n{CREATE_ENVIRONMENT}'
            "\r\n--b--\r\n",
        ),
        ("application/jsonp", json.dumps({"query": CREATE_ENVIRONMENT})),
        (None, json.dumps({"query": CREATE_ENVIRONMENT})),
    ],
    ids=["text", "text-charset", "form", "multipart", "json-lookalike", "none"],
)
async def test_a_post_that_a_cross_site_form_could_send_is_refused(
    server: ConveyorProcess, settings: Settings, content_type: str | None, content: str
) -> None:
    headers = dict(server.auth)
    if content_type is not None:
        headers["content-type"] = content_type
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(f"{server.url}/graphql", content=content, headers=headers)

    assert response.status_code == 415
    assert error_code(response) == "UNSUPPORTED_MEDIA_TYPE"
    assert settings.database_url is not None
    assert "forged" not in await environment_names(settings.database_url)


async def test_a_get_never_runs_a_mutation(server: ConveyorProcess, settings: Settings) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(
            f"{server.url}/graphql", params={"query": CREATE_ENVIRONMENT}, headers=server.auth
        )

    assert 400 <= response.status_code < 500
    assert settings.database_url is not None
    assert "forged" not in await environment_names(settings.database_url)


async def test_a_get_runs_a_query_only_with_the_authorization_header(
    server: ConveyorProcess,
) -> None:
    query = {"query": "{ viewer { role } }"}
    async with httpx.AsyncClient(timeout=30) as client:
        # What a cross-site <img> or link can send: no header a page sets itself.
        simple = await client.get(f"{server.url}/graphql", params=query)
        with_token = await client.get(f"{server.url}/graphql", params=query, headers=server.auth)

    assert simple.status_code == 401
    # The document of a GET is in its query string, which the access log leaves out.
    assert "GET /graphql HTTP/1.1" in server.log()
    assert "viewer" not in server.log()
    assert error_code(simple) == "UNAUTHENTICATED"
    assert with_token.status_code == 200
    assert with_token.json() == {"data": {"viewer": {"role": "ADMIN"}}}


async def test_no_response_lets_another_origin_read_it(server: ConveyorProcess) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        preflight = await client.options(
            f"{server.url}/graphql",
            headers={
                "Origin": "https://evil.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        response = await client.post(
            f"{server.url}/graphql",
            json={"query": "{ viewer { role } }"},
            headers={**server.auth, "Origin": "https://evil.example"},
        )

    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-origin" not in response.headers


def websocket_url(server: ConveyorProcess) -> str:
    return server.url.replace("http://", "ws://", 1) + "/graphql"


async def test_websockets_open_only_from_the_same_origin_or_an_allowed_one(
    server: ConveyorProcess,
) -> None:
    url = websocket_url(server)
    accepted = [server.url, ALLOWED_ORIGIN, "https://other.example.com", "https://APP.example.com"]
    for origin in accepted:
        async with connect(url, origin=Origin(origin), subprotocols=[TRANSPORT_WS]) as socket:
            assert socket.subprotocol == TRANSPORT_WS
    # Clients that are not browsers send no Origin at all.
    async with connect(url, subprotocols=[TRANSPORT_WS]) as socket:
        assert socket.subprotocol == TRANSPORT_WS

    for origin in ("https://evil.example", "https://app.example.com.evil.example", "null"):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, origin=Origin(origin), subprotocols=[TRANSPORT_WS]):
                pass
        assert refused.value.response.status_code == 403, origin


async def test_a_websocket_message_larger_than_the_request_limit_closes_the_socket(
    server: ConveyorProcess,
) -> None:
    async with connect(websocket_url(server), subprotocols=[TRANSPORT_WS]) as socket:
        init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {server.token}"}}
        await socket.send(json.dumps(init))
        assert json.loads(await socket.recv())["type"] == "connection_ack"
        # At the limit: an ordinary (refused) subscription answer, the socket stays open.
        padding = 10_000 - len(json.dumps(_subscribe("", "")))
        await socket.send(json.dumps(_subscribe("1", " " * (padding - 1))))
        answer = json.loads(await asyncio.wait_for(socket.recv(), 10))
        assert answer["id"] == "1"

        await socket.send(json.dumps(_subscribe("2", " " * 20_000)))
        with pytest.raises(ConnectionClosed) as closed:
            await _read_answers_to("1", socket)

    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009  # message too big


async def _read_answers_to(operation_id: str, socket: ClientConnection) -> None:
    """Read until the socket closes, every message an answer to `operation_id`."""
    while True:
        assert json.loads(await asyncio.wait_for(socket.recv(), 10))["id"] == operation_id


def _subscribe(operation_id: str, padding: str) -> dict[str, object]:
    return {
        "id": operation_id,
        "type": "subscribe",
        "payload": {"query": "subscription { taskStatusChanged { __typename } }" + padding},
    }


async def test_requests_are_limited_per_token_with_standard_headers(
    server: ConveyorProcess,
) -> None:
    query = {"query": "{ viewer { actor } }"}
    async with httpx.AsyncClient(timeout=30) as client:
        created = await client.post(
            f"{server.url}/graphql",
            json={
                "query": 'mutation { createApiToken(input: {actor: "vera", role: VIEWER}) '
                "{ token } }"
            },
            headers=server.auth,
        )
        viewer_token = created.json()["data"]["createApiToken"]["token"]
        viewer = {"Authorization": f"Bearer {viewer_token}"}
        answers = [
            await client.post(f"{server.url}/graphql", json=query, headers=viewer)
            for _ in range(REQUESTS_PER_MINUTE + 1)
        ]
        # The admin's own allowance is untouched by the viewer's requests (it made one).
        admin = await client.post(f"{server.url}/graphql", json=query, headers=server.auth)

    assert [answer.status_code for answer in answers] == [200] * REQUESTS_PER_MINUTE + [429]
    assert [answer.headers["RateLimit-Remaining"] for answer in answers] == [
        "4",
        "3",
        "2",
        "1",
        "0",
        "0",
    ]
    assert all(answer.headers["RateLimit-Limit"] == "5" for answer in answers)
    assert all('"requests";q=5;w=60' in answer.headers["RateLimit-Policy"] for answer in answers)
    refused = answers[-1]
    assert error_code(refused) == "RATE_LIMITED"
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    assert refused.json()["errors"][0]["extensions"]["retryAfter"] == int(
        refused.headers["Retry-After"]
    )
    assert admin.status_code == 200
    assert admin.headers["RateLimit-Remaining"] == "3"


async def test_query_cost_is_limited_per_token_before_anything_runs(
    server: ConveyorProcess,
) -> None:
    # 1 + 10 * (edges 1 + node 1 + id 1) = 31: three fit in 100, the fourth does not.
    query = {"query": "{ issues(first: 10) { edges { node { id } } } }"}
    async with httpx.AsyncClient(timeout=30) as client:
        answers = [
            await client.post(f"{server.url}/graphql", json=query, headers=server.auth)
            for _ in range(4)
        ]

    assert [answer.status_code for answer in answers] == [200, 200, 200, 429]
    remaining = [re.sub(r";t=\d+", "", answer.headers["RateLimit"]) for answer in answers[:3]]
    assert remaining == [f'"requests";r={4 - n}, "cost";r={100 - 31 * (n + 1)}' for n in range(3)]
    refused = answers[-1].json()
    assert refused["data"] is None
    assert error_code(answers[-1]) == "RATE_LIMITED"
    assert refused["errors"][0]["extensions"]["policy"] == "cost"
    assert int(answers[-1].headers["Retry-After"]) > 0


@pytest.mark.parametrize(
    "body",
    [
        b'{"query": "{ viewe\xffr { role } }"}',
        b"42",
        b'"{ viewer { role } }"',
        b"null",
        # Deeper than Python's recursion limit, within the fixture's 10,000-byte bodies.
        b'{"query": "{ __typename }", "variables": {"v": ' + b"[" * 4000 + b"]" * 4000 + b"}}",
    ],
    ids=["bad-utf8", "number", "string", "null", "deep-nesting"],
)
async def test_a_body_that_is_no_json_object_is_a_client_error(
    server: ConveyorProcess, body: bytes
) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(
            f"{server.url}/graphql",
            content=body,
            headers={**server.auth, "content-type": "application/json"},
        )

    assert response.status_code == 400
    assert error_code(response) == "BAD_REQUEST_BODY"
    assert "Traceback" not in server.log()


async def test_a_subscription_over_http_is_told_to_use_a_websocket(
    server: ConveyorProcess,
) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(
            f"{server.url}/graphql",
            json={"query": "subscription { pipelineStatusChanged { sequence } }"},
            headers=server.auth,
        )

    assert response.json()["data"] is None
    assert error_code(response) == "SUBSCRIPTION_NEEDS_WEBSOCKET"
    assert "internal error" not in server.log()
