"""Live-updates benchmark: commit → subscriber delivery latency, and the server's memory.

    python bench/live_updates.py [--samples 30] [--subscribers 1000 10000] [--clients 8]
                                 [--selections status rich] [--burst 7000]

Starts one `conveyor serve` (no worker) on a fresh database of CONVEYOR_BENCH_DATABASE_URL
(default postgresql://postgres@127.0.0.1:5432/postgres). For each subscriber count and
selection it opens that many graphql-transport-ws subscribers to `pipelineActivity` of one
pipeline, spread over `--clients` client processes (so that the client's own cost is not in
the figures: each client reports the CPU it used), then commits status changes of the
pipeline's task (cancel, retry, ...) and times each one from the commit's return to its
arrival at every subscriber (CLOCK_MONOTONIC, shared by the processes of one machine).

With `--burst N`, it then writes N events on another pipeline (watched by a few rich
subscribers) in one transaction, as cancelling a huge issue does, and measures the same
changes again while the burst is delivered: the difference is what the burst costs the
others.
"""

import argparse
import asyncio
import base64
import concurrent.futures
import contextlib
import itertools
import json
import os
import queue
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import psutil
import uvloop
from cryptography.fernet import Fernet
from strawberry import relay
from tortoise.context import TortoiseContext
from tortoise.transactions import in_transaction

from common import BENCH, admin_fetch, free_port, percentile, server_url, with_database
from conveyor.crypto import PasswordCipher
from conveyor.db import catalog, issues, tasks, tokens
from conveyor.db.config import tortoise_config
from conveyor.db.events import NewEvent, record_events
from conveyor.db.migrate import migrate_database
from conveyor.db.models import Event, Task
from conveyor.domain.permissions import SYSTEM, Role
from conveyor.domain.plan import IssuePlan, StagePlan, TaskPlan
from conveyor.domain.statuses import ApprovalPolicy, Engine, EventKind, TaskType
from conveyor.domain.targets import UNRESTRICTED
from conveyor.runner.own_database import OwnDatabaseCheck
from conveyor.settings import Settings

SELECTIONS = {
    # What a status badge needs.
    "status": "sequence kind taskId newStatus",
    # What a pipeline page needs (README, "Live updates"): the task, its stage's and its
    # pipeline's derived state.
    "rich": """
        id sequence kind actor createdAt taskId oldStatus newStatus reason
        task { id status version statement statusReason approvedBy cancelRequested
               lastSequence availableActions waitingReason { kind message } }
        stage { id status lastSequence taskCounts { pendingApproval pending running done
                failed canceled skipped total } }
        pipeline { id status lastSequence activeStage { id } }
    """,
}
#: Subscribers one client process opens at once while connecting.
CONNECT_CONCURRENCY = 50
MESSAGE_WAIT_SECONDS = 60.0
#: Ten thousand subscribers take minutes to connect on a busy machine.
CONNECT_WAIT_SECONDS = 900.0
#: Subscribers of the burst's pipeline: a few open pages.
BURST_SUBSCRIBERS = 10
_SEQUENCE = re.compile(rb'"sequence":(\d+)')
#: The environment variable that gives client processes their scheduling policy.
CLIENT_SCHEDULING = "CONVEYOR_BENCH_CLIENT_SCHEDULING"


def subscription(selection: str) -> str:
    return (
        "subscription($pipelineId: ID!, $after: Int) { "
        f"pipelineActivity(pipelineId: $pipelineId, after: $after) {{ {SELECTIONS[selection]} }} }}"
    )


# --- a client process ------------------------------------------------------------------------


def _client_frame(text: str) -> bytes:
    """A masked text frame, as a client sends it (RFC 6455 5.2; messages under 64 KiB)."""
    payload = text.encode()
    length = len(payload)
    if length < 126:
        header = bytes((0x81, 0x80 | length))
    else:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, length)
    mask = os.urandom(4)
    key = int.from_bytes((mask * (length // 4 + 1))[:length], "big")
    masked = (int.from_bytes(payload, "big") ^ key).to_bytes(length, "big")
    return header + mask + masked


class BareSubscriber(asyncio.Protocol):
    """One graphql-transport-ws subscriber on a bare socket: it frames its two messages
    itself and, of what the server sends, reads only the frame headers and each message's
    `sequence` (a regular expression, not a JSON parse). A WebSocket library costs the
    client several times what writing the message costs the server, and the clients share
    the server's two CPUs."""

    def __init__(self, arrived: Callable[[int, float], None]) -> None:
        loop = asyncio.get_running_loop()
        self._arrived = arrived
        self._buffer = b""
        self._upgraded = False
        self._transport: asyncio.Transport | None = None
        self.upgraded: asyncio.Future[None] = loop.create_future()
        self.acknowledged: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[str] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        for future in (self.upgraded, self.acknowledged, self.closed):
            if not future.done():
                future.set_exception(RuntimeError(f"the server closed a subscriber: {exc!r}"))

    def send(self, message: object) -> None:
        assert self._transport is not None
        self._transport.write(_client_frame(json.dumps(message)))

    def upgrade(self, host: str, path: str) -> None:
        assert self._transport is not None
        key = base64.b64encode(os.urandom(16)).decode()
        self._transport.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13"
            "\r\nSec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n".encode()
        )

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        if not self._upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self._buffer = buffer
                return
            if b" 101 " not in buffer[: buffer.find(b"\r\n")]:
                raise RuntimeError(f"the server refused the upgrade: {buffer[:200]!r}")
            self._upgraded = True
            self.upgraded.set_result(None)
            buffer = buffer[end + 4 :]
        offset, size = 0, len(buffer)
        while size - offset >= 2:
            length, start = buffer[offset + 1] & 0x7F, offset + 2
            if length == 126:
                if size - offset < 4:
                    break
                length, start = int.from_bytes(buffer[offset + 2 : offset + 4], "big"), offset + 4
            elif length == 127:
                if size - offset < 10:
                    break
                length, start = int.from_bytes(buffer[offset + 2 : offset + 10], "big"), offset + 10
            if start + length > size:
                break
            self._message(buffer[offset] & 0x0F, buffer[start : start + length])
            offset = start + length
        self._buffer = buffer[offset:]

    def _message(self, opcode: int, payload: bytes) -> None:
        if opcode != 0x1:
            return
        found = _SEQUENCE.search(payload)
        if found is not None:
            self._arrived(int(found.group(1)), time.monotonic())
        elif b'"ping"' in payload:
            self.send({"type": "pong"})
        elif b'"connection_ack"' in payload and not self.acknowledged.done():
            self.acknowledged.set_result(None)
        elif b'"errors"' in payload or b'"error"' in payload:
            print(payload.decode()[:500], file=sys.stderr)


async def run_client(
    url: str, token: str, selection: str, pipeline: str, after: int, count: int
) -> None:
    """`count` subscribers; prints, for each sequence, when it reached every one of them."""
    arrivals: dict[int, list[float]] = {}
    subscribed = 0
    document = subscription(selection)
    address = urllib.parse.urlsplit(url)
    assert address.hostname is not None
    assert address.port is not None

    # Reports go out without blocking: a print waiting for the driver to read the pipe would
    # stop this process reading its sockets, and the server would close them as too slow.
    reports: queue.SimpleQueue[str] = queue.SimpleQueue()

    def write_reports() -> None:
        while True:
            print(reports.get(), flush=True)

    threading.Thread(target=write_reports, daemon=True).start()

    def report(message: object) -> None:
        reports.put(json.dumps(message))

    def arrived(sequence: int, at: float) -> None:
        times = arrivals.setdefault(sequence, [])
        times.append(at)
        if len(times) == count:
            report({"sequence": sequence, "arrivals": times})
            del arrivals[sequence]

    async def subscriber(gate: asyncio.Semaphore) -> None:
        nonlocal subscribed
        loop = asyncio.get_running_loop()
        async with gate:
            _, connection = await loop.create_connection(
                lambda: BareSubscriber(arrived), address.hostname, address.port
            )
            connection.upgrade(address.netloc, address.path)
            # Not with the upgrade request: uvicorn may read it before the app accepts.
            await asyncio.wait_for(connection.upgraded, CONNECT_WAIT_SECONDS)
            connection.send(
                {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
            )
            await asyncio.wait_for(connection.acknowledged, CONNECT_WAIT_SECONDS)
            variables = {"pipelineId": pipeline, "after": after}
            payload = {"query": document, "variables": variables}
            connection.send({"id": "1", "type": "subscribe", "payload": payload})
            subscribed += 1
        await connection.closed

    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    readers = [asyncio.create_task(subscriber(gate)) for _ in range(count)]
    while subscribed < count:
        failed = [reader for reader in readers if reader.done()]
        if failed:
            raise RuntimeError(f"a subscriber ended: {failed[0].exception()!r}")
        await asyncio.sleep(0.1)
    report({"ready": True})
    # Subscribed until the driver closes our stdin.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for reader in readers:
        reader.cancel()
    await asyncio.gather(*readers, return_exceptions=True)


# --- the driver ------------------------------------------------------------------------------


class Clients:
    """Client processes holding subscribers of one pipeline; gathers their reports."""

    def __init__(
        self,
        url: str,
        token: str,
        selection: str,
        pipeline: str,
        after: int,
        count: int,
        processes: int,
    ) -> None:
        self.count = count
        self.arrivals: dict[int, list[float]] = {}
        self._ready = 0
        shares = [
            count // processes + (1 if index < count % processes else 0)
            for index in range(processes)
        ]
        self._processes = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--client",
                    url,
                    token,
                    selection,
                    pipeline,
                    str(after),
                    str(share),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for share in shares
            if share
        ]
        # A thread per process: each blocks on its process's next line, and the loop's
        # default pool (6 threads on 2 CPUs) left the burst's client unread behind 8 others.
        self._threads = concurrent.futures.ThreadPoolExecutor(len(self._processes))
        self._readers = [asyncio.create_task(self._read(process)) for process in self._processes]

    async def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(self._threads, process.stdout.readline):
            report = json.loads(line)
            if "ready" in report:
                self._ready += 1
            else:
                self.arrivals.setdefault(report["sequence"], []).extend(report["arrivals"])

    def cpu_seconds(self) -> list[float]:
        """The CPU time each client process has used so far."""
        return [sum(psutil.Process(process.pid).cpu_times()[:2]) for process in self._processes]

    async def ready(self) -> None:
        await _until(
            lambda: self._ready == len(self._processes),
            "the subscribers to connect",
            CONNECT_WAIT_SECONDS,
        )

    async def delivered(self, sequence: int, seconds: float = MESSAGE_WAIT_SECONDS) -> list[float]:
        """When `sequence` reached each subscriber."""
        await _until(
            lambda: len(self.arrivals.get(sequence, [])) == self.count,
            f"sequence {sequence} to reach every subscriber",
            seconds,
        )
        return self.arrivals[sequence]

    async def close(self) -> None:
        for process in self._processes:
            assert process.stdin is not None
            process.stdin.close()
        await asyncio.gather(*self._readers)
        for process in self._processes:
            process.wait(timeout=60)


async def _until(done: object, what: str, seconds: float = MESSAGE_WAIT_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while not done():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited too long for {what}")
        await asyncio.sleep(0.001)


#: A waiting task's status changes, in a cycle: cancel, then back to its gate.
STATUS_CHANGES = itertools.cycle([tasks.cancel_task, tasks.retry_task])


async def change(task_id: int) -> tuple[int, float]:
    """Commit one status change of the task: its event's sequence, and when it committed."""
    await next(STATUS_CHANGES)(BENCH, task_id)
    committed = time.monotonic()
    event = await Event.filter(task_id=task_id).order_by("-id").only("id").first()
    assert event is not None
    return int(event.id), committed


async def latencies_of(clients: Clients, task_id: int, samples: int) -> list[float]:
    latencies: list[float] = []
    for _ in range(samples):
        sequence, committed = await change(task_id)
        latencies += [(arrival - committed) * 1000 for arrival in await clients.delivered(sequence)]
        await asyncio.sleep(0.05)
    return latencies


async def burst(task: Task, count: int) -> int:
    """`count` events of the task's pipeline in one transaction, as cancelling a huge issue
    writes; the last one's sequence."""
    pipeline = await task.pipeline
    async with in_transaction() as connection:
        written = await record_events(
            connection,
            "bench",
            [
                NewEvent(
                    EventKind.TASK_STATUS_CHANGED,
                    issue_id=pipeline.issue_id,
                    pipeline_id=pipeline.id,
                    stage_id=task.stage_id,
                    task_id=task.id,
                    old_status="PENDING_APPROVAL",
                    new_status="PENDING_APPROVAL",
                )
            ]
            * count,
        )
    return written[-1]


async def latest_sequence() -> int:
    event = await Event.all().order_by("-id").only("id").first()
    return 0 if event is None else int(event.id)


@dataclass
class Result:
    subscribers: int
    selection: str
    latencies: list[float]
    rss: int
    client_cpu: float
    server_cpu: float
    #: The server's involuntary context switches per sample (preempted by another process).
    preempted: float
    #: CPU per message delivered while sampling (µs): the server's, and all clients' together.
    server_us_per_message: float = 0.0
    clients_us_per_message: float = 0.0
    #: The share of the server's CPU spent in the kernel (the socket writes, mostly).
    server_system_share: float = 0.0
    burst_latencies: list[float] = field(default_factory=list)
    burst_seconds: float = 0.0


async def measure(
    url: str,
    token: str,
    pipelines: dict[str, Task],
    count: int,
    selection: str,
    args: argparse.Namespace,
    server: psutil.Process,
) -> Result:
    main_task, burst_task = pipelines["main"], pipelines["burst"]
    after = await latest_sequence()
    main_id = str(relay.GlobalID("Pipeline", str(main_task.pipeline_id)))
    clients = Clients(url, token, selection, main_id, after, count, args.clients)
    burst_clients = None
    if args.burst:
        burst_id = str(relay.GlobalID("Pipeline", str(burst_task.pipeline_id)))
        burst_clients = Clients(url, token, "rich", burst_id, after, BURST_SUBSCRIBERS, 1)
    try:
        await clients.ready()
        if burst_clients is not None:
            await burst_clients.ready()
        # Every subscriber has caught up and is live once this reaches them all (the server
        # may still be starting the last subscriptions when the clients have sent them).
        await clients.delivered((await change(main_task.id))[0], CONNECT_WAIT_SECONDS)
        profiler = _profile(server, args.profile, f"{count}-{selection}", args.profiler)
        started = time.monotonic()
        server_cpu_before = sum(server.cpu_times()[:2])
        server_system_before = server.cpu_times().system
        switches_before = server.num_ctx_switches().involuntary
        client_cpu_before = clients.cpu_seconds()
        latencies = await latencies_of(clients, main_task.id, args.samples)
        wall = time.monotonic() - started
        _stop_profile(profiler)
        server_seconds = sum(server.cpu_times()[:2]) - server_cpu_before
        server_system = server.cpu_times().system - server_system_before
        preempted = (server.num_ctx_switches().involuntary - switches_before) / args.samples
        client_seconds = [
            after - before
            for before, after in zip(client_cpu_before, clients.cpu_seconds(), strict=True)
        ]
        rss = server.memory_info().rss
        result = Result(
            count,
            selection,
            latencies,
            rss,
            # The busiest client process's share of one core while the samples were taken.
            max(client_seconds) / wall,
            server_seconds / wall,
            preempted,
            server_seconds / len(latencies) * 1e6,
            sum(client_seconds) / len(latencies) * 1e6,
            server_system / server_seconds,
        )
        if burst_clients is not None:
            burst_started = time.monotonic()
            profiler = _profile(server, args.profile, f"{count}-{selection}-burst", args.profiler)
            last = await burst(burst_task, args.burst)
            result.burst_latencies = await latencies_of(clients, main_task.id, args.samples)
            _stop_profile(profiler)
            await burst_clients.delivered(last)
            result.burst_seconds = time.monotonic() - burst_started
    finally:
        await clients.close()
        if burst_clients is not None:
            await burst_clients.close()
    return result


def _profile(
    server: psutil.Process, directory: str | None, name: str, profiler_name: str = "py-spy"
) -> subprocess.Popen[bytes] | None:
    """py-spy (raw, 200 Hz) or perf recording the server into `directory`, if asked for."""
    if directory is None:
        return None
    os.makedirs(directory, exist_ok=True)
    if profiler_name == "perf":
        output = os.path.join(directory, f"{name}.perf")
        command = ["perf", "record", "-e", "cpu-clock", "-g", "-p", str(server.pid), "-o", output]
        profiler = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        return profiler
    profiler = subprocess.Popen(
        [
            "py-spy",
            "record",
            "--pid",
            str(server.pid),
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            os.path.join(directory, f"{name}.txt"),
        ],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(1.0)
    return profiler


def _stop_profile(profiler: subprocess.Popen[bytes] | None) -> None:
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)
        profiler.wait(timeout=60)


async def seed(key: str) -> dict[str, Task]:
    """Two pipelines of one MANUAL task each: the measured one and the burst's."""
    cipher = PasswordCipher(key)
    own_database = OwnDatabaseCheck(Settings.model_construct(), cipher)
    environment = await catalog.save_environment(
        BENCH,
        None,
        catalog.EnvironmentChanges(name="bench", order=0, approval_policy=ApprovalPolicy.MANUAL),
    )
    instance = await catalog.save_instance(
        BENCH,
        None,
        catalog.InstanceChanges(
            name="bench",
            environment_id=environment.id,
            engine=Engine.POSTGRES,
            host="127.0.0.1",
            port=5432,
            username="postgres",
            password="",
            max_running_tasks=1,
        ),
        cipher,
        networks=UNRESTRICTED,
        own_database=own_database,
    )
    database = await catalog.register_database(
        BENCH, instance.id, "never_created", own_database=own_database
    )
    seeded = {}
    for name in ("main", "burst"):
        # A MANUAL stage: the task only ever moves when the bench moves it.
        issue = await issues.create_issue(
            BENCH,
            IssuePlan(
                title=name,
                stages=(
                    StagePlan(
                        environment_id=environment.id,
                        tasks=(
                            TaskPlan(
                                type=TaskType.DATA_UPDATE,
                                instance_id=instance.id,
                                database_id=database.id,
                                statement="SELECT 1",
                            ),
                        ),
                    ),
                ),
            ),
        )
        seeded[name] = await Task.filter(pipeline__issue_id=issue.id).get()
    return seeded


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--subscribers", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--clients", type=int, default=8, help="client processes")
    parser.add_argument("--selections", nargs="+", default=["status", "rich"], choices=SELECTIONS)
    parser.add_argument("--burst", type=int, default=0, help="events of the burst; 0: none")
    parser.add_argument(
        "--client-scheduling",
        choices=("batch", "normal"),
        default="batch",
        help="the client processes' scheduling policy (batch: a client woken by a message "
        "does not preempt the server; see bench/README)",
    )
    parser.add_argument(
        "--profile", help="a directory: py-spy records the server while each case is sampled"
    )
    parser.add_argument(
        "--profiler",
        choices=("py-spy", "perf"),
        default="py-spy",
        help="what --profile records with: py-spy (Python stacks; piles samples up at system "
        "call returns) or perf (`perf record -e cpu-clock -g`: the kernel's and the "
        "interpreter's own share, read with `perf report -i FILE --sort dso,sym`)",
    )
    args = parser.parse_args()
    os.environ[CLIENT_SCHEDULING] = args.client_scheduling
    conveyor_db = f"conveyor_bench_live_{uuid.uuid4().hex[:8]}"
    await admin_fetch(f'CREATE DATABASE "{conveyor_db}"')
    database_url = with_database(server_url(), conveyor_db)
    key = Fernet.generate_key().decode()
    server = None
    results: list[Result] = []
    # The server writes a first admin token into its data directory: a temporary one, not
    # the user's.
    data_dir = tempfile.mkdtemp(prefix="conveyor-bench-live-")
    try:
        await migrate_database(database_url)
        async with TortoiseContext() as context:
            await context.init(config=tortoise_config(database_url))
            pipelines = await seed(key)
            subscriber_token = await tokens.issue_token(
                SYSTEM, "bench", Role.VIEWER, description="bench/live_updates.py subscribers"
            )
            port = free_port()
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")},
                "CONVEYOR_DATABASE_URL": database_url,
                "CONVEYOR_SECRET_KEY": key,
                "CONVEYOR_DATA_DIR": data_dir,
                "CONVEYOR_RUN_WORKER": "false",
                "CONVEYOR_PORT": str(port),
                "CONVEYOR_LOG_LEVEL": "warning",
                # Thousands of subscribers share one token: the per-token limits would refuse
                # most subscriptions (0: off), as in bench/tree_servers.py.
                "CONVEYOR_RATE_LIMIT_REQUESTS": "0",
                "CONVEYOR_RATE_LIMIT_COST": "0",
                # The burst's subscribers read 7,000 messages at once.
                "CONVEYOR_SUBSCRIBER_BUFFER": str(max(1000, 2 * args.burst)),
            }
            server = subprocess.Popen([sys.executable, "-m", "conveyor", "serve"], env=env)
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient() as http:
                for _ in range(300):
                    with contextlib.suppress(httpx.TransportError):
                        if (await http.get(f"{base}/healthz", timeout=1)).status_code == 200:
                            break
                    await asyncio.sleep(0.1)
                else:
                    raise RuntimeError("the server did not start")
            process = psutil.Process(server.pid)
            url = f"ws://127.0.0.1:{port}/graphql"
            for count in args.subscribers:
                for selection in args.selections:
                    results.append(
                        await measure(
                            url, subscriber_token.token, pipelines, count, selection, args, process
                        )
                    )
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
        await admin_fetch(f'DROP DATABASE IF EXISTS "{conveyor_db}" WITH (FORCE)')
        shutil.rmtree(data_dir, ignore_errors=True)

    print(
        "| subscribers | selection | commit → delivery p50 | p99 | server RSS | server CPU "
        "| busiest client CPU | server preempted per event "
        "| CPU per message: server (in the kernel), clients |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for result in results:
        print(
            f"| {result.subscribers:,} | {result.selection} "
            f"| {statistics.median(result.latencies):.1f} ms "
            f"| {percentile(result.latencies, 0.99):.1f} ms | {result.rss / 2**20:.0f} MiB "
            f"| {result.server_cpu:.0%} | {result.client_cpu:.0%} | {result.preempted:,.0f} "
            f"| {result.server_us_per_message:.0f} µs ({result.server_system_share:.0%}), "
            f"{result.clients_us_per_message:.0f} µs |"
        )
    if args.burst:
        print(f"\nDuring a burst of {args.burst:,} events on another pipeline:\n")
        print("| subscribers | selection | p50 | p99 | p99 without | burst delivered in |")
        print("|---|---|---|---|---|---|")
        for result in results:
            print(
                f"| {result.subscribers:,} | {result.selection} "
                f"| {statistics.median(result.burst_latencies):.1f} ms "
                f"| {percentile(result.burst_latencies, 0.99):.1f} ms "
                f"| {percentile(result.latencies, 0.99):.1f} ms | {result.burst_seconds:.1f} s |"
            )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--client"]:
        if os.environ.get(CLIENT_SCHEDULING) == "batch":
            # Stand-ins for browsers on other machines: a client woken by a message waits for
            # the server's time slice to end instead of preempting it, message by message.
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        url, token, selection, pipeline, after, count = sys.argv[2:8]
        uvloop.run(run_client(url, token, selection, pipeline, int(after), int(count)))
    else:
        asyncio.run(main())
