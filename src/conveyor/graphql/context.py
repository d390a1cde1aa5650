"""What every resolver gets: the request's loaders, who acts, and the app's services."""

from dataclasses import dataclass, field
from datetime import UTC, datetime

import strawberry
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from conveyor.crypto import PasswordCipher
from conveyor.db.tokens import VerifiedTokens
from conveyor.domain.permissions import Principal
from conveyor.errors import unauthenticated
from conveyor.events.hub import EventHub
from conveyor.graphql.loaders import Loaders
from conveyor.graphql.rate_limits import Headers, RateLimited, TokenRateLimits
from conveyor.settings import Settings


@dataclass
class Context:
    request: Request | WebSocket | None
    response: Response | None
    settings: Settings
    cipher: PasswordCipher
    #: Who acts; None only on a WebSocket that has not sent its connection_init yet.
    principal: Principal | None = None
    _loaders: Loaders | None = field(default=None, init=False, repr=False)
    _now: datetime | None = field(default=None, init=False, repr=False)
    #: The process's fan-out of new events; None where nothing serves subscriptions.
    hub: EventHub | None = None
    #: What a WebSocket client sent in connection_init (set by strawberry).
    connection_params: object = None
    #: The cost of the operation being executed (see graphql.cost), for rate limiting.
    query_cost: int = 0
    #: The process's per-token limits; None where nothing limits (in-process tests).
    rate_limits: TokenRateLimits | None = None
    #: The tokens the process verified lately; None where requests bring no token.
    verified_tokens: VerifiedTokens | None = None

    @property
    def loaders(self) -> Loaders:
        """The request's loaders, made when first used: a WebSocket whose live messages are
        rendered once for all their subscribers (graphql.shared_render) never needs its own,
        and ten thousand sockets would hold 26 kB each for nothing."""
        if self._loaders is None:
            self._loaders = Loaders(now=self.now)
        return self._loaders

    @property
    def now(self) -> datetime:
        """The moment scheduling is decided as of, the same for the whole request. A
        compiled read needs only this, and building the loaders to learn it cost ~8 % of a
        100-task pipeline page's CPU."""
        if self._loaders is not None:
            # A subscription's loaders move it on for each message (Loaders.forget).
            return self._loaders.now
        if self._now is None:
            self._now = datetime.now(UTC)
        return self._now

    @property
    def acting(self) -> Principal:
        """The principal of the request; resolvers only run for authenticated ones."""
        if self.principal is None:
            raise unauthenticated("send an API token: Authorization: Bearer <token>")
        return self.principal

    async def spend(self, cost: int) -> RateLimited | None:
        """Spend `cost` from the token's allowance; the refusal if it has not that much left."""
        if self.rate_limits is None or self.principal is None or self.principal.token_id is None:
            return None
        headers: Headers = self.response.headers if self.response is not None else {}
        try:
            await self.rate_limits.take_cost(self.principal.token_id, cost, headers)
        except RateLimited as limited:
            if self.response is not None:
                self.response.status_code = 429
            return limited
        return None


Info = strawberry.Info[Context, None]
