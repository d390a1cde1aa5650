"""The graphql-transport-ws connection: every message goes through one bounded outbox.

strawberry awaits each send, so a client that stops reading blocks its subscriptions inside
the socket, where nothing can tell it why; and a keep-alive ping it cannot answer closes it
with 1011 first. Here every message is queued and one writer task per connection writes them
in order. A connection is too slow when more than `CONVEYOR_SUBSCRIBER_BUFFER` messages, or
more than `CONVEYOR_SUBSCRIBER_BUFFER_BYTES` bytes, wait in the server for its socket (the
outbox, and what the transport holds that the kernel has not taken), or when its writer has
been stuck on one message for a keep-alive interval. Then its queued messages are dropped
(its memory is freed) and each of its subscriptions ends with SUBSCRIBER_TOO_SLOW and the
`lastSequence` actually written, the next thing the client reads once it reads again. The
kernel's buffers may take megabytes before the socket pushes back (loopback took ~3 MB for a
client with a 4 KB receive buffer): the server only counts what it holds itself.

Live subscriptions write payloads rendered once for all who share them: a subscriber's cost
is its socket write. While a connection has nothing queued, each of its live operations has
an open `DirectSeat`, through which its stream writes the framed messages into the transport
itself; otherwise the stream hands them to `LiveOperation.deliver`, which queues behind what
waits. Under uvicorn's sans-I/O WebSocket connection (see
`ExposeWebSocketConnection`) a message is framed and written into the connection at once, in
the turn that delivers it, while the socket takes it; only a socket whose buffer is full
queues, and its writer writes what queued in one go once the socket takes data again.
"""

import asyncio
import contextlib
import functools
import gc
import itertools
import json
import logging
import struct
from collections import deque
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, cast

from starlette.types import ASGIApp, Receive, Scope, Send
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import Operation
from strawberry.subscriptions.protocols.graphql_transport_ws.types import Message
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

from conveyor.errors import ErrorCode
from conveyor.graphql.context import Context
from conveyor.graphql.websocket import TransportWSHandler, WebSocketAdapter

logger = logging.getLogger(__name__)

#: Messages one connection writes before it lets the others have the event loop.
WRITES_PER_TURN = 8
#: What the writer of a socket that takes data again hands the transport at once, at most:
#: the rest waits in the outbox, where it is counted and dropped with it.
WRITE_BATCH_BYTES = 64 * 1024
WRITE_BATCH_MESSAGES = 64
#: Where `ExposeWebSocketConnection` leaves the server's connection in the ASGI scope.
_CONNECTION_KEY = "conveyor.websocket_connection"


class ExposeWebSocketConnection:
    """ASGI middleware: hands live sockets the uvicorn WebSocket connection they run on.

    A message written through ASGI passes starlette's send wrappers, uvicorn's `send` and,
    since strawberry awaits each send, a switch to the socket's writer task: 30-40 µs, paid
    by every subscriber of every event (0.3-0.4 s of a core per event at 10,000
    subscribers). Written straight into the connection, it costs its framing and one socket
    write. Other servers, and uvicorn's other WebSocket implementations, keep the ASGI path.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            server_connection = getattr(send, "__self__", None)
            if isinstance(server_connection, WebSocketsSansIOProtocol):
                scope[_CONNECTION_KEY] = server_connection
        await self.app(scope, receive, send)


class _DirectConnection:
    """uvicorn's sans-I/O WebSocket connection, written to without ASGI: websockets frames
    the messages (and compresses them, if the client asked for it), the transport buffers
    what the socket does not take at once and says when its buffer is full."""

    def __init__(self, server_connection: WebSocketsSansIOProtocol) -> None:
        self._server = server_connection

    def open(self) -> bool:
        server = self._server
        return (
            server.handshake_complete
            and not server.close_sent
            and not server.disconnected
            and server.conn.state is State.OPEN
        )

    def extended(self) -> bool:
        """Whether the client asked for an extension (compression): websockets frames then."""
        return bool(self._server.conn.extensions)

    def transport(self) -> asyncio.WriteTransport:
        return cast(asyncio.WriteTransport, self._server.transport)

    def takes_data(self) -> bool:
        """Whether the transport's buffer is below its high-water mark."""
        return self._server.writable.is_set()

    async def until_it_takes_data(self) -> None:
        await self._server.writable.wait()

    def buffered(self) -> int:
        """Bytes the transport holds that the kernel has not taken yet."""
        return self._server.transport.get_write_buffer_size()

    def write_one(self, message: bytes) -> None:
        """Frame one text message and write it: a live update's path, paid per subscriber."""
        if self._server.conn.extensions:
            self.write((message,))
        else:
            self._server.transport.write(b"".join(_text_frame(message)))

    def write(self, messages: Iterable[bytes]) -> None:
        """Frame the text messages and write them in one transport write."""
        protocol = self._server.conn
        if protocol.extensions:
            for message in messages:
                protocol.send_text(message)
            self._server.transport.write(b"".join(protocol.data_to_send()))
        else:
            # Framed here: an unextended server frame is a header and the message as it is,
            # and websockets' general framing costs as much again as the socket write.
            self._server.transport.write(
                b"".join(part for message in messages for part in _text_frame(message))
            )


def _text_frame(message: bytes) -> tuple[bytes, bytes]:
    """An unfragmented, unmasked text frame (RFC 6455 5.2): FIN and opcode, the length."""
    length = len(message)
    if length < 126:
        header = bytes((0x81, length))
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, length)
    else:
        header = struct.pack("!BBQ", 0x81, 127, length)
    return header, message


class _NextMessage:
    """The `next` messages of one operation id around shared payloads, framed: the stream's
    envelope for the seats of that id. It keeps the last payloads' messages, so the
    subscribers of a stream that share an id (graphql-ws clients number their operations
    from 1) share one piece of bytes too."""

    __slots__ = ("_head", "_messages", "_payloads")

    def __init__(self, operation_id: str) -> None:
        self._head = ('{"id":' + json.dumps(operation_id) + ',"type":"next","payload":').encode()
        self._payloads: list[bytes] = []
        self._messages = b""

    def message(self, payload: bytes) -> bytes:
        """The operation's `next` message around `payload`, unframed."""
        return self._head + payload + b"}"

    def wrap(self, payloads: list[bytes]) -> bytes:
        if payloads is not self._payloads:
            self._messages = b"".join(
                part for payload in payloads for part in _text_frame(self.message(payload))
            )
            self._payloads = payloads
        return self._messages


@functools.lru_cache(maxsize=256)
def _next_message(operation_id: str) -> _NextMessage:
    return _NextMessage(operation_id)


@dataclass(slots=True, eq=False)
class DirectSeat:
    """An operation's socket as its shared stream writes to it directly (see
    `events.shared.Seat`): open while its connection has nothing queued, is not closing,
    and writes unextended frames."""

    transport: asyncio.WriteTransport
    envelope: _NextMessage
    open: bool
    last_written: int = 0


class LiveOperation:
    """A subscription of the connection, as the client sent it, and how far its messages
    have been written to the socket."""

    def __init__(
        self,
        operation_id: str,
        query: str,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        socket: "LiveSocketHandler",
    ) -> None:
        self.id = operation_id
        self.query = query
        self.variables = variables
        self.operation_name = operation_name
        self.socket = socket
        self._next = _next_message(operation_id)
        #: The sequence of the event whose message the operation's resolver is sending.
        self.sequence_in_flight: int | None = None
        self.seat = socket.seat_for(self._next)
        self._last_written = 0

    @property
    def last_written(self) -> int:
        """The sequence of the last event written to the socket (or the position the
        subscription started from); what the client resumes after when the socket fails it."""
        return self._last_written if self.seat is None else self.seat.last_written

    @last_written.setter
    def last_written(self, sequence: int) -> None:
        if self.seat is None:
            self._last_written = sequence
        else:
            self.seat.last_written = sequence

    def deliver(self, sequence: int, payload: bytes) -> bool:
        """Write (or queue) a payload rendered for every subscriber of the same document;
        False when the connection is too slow and its subscriptions were ended."""
        message = self._next.message(payload)
        if self.socket.write_now(message):
            self.last_written = sequence
            return True
        return self.socket.queue(_Frame(self.id, sequence, message))


#: The subscription the running resolver serves, on a connection that writes through an
#: outbox (unset on other transports, which deliver message by message).
current_operation: ContextVar[LiveOperation | None] = ContextVar("current_operation", default=None)


@dataclass(frozen=True)
class _Frame:
    #: The subscription the message belongs to, and the sequence it carries, if any.
    operation_id: str | None
    sequence: int | None
    #: The message, encoded.
    data: bytes


class _LongLivedSockets:
    """Keeps what open sockets hold out of the cyclic collector's way.

    Each socket holds thousands of objects for as long as it is open; with thousands of
    sockets a full collection walked millions of them and stopped the event loop for up to a
    second (measured: 0.2-0.9 s at 1,000 subscribers), delaying every live update. Shortly
    after sockets open or close, everything alive is frozen (`gc.freeze`, which costs
    nothing). The cycles closed sockets leave are collected once more sockets have closed
    since the last full collection than are open now, so that garbage stays within what is
    live; and the collection comes after the closing, when the fewest subscribers are there
    to wait for it, not after the next sockets open and start receiving.
    """

    #: How long after a socket opens or closes the collector waits for the others that
    #: come with it (a page's subscriptions, a deploy's disconnections).
    SETTLE_SECONDS = 1.0

    def __init__(self) -> None:
        self.open = 0
        self._closed_since_collection = 0
        self._settling: asyncio.TimerHandle | None = None

    def opened(self) -> None:
        self.open += 1
        self._settle_soon()

    def closed(self) -> None:
        self.open -= 1
        self._closed_since_collection += 1
        self._settle_soon()

    def _settle_soon(self) -> None:
        if self._settling is None:
            self._settling = asyncio.get_running_loop().call_later(
                self.SETTLE_SECONDS, self._settle
            )

    def _settle(self) -> None:
        self._settling = None
        if self._closed_since_collection > self.open:
            gc.unfreeze()
            gc.collect()
            self._closed_since_collection = 0
        gc.freeze()


_long_lived = _LongLivedSockets()


class LiveSocketHandler(TransportWSHandler):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = self.context.settings
        self._outbox_limit = settings.subscriber_buffer
        self._outbox_byte_limit = settings.subscriber_buffer_bytes
        self._keep_alive_seconds = settings.websocket_keep_alive_seconds
        self._outbox: deque[_Frame] = deque()
        self._outbox_bytes = 0
        self._queued = asyncio.Event()
        self._live: dict[str, LiveOperation] = {}
        self._loop = asyncio.get_running_loop()
        #: When the writer started on the message it is writing, if it is writing one.
        self._writing_since: float | None = None
        #: Ended as too slow, with its closing messages still to write.
        self._closing_too_slow = False
        #: Closed by the server (a close frame is on its way): nothing may follow it.
        self._closing = False
        self._writer: asyncio.Task[None] | None = None
        self._keep_alive: asyncio.Task[None] | None = None
        server_connection = self.websocket.ws.scope.get(_CONNECTION_KEY)  # type: ignore[attr-defined]
        self._direct = None if server_connection is None else _DirectConnection(server_connection)
        if isinstance(self.websocket, WebSocketAdapter):
            self.websocket.before_close = self._closed_by_server

    def _closed_by_server(self) -> None:
        self._closing = True
        self._update_seats()

    async def handle(self) -> None:
        self._writer = self._start_writer()
        self._keep_alive = asyncio.create_task(self._ping(), name="conveyor-socket-ping")
        _long_lived.opened()
        try:
            await super().handle()
        finally:
            _long_lived.closed()
            for task in (self._writer, self._keep_alive):
                task.cancel()
                # Either ends early only because the client went away, as the handler saw.
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def run_operation(self, operation: Operation[Context, None]) -> None:
        live = LiveOperation(
            operation.id, operation.query, operation.variables, operation.operation_name, self
        )
        self._live[operation.id] = live
        current_operation.set(live)
        try:
            await super().run_operation(operation)
        finally:
            if self._live.get(operation.id) is live:
                del self._live[operation.id]

    async def send_message(self, message: Message) -> None:
        data = json.dumps(message, separators=(",", ":")).encode()
        operation_id = cast(dict[str, Any], message).get("id")
        live = self._live.get(operation_id) if isinstance(operation_id, str) else None
        # A `next` message of a live operation shows the event its resolver is sending,
        # whether or not the client selected its `sequence`.
        sequence = None
        if live is not None and message["type"] == "next":
            sequence = live.sequence_in_flight
        self.queue(_Frame(operation_id, sequence, data))

    def seat_for(self, envelope: _NextMessage) -> DirectSeat | None:
        """A seat for a new operation, if its live updates may be written straight into the
        connection: uvicorn's sans-I/O connection, without extensions (they frame and
        compress each message themselves)."""
        if self._direct is None or self._direct.extended():
            return None
        return DirectSeat(self._direct.transport(), envelope, self._seats_open())

    def _nothing_waits(self) -> bool:
        """Whether a message written now keeps the order: nothing queued before it, and the
        connection not closing as too slow."""
        return not self._outbox and not self._closing_too_slow

    def _seats_open(self) -> bool:
        return self._nothing_waits() and not self._closing

    def _update_seats(self) -> None:
        """Opens or closes the seats of every live operation of the connection, as its state
        now allows: once a message waits in the outbox, nothing may pass it."""
        open_now = self._seats_open()
        for live in self._live.values():
            if live.seat is not None:
                live.seat.open = open_now

    def _writable_now(self) -> _DirectConnection | None:
        """The socket, if a message may be written to it in this very turn: nothing queued
        before it (so the order holds), not closing as too slow, and its buffer not full."""
        direct = self._direct
        if not self._nothing_waits() or direct is None or not direct.takes_data():
            return None
        return direct

    def write_now(self, message: bytes) -> bool:
        """Write one message in this very turn if the socket takes it; False (nothing
        written) otherwise, and `queue` decides. The common case of a live update at 10,000
        subscribers: no frame record, no lookup of the operation it belongs to (the caller
        knows it)."""
        direct = self._writable_now()
        if direct is None or not direct.open():
            return False
        direct.write_one(message)
        return True

    def queue(self, frame: _Frame) -> bool:
        """Write one message now if the socket takes it, else queue it for the writer;
        False when the connection was too slow."""
        if self._closing_too_slow:
            return False
        direct = self._writable_now()
        if direct is not None:
            if direct.open():
                direct.write_one(frame.data)
                self._written(frame)
            # A closed connection drops it; the handler ends with its read loop.
            return True
        if len(self._outbox) >= self._outbox_limit:
            logger.info("closed a subscriber that fell %d messages behind", self._outbox_limit)
            self._too_slow()
            return False
        held = self._outbox_bytes + (0 if self._direct is None else self._direct.buffered())
        if held >= self._outbox_byte_limit:
            logger.info("closed a subscriber with %d bytes waiting for its socket", held)
            self._too_slow()
            return False
        self._append(frame)
        return True

    def _append(self, frame: _Frame) -> None:
        self._outbox.append(frame)
        self._outbox_bytes += len(frame.data)
        self._queued.set()
        if len(self._outbox) == 1:
            self._update_seats()

    def _take(self) -> _Frame:
        frame = self._outbox.popleft()
        self._outbox_bytes -= len(frame.data)
        if not self._outbox:
            # The last one is written in this very turn by the writer that took it, before
            # any stream writes: the closing messages of a connection too slow among them.
            self._closing_too_slow = False
            self._update_seats()
        return frame

    def _start_writer(self) -> "asyncio.Task[None]":
        write = self._write if self._direct is None else self._write_directly
        return asyncio.create_task(write(), name="conveyor-socket-writer")

    def _written(self, frame: _Frame) -> None:
        live = self._live.get(frame.operation_id or "")
        if live is not None and frame.sequence is not None:
            live.last_written = frame.sequence

    async def _write_directly(self) -> None:
        """Write what queued while the socket's buffer was full, in one go once it drains."""
        direct = self._direct
        assert direct is not None
        while True:
            while not self._outbox:
                self._queued.clear()
                await self._queued.wait()
            if not direct.takes_data():
                self._writing_since = self._loop.time()
                try:
                    await direct.until_it_takes_data()
                finally:
                    self._writing_since = None
            if not direct.open():
                # The client went away; the handler learns it from its read loop.
                return
            # A buffer's worth at most, so that a socket far behind holds little memory in
            # the transport and the next batch waits for the socket again.
            batch = [self._take()]
            size = len(batch[0].data)
            while self._outbox and size < WRITE_BATCH_BYTES and len(batch) < WRITE_BATCH_MESSAGES:
                batch.append(self._take())
                size += len(batch[-1].data)
            direct.write(frame.data for frame in batch)
            for frame in batch:
                self._written(frame)
            await asyncio.sleep(0)

    async def _write(self) -> None:
        for written in itertools.count(1):
            while not self._outbox:
                self._queued.clear()
                await self._queued.wait()
            if written % WRITES_PER_TURN == 0:
                # A send to a socket that takes it at once does not give the loop a turn.
                await asyncio.sleep(0)
            frame = self._outbox[0]
            self._writing_since = self._loop.time()
            try:
                await self.websocket.ws.send_text(frame.data.decode())  # type: ignore[attr-defined]
            except Exception:
                # The client went away; the handler learns it from its read loop.
                return
            finally:
                self._writing_since = None
            self._take()
            self._written(frame)

    async def _ping(self) -> None:
        while True:
            await asyncio.sleep(self._keep_alive_seconds)
            now = self._loop.time()
            if self._closing_too_slow or not self.connection_acknowledged:
                # Closing messages wait for the client to read again; before connection_ack
                # nothing is pinged (strawberry closes a socket that never says hello).
                continue
            if self._writing_since is not None and now - self._writing_since >= (
                self._keep_alive_seconds
            ):
                # A whole interval without taking one message: the client is not reading.
                stalled = now - self._writing_since
                logger.info("closed a subscriber that read nothing for %.0f s", stalled)
                self._too_slow()
            else:
                # graphql-transport-ws's own ping keeps proxies from closing a quiet socket;
                # a vanished peer never acknowledges it, so TCP gives up on the socket.
                self.queue(_Frame(None, None, b'{"type":"ping"}'))

    def _too_slow(self) -> None:
        """End every subscription of the connection: drop what is queued, then queue each
        one's SUBSCRIBER_TOO_SLOW with the last sequence written, and its completion."""
        self._outbox.clear()
        self._outbox_bytes = 0
        self._closing_too_slow = True
        self._update_seats()
        if self.context.hub is not None:
            self.context.hub.slow_subscribers_closed += len(self._live)
        if self._writer is not None and self._writing_since is not None:
            # The write waiting for the socket to take it is dropped too; it is restarted
            # for the closing messages, which the client reads once it reads again.
            self._writer.cancel()
            self._writer = self._start_writer()
        for operation_id, live in list(self._live.items()):
            self.cleanup_operation_now(operation_id)
            error = {
                "message": "the subscriber fell too far behind and was closed; subscribe "
                f"again with `after: {live.last_written}` to resume",
                "extensions": {
                    "code": ErrorCode.SUBSCRIBER_TOO_SLOW.value,
                    "lastSequence": live.last_written,
                },
            }
            for message in (
                {"id": operation_id, "type": "next", "payload": {"data": None, "errors": [error]}},
                {"id": operation_id, "type": "complete"},
            ):
                self._append(_Frame(None, None, json.dumps(message).encode()))
        self._live.clear()

    def cleanup_operation_now(self, operation_id: str) -> None:
        operation = self.operations.pop(operation_id, None)
        if operation is not None and operation.task is not None:
            operation.completed = True
            operation.task.cancel()
