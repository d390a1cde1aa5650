"""WebSocket clients of a real `conveyor serve`: gql's, and a raw graphql-transport-ws one."""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any, Literal

from gql import Client, GraphQLRequest
from gql.transport.websockets import WebsocketsTransport
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from tests.conftest import ConveyorProcess

TRANSPORT_WS = Subprotocol("graphql-transport-ws")
LEGACY_WS = Subprotocol("graphql-ws")
#: How long a test waits for one message before it calls the message lost.
MESSAGE_WAIT_SECONDS = 15.0

#: Where a client puts its token: the connection_init payload, or the upgrade request's
#: Authorization header (for clients that cannot set a payload).
TokenPlace = Literal["connection_init", "upgrade"]


def websocket_url(server: ConveyorProcess) -> str:
    return server.url.replace("http://", "ws://", 1) + "/graphql"


def bearer(token: str) -> dict[str, str]:
    """An Authorization header, or connection_init payload, carrying `token`."""
    return {"Authorization": f"Bearer {token}"}


class LiveSubscription:
    """The messages of one subscription, read in the background as they arrive."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict[str, Any] | Exception] = asyncio.Queue()

    async def next(self) -> dict[str, Any]:
        item = await asyncio.wait_for(self.queue.get(), MESSAGE_WAIT_SECONDS)
        if isinstance(item, Exception):
            raise item
        return item

    async def take(self, count: int) -> list[dict[str, Any]]:
        return [await self.next() for _ in range(count)]

    async def assert_nothing_more(self, seconds: float = 0.5) -> None:
        await asyncio.sleep(seconds)
        assert self.queue.empty(), f"unexpected message: {self.queue.get_nowait()}"


@contextlib.asynccontextmanager
async def subscribed(
    url: str,
    document: str,
    variables: dict[str, Any],
    *,
    token: str,
    protocol: str = TRANSPORT_WS,
    token_in: TokenPlace = "connection_init",
    connection_params: dict[str, Any] | None = None,
) -> AsyncIterator[LiveSubscription]:
    """A subscription through gql's WebSocket client speaking `protocol`; the
    connection_init payload holds the token (unless `token_in` says otherwise) and
    `connection_params`."""
    init_payload = {**(bearer(token) if token_in == "connection_init" else {})}
    init_payload.update(connection_params or {})
    transport = WebsocketsTransport(
        url=url,
        subprotocols=[protocol],
        init_payload=init_payload or None,
        headers=bearer(token) if token_in == "upgrade" else None,
    )
    live = LiveSubscription()
    async with Client(transport=transport) as session:

        async def read() -> None:
            try:
                request = GraphQLRequest(document, variable_values=variables)
                async for result in session.subscribe(request):
                    live.queue.put_nowait(next(iter(result.values())))
            except Exception as error:
                live.queue.put_nowait(error)

        reader = asyncio.create_task(read())
        try:
            yield live
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


async def raw_subscribe(
    url: str, document: str, variables: dict[str, Any], *, token: str, **connect_options: Any
) -> ClientConnection:
    """A graphql-transport-ws client that subscribes and then reads only when told to."""
    connection = await connect(url, subprotocols=[TRANSPORT_WS], **connect_options)
    await connection.send(json.dumps({"type": "connection_init", "payload": bearer(token)}))
    assert '"connection_ack"' in str(await connection.recv())
    await connection.send(
        json.dumps(
            {
                "id": "1",
                "type": "subscribe",
                "payload": {"query": document, "variables": variables},
            }
        )
    )
    return connection
