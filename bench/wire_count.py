"""A loopback proxy to PostgreSQL that counts what clients send, by protocol message.

    python bench/wire_count.py [--database conveyor_bench_tree] [--servers conveyor]
        [--statements]

Whatever the client (tortoise, a bare asyncpg pool, node-postgres), a statement is an Execute
of the extended protocol or a simple Query, and a round trip ends with a Sync or a simple
Query: so the proxy counts statements and round trips, pool resets included, without
pg_stat_statements (which needs a server restart to preload).

Run as a script, it starts the servers behind the proxy on the data set of tree_seed.py and
prints, for each read of tree_reads.py (the plain reads and the pipeline page), what one
request sends: statements, pool resets, round trips, statements prepared, and with
--statements the text of each.
"""

import argparse
import asyncio
import contextlib
import struct
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import httpx

import tree_seed
from common import server_url, with_database
from tree_queries import LABELS, SHAPES, Case, Shape, find_cases, normalized, page_task_count
from tree_queries import task_count as tree_task_count
from tree_servers import REQUEST_TIMEOUT_SECONDS, ensure_postgraphile, post, running

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

    @property
    def pool_resets(self) -> int:
        """asyncpg's reset on releasing a connection (one simple Query ending in RESET ALL)."""
        return sum(1 for text in self.texts if "RESET ALL" in text.upper())


class CountingProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.counts = WireCounts()
        #: Every open connection's two ends, and the tasks that serve them.
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

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
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        ends = {to_client}
        self._writers |= ends
        try:
            try:
                from_upstream, upstream = await self._client_to_server(client, to_client)
            except (asyncio.IncompleteReadError, ConnectionError):
                to_client.close()
                return
            ends.add(upstream)
            self._writers.add(upstream)
            await asyncio.gather(
                self._forward_messages(client, upstream), self._pipe(from_upstream, to_client)
            )
        finally:
            self._handlers.discard(handler)
            self._writers -= ends

    async def close(self) -> None:
        """Close the connections still open (a client's pool outlives its process's last
        request) and wait for their handlers, so that none is left to be cancelled."""
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*self._handlers, return_exceptions=True)


@contextlib.asynccontextmanager
async def counting_proxy(
    upstream_host: str, upstream_port: int
) -> AsyncIterator[tuple[int, CountingProxy]]:
    """A running proxy on a free loopback port, and that port."""
    proxy = CountingProxy(upstream_host, upstream_port)
    server = await asyncio.start_server(proxy.serve, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    async with server:
        try:
            yield port, proxy
        finally:
            await proxy.close()


#: Requests each server answers before one is counted (caches, prepared statements, pools).
WARM_UP_REQUESTS = 3
#: A pool resets a connection after the response may have left: wait for it before reading.
SETTLE_SECONDS = 0.3


@dataclass(frozen=True)
class Counted:
    counts: WireCounts
    tasks: int
    #: The same content as the limit's response; None for a read only Conveyor answers.
    equivalent: bool | None
    #: The same JSON as the limit's, ids and all (for servers of the limit's shape).
    identical: bool


async def count_statements(
    names: list[str], cases: list[Case], database_url: str, work_dir: Path
) -> dict[tuple[str, str], Counted]:
    """What one request of each case sends to PostgreSQL from each server that answers it,
    and whether the servers answer alike."""
    address = urlparse(database_url)
    results: dict[tuple[str, str], Counted] = {}
    async with (
        counting_proxy(address.hostname or "127.0.0.1", address.port or 5432) as (port, proxy),
        httpx.AsyncClient(timeout=REQUEST_TIMEOUT_SECONDS) as client,
    ):
        user_info = address.netloc.rpartition("@")[0]
        proxied_url = urlunparse(address._replace(netloc=f"{user_info}@127.0.0.1:{port}"))
        # The hub's safety-net poll would be counted as the request's: poll once an hour here.
        async with running(
            names, proxied_url, work_dir, {"CONVEYOR_EVENT_POLL_SECONDS": "3600"}
        ) as servers:
            expected: dict[str, list[Any]] = {}
            expected_data: dict[tuple[Shape, str], dict[str, Any]] = {}
            for case in cases:
                for name in case.servers(names):
                    server = servers[name]
                    body = case.body(name)
                    for _ in range(WARM_UP_REQUESTS):
                        await post(client, server, body)
                    await asyncio.sleep(SETTLE_SECONDS)
                    proxy.reset()
                    data = await post(client, server, body)
                    await asyncio.sleep(SETTLE_SECONDS)
                    counts = proxy.reset()
                    if case.page:
                        results[(name, case.name)] = Counted(
                            counts, page_task_count(data), None, False
                        )
                        continue
                    tree = normalized(data, SHAPES[name])
                    expected.setdefault(case.name, tree)
                    # Conveyor and the limit share one shape: their JSON must match exactly.
                    expected_data.setdefault((SHAPES[name], case.name), data)
                    results[(name, case.name)] = Counted(
                        counts,
                        tree_task_count(tree),
                        tree == expected[case.name],
                        data == expected_data[(SHAPES[name], case.name)],
                    )
    return results


def same_content(name: str, result: Counted) -> str:
    if result.equivalent is None:
        return "n/a (Conveyor only)"
    if name == "limit":
        return "(the reference)"
    if not result.equivalent:
        return "**NO**"
    if SHAPES[name] is not SHAPES["limit"]:
        return "yes"
    return "yes, identical JSON" if result.identical else "**same content, other JSON**"


def counts_table(
    names: list[str], cases: list[Case], counted: dict[tuple[str, str], Counted]
) -> str:
    """One row per case and server: what one request sent to PostgreSQL."""
    lines = [
        "| case | server | tasks in the response | same content as the limit | SQL statements "
        "| of which pool resets | round trips | statements prepared (Parse) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        for name in case.servers(names):
            result = counted[(name, case.name)]
            lines.append(
                f"| {case.name} | {LABELS[name]} | {result.tasks:,} "
                f"| {same_content(name, result)} | {result.counts.statements} "
                f"| {result.counts.pool_resets} | {result.counts.round_trips} "
                f"| {result.counts.parses} |"
            )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", default=tree_seed.DEFAULT_DATABASE)
    parser.add_argument(
        "--servers", nargs="+", choices=["limit", "conveyor", "postgraphile"], default=["conveyor"]
    )
    parser.add_argument(
        "--statements",
        action="store_true",
        help="print the text of each simple query and each statement prepared in the request",
    )
    args = parser.parse_args()
    await tree_seed.ensure_seeded(args.database)
    database_url = with_database(server_url(), args.database)
    names: list[str] = args.servers
    if "postgraphile" in names and (skipped := ensure_postgraphile()) is not None:
        print(skipped, file=sys.stderr)
        names.remove("postgraphile")
    if "limit" not in names:
        # The limit is the reference the others' content is compared with: run it first.
        names.insert(0, "limit")
    cases = await find_cases(database_url)
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-wire-") as temporary:
        counted = await count_statements(names, cases, database_url, Path(temporary))
    print(counts_table(names, cases, counted))
    if args.statements:
        for case in cases:
            for name in case.servers(names):
                print(f"\n{case.name}, {LABELS[name]}:")
                for text in counted[(name, case.name)].counts.texts:
                    print(f"- `{' '.join(text.split())[:300]}`")


if __name__ == "__main__":
    asyncio.run(main())
