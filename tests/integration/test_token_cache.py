"""A process trusts a token it verified for `CONVEYOR_TOKEN_CACHE_SECONDS` without looking it
up again; a revocation reaches every process at once through its LISTEN connection, an expiry
is checked on every request, and nothing outlives the cache's time."""

import asyncio
import time
from datetime import timedelta

from tortoise.contrib.test import TortoiseContext

from conveyor.db.models import ApiToken
from conveyor.db.task_status import now_utc
from conveyor.db.tokens import VerifiedTokens, issue_token, revoke_token
from conveyor.domain.permissions import SYSTEM, Principal, Role
from conveyor.events.listener import EventListener
from tests.conftest import counting_statements

#: How long a notification may take to reach a listener here: a deadline, not a benchmark.
NOTIFICATION_DEADLINE_SECONDS = 5.0


async def _listening(listener: EventListener) -> None:
    deadline = time.monotonic() + NOTIFICATION_DEADLINE_SECONDS
    while not listener.connected:
        assert time.monotonic() < deadline, "the listener did not connect"
        await asyncio.sleep(0.01)


async def _refused_within_deadline(cache: VerifiedTokens, token: str) -> Principal | None:
    deadline = time.monotonic() + NOTIFICATION_DEADLINE_SECONDS
    principal = await cache.authenticate(token)
    while principal is not None and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
        principal = await cache.authenticate(token)
    return principal


async def test_a_verified_token_is_not_looked_up_again_within_the_cache_time(
    db: TortoiseContext,
) -> None:
    issued = await issue_token(SYSTEM, "dora", Role.DEVELOPER)
    cache = VerifiedTokens(seconds=60)
    uncached = VerifiedTokens(seconds=0)

    with counting_statements() as cached_statements:
        first = await cache.authenticate(issued.token)
        second = await cache.authenticate(issued.token)
    with counting_statements() as uncached_statements:
        await uncached.authenticate(issued.token)
        await uncached.authenticate(issued.token)

    assert first == second
    assert second is not None
    assert (second.actor, second.role) == ("dora", Role.DEVELOPER)
    lookups = [sql for sql in cached_statements.statements if "api_token" in sql]
    assert len([sql for sql in lookups if sql.startswith("SELECT")]) == 1
    assert len([s for s in uncached_statements.statements if s.startswith("SELECT")]) == 2


async def test_a_revocation_reaches_every_process_at_once_through_its_listener(
    db: TortoiseContext, database_url: str
) -> None:
    """Two processes (each its own cache and LISTEN connection, as two replicas have) trust a
    token for a minute; revoked in one, it is refused by both well before that."""
    issued = await issue_token(SYSTEM, "leaver", Role.DBA)
    caches = [VerifiedTokens(seconds=60), VerifiedTokens(seconds=60)]
    listeners = [EventListener(database_url, cache.forget_all) for cache in caches]
    for listener in listeners:
        await listener.start()
    try:
        for listener in listeners:
            await _listening(listener)
        for cache in caches:
            assert await cache.authenticate(issued.token) is not None

        await revoke_token(SYSTEM, issued.row.id)
        refused = [await _refused_within_deadline(cache, issued.token) for cache in caches]
    finally:
        for listener in listeners:
            await listener.stop()

    assert refused == [None, None]


async def test_a_token_revoked_where_nothing_notifies_is_refused_after_the_cache_time(
    db: TortoiseContext,
) -> None:
    """The bound for what no notification tells: a row changed by hand, a missed notification."""
    issued = await issue_token(SYSTEM, "by-hand", Role.VIEWER)
    cache = VerifiedTokens(seconds=0.5)
    assert await cache.authenticate(issued.token) is not None

    await ApiToken.filter(id=issued.row.id).update(revoked_at=now_utc())
    within = await cache.authenticate(issued.token)
    await asyncio.sleep(0.6)
    after = await cache.authenticate(issued.token)

    assert within is not None, "trusted for the cache's time, as documented"
    assert after is None


async def test_an_expired_token_is_refused_at_once_from_the_cache(db: TortoiseContext) -> None:
    expires_at = now_utc() + timedelta(seconds=1)
    issued = await issue_token(SYSTEM, "brief", Role.VIEWER, expires_at=expires_at)
    cache = VerifiedTokens(seconds=60)
    assert await cache.authenticate(issued.token) is not None

    await asyncio.sleep(max(0.0, (expires_at - now_utc()).total_seconds()) + 0.05)

    assert await cache.authenticate(issued.token) is None


async def test_a_lookup_that_a_revocation_overtook_is_not_kept(db: TortoiseContext) -> None:
    """A lookup that read the row before a revocation was heard must not refill the cache."""
    issued = await issue_token(SYSTEM, "racer", Role.VIEWER)
    # A pooled connection open already: the lookup below sends its statement at once.
    assert await VerifiedTokens(seconds=0).authenticate(issued.token) is not None
    cache = VerifiedTokens(seconds=60)
    lookup = asyncio.create_task(cache.authenticate(issued.token))
    await asyncio.sleep(0)  # the lookup is on its way
    await ApiToken.filter(id=issued.row.id).update(revoked_at=now_utc())
    cache.forget_all()  # what the revocation's notification does
    await lookup

    assert await cache.authenticate(issued.token) is None
