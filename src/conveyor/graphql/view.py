"""The strawberry ASGI view, with Conveyor's request context and request limits."""

from datetime import timedelta
from typing import Any

from cross_web import AsyncHTTPRequestAdapter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLRequestData
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL

from conveyor.crypto import PasswordCipher
from conveyor.events.hub import EventHub
from conveyor.graphql.context import ACTOR_HEADER, ANONYMOUS, Context
from conveyor.graphql.errors import BATCHING_NOT_SUPPORTED, REQUEST_TOO_LARGE
from conveyor.graphql.ide import OfflineGraphiQLMixin
from conveyor.settings import Settings


class RequestRefused(Exception):
    """An HTTP request refused before its document is parsed, answered as a GraphQL error."""

    def __init__(self, status_code: int, code: str, message: str, **details: object) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.details = details

    def response(self) -> Response:
        extensions = {"code": self.code, "field": None, **self.details}
        return JSONResponse(
            {"errors": [{"message": self.message, "extensions": extensions}]},
            status_code=self.status_code,
        )


def _too_large(limit: int) -> RequestRefused:
    return RequestRefused(
        413,
        REQUEST_TOO_LARGE,
        f"the request body is larger than {limit} bytes, the most this server accepts",
        limit=limit,
    )


class GraphQLView(OfflineGraphiQLMixin, GraphQL[Context, None]):
    """Serves /graphql: queries over HTTP, subscriptions over WebSocket, GraphiQL for browsers."""

    def __init__(
        self, schema: Any, *, settings: Settings, cipher: PasswordCipher, **options: Any
    ) -> None:
        options.setdefault("graphql_ide", "graphiql" if settings.graphiql else None)
        super().__init__(
            schema,
            # graphql-transport-ws, and the legacy graphql-ws (Apollo's) that older clients
            # still speak.
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL),
            # A socket that never says hello is closed (4408) instead of held open for good.
            connection_init_wait_timeout=timedelta(
                seconds=settings.connection_init_timeout_seconds
            ),
            # Legacy graphql-ws clients expect "ka" messages; graphql-transport-ws ones are
            # pinged at the WebSocket level by uvicorn, at the same interval (see cli.serve).
            keep_alive=True,
            keep_alive_interval=settings.websocket_keep_alive_seconds,
            **options,
        )
        self.settings = settings
        self.cipher = cipher
        #: Set for the life of the application; None outside it (no live updates).
        self.hub: EventHub | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        try:
            await super().__call__(scope, self._limited(scope, receive), send)
        except RequestRefused as refusal:
            # Raised while the body is read, before any part of a response is sent.
            await refusal.response()(scope, receive, send)

    def _limited(self, scope: Scope, receive: Receive) -> Receive:
        """`receive`, refusing a body larger than the limit: before reading it when its
        Content-Length says so, else as soon as the bytes received pass the limit."""
        limit = self.settings.max_request_bytes
        declared = dict(scope["headers"]).get(b"content-length", b"")
        declared_too_large = declared.isdigit() and int(declared) > limit
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            if declared_too_large:
                raise _too_large(limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _too_large(limit)
            return message

        return limited_receive

    async def parse_http_body(
        self, request: AsyncHTTPRequestAdapter
    ) -> GraphQLRequestData | list[GraphQLRequestData]:
        # strawberry refuses a batch too (batching_config is unset), in plain text.
        if request.method == "POST" and (await request.get_body()).lstrip()[:1] == b"[":
            raise RequestRefused(
                400,
                BATCHING_NOT_SUPPORTED,
                "batching is not supported: send one operation per request, as a JSON object",
            )
        return await super().parse_http_body(request)

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket | None
    ) -> Context:
        actor = request.headers.get(ACTOR_HEADER, "").strip() or ANONYMOUS
        return Context(
            request=request,
            response=response if isinstance(response, Response) else None,
            settings=self.settings,
            cipher=self.cipher,
            actor=actor[:100],
            hub=self.hub,
        )
