"""One rendering of each event for every subscriber that asked for the same thing.

Subscribers whose document, variables and caller (the inputs that decide what a message
holds) are the same join one shared stream: the stream renders each event once, as one
encoded payload, and hands that same payload to each of its members, whose only cost is
writing it to their socket. Each stream renders in its own task, so a burst of events on
one pipeline delays only that pipeline's subscribers, and a distribution yields to the
event loop every few hundred subscribers, so no turn of the loop serves thousands. A stream
catching up with a backlog (a burst) renders its next batch only once no live stream has an
event to render or hand out (`Priority`): the others' events wait for at most the batch in
progress, not for their turns between the burst's.
"""

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Protocol

from conveyor.db.events import EventFilter, EventHeader
from conveyor.db.models import Event
from conveyor.db.outages import Outage

logger = logging.getLogger(__name__)

#: Events rendered together: they share one read of the rows they show. Small enough that
#: the part of a batch's rendering done in one turn of the event loop stays a few ms.
RENDER_BATCH_SIZE = 20
#: Members served per turn of the event loop.
DELIVERIES_PER_TURN = 256
#: The longest a stream catching up waits for the live ones between two of its batches:
#: under a steady flow of live events a burst still moves.
CATCH_UP_WAIT_SECONDS = 0.5

#: Renders a batch of events: one encoded payload for each, in order.
Render = Callable[[list[Event]], Awaitable[list[bytes]]]


class Member(Protocol):
    """A subscriber in a shared stream."""

    #: The sequence of the last event handed to the subscriber; it is given only newer ones.
    last_delivered: int

    def deliver(self, sequence: int, payload: bytes) -> bool:
        """Hand over one payload; False when the subscriber has ended (e.g. fell behind)."""
        ...


@dataclass(frozen=True)
class Sharing:
    """How a subscriber shares with others: `key` names its document, variables and caller;
    `render` makes the payloads of that key; `deliver` writes one to this subscriber (False
    once it has ended, e.g. fell too far behind)."""

    key: Hashable
    render: Render
    deliver: Callable[[int, bytes], bool]


class Priority:
    """Live streams before streams catching up: counts the streams with a live event to
    render or hand out, and lets the others wait until there are none."""

    def __init__(self) -> None:
        self._live = 0
        self._calm = asyncio.Event()
        self._calm.set()

    def hold(self) -> None:
        self._live += 1
        self._calm.clear()

    def release(self) -> None:
        self._live -= 1
        if not self._live:
            self._calm.set()

    async def calm(self) -> None:
        """Until no live stream has work, or `CATCH_UP_WAIT_SECONDS`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._calm.wait(), CATCH_UP_WAIT_SECONDS)


class SharedStream:
    """The subscribers of one key and one filter: renders each matching event once."""

    def __init__(
        self, event_filter: EventFilter, key: Hashable, render: Render, priority: Priority
    ) -> None:
        self.event_filter = event_filter
        self.key = key
        self.members: set[Member] = set()
        self._render = render
        self._priority = priority
        #: Whether the stream counts as live in `priority` (it has an event and no backlog).
        self._holding = False
        self._pending: deque[EventHeader] = deque()
        self._arrived = asyncio.Event()
        self._last_enqueued = 0
        self._outage = Outage(logger, "live updates' rendering")
        self._task = asyncio.create_task(self._run(), name="conveyor-shared-stream")

    def enqueue(self, event: EventHeader) -> None:
        if event.id <= self._last_enqueued:
            return
        self._last_enqueued = event.id
        if not self._pending:
            self._hold(True)
        self._pending.append(event)
        self._arrived.set()

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._hold(False)

    def _hold(self, live: bool) -> None:
        if live and not self._holding:
            self._priority.hold()
        elif not live and self._holding:
            self._priority.release()
        self._holding = live

    async def _run(self) -> None:
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            while self._pending:
                catching_up = len(self._pending) > RENDER_BATCH_SIZE
                self._hold(not catching_up)
                if catching_up:
                    await self._priority.calm()
                count = min(len(self._pending), RENDER_BATCH_SIZE)
                batch = [self._pending.popleft() for _ in range(count)]
                try:
                    payloads = await self._render([event.row() for event in batch])
                except Exception as error:
                    # Nothing is skipped: the batch is rendered again once the database answers.
                    self._pending.extendleft(reversed(batch))
                    await asyncio.sleep(self._outage.failed(error))
                    continue
                self._outage.succeeded()
                for event, payload in zip(batch, payloads, strict=True):
                    await self._distribute(event.id, payload)
            self._hold(False)

    async def _distribute(self, sequence: int, payload: bytes) -> None:
        for served, member in enumerate(list(self.members), start=1):
            if sequence > member.last_delivered and member in self.members:
                if member.deliver(sequence, payload):
                    member.last_delivered = sequence
                else:
                    self.members.discard(member)
            if served % DELIVERIES_PER_TURN == 0:
                await asyncio.sleep(0)
