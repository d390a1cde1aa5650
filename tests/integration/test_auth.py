"""API tokens end to end: a real `conveyor serve`, real HTTP and WebSocket clients, the real
`conveyor token` command, and the api_token table behind them."""

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import asyncpg
import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from conveyor.db.tokens import SHOWN_PREFIX_LENGTH
from conveyor.settings import Settings
from tests.api.support import CREATE_ISSUE, create_catalog, create_issue, database_task, issue_plan
from tests.conftest import ConveyorProcess, GraphQLClient, conveyor_env, start_server
from tests.integration.subscribers import (
    LEGACY_WS,
    MESSAGE_WAIT_SECONDS,
    TRANSPORT_WS,
    bearer,
    raw_subscribe,
    subscribed,
    websocket_url,
)

VIEWER = "{ viewer { actor role tokenExpiresAt } }"
CREATE_TOKEN = """
mutation($input: CreateApiTokenInput!) {
  createApiToken(input: $input) { token apiToken { id actor role prefix createdBy expiresAt } }
}
"""
REVOKE_TOKEN = """
mutation($id: ID!) { revokeApiToken(input: {id: $id}) { id revokedAt revokedBy } }
"""
TOKEN_FIELDS = """
id actor role description prefix createdBy createdAt expiresAt revokedAt revokedBy lastUsedAt
"""
LIST_TOKENS = f"query($all: Boolean!) {{ apiTokens(includeRevoked: $all) {{ {TOKEN_FIELDS} }} }}"
TOKEN_NODE = f"query($id: ID!) {{ node(id: $id) {{ ... on ApiToken {{ {TOKEN_FIELDS} }} }} }}"
TASK_CHANGES = """
subscription($taskId: ID!) {
  taskStatusChanged(taskId: $taskId, snapshot: true) {
    __typename sequence
    ... on TaskStatusChange { newStatus actor }
  }
}
"""
#: How long after a token is revoked, or expires, its live subscriptions may still run, on a
#: server that checks tokens every second: a deadline, not a benchmark.
SUBSCRIPTION_END_DEADLINE_SECONDS = 5.0


# --- over HTTP -------------------------------------------------------------------------------


async def post(
    server: ConveyorProcess,
    document: str,
    variables: dict[str, Any] | None = None,
    *,
    headers: Mapping[str, str],
) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(
            f"{server.url}/graphql",
            json={"query": document, "variables": variables or {}},
            headers=headers,
        )


async def data_as(
    server: ConveyorProcess, token: str, document: str, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The data of a request made with `token`, which must succeed."""
    response = await post(server, document, variables, headers=bearer(token))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert "errors" not in body, body
    data: dict[str, Any] = body["data"]
    return data


async def error_as(
    server: ConveyorProcess, token: str, document: str, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The one error of a request made with `token`, which the API answered and refused."""
    response = await post(server, document, variables, headers=bearer(token))
    assert response.status_code == 200, response.text
    [error] = response.json()["errors"]
    assert isinstance(error, dict)
    return error


def assert_unauthenticated(response: httpx.Response) -> None:
    """A 401 that says how to authenticate, with a GraphQL error body a client can read."""
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer ")
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert "data" not in body
    [error] = body["errors"]
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
    assert error["message"]


@dataclass(frozen=True)
class CreatedToken:
    secret: str
    #: Global id of the ApiToken.
    id: str


async def create_token(
    server: ConveyorProcess, actor: str, role: str, *, expires_at: datetime | None = None
) -> CreatedToken:
    """A token made through the API with the server's admin token."""
    token_input: dict[str, Any] = {"actor": actor, "role": role, "description": f"for {actor}"}
    if expires_at is not None:
        token_input["expiresAt"] = expires_at.isoformat()
    data = await data_as(server, server.token, CREATE_TOKEN, {"input": token_input})
    created = data["createApiToken"]
    return CreatedToken(created["token"], created["apiToken"]["id"])


async def listed_token(server: ConveyorProcess, token_id: str) -> dict[str, Any] | None:
    """The token as apiTokens(includeRevoked: true) lists it."""
    data = await data_as(server, server.token, LIST_TOKENS, {"all": True})
    return next((row for row in data["apiTokens"] if row["id"] == token_id), None)


async def a_waiting_task(graphql: GraphQLClient) -> str:
    """The global id of a task of a MANUAL stage, which waits for an approval never given."""
    catalog = await create_catalog(graphql)
    issue = await create_issue(
        graphql,
        catalog,
        {"prod": [database_task(catalog, "DATA_UPDATE", name="only", statement="SELECT 1")]},
    )
    return issue.tasks["only"]


async def test_a_request_without_a_token_is_refused_with_401_and_a_graphql_error(
    live_server: ConveyorProcess,
) -> None:
    response = await post(live_server, VIEWER, headers={})

    assert_unauthenticated(response)
    assert "Authorization: Bearer" in response.json()["errors"][0]["message"]


async def post_with_authorization(server: ConveyorProcess, authorization: str) -> httpx.Response:
    """A request whose Authorization header goes on the wire byte for byte: httpx refuses to
    send a value with trailing spaces, which other clients send."""
    body = json.dumps({"query": VIEWER}).encode()
    port = urlparse(server.url).port
    assert port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\nAuthorization: {authorization}\r\n\r\n".encode()
        + body
    )
    answer = await asyncio.wait_for(reader.read(), MESSAGE_WAIT_SECONDS)
    writer.close()
    await writer.wait_closed()
    head, _, content = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = [(name, value) for name, _, value in (line.partition(": ") for line in header_lines)]
    return httpx.Response(int(status_line.split()[1]), headers=headers, content=content)


async def test_a_malformed_authorization_header_is_refused(live_server: ConveyorProcess) -> None:
    token = live_server.token
    for header in ("Basic x", "Bearer", "Bearer   ", f"Basic {token}", token, f"Token {token}"):
        response = await post_with_authorization(live_server, header)

        assert response.status_code == 401, header
        assert_unauthenticated(response)
    # The same request with the token where it belongs.
    assert (await post_with_authorization(live_server, f"Bearer {token}")).status_code == 200


async def test_an_unknown_token_is_refused(live_server: ConveyorProcess) -> None:
    token = live_server.token
    altered = token[:-1] + ("A" if token[-1] != "A" else "B")
    for unknown in (altered, "cvy_" + "x" * 43, "not-a-conveyor-token", token + token):
        response = await post(live_server, VIEWER, headers=bearer(unknown))

        assert response.status_code == 401, unknown
        assert_unauthenticated(response)


async def test_a_valid_token_is_accepted_and_acts_as_its_actor_and_role(
    live_server: ConveyorProcess,
) -> None:
    dora = await create_token(live_server, "dora", "DEVELOPER")

    admin = await data_as(live_server, live_server.token, VIEWER)
    developer = await data_as(live_server, dora.secret, VIEWER)
    lower_case_scheme = await post(
        live_server, VIEWER, headers={"Authorization": f"bearer {dora.secret}"}
    )

    assert admin["viewer"] == {"actor": "admin", "role": "ADMIN", "tokenExpiresAt": None}
    assert developer["viewer"] == {"actor": "dora", "role": "DEVELOPER", "tokenExpiresAt": None}
    assert lower_case_scheme.json()["data"] == developer


async def test_a_token_stops_working_when_it_expires(live_server: ConveyorProcess) -> None:
    expires_at = datetime.now(UTC) + timedelta(seconds=2)
    brief = await create_token(live_server, "brief", "VIEWER", expires_at=expires_at)

    before = await data_as(live_server, brief.secret, VIEWER)
    await asyncio.sleep(max(0.0, (expires_at - datetime.now(UTC)).total_seconds()) + 0.2)
    after = await post(live_server, VIEWER, headers=bearer(brief.secret))

    assert datetime.fromisoformat(before["viewer"]["tokenExpiresAt"]) == expires_at
    assert_unauthenticated(after)


async def test_a_token_cannot_be_created_already_expired(live_server: ConveyorProcess) -> None:
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    token_input = {"actor": "late", "role": "VIEWER", "expiresAt": past}

    error = await error_as(live_server, live_server.token, CREATE_TOKEN, {"input": token_input})
    listed = await data_as(live_server, live_server.token, LIST_TOKENS, {"all": True})

    assert error["extensions"]["code"] == "INVALID_INPUT"
    assert error["extensions"]["field"] == ["input", "expiresAt"]
    assert [row["actor"] for row in listed["apiTokens"]] == ["admin"]


async def test_a_revoked_token_is_refused_and_cannot_be_revoked_twice(
    live_server: ConveyorProcess,
) -> None:
    revoked = await create_token(live_server, "leaver", "DBA")
    assert (await data_as(live_server, revoked.secret, VIEWER))["viewer"]["actor"] == "leaver"

    revocation = await data_as(live_server, live_server.token, REVOKE_TOKEN, {"id": revoked.id})
    refused = await post(live_server, VIEWER, headers=bearer(revoked.secret))
    again = await error_as(live_server, live_server.token, REVOKE_TOKEN, {"id": revoked.id})
    usable = await data_as(live_server, live_server.token, LIST_TOKENS, {"all": False})
    listed = await listed_token(live_server, revoked.id)

    assert_unauthenticated(refused)
    assert revocation["revokeApiToken"]["revokedBy"] == "admin"
    assert again["extensions"]["code"] == "CONFLICT"
    assert again["extensions"]["field"] == ["input", "id"]
    assert revoked.id not in [row["id"] for row in usable["apiTokens"]]
    assert listed is not None
    assert listed["revokedAt"] == revocation["revokeApiToken"]["revokedAt"]


async def test_a_token_is_stored_only_as_its_digest(
    live_server: ConveyorProcess, database_url: str
) -> None:
    created = await create_token(live_server, "stored", "VIEWER")

    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch("SELECT * FROM api_token")
    finally:
        await connection.close()

    assert len(rows) == 2, "the first admin token and this one"
    for row in rows:
        for column, value in row.items():
            for secret in (created.secret, live_server.token):
                # Only the recognisable prefix is kept in clear, never what follows it.
                assert secret[SHOWN_PREFIX_LENGTH:] not in str(value), column
    [stored] = [row for row in rows if row["actor"] == "stored"]
    assert stored["digest"] == hashlib.sha256(created.secret.encode()).hexdigest()
    assert stored["prefix"] == created.secret[:SHOWN_PREFIX_LENGTH]


async def test_the_secret_is_shown_only_in_the_answer_to_create_api_token(
    live_server: ConveyorProcess,
) -> None:
    created = await create_token(live_server, "shown-once", "VIEWER")

    listing = await post(live_server, LIST_TOKENS, {"all": True}, headers=live_server.auth)
    node = await post(live_server, TOKEN_NODE, {"id": created.id}, headers=live_server.auth)

    assert created.secret.startswith("cvy_")
    assert node.json()["data"]["node"]["actor"] == "shown-once"
    assert node.json()["data"]["node"]["prefix"] == created.secret[:SHOWN_PREFIX_LENGTH]
    assert "shown-once" in listing.text
    for response in (listing, node):
        assert created.secret[SHOWN_PREFIX_LENGTH:] not in response.text
        assert live_server.token[SHOWN_PREFIX_LENGTH:] not in response.text


async def test_only_an_admin_manages_tokens(live_server: ConveyorProcess) -> None:
    dba = await create_token(live_server, "dba", "DBA")
    admin_token_id = (await data_as(live_server, live_server.token, LIST_TOKENS, {"all": False}))[
        "apiTokens"
    ][0]["id"]

    listing = await error_as(live_server, dba.secret, LIST_TOKENS, {"all": True})
    creation = await error_as(
        live_server, dba.secret, CREATE_TOKEN, {"input": {"actor": "dba2", "role": "ADMIN"}}
    )
    revocation = await error_as(live_server, dba.secret, REVOKE_TOKEN, {"id": admin_token_id})
    node = await post(live_server, TOKEN_NODE, {"id": admin_token_id}, headers=bearer(dba.secret))
    tokens_after = await data_as(live_server, live_server.token, LIST_TOKENS, {"all": True})

    assert listing["extensions"]["code"] == "FORBIDDEN"
    assert creation["extensions"]["code"] == "FORBIDDEN"
    assert revocation["extensions"]["code"] == "FORBIDDEN"
    assert node.json()["data"] == {"node": None}
    assert [error["extensions"]["code"] for error in node.json()["errors"]] == ["FORBIDDEN"]
    assert [(row["actor"], row["revokedAt"]) for row in tokens_after["apiTokens"]] == [
        ("admin", None),
        ("dba", None),
    ]


async def test_last_used_at_is_set_once_a_token_is_used(live_server: ConveyorProcess) -> None:
    created = await create_token(live_server, "user", "VIEWER")
    unused = await listed_token(live_server, created.id)

    before = datetime.now(UTC)
    await data_as(live_server, created.secret, VIEWER)
    used = await listed_token(live_server, created.id)

    assert unused is not None
    assert unused["lastUsedAt"] is None
    assert used is not None
    assert used["lastUsedAt"] is not None
    last_used_at = datetime.fromisoformat(used["lastUsedAt"])
    assert before - timedelta(seconds=1) <= last_used_at <= datetime.now(UTC)


async def test_every_change_records_the_actor_of_the_token_that_made_it(
    graphql: GraphQLClient, live_server: ConveyorProcess
) -> None:
    catalog = await create_catalog(graphql)
    dora = await create_token(live_server, "dora", "DEVELOPER")
    plan = issue_plan(
        catalog, {"prod": [database_task(catalog, "DATA_UPDATE", statement="SELECT 1")]}
    )

    created = await data_as(live_server, dora.secret, CREATE_ISSUE, {"input": plan})
    issue_id = created["createIssue"]["id"]
    await data_as(
        live_server,
        dora.secret,
        "mutation($id: ID!) { cancelIssue(input: {issueId: $id}) { status } }",
        {"id": issue_id},
    )
    read = await data_as(
        live_server,
        live_server.token,
        "query($id: ID!) { node(id: $id) { ... on Issue { creator events { kind actor } } } }",
        {"id": issue_id},
    )

    issue = read["node"]
    assert issue["creator"] == "dora"
    # A worker's checks of the new task (if it got to them before the cancel) are its own.
    checks = [event for event in issue["events"] if event["kind"] == "TASK_CHECKED"]
    changes = [event for event in issue["events"] if event["kind"] != "TASK_CHECKED"]
    assert {event["kind"] for event in changes} == {
        "ISSUE_CREATED",
        "TASK_STATUS_CHANGED",
        "STAGE_STATUS_CHANGED",
        "PIPELINE_STATUS_CHANGED",
    }
    assert {event["actor"] for event in changes} == {"dora"}
    assert {event["actor"] for event in checks} <= {"conveyor-checker"}


# --- the first admin token -------------------------------------------------------------------


async def test_a_new_installation_writes_a_first_admin_token_once(
    settings: Settings, tmp_path: Path
) -> None:
    env = conveyor_env(
        settings,
        CONVEYOR_RUN_WORKER="false",
    )
    token_path = settings.data_dir / "admin-token"
    assert not token_path.exists()

    first = start_server(env, tmp_path / "first.log")
    try:
        written = token_path.read_text().strip()
        mode = token_path.stat().st_mode & 0o777
        viewer = await data_as(first, written, VIEWER)
    finally:
        first.stop()
    second = start_server(env, tmp_path / "second.log")
    second.stop()

    assert mode == 0o600
    assert viewer["viewer"] == {"actor": "admin", "role": "ADMIN", "tokenExpiresAt": None}
    assert str(token_path) in first.log()
    assert written not in first.log()
    assert token_path.read_text().strip() == written
    assert str(token_path) not in second.log()


# --- the command line ------------------------------------------------------------------------


def conveyor_token(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`conveyor token ARGS` on `database_url`, as an operator runs it."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CONVEYOR_")}
    return subprocess.run(
        [sys.executable, "-m", "conveyor", "token", *args],
        env={**env, "CONVEYOR_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_the_token_command_creates_lists_and_revokes_tokens(
    live_server: ConveyorProcess, database_url: str
) -> None:
    created = conveyor_token(
        database_url, "create", "--actor", "ci", "--role", "DEVELOPER", "--description", "CI"
    )
    secret = created.stdout.strip()
    viewer = await data_as(live_server, secret, VIEWER)
    listed = conveyor_token(database_url, "list")
    [line] = [line for line in listed.stdout.splitlines() if "\tci\t" in line]
    token_number = line.split("\t")[0]

    revoked = conveyor_token(database_url, "revoke", token_number)
    refused = await post(live_server, VIEWER, headers=bearer(secret))
    usable_after = conveyor_token(database_url, "list")
    all_after = conveyor_token(database_url, "list", "--all")
    again = conveyor_token(database_url, "revoke", token_number)

    assert created.returncode == 0, created.stderr
    assert created.stdout == secret + "\n", "the token alone on stdout, for scripts"
    assert "not shown again" in created.stderr
    assert viewer["viewer"] == {"actor": "ci", "role": "DEVELOPER", "tokenExpiresAt": None}
    prefix = secret[:SHOWN_PREFIX_LENGTH]
    assert line.split("\t")[1:] == [f"{prefix}...", "ci", "DEVELOPER", "expires never"]
    assert revoked.returncode == 0, revoked.stderr
    assert_unauthenticated(refused)
    assert "\tci\t" not in usable_after.stdout
    assert [line for line in all_after.stdout.splitlines() if "\tci\t" in line] == [
        f"{token_number}\t{prefix}...\tci\tDEVELOPER\trevoked"
    ]
    assert again.returncode != 0
    assert "revoked already" in again.stderr
    # Only `create` prints a token, once, on its stdout.
    for process in (listed, revoked, usable_after, all_after, again):
        for text in (process.stdout, process.stderr, created.stderr):
            assert secret[SHOWN_PREFIX_LENGTH:] not in text
            assert live_server.token[SHOWN_PREFIX_LENGTH:] not in text


# --- over WebSocket --------------------------------------------------------------------------


async def closed_with(connection: ClientConnection) -> int | None:
    """The close code the server sent, once it closes `connection`."""
    try:
        while True:
            await asyncio.wait_for(connection.recv(), MESSAGE_WAIT_SECONDS)
    except ConnectionClosed as closed:
        return None if closed.rcvd is None else closed.rcvd.code


async def test_a_websocket_without_a_valid_token_is_refused_in_both_protocols(
    live_server: ConveyorProcess,
) -> None:
    url = websocket_url(live_server)
    transport_codes = []
    for payload in ({}, {"Authorization": "Bearer cvy_unknown"}, {"Authorization": "Basic x"}):
        async with connect(url, subprotocols=[TRANSPORT_WS]) as connection:
            await connection.send(json.dumps({"type": "connection_init", "payload": payload}))
            transport_codes.append(await closed_with(connection))
    async with connect(url, subprotocols=[LEGACY_WS]) as legacy:
        await legacy.send(json.dumps({"type": "connection_init", "payload": {}}))
        legacy_answer = json.loads(await asyncio.wait_for(legacy.recv(), MESSAGE_WAIT_SECONDS))
        legacy_closed = await closed_with(legacy)

    assert transport_codes == [4403, 4403, 4403]
    assert legacy_answer["type"] == "connection_error"
    assert legacy_answer["payload"]["extensions"]["code"] == "UNAUTHENTICATED"
    assert legacy_closed == 4403


async def test_a_websocket_may_bring_its_token_in_connection_init_or_the_upgrade_request(
    graphql: GraphQLClient, live_server: ConveyorProcess
) -> None:
    task_id = await a_waiting_task(graphql)
    viewer = await create_token(live_server, "watcher", "VIEWER")
    url = websocket_url(live_server)
    variables = {"taskId": task_id}
    snapshots = {}
    for protocol in (TRANSPORT_WS, LEGACY_WS):
        for token_in in ("connection_init", "upgrade"):
            async with subscribed(
                url,
                TASK_CHANGES,
                variables,
                token=viewer.secret,
                protocol=protocol,
                token_in=token_in,
            ) as live:
                snapshots[(protocol, token_in)] = (await live.next())["__typename"]
    async with connect(url, subprotocols=[TRANSPORT_WS]) as lower_case_key:
        await lower_case_key.send(
            json.dumps(
                {"type": "connection_init", "payload": {"authorization": f"Bearer {viewer.secret}"}}
            )
        )
        lower_case_answer = json.loads(await lower_case_key.recv())

    assert set(snapshots.values()) == {"TaskStatusSnapshot"}
    assert len(snapshots) == 4
    assert lower_case_answer["type"] == "connection_ack"


@dataclass(frozen=True)
class Ending:
    """How a live subscription ended: its last error, and when (time.time()) it arrived."""

    error: dict[str, Any]
    at: float
    completed: bool


async def ending_of(connection: ClientConnection) -> Ending:
    """Read a raw subscription until the server sends it an error; then whether it completes."""
    while True:
        message = json.loads(await asyncio.wait_for(connection.recv(), MESSAGE_WAIT_SECONDS))
        errors = message.get("payload", {}).get("errors")
        if errors:
            at = time.time()
            completion = json.loads(await asyncio.wait_for(connection.recv(), MESSAGE_WAIT_SECONDS))
            return Ending(errors[0], at, completion == {"id": "1", "type": "complete"})
        assert message["type"] == "next", message


def short_token_checks(settings: Settings) -> dict[str, str]:
    """The environment of a server that checks its subscriptions' tokens every second."""
    return conveyor_env(
        settings,
        CONVEYOR_RUN_WORKER="false",
        CONVEYOR_TOKEN_CHECK_SECONDS="1",
    )


async def test_revoking_a_token_ends_its_live_subscriptions_within_seconds(
    graphql: GraphQLClient, settings: Settings, tmp_path: Path
) -> None:
    task_id = await a_waiting_task(graphql)
    server = start_server(short_token_checks(settings), tmp_path / "server.log")
    try:
        viewer = await create_token(server, "watcher", "VIEWER")
        url = websocket_url(server)
        watching = await raw_subscribe(url, TASK_CHANGES, {"taskId": task_id}, token=viewer.secret)
        async with subscribed(url, TASK_CHANGES, {"taskId": task_id}, token=server.token) as admin:
            assert json.loads(await watching.recv())["type"] == "next", "the snapshot"
            await admin.next()

            revoking = time.time()
            await data_as(server, server.token, REVOKE_TOKEN, {"id": viewer.id})
            ending = await ending_of(watching)
            # The admin's subscription, on its own token, goes on.
            await graphql.ok(
                "mutation($id: ID!) { cancelTask(input: {taskId: $id}) { status } }",
                {"id": task_id},
            )
            change = await admin.next()
        await watching.close()
    finally:
        server.stop()

    took = ending.at - revoking
    print(f"revocation -> end of the subscription: {took:.2f} s")
    assert ending.error["extensions"]["code"] == "UNAUTHENTICATED"
    assert ending.completed
    assert took < SUBSCRIPTION_END_DEADLINE_SECONDS
    assert (change["newStatus"], change["actor"]) == ("CANCELED", "tester")


async def test_a_token_that_expires_ends_its_live_subscriptions_within_seconds(
    graphql: GraphQLClient, settings: Settings, tmp_path: Path
) -> None:
    task_id = await a_waiting_task(graphql)
    server = start_server(short_token_checks(settings), tmp_path / "server.log")
    try:
        expires_at = datetime.now(UTC) + timedelta(seconds=3)
        brief = await create_token(server, "brief", "VIEWER", expires_at=expires_at)
        watching = await raw_subscribe(
            websocket_url(server), TASK_CHANGES, {"taskId": task_id}, token=brief.secret
        )
        assert json.loads(await watching.recv())["type"] == "next", "the snapshot"
        ending = await ending_of(watching)
        await watching.close()
    finally:
        server.stop()

    took = ending.at - expires_at.timestamp()
    print(f"expiry -> end of the subscription: {took:.2f} s")
    assert ending.error["extensions"]["code"] == "UNAUTHENTICATED"
    assert ending.completed
    assert 0 <= took < SUBSCRIPTION_END_DEADLINE_SECONDS


async def test_a_revoked_token_can_do_nothing_more_on_a_websocket_it_opened(
    graphql: GraphQLClient, live_server: ConveyorProcess
) -> None:
    task_id = await a_waiting_task(graphql)
    dba = await create_token(live_server, "dba", "DBA")
    async with connect(websocket_url(live_server), subprotocols=[TRANSPORT_WS]) as connection:
        await connection.send(
            json.dumps({"type": "connection_init", "payload": bearer(dba.secret)})
        )
        assert json.loads(await connection.recv())["type"] == "connection_ack"
        await data_as(live_server, live_server.token, REVOKE_TOKEN, {"id": dba.id})

        # graphql-transport-ws carries queries and mutations too, not only subscriptions.
        await connection.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {
                        "query": "mutation($id: ID!) { cancelTask(input: {taskId: $id}) "
                        "{ status } }",
                        "variables": {"id": task_id},
                    },
                }
            )
        )
        answer = json.loads(await asyncio.wait_for(connection.recv(), MESSAGE_WAIT_SECONDS))
    status = await graphql.ok(
        "query($id: ID!) { node(id: $id) { ... on Task { status } } }",
        {"id": task_id},
    )

    assert status["node"]["status"] == "PENDING_APPROVAL"
    # The whole operation is refused before anything runs: a graphql-transport-ws "error".
    assert answer["type"] == "error"
    assert answer["payload"][0]["extensions"]["code"] == "UNAUTHENTICATED"
