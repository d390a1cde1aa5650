"""Per-token rate limits on requests and on query cost, reported in the standard headers.

The counters live in the `limits` library's storage named by `CONVEYOR_RATE_LIMIT_STORAGE`:
in memory by default, where each process counts for itself (N API replicas behind a load
balancer allow a token up to N times the limit), or in Redis (`redis://host:6379/0`), shared
by every replica, which then allow the limit once. The headers follow the IETF draft
"RateLimit header fields for HTTP": `RateLimit-Policy` names both limits, `RateLimit` gives
what is left of each, and the older `RateLimit-Limit`/`-Remaining`/`-Reset` trio, which most
clients read, describes the request limit. The cost of an operation is spent after its
document is validated, before it runs (see graphql.cost).
"""

import logging
import math
import time
from dataclasses import dataclass
from typing import Protocol

from limits import RateLimitItem, RateLimitItemPerMinute
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string

from conveyor.errors import ConveyorError, ErrorCode, Problem

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 60
#: The prefix of `limits`' asynchronous storages (`async+redis://`, `async+memory://`).
_ASYNC = "async+"


def async_storage_uri(uri: str) -> str:
    """The `limits` URI of the asynchronous storage behind `uri` (`redis://...`, `memory://`)."""
    return uri if uri.startswith(_ASYNC) else _ASYNC + uri


class Headers(Protocol):
    def __setitem__(self, key: str, value: str, /) -> None: ...


@dataclass(frozen=True)
class Allowance:
    """What is left of one limit for one token."""

    policy: str
    limit: int
    remaining: int
    reset_seconds: int


class RateLimited(ConveyorError):
    def __init__(self, allowance: Allowance) -> None:
        super().__init__(
            [
                Problem(
                    ErrorCode.RATE_LIMITED,
                    f"this token has used its {allowance.limit} {allowance.policy} per minute; "
                    f"try again in {allowance.reset_seconds} s",
                )
            ],
            details={"policy": allowance.policy, "retryAfter": allowance.reset_seconds},
        )
        self.allowance = allowance


class _Limit:
    def __init__(self, policy: str, per_minute: int, limiter: SlidingWindowCounterRateLimiter):
        self.policy = policy
        self.item: RateLimitItem = RateLimitItemPerMinute(per_minute)
        self._limiter = limiter

    async def allowance(self, token_id: int) -> Allowance:
        stats = await self._limiter.get_window_stats(self.item, self.policy, str(token_id))
        return Allowance(
            self.policy,
            self.item.amount,
            max(stats.remaining, 0),
            max(math.ceil(stats.reset_time - time.time()), 1),
        )

    async def take(self, token_id: int, amount: int) -> Allowance:
        """Spend `amount` of the token's allowance, or raise RateLimited spending nothing."""
        taken = await self._limiter.hit(self.item, self.policy, str(token_id), cost=amount)
        allowance = await self.allowance(token_id)
        if not taken:
            raise RateLimited(allowance)
        return allowance


class TokenRateLimits:
    """The limits of every token, counted in `storage` (a `limits` storage URI); a limit of 0
    is no limit."""

    def __init__(
        self, *, requests_per_minute: int, cost_per_minute: int, storage: str = "memory://"
    ) -> None:
        limiter = SlidingWindowCounterRateLimiter(
            # Every failure of the storage as one StorageError, whatever the client library.
            storage_from_string(async_storage_uri(storage), wrap_exceptions=True)
        )
        self._storage_unreachable = False
        self.requests = (
            _Limit("requests", requests_per_minute, limiter) if requests_per_minute else None
        )
        self.cost = _Limit("cost", cost_per_minute, limiter) if cost_per_minute else None

    async def take_request(self, token_id: int, headers: Headers) -> None:
        if self.requests is not None:
            await self._take(self.requests, token_id, 1, headers)

    async def take_cost(self, token_id: int, cost: int, headers: Headers) -> None:
        if self.cost is not None and cost > 0:
            await self._take(self.cost, token_id, cost, headers)

    async def _take(self, limit: _Limit, token_id: int, amount: int, headers: Headers) -> None:
        try:
            try:
                await limit.take(token_id, amount)
            except RateLimited as limited:
                headers["Retry-After"] = str(limited.allowance.reset_seconds)
                raise
            finally:
                await self._describe(token_id, headers)
        except StorageError as error:
            # Open, not closed: an unreachable Redis must not take the API down with it; the
            # limits hold again as soon as it answers.
            if not self._storage_unreachable:
                self._storage_unreachable = True
                logger.warning(
                    "rate limits: their storage is unreachable (%s); requests are not limited "
                    "until it is back",
                    type(error.storage_error).__name__,
                )
        else:
            if self._storage_unreachable:
                self._storage_unreachable = False
                logger.info("rate limits: their storage is back")

    async def _describe(self, token_id: int, headers: Headers) -> None:
        limits = [limit for limit in (self.requests, self.cost) if limit is not None]
        allowances = [await limit.allowance(token_id) for limit in limits]
        headers["RateLimit-Policy"] = ", ".join(
            f'"{a.policy}";q={a.limit};w={WINDOW_SECONDS}' for a in allowances
        )
        headers["RateLimit"] = ", ".join(
            f'"{a.policy}";r={a.remaining};t={a.reset_seconds}' for a in allowances
        )
        requests = next((a for a in allowances if a.policy == "requests"), None)
        if requests is not None:
            headers["RateLimit-Limit"] = str(requests.limit)
            headers["RateLimit-Remaining"] = str(requests.remaining)
            headers["RateLimit-Reset"] = str(requests.reset_seconds)
