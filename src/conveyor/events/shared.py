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

At thousands of subscribers what a distribution costs is reaching each subscriber's objects
in memory, not the Python that runs: on this kind of machine (a VM, 4 KiB pages) an object not
in the caches costs ~1 µs to touch, and handing a payload to a subscriber through its member,
its sharing, its operation and its connection touched some twenty of them. A subscriber whose
socket may be written to at once has a `Seat`: one object holding all the stream reads and
writes for it, so that a message costs its seat, its transport and the socket write.
"""

import asyncio
import bisect
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

    #: The sequence of the last event handed to the subscriber through `deliver`; it is
    #: given only newer ones. (What its seat, if it has one, wrote is the seat's to say.)
    last_delivered: int

    def deliver(self, sequence: int, payload: bytes) -> bool:
        """Hand over one payload; False when the subscriber has ended (e.g. fell behind)."""
        ...


class Transport(Protocol):
    """What a stream uses of a subscriber's asyncio transport."""

    def write(self, data: bytes) -> None: ...

    def get_write_buffer_size(self) -> int: ...

    def is_closing(self) -> bool: ...


class Envelope(Protocol):
    """Makes of rendered payloads the bytes a subscriber's socket is written: each in its
    operation's message, framed, one after the other. Shared by the subscribers it wraps
    alike, so it keeps the bytes of the last payloads it wrapped for the next of them."""

    def wrap(self, payloads: list[bytes]) -> bytes: ...


class Seat(Protocol):
    """A subscriber's socket, written to by its stream in the turn an event is distributed,
    while `open` (nothing of the subscriber's waits to be written before it)."""

    open: bool
    #: The sequence of the last event written to the socket.
    last_written: int

    @property
    def transport(self) -> Transport: ...

    @property
    def envelope(self) -> Envelope: ...


@dataclass(frozen=True)
class Sharing:
    """How a subscriber shares with others: `key` names its document, variables and caller;
    `render` makes the payloads of that key; `deliver` writes one to this subscriber (False
    once it has ended, e.g. fell too far behind). `seat`, if the subscriber has one, is the
    way to write to it directly while it is open."""

    key: Hashable
    render: Render
    deliver: Callable[[int, bytes], bool]
    seat: Seat | None = None


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
        self._seats: dict[Member, Seat] = {}
        #: The member of each seat: a distribution reads seats only (a tuple per member per
        #: event would cost allocations and collections of the youngest generation).
        self._seated: dict[Seat, Member] = {}
        self._unseated: set[Member] = set()
        #: Counts joins and departures: a distribution that gave the loop a turn checks
        #: membership again only when this moved.
        self._membership_changes = 0
        self._render = render
        self._priority = priority
        #: Whether the stream counts as live in `priority` (it has an event and no backlog).
        self._holding = False
        self._pending: deque[EventHeader] = deque()
        self._arrived = asyncio.Event()
        self._last_enqueued = 0
        self._outage = Outage(logger, "live updates' rendering")
        self._task = asyncio.create_task(self._run(), name="conveyor-shared-stream")

    def join(self, member: Member, seat: Seat | None) -> None:
        self.members.add(member)
        if seat is None:
            self._unseated.add(member)
        else:
            self._seats[member] = seat
            self._seated[seat] = member
        self._membership_changes += 1

    def leave(self, member: Member) -> None:
        self.members.discard(member)
        self._unseated.discard(member)
        seat = self._seats.pop(member, None)
        if seat is not None:
            del self._seated[seat]
        self._membership_changes += 1

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
                await self._distribute([event.id for event in batch], payloads)
            self._hold(False)

    async def _distribute(self, sequences: list[int], payloads: list[bytes]) -> None:
        """Hands every member the batch's payloads it has not had yet, in order: an open seat
        gets them in one write (one system call however many events the batch has)."""
        changes = self._membership_changes
        first, last = sequences[0], sequences[-1]
        served = 0
        for seat in list(self._seated):
            if self._membership_changes != changes and seat not in self._seated:
                continue
            written = seat.last_written
            if not seat.open:
                self._hand(self._seated[seat], sequences, payloads)
            elif last > written:
                transport = seat.transport
                # A transport holding bytes may be above its high-water mark: the member's
                # own `deliver` decides whether that socket takes more.
                if transport.get_write_buffer_size():
                    self._hand(self._seated[seat], sequences, payloads)
                # A closing transport drops them: its handler ends with its read loop.
                elif not transport.is_closing():
                    if written < first:
                        transport.write(seat.envelope.wrap(payloads))
                    else:
                        newer = bisect.bisect_right(sequences, written)
                        transport.write(seat.envelope.wrap(payloads[newer:]))
                    seat.last_written = last
            served += 1
            if served % DELIVERIES_PER_TURN == 0:
                await asyncio.sleep(0)
        for member in list(self._unseated):
            if member in self._unseated:
                self._hand(member, sequences, payloads)
            served += 1
            if served % DELIVERIES_PER_TURN == 0:
                await asyncio.sleep(0)

    def _hand(self, member: Member, sequences: list[int], payloads: list[bytes]) -> None:
        """Through the member, payload by payload (its socket's outbox, if it has one)."""
        for sequence, payload in zip(sequences, payloads, strict=True):
            if sequence <= member.last_delivered:
                continue
            if not member.deliver(sequence, payload):
                self.leave(member)
                return
            member.last_delivered = sequence
