"""Sessions on target instances, kept open between tasks: one pool per instance in a worker.

A session is opened by `targets.connect`, so every rule of a new connection (allowed options,
address pinning, instance networks, the refusal of Conveyor's own database) holds for it as for
one opened per task. A pool holds at most the instance's `maxRunningTasks` sessions, open or
idle, over all its databases. A session is reset (role, settings, temporary tables, session
advisory locks) when it is given back (a transactional change resets it with its COMMIT, in
one round trip), or closed instead when its attempt was canceled (a late
cancel must not hit the next task's statement) or when the instance's address, credentials or
options changed; it is checked (`SELECT 1`) before it is reused, unless its reset was under
ALIVE_BYPASS_SECONDS ago. A session idle for IDLE_SECONDS is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass, field

import asyncpg

from conveyor.runner import targets
from conveyor.runner.targets import Target

logger = logging.getLogger(__name__)

_Connection = targets.Connection
_HEALTH_CHECK = "SELECT 1"
#: A session given back (and reset, which proves it alive) this recently is reused without a
#: check of its own: HikariCP's "alive bypass window" (500 ms), for the same reason, a round
#: trip per task at a high rate of tasks.
ALIVE_BYPASS_SECONDS = 0.5
#: A session idle this long is closed: the target's connection slots are not ours to hoard.
IDLE_SECONDS = 30.0


def _identity(target: Target) -> Hashable:
    """Everything that decides where, and as whom, a session of `target` is: a change to any
    of it retires the instance's pool."""
    return (
        target.host,
        target.port,
        target.user,
        target.password,
        tuple(sorted(target.options.items())),
        target.networks,
        target.conveyor_database,
    )


@dataclass
class _InstancePool:
    identity: Hashable
    limit: int
    #: Idle sessions by database, each with the monotonic time it became idle.
    idle: dict[str | None, list[tuple[_Connection, float]]] = field(default_factory=dict)
    open: int = 0
    retired: bool = False

    def take_idle(self, database: str | None) -> tuple[_Connection, float] | None:
        """An idle session on `database` and the monotonic time it became idle."""
        sessions = self.idle.get(database)
        return sessions.pop() if sessions else None

    def idle_elsewhere(self, database: str | None) -> _Connection | None:
        for name, sessions in self.idle.items():
            if name != database and sessions:
                return sessions.pop(0)[0]
        return None

    def idle_since_before(self, moment: float) -> list[_Connection]:
        """Remove and return the sessions idle since before `moment`."""
        stale: list[_Connection] = []
        for sessions in self.idle.values():
            stale += [connection for connection, since in sessions if since < moment]
            sessions[:] = [(connection, since) for connection, since in sessions if since >= moment]
        return stale


class TargetSessions:
    """The worker's open sessions on its targets, pooled per instance."""

    def __init__(self, idle_seconds: float = IDLE_SECONDS, *, reset_on_return: bool = True) -> None:
        self._pools: dict[int, _InstancePool] = {}
        self._idle_seconds = idle_seconds
        #: False only for sessions whose users change nothing in them (the checks' probes read
        #: the catalog): a session is then given back as it is, without the reset's round trip.
        self._reset_on_return = reset_on_return

    def _pool(self, instance_id: int, target: Target, limit: int) -> _InstancePool:
        identity = _identity(target)
        pool = self._pools.get(instance_id)
        if pool is not None and pool.identity != identity:
            # The instance moved or its credentials changed: no session of the old one is
            # used again; busy ones are closed as they come back.
            pool.retired = True
            for sessions in pool.idle.values():
                for connection, _ in sessions:
                    connection.terminate()
            pool = None
        if pool is None:
            pool = self._pools[instance_id] = _InstancePool(identity, limit)
        pool.limit = limit
        return pool

    @contextlib.asynccontextmanager
    async def session(
        self, instance_id: int, limit: int, target: Target, reusable: Callable[[], bool]
    ) -> AsyncIterator[_Connection]:
        """A session on `target` for one attempt; `reusable` says, once the attempt is over,
        whether the session may serve another."""
        await self._close_stale()
        pool = self._pool(instance_id, target, limit)
        connection = await self._take(pool, target)
        try:
            yield connection
        finally:
            await self._give_back(pool, target, connection, reusable())

    async def _close_stale(self) -> None:
        moment = time.monotonic() - self._idle_seconds
        for pool in self._pools.values():
            stale = pool.idle_since_before(moment)
            pool.open -= len(stale)
            await asyncio.gather(*(targets.close(connection) for connection in stale))

    async def _take(self, pool: _InstancePool, target: Target) -> _Connection:
        while (idle := pool.take_idle(target.database)) is not None:
            connection, since = idle
            if connection.is_closed():
                pool.open -= 1
                continue
            if time.monotonic() - since < ALIVE_BYPASS_SECONDS:
                return connection
            try:
                await connection.fetchval(_HEALTH_CHECK, timeout=target.connect_timeout)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
                # The server closed it, restarted, or failed over: open a fresh one.
                pool.open -= 1
                connection.terminate()
                continue
            return connection
        if pool.open >= pool.limit:
            # Room for this database's session, made by closing an idle one of another.
            other = pool.idle_elsewhere(target.database)
            if other is not None:
                pool.open -= 1
                other.terminate()
        connection = await targets.connect(target)
        pool.open += 1
        return connection

    async def _give_back(
        self, pool: _InstancePool, target: Target, connection: _Connection, reusable: bool
    ) -> None:
        keep = (
            reusable
            and not pool.retired
            and not connection.is_closed()
            and not connection.is_in_transaction()
            and pool.open <= pool.limit
        )
        if keep and self._reset_on_return and not targets.was_reset(connection):
            try:
                await connection.execute(targets.SESSION_RESET, timeout=target.connect_timeout)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
                keep = False
        if keep:
            pool.idle.setdefault(target.database, []).append((connection, time.monotonic()))
            return
        pool.open -= 1
        await targets.close(connection)

    async def close(self) -> None:
        """Close every idle session; busy ones close as they come back."""
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.retired = True
            idle = [connection for sessions in pool.idle.values() for connection, _ in sessions]
            pool.idle.clear()
            await asyncio.gather(*(targets.close(connection) for connection in idle))
