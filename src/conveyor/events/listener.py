"""The one LISTEN connection of a process: it hears the newest event sequence number, and
token revocations.

A notification only wakes its listeners up; they still read the event table (or poll), since
a connection that drops misses notifications for good.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import asyncpg

from conveyor.db.events import CHANNEL, RUNNER_CHANNEL
from conveyor.db.outages import Outage
from conveyor.db.tokens import REVOKED_CHANNEL

logger = logging.getLogger(__name__)

#: How the connection shows in pg_stat_activity (an operator may look for it, or end it).
APPLICATION_NAME = "conveyor-listener"
HEALTH_CHECK_SECONDS = 15.0


class EventListener:
    """Holds a LISTEN connection open, reconnecting whenever it drops."""

    def __init__(
        self, database_url: str, on_token_revoked: Callable[[], None] | None = None
    ) -> None:
        self._database_url = database_url
        #: Called on each revocation, and on each (re)connection: some may have been missed.
        self._on_token_revoked = on_token_revoked
        self._wakeups: set[asyncio.Event] = set()
        #: The subscribers not woken by the runner's own transitions (RUNNER_CHANNEL).
        self._wakeups_without_runner: set[asyncio.Event] = set()
        self._task: asyncio.Task[None] | None = None
        self.latest_sequence = 0
        #: Whether the LISTEN connection is up (readiness).
        self.connected = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="conveyor-event-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def subscribe(self, *, runner_transitions: bool = True) -> asyncio.Event:
        """An event set on every notification (and on every reconnect, since some may have
        been missed); the subscriber clears it. Without `runner_transitions`, not on those
        of the runner's own claims and ends of attempts."""
        wakeup = asyncio.Event()
        (self._wakeups if runner_transitions else self._wakeups_without_runner).add(wakeup)
        return wakeup

    def unsubscribe(self, wakeup: asyncio.Event) -> None:
        self._wakeups.discard(wakeup)
        self._wakeups_without_runner.discard(wakeup)

    def _wake_all(self, *, runner_transitions_only: bool = False) -> None:
        for wakeup in self._wakeups:
            wakeup.set()
        if not runner_transitions_only:
            for wakeup in self._wakeups_without_runner:
                wakeup.set()

    def _note_sequence(self, channel: str, payload: object) -> None:
        try:
            self.latest_sequence = max(self.latest_sequence, int(str(payload)))
        except ValueError:
            logger.warning("ignored a malformed notification on %s", channel)

    def _on_notification(self, connection: object, pid: int, channel: str, payload: object) -> None:
        self._note_sequence(channel, payload)
        self._wake_all()

    def _on_runner_notification(
        self, connection: object, pid: int, channel: str, payload: object
    ) -> None:
        self._note_sequence(channel, payload)
        self._wake_all(runner_transitions_only=True)

    def _on_revocation(self, connection: object, pid: int, channel: str, payload: object) -> None:
        if self._on_token_revoked is not None:
            self._on_token_revoked()

    async def _run(self) -> None:
        outage = Outage(logger, "event listener")
        while True:
            try:
                await self._listen(outage)
            except Exception as error:
                await asyncio.sleep(outage.failed(error))

    async def _listen(self, outage: Outage) -> None:
        """LISTEN until the connection is lost: raises when it cannot connect or fails."""
        connection = await asyncpg.connect(
            self._database_url, server_settings={"application_name": APPLICATION_NAME}
        )
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _connection: lost.set())
        try:
            await connection.add_listener(CHANNEL, self._on_notification)
            await connection.add_listener(RUNNER_CHANNEL, self._on_runner_notification)
            await connection.add_listener(REVOKED_CHANNEL, self._on_revocation)
            self.connected = True
            outage.succeeded()
            # Anything committed while we were not listening was missed: wake everyone.
            self._wake_all()
            if self._on_token_revoked is not None:
                self._on_token_revoked()
            while not lost.is_set():
                # A half-open connection (a vanished server) never says it is lost.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), HEALTH_CHECK_SECONDS)
                if not lost.is_set():
                    await connection.fetchval("SELECT 1", timeout=HEALTH_CHECK_SECONDS)
            raise ConnectionResetError("the LISTEN connection was lost")
        finally:
            self.connected = False
            if not connection.is_closed():
                await connection.close()


@contextlib.asynccontextmanager
async def running_listener(
    database_url: str, on_token_revoked: Callable[[], None] | None = None
) -> AsyncIterator[EventListener]:
    """The process's LISTEN connection, for the life of the context; `on_token_revoked` is
    called when a token is revoked, or may have been while the connection was down."""
    listener = EventListener(database_url, on_token_revoked)
    await listener.start()
    try:
        yield listener
    finally:
        await listener.stop()
