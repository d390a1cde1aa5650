"""The strawberry ASGI view, with Conveyor's request context."""

from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL

from conveyor.crypto import PasswordCipher
from conveyor.events.hub import EventHub
from conveyor.graphql.context import ACTOR_HEADER, ANONYMOUS, Context
from conveyor.graphql.ide import OfflineGraphiQLMixin
from conveyor.settings import Settings


class GraphQLView(OfflineGraphiQLMixin, GraphQL[Context, None]):
    """Serves /graphql: queries over HTTP, subscriptions over WebSocket, GraphiQL for browsers."""

    def __init__(
        self, schema: Any, *, settings: Settings, cipher: PasswordCipher, **options: Any
    ) -> None:
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
