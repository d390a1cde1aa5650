"""What one event's fan-out to N loopback sockets costs, without Conveyor: one thread writing
every socket, or the sockets split between threads (the `send` system call releases the GIL).

    python bench/live_fanout.py [--sockets 10000] [--clients 4] [--rounds 15] [--threads 1 2]

Receivers are `--clients` processes of this script (uvloop, a bare asyncio Protocol, scheduled
as batch like bench/live_updates.py's clients); each message carries the monotonic time its
round started, and each receiver reports every arrival's latency. It answers whether a second
writing thread could bring `bench/live_updates.py`'s 10,000-subscriber p99 down on this machine.
"""

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

import psutil
import uvloop

from common import percentile

MESSAGE_BYTES = 120


class Receiver(asyncio.Protocol):
    def __init__(self, latencies: list[float], work_seconds: float) -> None:
        self._latencies = latencies
        self._work_seconds = work_seconds

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        for message in data.split(b"\n")[:-1]:
            self._latencies.append(now - float(message.split(b" ", 1)[0]))
        # A stand-in for what a real client does with a message (`--receiver-work`).
        until = now + self._work_seconds
        while time.monotonic() < until:
            pass


async def receive(port: int, count: int, work_seconds: float) -> None:
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    for _ in range(count):
        await loop.create_connection(lambda: Receiver(latencies, work_seconds), "127.0.0.1", port)
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    print(" ".join(f"{latency:.6f}" for latency in latencies), flush=True)


def write_all(sockets: list[socket.socket], message: bytes) -> None:
    for connection in sockets:
        connection.send(message)


def fan_out(sockets: list[socket.socket], threads: int, message: bytes) -> None:
    share = (len(sockets) + threads - 1) // threads
    workers = [
        threading.Thread(
            target=write_all, args=(sockets[index * share : (index + 1) * share], message)
        )
        for index in range(1, threads)
    ]
    for worker in workers:
        worker.start()
    write_all(sockets[:share], message)
    for worker in workers:
        worker.join()


def run(args: argparse.Namespace, threads: int) -> None:
    listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
    port = listener.getsockname()[1]
    shares = [args.sockets // args.clients] * args.clients
    clients = [
        subprocess.Popen(
            [sys.executable, __file__, "--receive", str(port), str(share), str(args.receiver_work)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for share in shares
    ]
    sockets = [listener.accept()[0] for _ in range(sum(shares))]
    for client in clients:
        assert client.stdout is not None
        assert client.stdout.readline().strip() == "ready"
    me = psutil.Process()
    receivers = [psutil.Process(client.pid) for client in clients]
    cpu_before = sum(me.cpu_times()[:2])
    clients_before = sum(sum(process.cpu_times()[:2]) for process in receivers)
    for _ in range(args.rounds):
        message = f"{time.monotonic():.6f} ".encode().ljust(MESSAGE_BYTES - 1, b"x") + b"\n"
        fan_out(sockets, threads, message)
        time.sleep(0.3)
    sent = args.rounds * len(sockets)
    writer_us = (sum(me.cpu_times()[:2]) - cpu_before) / sent * 1e6
    clients_us = (sum(sum(p.cpu_times()[:2]) for p in receivers) - clients_before) / sent * 1e6
    latencies: list[float] = []
    for client in clients:
        assert client.stdin is not None
        assert client.stdout is not None
        client.stdin.write("\n")
        client.stdin.flush()
        latencies += [float(value) * 1000 for value in client.stdout.readline().split()]
        client.wait(timeout=60)
    for connection in sockets:
        connection.close()
    listener.close()
    print(
        f"| {len(sockets):,} | {threads} | {statistics.median(latencies):.1f} ms "
        f"| {percentile(latencies, 0.99):.1f} ms | {writer_us:.1f} µs | {clients_us:.1f} µs "
        f"| {len(latencies):,} |",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sockets", type=int, default=10000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=2, help="alternations of --threads")
    parser.add_argument(
        "--receiver-work", type=float, default=0.0, help="µs a receiver spends on each message"
    )
    args = parser.parse_args()
    print(
        f"receivers spend {args.receiver_work:.0f} µs on each message\n\n"
        "| sockets | writing threads | p50 | p99 | writer CPU per message | receivers' | messages |"
    )
    print("|---|---|---|---|---|---|---|")
    for _ in range(args.repeat):
        for threads in args.threads:
            run(args, threads)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--receive"]:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        uvloop.run(receive(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]) / 1e6))
    else:
        main()
