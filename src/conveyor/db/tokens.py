"""API tokens: issued once, kept as digests, checked on every request, revoked for good."""

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.connection import get_connection
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from conveyor.db.models import ApiToken
from conveyor.db.task_status import now_utc
from conveyor.domain.permissions import SYSTEM, Operation, Principal, Role, require
from conveyor.domain.plan import TITLE_MAX_LENGTH, check_length, check_name
from conveyor.errors import ConveyorError, ErrorCode, Problem, conflict, not_found

#: Marks Conveyor's tokens, so that secret scanners and people can recognise one.
TOKEN_PREFIX = "cvy_"
#: How many characters of a token are kept in clear, to tell tokens apart.
SHOWN_PREFIX_LENGTH = 10
#: `last_used_at` is written at most this often per token: a read must not become a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)
#: Any constant unique to Conveyor: replicas starting together create one first token.
_BOOTSTRAP_LOCK_KEY = 7_437_812_001
#: Notified (with the token's id) when a token is revoked: every process forgets the tokens
#: it verified (see VerifiedTokens).
REVOKED_CHANNEL = "conveyor_token_revoked"


def digest(token: str) -> str:
    """What is stored of a token. Tokens are 256 random bits, so a plain SHA-256 is enough:
    there is nothing to guess that a slow hash would protect."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    row: ApiToken
    #: The token itself: shown to its creator once, never stored.
    token: str


async def issue_token(
    principal: Principal,
    actor: str,
    role: Role,
    *,
    description: str = "",
    expires_at: datetime | None = None,
) -> IssuedToken:
    """Create a token acting as `actor` with `role`."""
    require(principal, Operation.MANAGE_TOKENS)
    problems = check_name(actor, ("input", "actor"))
    problems += check_length(description, ("input", "description"), TITLE_MAX_LENGTH)
    if expires_at is not None and expires_at <= now_utc():
        problems.append(
            Problem(ErrorCode.INVALID_INPUT, "must be in the future", ("input", "expiresAt"))
        )
    if problems:
        raise ConveyorError(problems)
    return await _new_token(
        actor=actor.strip(),
        role=role,
        description=description,
        created_by=principal.actor,
        expires_at=expires_at,
    )


async def _new_token(using_db: BaseDBAsyncClient | None = None, **columns: Any) -> IssuedToken:
    """A new random token and its row, which keeps only the digest and the prefix."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = await ApiToken.create(
        using_db=using_db, digest=digest(token), prefix=token[:SHOWN_PREFIX_LENGTH], **columns
    )
    return IssuedToken(row, token)


async def revoke_token(principal: Principal, token_id: int) -> ApiToken:
    """Revoke a token: every request and live subscription made with it is refused from now."""
    require(principal, Operation.MANAGE_TOKENS)
    async with in_transaction() as connection:
        row = await ApiToken.filter(id=token_id).select_for_update().using_db(connection).first()
        if row is None:
            raise not_found("API token", ("input", "id"))
        if row.revoked_at is not None:
            raise conflict("the token is revoked already", ("input", "id"))
        row.revoked_at = now_utc()
        row.revoked_by = principal.actor
        await row.save(using_db=connection, update_fields=["revoked_at", "revoked_by"])
        # Delivered on commit, to every process's listener (VerifiedTokens.forget_all).
        await connection.execute_query("SELECT pg_notify($1, $2)", [REVOKED_CHANNEL, str(row.id)])
    return row


async def list_tokens(principal: Principal, *, include_revoked: bool) -> list[ApiToken]:
    require(principal, Operation.MANAGE_TOKENS)
    tokens = ApiToken.all() if include_revoked else ApiToken.filter(revoked_at__isnull=True)
    return await tokens.order_by("id")


async def tokens_by_id(principal: Principal, token_ids: set[int]) -> dict[int, ApiToken]:
    require(principal, Operation.MANAGE_TOKENS)
    return {row.id: row for row in await ApiToken.filter(id__in=token_ids)} if token_ids else {}


_AUTHENTICATE = (
    "SELECT id, actor, role, expires_at, last_used_at FROM api_token "
    "WHERE digest = $1 AND revoked_at IS NULL"
)


async def authenticate(token: str) -> Principal | None:
    """The principal a token stands for, or None if it is unknown, revoked or expired."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    # A constant statement, not a query built by the ORM: this runs before every request,
    # and building the query cost more than the round trip (py-spy on a 100-task read).
    rows = await get_connection("default").execute_query_dict(_AUTHENTICATE, [digest(token)])
    now = now_utc()
    if not rows:
        return None
    row = rows[0]
    expires_at, last_used_at = row["expires_at"], row["last_used_at"]
    if expires_at is not None and expires_at <= now:
        return None
    if last_used_at is None or now - last_used_at > LAST_USED_RESOLUTION:
        await ApiToken.filter(id=row["id"]).update(last_used_at=now)
    return Principal(
        actor=row["actor"], role=Role(row["role"]), token_id=row["id"], expires_at=expires_at
    )


class VerifiedTokens:
    """The principals of tokens this process verified less than `seconds` ago, by digest, so
    that a request costs no lookup (a round trip, and about a tenth of a small read's CPU).

    What a cached entry may let through, and for how long:
    - an expired token: never, its expiry is checked on every request;
    - a revoked token: not at all in the process that revoked it, and in the others not
      after its revocation's notification arrives (`forget_all`, called by the process's
      LISTEN connection; also on each of its reconnections, since it may have missed some);
      whatever happens to notifications, not longer than `seconds`;
    - a token whose row changed or went away some other way (by hand in SQL): `seconds`.
    Unknown, revoked and expired tokens are never cached. `seconds` 0 turns the cache off."""

    #: Most tokens remembered at once; past it, all are forgotten (each is one lookup away).
    MAX_ENTRIES = 10_000

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._entries: dict[str, tuple[float, Principal]] = {}
        # Bumped by forget_all: a lookup that began before a revocation was heard may have
        # read the row before it was revoked, and is then not kept.
        self._generation = 0

    async def authenticate(self, token: str) -> Principal | None:
        """`authenticate(token)`, from the cache while the entry is fresh."""
        if self.seconds <= 0:
            return await authenticate(token)
        key = digest(token)
        entry = self._entries.get(key)
        clock = time.monotonic()
        if entry is not None:
            verified_at, cached = entry
            if clock - verified_at < self.seconds:
                if cached.expired(now_utc()):
                    del self._entries[key]
                    return None
                return cached
            del self._entries[key]
        generation = self._generation
        principal = await authenticate(token)
        if principal is not None and generation == self._generation:
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
            self._entries[key] = (clock, principal)
        return principal

    def forget_all(self) -> None:
        """Forget every verified token: one was revoked (or a revocation may have been
        missed). The next request of each token looks it up again."""
        self._generation += 1
        self._entries.clear()


async def still_usable(principal: Principal) -> Principal | None:
    """`principal` if its token is still neither revoked nor expired, else None."""
    if principal.token_id is None:
        return principal
    unusable = await unusable_token_ids({principal.token_id})
    return None if unusable else principal


async def unusable_token_ids(token_ids: set[int]) -> set[int]:
    """Those of `token_ids` that are revoked, expired or gone."""
    if not token_ids:
        return set()
    usable = await ApiToken.filter(id__in=token_ids, revoked_at__isnull=True).values_list(
        "id", "expires_at"
    )
    now = now_utc()
    return token_ids - {
        token_id for token_id, expires_at in usable if expires_at is None or expires_at > now
    }


async def issue_first_admin_token(keep: Callable[[str], None]) -> bool:
    """If no usable ADMIN token exists, issue one and hand it to `keep`, which stores it
    for the operator; the token is issued only if `keep` returns. Returns whether it did."""
    async with in_transaction() as connection:
        # Replicas starting together: one issues the token, the others then see it.
        await connection.execute_query("SELECT pg_advisory_xact_lock($1)", [_BOOTSTRAP_LOCK_KEY])
        usable_admin = ApiToken.filter(role=Role.ADMIN, revoked_at__isnull=True).filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=now_utc())
        )
        if await usable_admin.using_db(connection).exists():
            return False
        issued = await _new_token(
            connection,
            actor="admin",
            role=Role.ADMIN,
            description="first admin token, written by `conveyor serve`",
            created_by=SYSTEM.actor,
        )
        keep(issued.token)
    return True
