"""The two WebSocket subprotocols, hardened: a message of the wrong shape, or a frame that is no
JSON at all, closes its connection with a reason and one warning, never an ASGI error."""

import logging
from collections.abc import AsyncGenerator, Callable
from contextlib import suppress
from dataclasses import dataclass

from graphql import GraphQLFormattedError
from starlette.websockets import WebSocketDisconnect
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.http.exceptions import NonJsonMessageReceived, WebSocketDisconnected
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    Message as TransportWSMessage,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.subscriptions.protocols.graphql_ws.types import OperationMessage

from conveyor.graphql.context import Context
from conveyor.graphql.errors import BAD_REQUEST_BODY

logger = logging.getLogger(__name__)

#: The close code of a message that is not one of the protocol's (graphql-transport-ws says
#: 4400; the legacy protocol names none, so it gets the same).
BAD_MESSAGE = 4400
#: The close code of a connection whose token is refused, in both protocols.
FORBIDDEN = 4403
_NOT_JSON = "a message must be valid JSON"


class ConnectionRefused(Exception):
    """Raised by the view's on_ws_connect when the token is refused; `payload` is the error."""

    def __init__(self, payload: dict[str, object]) -> None:
        super().__init__(payload.get("message"))
        self.payload = payload


@dataclass(frozen=True)
class ClientMessages:
    """The message types a client may send in one subprotocol."""

    #: Starts an operation: carries an id and a payload with the document.
    start: str
    #: Ends an operation: carries its id.
    stop: str
    others: frozenset[str]

    @property
    def types(self) -> frozenset[str]:
        return self.others | {self.start, self.stop}


TRANSPORT_WS_MESSAGES = ClientMessages(
    start="subscribe", stop="complete", others=frozenset({"connection_init", "ping", "pong"})
)
LEGACY_WS_MESSAGES = ClientMessages(
    start="start", stop="stop", others=frozenset({"connection_init", "connection_terminate"})
)


def message_problem(message: object, messages: ClientMessages) -> str | None:
    """Why `message` is not a message of the protocol, or None. Each reason is short and fixed:
    it becomes a close reason (at most 123 bytes) and never echoes what the client sent."""
    if not isinstance(message, dict):
        return "a message must be a JSON object with a type"
    kind = message.get("type")
    if not isinstance(kind, str) or kind not in messages.types:
        return "unknown message type"
    if kind in (messages.start, messages.stop) and not isinstance(message.get("id"), str):
        return f"a {kind} message needs an id, a string"
    if kind != messages.start:
        return None
    payload = message.get("payload")
    if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
        return f"a {kind} message needs a payload with a query, a string"
    if not isinstance(payload.get("variables"), dict | None):
        return "variables must be an object"
    if not isinstance(payload.get("operationName"), str | None):
        return "operationName must be a string"
    return None


def _warn(protocol: str, problem: str) -> None:
    # The one line a bad connection writes: it is closed right after.
    logger.warning("closed a %s WebSocket that sent a bad message: %s", protocol, problem)


class WebSocketAdapter(ASGIWebSocketAdapter):
    #: Called as the server starts closing the socket, before its close frame is sent.
    before_close: Callable[[], None] | None = None

    def iter_json(self, *, ignore_parsing_errors: bool = False) -> AsyncGenerator[object, None]:
        # The legacy handler asks to drop undecodable frames silently; it answers them instead.
        return super().iter_json(ignore_parsing_errors=False)

    async def close(self, code: int, reason: str) -> None:
        if self.before_close is not None:
            self.before_close()
        # A client that went away meanwhile (one that sends a bad frame and hangs up at once)
        # leaves the socket closed already, as asked.
        with suppress(WebSocketDisconnect):
            await super().close(code, reason)


class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws: a bad message closes the connection with 4400 and its reason."""

    async def handle_message(self, message: TransportWSMessage) -> None:
        problem = message_problem(message, TRANSPORT_WS_MESSAGES)
        if problem is not None:
            await self.handle_invalid_message(problem)
            return
        try:
            await super().handle_message(message)
        except ConnectionRefused:
            await self.websocket.close(code=FORBIDDEN, reason="Forbidden")

    async def handle_invalid_message(self, error_message: str) -> None:
        _warn("graphql-transport-ws", error_message)
        await self.websocket.close(code=BAD_MESSAGE, reason=error_message)


class LegacyWSHandler(BaseGraphQLWSHandler[Context, None]):
    """The legacy graphql-ws (subscriptions-transport-ws): a bad message gets the protocol's
    `error` (about an operation, once acknowledged) or `connection_error`, then the connection
    is closed with 4400; a refused token gets `connection_error`, then 4403."""

    async def handle(self) -> None:
        try:
            await super().handle()
        except NonJsonMessageReceived:
            # Outside strawberry's loop, which would have caught a client that went away.
            with suppress(WebSocketDisconnected):
                await self._refuse_message(_NOT_JSON, operation_id=None)

    async def handle_message(self, message: OperationMessage) -> None:
        problem = message_problem(message, LEGACY_WS_MESSAGES)
        if problem is not None:
            operation_id = message.get("id") if isinstance(message, dict) else None
            await self._refuse_message(
                problem, operation_id=operation_id if isinstance(operation_id, str) else None
            )
            return
        try:
            await super().handle_message(message)
        except ConnectionRefused as refusal:
            # strawberry would close with 1011 ("the server failed"); legacy clients read the
            # connection_error, not the close code, so the code is for people and proxies:
            # the same 4403 as graphql-transport-ws.
            await self.send_message({"type": "connection_error", "payload": refusal.payload})
            await self.websocket.close(code=FORBIDDEN, reason="Forbidden")

    async def _refuse_message(self, problem: str, *, operation_id: str | None) -> None:
        # As subscriptions-transport-ws' own server does: `error` for a message about an
        # operation of an acknowledged connection, else `connection_error`.
        _warn("graphql-ws", problem)
        error: GraphQLFormattedError = {
            "message": problem,
            "extensions": {"code": BAD_REQUEST_BODY},
        }
        if self.connection_acknowledged and operation_id is not None:
            await self.send_message({"type": "error", "id": operation_id, "payload": error})
        else:
            await self.send_message({"type": "connection_error", "payload": dict(error)})
        await self.websocket.close(code=BAD_MESSAGE, reason=problem)
