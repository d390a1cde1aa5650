"""A loopback proxy to PostgreSQL that counts what clients send, by protocol message.

Whatever the client (tortoise, a bare asyncpg pool, node-postgres), a statement is an Execute
of the extended protocol or a simple Query, and a round trip ends with a Sync or a simple
Query: so the proxy counts statements and round trips, pool resets included, without
pg_stat_statements (which needs a server restart to preload).
"""

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

#: Requests a client sends before its startup message; the proxy declines them itself, so that
#: the rest of the conversation is plain text it can read.
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104


@dataclass
class WireCounts:
    #: Extended-protocol statement executions (one per Bind/Execute).
    executes: int = 0
    #: Simple-protocol queries; one may hold several statements (a pool's reset does).
    simple_queries: int = 0
    #: Parse messages: statements prepared because the client's cache did not hold them.
    parses: int = 0
    syncs: int = 0
    #: The text of each Parse and simple Query, in order.
    texts: list[str] = field(default_factory=list)

    @property
    def statements(self) -> int:
        return self.executes + self.simple_queries

    @property
    def round_trips(self) -> int:
        return self.syncs + self.simple_queries


class CountingProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.counts = WireCounts()

    def reset(self) -> WireCounts:
        """The counts so far; counting starts again from zero."""
        counts, self.counts = self.counts, WireCounts()
        return counts

    async def _client_to_server(
        self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Answer SSL and GSSAPI requests with 'N'; connect upstream with the startup message."""
        while True:
            (length,) = struct.unpack("!i", await client.readexactly(4))
            payload = await client.readexactly(length - 4)
            (code,) = struct.unpack("!i", payload[:4])
            if code in (SSL_REQUEST, GSSENC_REQUEST):
                to_client.write(b"N")
                await to_client.drain()
                continue
            reader, upstream = await asyncio.open_connection(self.upstream_host, self.upstream_port)
            upstream.write(struct.pack("!i", length) + payload)
            return reader, upstream

    def _count(self, kind: bytes, body: bytes) -> None:
        counts = self.counts
        if kind == b"E":
            counts.executes += 1
        elif kind == b"Q":
            counts.simple_queries += 1
            counts.texts.append(body.rstrip(b"\0").decode(errors="replace"))
        elif kind == b"P":
            counts.parses += 1
            statement_name_end = body.index(b"\0")
            query_end = body.index(b"\0", statement_name_end + 1)
            counts.texts.append(body[statement_name_end + 1 : query_end].decode(errors="replace"))
        elif kind == b"S":
            counts.syncs += 1

    async def _forward_messages(
        self, client: asyncio.StreamReader, upstream: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                header = await client.readexactly(5)
                (length,) = struct.unpack("!i", header[1:])
                body = await client.readexactly(length - 4)
                self._count(header[:1], body)
                upstream.write(header + body)
                await upstream.drain()
        upstream.close()

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await source.read(1 << 16):
                sink.write(chunk)
                await sink.drain()
        sink.close()

    async def serve(self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        try:
            from_upstream, upstream = await self._client_to_server(client, to_client)
        except (asyncio.IncompleteReadError, ConnectionError):
            to_client.close()
            return
        await asyncio.gather(
            self._forward_messages(client, upstream), self._pipe(from_upstream, to_client)
        )


@contextlib.asynccontextmanager
async def counting_proxy(
    upstream_host: str, upstream_port: int
) -> AsyncIterator[tuple[int, CountingProxy]]:
    """A running proxy on a free loopback port, and that port."""
    proxy = CountingProxy(upstream_host, upstream_port)
    server = await asyncio.start_server(proxy.serve, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    async with server:
        yield port, proxy
