"""The strawberry ASGI view, with Conveyor's request context and request limits."""

import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from cross_web import AsyncHTTPRequestAdapter
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketClose
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType
from strawberry.types.unset import UnsetType

from conveyor.crypto import PasswordCipher
from conveyor.db import tokens
from conveyor.db.outages import database_unavailable
from conveyor.domain.permissions import Principal
from conveyor.errors import ErrorCode
from conveyor.events.hub import EventHub
from conveyor.graphql.compiled.extension import EncodedData
from conveyor.graphql.context import Context
from conveyor.graphql.errors import (
    BAD_REQUEST_BODY,
    BATCHING_NOT_SUPPORTED,
    DATABASE_UNAVAILABLE,
    REQUEST_TOO_LARGE,
    RETRY_AFTER_SECONDS,
    UNSUPPORTED_MEDIA_TYPE,
    failed_for_unavailable_database,
)
from conveyor.graphql.ide import OfflineGraphiQLMixin
from conveyor.graphql.live_socket import LiveSocketHandler
from conveyor.graphql.media_types import (
    GRAPHQL_RESPONSE_JSON,
    JSON,
    failed_before_execution,
    response_media_type,
)
from conveyor.graphql.rate_limits import RateLimited, TokenRateLimits
from conveyor.graphql.websocket import (
    ConnectionRefused,
    LegacyWSHandler,
    WebSocketAdapter,
)
from conveyor.operations.metrics import OK, Metrics
from conveyor.operations.requests import RequestRecord, current_request
from conveyor.settings import Settings


class RequestRefused(Exception):
    """An HTTP request refused before its document is parsed, answered as a GraphQL error."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        **details: object,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.headers = headers
        self.details = details

    def response(self, media_type: str = JSON) -> Response:
        extensions = {"code": self.code, "field": None, **self.details}
        return JSONResponse(
            {"errors": [{"message": self.message, "extensions": extensions}]},
            status_code=self.status_code,
            headers=self.headers,
            media_type=media_type,
        )


def _unauthenticated(message: str) -> RequestRefused:
    return RequestRefused(
        401,
        ErrorCode.UNAUTHENTICATED,
        message,
        headers={"WWW-Authenticate": 'Bearer realm="conveyor"'},
    )


def _rate_limited(limited: RateLimited, headers: Mapping[str, str]) -> RequestRefused:
    return RequestRefused(
        429,
        ErrorCode.RATE_LIMITED,
        limited.first.message,
        headers=headers,
        **limited.details,
    )


def _unavailable() -> RequestRefused:
    return RequestRefused(
        503,
        ErrorCode.UNAVAILABLE,
        DATABASE_UNAVAILABLE,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        retryAfter=RETRY_AFTER_SECONDS,
    )


def _is_json(content_type: str | None) -> bool:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    return media_type == "application/json"


def bearer_token(authorization: object) -> str | None:
    """The token of an `Authorization: Bearer <token>` value, or None."""
    if not isinstance(authorization, str):
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _connection_init_authorization(params: object) -> object:
    """The Authorization value of a connection_init payload; its key in any letter case."""
    if not isinstance(params, dict):
        return None
    for key, value in params.items():
        if isinstance(key, str) and key.lower() == "authorization":
            return value
    return None


def _too_large(limit: int) -> RequestRefused:
    return RequestRefused(
        413,
        REQUEST_TOO_LARGE,
        f"the request body is larger than {limit} bytes, the most this server accepts",
        limit=limit,
    )


class GraphQLView(OfflineGraphiQLMixin, GraphQL[Context, None]):
    """Serves /graphql: queries over HTTP, subscriptions over WebSocket, GraphiQL for browsers."""

    websocket_adapter_class = WebSocketAdapter
    graphql_transport_ws_handler_class = LiveSocketHandler
    graphql_ws_handler_class = LegacyWSHandler

    def __init__(
        self,
        schema: Any,
        *,
        settings: Settings,
        cipher: PasswordCipher,
        metrics: Metrics | None = None,
        **options: Any,
    ) -> None:
        options.setdefault("graphql_ide", "graphiql" if settings.graphiql_enabled else None)
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
        # Pages on these origins may open a WebSocket; same-origin pages always may.
        self.allowed_origins = frozenset(
            origin.rstrip("/").lower() for origin in settings.allowed_origins
        )
        self.settings = settings
        self.cipher = cipher
        self.rate_limits = TokenRateLimits(
            requests_per_minute=settings.rate_limit_requests,
            cost_per_minute=settings.rate_limit_cost,
            storage=settings.rate_limit_storage,
        )
        #: Tokens verified lately, told of revocations by the process's listener (app.py).
        self.verified_tokens = tokens.VerifiedTokens(settings.token_cache_seconds)
        #: Set for the life of the application; None outside it (no live updates).
        self.hub: EventHub | None = None
        self.metrics = metrics if metrics is not None else Metrics()
        #: Set when the process drains: new WebSockets are refused (see app.py).
        self.draining = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._serve_websocket(scope, receive, send)
            return
        record = RequestRecord()
        reset = current_request.set(record)
        status = 0

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await super().__call__(scope, self._limited(scope, receive), send_noting_status)
        except RequestRefused as refusal:
            # Raised while the body is read, before any part of a response is sent.
            record.error_codes = [refusal.code]
            media_type = response_media_type(Headers(scope=scope).get("accept"))
            await refusal.response(media_type)(scope, receive, send_noting_status)
        finally:
            self._count(record, status)
            current_request.reset(reset)

    async def _serve_websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.draining:
            # Refused at the handshake: the client connects to another replica.
            await WebSocketClose(code=1012)(scope, receive, send)
            return
        # One record for the connection: its log lines (and an internal error's report)
        # carry its correlation id and, once connection_init is done, its actor.
        reset = current_request.set(RequestRecord())
        self.metrics.websockets_open.inc()
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.metrics.websockets_open.dec()
            current_request.reset(reset)

    def _count(self, record: RequestRecord, status: int) -> None:
        if record.executed is None and not record.error_codes and status < 400:
            # GraphiQL's page: no operation was asked.
            return
        metrics = self.metrics
        operation = metrics.operation_label(record.operation)
        if record.error_codes:
            outcome = record.error_codes[0]
        else:
            outcome = OK if status < 400 else f"HTTP_{status}"
        metrics.requests.labels(operation, outcome).inc()
        metrics.request_duration.labels(operation).observe(record.seconds)
        metrics.count_errors(record.error_codes)
        if record.executed is OperationType.QUERY:
            metrics.reads.labels(record.read_path).inc()

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

    def encode_json(self, data: object) -> str | bytes:
        # The compiled read path's data is JSON already: sent as it is, never re-encoded.
        if (
            isinstance(data, dict)
            and data.keys() == {"data"}
            and isinstance(data["data"], EncodedData)
        ):
            return b'{"data":' + data["data"].json + b"}"
        return super().encode_json(data)

    def decode_json(self, data: str | bytes) -> object:
        # For both HTTP bodies and WebSocket messages; strawberry's WebSocket handlers expect
        # no other error than JSONDecodeError from here.
        try:
            return json.loads(data)
        except json.JSONDecodeError:
            raise
        except (ValueError, RecursionError):
            # Bad UTF-8, numbers past Python's digit limit, nesting past the recursion limit:
            # all the client's doing, like a syntax error.
            raise json.JSONDecodeError("not valid JSON", "", 0) from None

    def parse_json(self, data: str | bytes) -> object:
        try:
            decoded = self.decode_json(data)
        except json.JSONDecodeError:
            raise RequestRefused(400, BAD_REQUEST_BODY, "the body is not valid JSON") from None
        if not isinstance(decoded, dict | list):
            raise RequestRefused(
                400,
                BAD_REQUEST_BODY,
                'send one operation as a JSON object: {"query": "...", "variables": {...}}',
            )
        return decoded

    async def parse_http_body(
        self, request: AsyncHTTPRequestAdapter
    ) -> GraphQLRequestData | list[GraphQLRequestData]:
        if request.method == "POST" and not _is_json(request.content_type):
            # A cross-site form can POST urlencoded, multipart or text/plain bodies without a
            # CORS preflight; JSON it cannot.
            raise RequestRefused(
                415,
                UNSUPPORTED_MEDIA_TYPE,
                "send the operation as a JSON body with Content-Type: application/json",
            )
        # strawberry refuses a batch too (batching_config is unset), in plain text.
        if request.method == "POST" and (await request.get_body()).lstrip()[:1] == b"[":
            raise RequestRefused(
                400,
                BATCHING_NOT_SUPPORTED,
                "batching is not supported: send one operation per request, as a JSON object",
            )
        return await super().parse_http_body(request)

    async def get_sub_response(self, request: Request | WebSocket) -> Response:
        sub_response = await super().get_sub_response(request)
        # The negotiated media type, for create_response; the sub-response is never sent.
        sub_response.media_type = response_media_type(request.headers.get("accept"))
        return sub_response

    def create_response(
        self,
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: Response,
    ) -> Response:
        media_type = sub_response.media_type or JSON
        if (
            media_type == GRAPHQL_RESPONSE_JSON
            and isinstance(response_data, dict)
            and failed_before_execution(response_data)
        ):
            # The spec: such a response has no data entry, and a 4xx status code (400 unless
            # one was set already, e.g. 429 when the token's query cost ran out).
            response_data.pop("data", None)
            sub_response.status_code = sub_response.status_code or 400
        response = super().create_response(response_data, sub_response)
        response.headers["content-type"] = media_type
        return response

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket | None
    ) -> Context:
        # The principal is found later: the GraphiQL page needs no token, and a WebSocket
        # brings its token in connection_init.
        return Context(
            request=request,
            response=response if isinstance(response, Response) else None,
            settings=self.settings,
            cipher=self.cipher,
            hub=self.hub,
            rate_limits=self.rate_limits,
            verified_tokens=self.verified_tokens,
        )

    async def execute_operation(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        request_data: GraphQLRequestData | list[GraphQLRequestData],
        context: Context,
        root_value: Any,
        sub_response: Response,
    ) -> Any:
        # Authorization is a header a cross-site page cannot send without a CORS preflight,
        # which this server never answers: a GET that gets past this was not forged.
        principal = await self._authenticate(request.headers.get("authorization"))
        context.principal = principal
        record = current_request.get()
        if record is not None:
            record.actor = principal.actor
        assert principal.token_id is not None, "a request's principal comes from a token"
        try:
            await self.rate_limits.take_request(principal.token_id, sub_response.headers)
        except RateLimited as limited:
            raise _rate_limited(limited, sub_response.headers) from None
        result = await super().execute_operation(
            request, request_adapter, request_data, context, root_value, sub_response
        )
        if isinstance(result, ExecutionResult) and record is not None:
            record.error_codes = [
                str((error.extensions or {}).get("code")) for error in result.errors or []
            ]
            if record.executed is not None:
                # The cost of what ran; a refused document spent nothing.
                self.metrics.query_cost.observe(context.query_cost)
        if isinstance(result, ExecutionResult) and failed_for_unavailable_database(
            result.data, result.errors
        ):
            sub_response.status_code = 503
            sub_response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return result

    async def _authenticate(self, authorization: object) -> Principal:
        token = bearer_token(authorization)
        if token is None:
            raise _unauthenticated(
                "this API needs a token: send the header Authorization: Bearer <token>"
            )
        try:
            principal = await self.verified_tokens.authenticate(token)
        except Exception as error:
            if not database_unavailable(error):
                raise
            raise _unavailable() from None
        if principal is None:
            raise _unauthenticated("the token is unknown, revoked or expired")
        return principal

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        authorization = _connection_init_authorization(context.connection_params)
        if authorization is None and context.request is not None:
            # Clients that cannot put a token into connection_init send the header instead.
            authorization = context.request.headers.get("authorization")
        try:
            context.principal = await self._authenticate(authorization)
            record = current_request.get()
            if record is not None:
                record.actor = context.principal.actor
        except RequestRefused as refusal:
            raise ConnectionRefused(
                {"message": refusal.message, "extensions": {"code": refusal.code}}
            ) from None
        return await super().on_ws_connect(context)
