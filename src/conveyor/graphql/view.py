"""The strawberry ASGI view, with Conveyor's request context."""

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL

from conveyor.crypto import PasswordCipher
from conveyor.graphql.context import ACTOR_HEADER, ANONYMOUS, Context
from conveyor.graphql.ide import OfflineGraphiQLMixin
from conveyor.settings import Settings


class GraphQLView(OfflineGraphiQLMixin, GraphQL[Context, None]):
    """Serves /graphql: queries over HTTP, subscriptions over WebSocket, GraphiQL for browsers."""

    def __init__(
        self, schema: Any, *, settings: Settings, cipher: PasswordCipher, **options: Any
    ) -> None:
        super().__init__(schema, **options)
        self.settings = settings
        self.cipher = cipher

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
        )
