"""Fan-out of new events to the live subscriptions of one process.

The hub reads each new event from the table once, however many subscribers there are, and
hands it to every subscriber whose filter matches; subscribers that asked for the same thing
share one rendering of it (see `events.shared`) once they are live. A subscriber that falls
more than its buffer behind is dropped (its buffer freed at once) rather than allowed to slow
the others or to grow without bound; it learns the last sequence it was given, and resumes
from there.

Each subscription belongs to a principal: the hub checks, every few seconds and in one query
for all of them, that their tokens are still valid, and ends the subscriptions of a revoked or
expired token with UNAUTHENTICATED.

While Conveyor's database is away both loops retry; nothing is lost, since the hub reads from
the table by sequence and resumes after the last event it handed out.
"""

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Hashable
from datetime import UTC, datetime

from conveyor.db import events as event_log
from conveyor.db import tokens
from conveyor.db.events import EventFilter, EventHeader
from conveyor.db.models import Event
from conveyor.db.outages import Outage
from conveyor.domain.permissions import Principal
from conveyor.errors import ConveyorError, ErrorCode, Problem, unauthenticated
from conveyor.events.listener import EventListener
from conveyor.events.shared import Priority, SharedStream, Sharing

logger = logging.getLogger(__name__)

#: Events read per query by a replay.
READ_BATCH_SIZE = 500
#: Events read per query by the hub: every event after a burst waits until the hub has read
#: the whole burst, and each query is a round trip (2,000 rows: ~15 ms of the loop's time).
HUB_READ_BATCH_SIZE = 2000


class SubscriberTooSlow(ConveyorError):
    """The subscriber fell more than its buffer behind; `last_sequence` is the last event
    it was given."""

    def __init__(self, last_sequence: int) -> None:
        super().__init__(
            [
                Problem(
                    ErrorCode.SUBSCRIBER_TOO_SLOW,
                    "the subscriber fell too far behind and was closed; subscribe again with "
                    f"`after: {last_sequence}` to resume",
                )
            ],
            details={"lastSequence": last_sequence},
        )
        self.last_sequence = last_sequence


def _token_unusable() -> ConveyorError:
    return unauthenticated("the subscription's token was revoked or has expired")


class HubSubscription:
    """One subscriber's bounded buffer of matching events, and where its delivery stands."""

    def __init__(
        self, hub: "EventHub", event_filter: EventFilter, capacity: int, principal: Principal
    ) -> None:
        self.event_filter = event_filter
        self.principal = principal
        #: Why the hub ended the subscription, raised to the subscriber at its next read.
        self.ended: ConveyorError | None = None
        self._hub = hub
        self._capacity = capacity
        self._buffer: deque[EventHeader] = deque()
        self._arrived = asyncio.Event()
        self.overflowed = False
        #: The sequence of the last event handed to the subscriber; older ones are dropped.
        self.last_delivered = 0
        #: The shared stream the subscriber joined once live, if any.
        self.stream: SharedStream | None = None
        #: How the subscriber shares renderings once live (None: it is given events).
        self.sharing: Sharing | None = None

    def offer(self, event: EventHeader) -> bool:
        """Buffer `event`; False (and the buffer freed) when the subscriber is too far behind."""
        if len(self._buffer) >= self._capacity:
            self.overflowed = True
            self._buffer.clear()
            self._arrived.set()
            return False
        self._buffer.append(event)
        self._arrived.set()
        return True

    async def events(
        self, after: int | None = None, sharing: Sharing | None = None
    ) -> AsyncGenerator[Event, None]:
        """Every matching event after `after` (else after the subscription started), in
        sequence order and each once: first the backlog from the table, then live ones.
        With `sharing`, live events are delivered through it, rendered once for all its
        subscribers, instead of yielded; the generator then only ends, by raising why."""
        if after is not None:
            self.last_delivered = after
            while True:
                async for event in self._replay():
                    yield event
                if not self.overflowed:
                    break
                # The live buffer overflowed while the backlog was being sent; every event is
                # in the table, so keep reading from it before going live again.
                self._hub.rejoin(self)
        self.sharing = sharing
        while True:
            yield await self._next_live()

    def deliver(self, sequence: int, payload: bytes) -> bool:
        assert self.sharing is not None, "only a shared subscriber is given payloads"
        return self.sharing.deliver(sequence, payload)

    async def _replay(self) -> AsyncGenerator[Event, None]:
        while True:
            rows = await event_log.events_after(
                self.last_delivered, READ_BATCH_SIZE, self.event_filter
            )
            for row in rows:
                self._check_still_allowed()
                self.last_delivered = row.id
                yield row
            if len(rows) < READ_BATCH_SIZE:
                return

    def end(self, reason: ConveyorError) -> None:
        self.ended = reason
        self._buffer.clear()
        self._arrived.set()

    def _check_still_allowed(self) -> None:
        if self.ended is None and self.principal.expired(datetime.now(UTC)):
            self.end(_token_unusable())
        if self.ended is not None:
            raise self.ended

    async def _next_live(self) -> Event:
        while True:
            self._check_still_allowed()
            if self.overflowed:
                raise SubscriberTooSlow(self.last_delivered)
            while self._buffer:
                event = self._buffer.popleft()
                # Registered before the backlog (or snapshot) was read, the buffer may repeat
                # what the subscriber already has.
                if event.id > self.last_delivered:
                    self.last_delivered = event.id
                    return event.row()
            if self.sharing is not None and self.stream is None:
                # Caught up with everything the hub has read: from here the shared stream
                # delivers, from the next event on.
                self._hub.share(self, self.sharing)
            self._arrived.clear()
            await self._arrived.wait()

    def clear_overflow(self) -> None:
        self.overflowed = False
        self._buffer.clear()
        self._arrived.clear()


class EventHub:
    """Reads new events once per process and fans them out to its subscriptions."""

    def __init__(
        self,
        listener: EventListener,
        *,
        subscriber_buffer: int,
        poll_seconds: float,
        token_check_seconds: float,
    ) -> None:
        self._listener = listener
        self._subscriber_buffer = subscriber_buffer
        self._poll_seconds = poll_seconds
        self._token_check_seconds = token_check_seconds
        self._subscriptions: set[HubSubscription] = set()
        #: The subscriptions the hub hands events to one by one: not in a shared stream.
        self._unshared: set[HubSubscription] = set()
        self._streams: dict[tuple[EventFilter, Hashable], SharedStream] = {}
        #: Shared by the streams: live ones render before those catching up with a burst.
        self._priority = Priority()
        self._closing: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        #: Every event up to this sequence has been handed to the subscriptions.
        self.last_read = 0
        #: Counts since start, for the process's metrics.
        self.events_read = 0
        self.events_handed_out = 0
        self.slow_subscribers_closed = 0

    @property
    def subscriber_count(self) -> int:
        return len(self._subscriptions)

    @property
    def lag(self) -> int:
        """The newest sequence heard of minus the last one handed out."""
        return max(0, self._listener.latest_sequence - self.last_read)

    async def start(self) -> None:
        # Subscribers only ever want what happens from now on, or a replay from the table.
        self.last_read = await event_log.latest_event_sequence()
        self._tasks = [
            asyncio.create_task(self._run(), name="conveyor-event-hub"),
            asyncio.create_task(self._watch_tokens(), name="conveyor-token-watch"),
        ]

    async def stop(self) -> None:
        for stream in self._streams.values():
            await stream.close()
        self._streams = {}
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    @contextlib.asynccontextmanager
    async def subscription(
        self, event_filter: EventFilter, principal: Principal
    ) -> AsyncIterator[HubSubscription]:
        """A subscription of `principal` that receives every matching event read from now on."""
        subscription = HubSubscription(self, event_filter, self._subscriber_buffer, principal)
        # Everything read so far predates the subscription: a subscriber dropped before its
        # first event resumes from here.
        subscription.last_delivered = self.last_read
        self._subscriptions.add(subscription)
        self._unshared.add(subscription)
        try:
            yield subscription
        finally:
            self._forget(subscription)

    def share(self, subscription: HubSubscription, sharing: Sharing) -> None:
        """Move a live subscription, caught up with every event read so far, into the
        shared stream of its filter and key (made at its first member)."""
        key = (subscription.event_filter, sharing.key)
        stream = self._streams.get(key)
        if stream is None:
            stream = self._streams[key] = SharedStream(
                subscription.event_filter, sharing.key, sharing.render, self._priority
            )
        self._unshared.discard(subscription)
        stream.join(subscription, sharing.seat)
        subscription.sharing = sharing
        subscription.stream = stream

    def _forget(self, subscription: HubSubscription) -> None:
        self._subscriptions.discard(subscription)
        self._unshared.discard(subscription)
        stream = subscription.stream
        if stream is None:
            return
        stream.leave(subscription)
        if not stream.members:
            self._streams.pop((stream.event_filter, stream.key), None)
            self._closing.add(asyncio.create_task(stream.close()))
            self._closing = {task for task in self._closing if not task.done()}

    def rejoin(self, subscription: HubSubscription) -> None:
        """Take back a subscription dropped as too slow, with an empty buffer."""
        subscription.clear_overflow()
        self._subscriptions.add(subscription)
        self._unshared.add(subscription)

    async def _run(self) -> None:
        wakeup = self._listener.subscribe()
        outage = Outage(logger, "event hub")
        try:
            while True:
                wakeup.clear()
                wait = self._poll_seconds
                try:
                    await self._read_new_events()
                except Exception as error:
                    # The next wakeup or poll reads again, from the last event handed out.
                    wait = max(wait, outage.failed(error))
                else:
                    outage.succeeded()
                # A notification only wakes the hub; the poll catches any missed while the
                # listener was reconnecting (it also wakes us once it is back).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), wait)
        finally:
            self._listener.unsubscribe(wakeup)

    async def _read_new_events(self) -> None:
        backlog = False
        try:
            while True:
                rows = await event_log.event_headers_after(self.last_read, HUB_READ_BATCH_SIZE)
                for row in rows:
                    self._fan_out(row)
                    self.last_read = row.id
                self.events_read += len(rows)
                if len(rows) < HUB_READ_BATCH_SIZE:
                    return
                if not backlog:
                    # A burst: the events after it, other pipelines' included, come only
                    # once the hub has read it all. Streams catching up wait until then
                    # rather than render the burst's first batches on the loop that reads.
                    backlog = True
                    self._priority.hold()
        finally:
            if backlog:
                self._priority.release()

    async def _watch_tokens(self) -> None:
        outage = Outage(logger, "event hub's token check")
        wait = self._token_check_seconds
        while True:
            await asyncio.sleep(wait)
            try:
                await self.end_subscriptions_of_unusable_tokens()
            except Exception as error:
                wait = min(self._token_check_seconds, outage.failed(error))
            else:
                outage.succeeded()
                wait = self._token_check_seconds

    async def end_subscriptions_of_unusable_tokens(self) -> None:
        """End every subscription whose token is revoked or expired: one query for all."""
        held = {
            subscription.principal.token_id
            for subscription in self._subscriptions
            if subscription.principal.token_id is not None
        }
        unusable = await tokens.unusable_token_ids(held)
        for subscription in list(self._subscriptions):
            if subscription.principal.token_id in unusable:
                self._forget(subscription)
                subscription.end(_token_unusable())

    def _fan_out(self, event: EventHeader) -> None:
        for stream in self._streams.values():
            if stream.event_filter.matches(event):
                stream.enqueue(event)
                self.events_handed_out += 1
        matching = [s for s in self._unshared if s.event_filter.matches(event)]
        too_slow = [subscription for subscription in matching if not subscription.offer(event)]
        self.events_handed_out += len(matching) - len(too_slow)
        for subscription in too_slow:
            self._forget(subscription)
            self.slow_subscribers_closed += 1
            logger.info("closed a subscriber that fell %d events behind", self._subscriber_buffer)


@contextlib.asynccontextmanager
async def running_hub(
    listener: EventListener,
    *,
    subscriber_buffer: int,
    poll_seconds: float,
    token_check_seconds: float,
) -> AsyncIterator[EventHub]:
    """The process's fan-out hub, woken by `listener`, for the life of the context."""
    hub = EventHub(
        listener,
        subscriber_buffer=subscriber_buffer,
        poll_seconds=poll_seconds,
        token_check_seconds=token_check_seconds,
    )
    await hub.start()
    try:
        yield hub
    finally:
        await hub.stop()
