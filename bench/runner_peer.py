"""The runner benchmark's peer: bench/runner.py's work through graphile-worker, same server.

    python bench/runner_peer.py [--tasks 400] [--samples 100] [--concurrency 8] [--targets 8]
        [--enqueue add_job|add_jobs]

Installs bench/runner_peer (graphile-worker, pg and the Node.js graphile-worker needs, pinned
by its package-lock.json) with `npm ci` unless that lockfile is installed there already. On
the PostgreSQL server of CONVEYOR_BENCH_DATABASE_URL (as bench/runner.py) it creates a fresh
queue database and `--targets` target databases, starts one graphile-worker process
(bench/runner_peer/worker.mjs; its start migrates the queue's schema) running `--concurrency`
jobs at once, then measures what bench/runner.py measures: an enqueue's commit → its job's
start, one job at a time (`--samples`), and `--tasks` `SELECT 1` jobs on the targets (round
robin), added in one transaction (`--enqueue`: one add_job each, or one add_jobs call), up to
the last one's end, with the CPU time the worker process and the server's processes serving
it spent. bench/runner_peer/NOTES.md says what each side does per task.
"""

import argparse
import asyncio
import json
import os
import signal
import statistics
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from common import (
    SAMPLE_POLL_SECONDS,
    admin_fetch,
    backends,
    cpu_seconds,
    npm_ci,
    percentile,
    print_latency_rows,
    print_runner_rows,
    server_url,
    with_database,
)

PEER_DIR = Path(__file__).resolve().parent / "runner_peer"
#: The Node.js of the npm package `node` (graphile-worker 0.18 needs Node.js 22.18 or later).
NODE = PEER_DIR / "node_modules" / ".bin" / "node"
#: The lockfile `npm ci` last installed, kept beside what it installed.
INSTALLED_LOCK = PEER_DIR / "node_modules" / ".runner_peer-package-lock.json"
READY_TIMEOUT_SECONDS = 60.0

#: One row a job, written by the job itself at its end (worker.mjs says why).
BENCH_RUNS = """
CREATE TABLE bench_runs (
    job_id bigint PRIMARY KEY,
    locked_at timestamptz,
    started_at timestamptz NOT NULL,
    ended_at timestamptz NOT NULL
)
"""
ADD_JOB = "SELECT id FROM graphile_worker.add_job('select_one', json_build_object('db', $1::text))"
#: How the throughput run adds its jobs, one a database name ($1), in one statement (so one
#: transaction): one add_job a job (the default), or one call of the batch function add_jobs.
ADD_JOBS = {
    "add_job": """
        SELECT j.id
        FROM unnest($1::text[]) WITH ORDINALITY AS t (db, n),
             LATERAL graphile_worker.add_job('select_one', json_build_object('db', t.db)) AS j
        ORDER BY t.n
    """,
    "add_jobs": """
        SELECT j.id
        FROM graphile_worker.add_jobs(ARRAY(
            SELECT ROW('select_one', json_build_object('db', t.db), NULL, NULL, NULL, NULL,
                       NULL, NULL)::graphile_worker.job_spec
            FROM unnest($1::text[]) WITH ORDINALITY AS t (db, n)
            ORDER BY t.n
        )) AS j
    """,
}
#: The throughput run is over: a run row for each of its jobs and no job left (graphile-worker
#: deletes a job once done); and the error of a job that failed, which would wait for a retry.
THROUGHPUT_STATE = """
SELECT (SELECT count(*) FROM bench_runs WHERE job_id = ANY($1::bigint[])) = cardinality($1)
       AND NOT EXISTS (SELECT FROM graphile_worker._private_jobs) AS done,
       (SELECT last_error FROM graphile_worker._private_jobs
        WHERE last_error IS NOT NULL LIMIT 1) AS error
"""


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=400)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--targets", type=int, default=8)
    parser.add_argument(
        "--enqueue",
        choices=sorted(ADD_JOBS),
        default="add_job",
        help="how the throughput run adds its jobs (in one statement either way)",
    )
    args = parser.parse_args()
    ensure_installed()
    run_id = uuid.uuid4().hex[:8]
    queue_db = f"conveyor_bench_peer_{run_id}"
    targets = [f"conveyor_bench_peer_target_{run_id}_{n}" for n in range(args.targets)]
    for name in [queue_db, *targets]:
        await admin_fetch(f'CREATE DATABASE "{name}"')
    queue_url = with_database(server_url(), queue_db)
    worker: asyncio.subprocess.Process | None = None
    try:
        connection = await asyncpg.connect(queue_url)
        try:
            await connection.execute(BENCH_RUNS)
            worker, node_version = await ready_worker(queue_url, args.concurrency)
            # As bench/runner.py's one-task issues: every sample on the first target.
            latencies = await _latency_samples(connection, targets[0], args.samples)
            throughput = await _throughput(
                connection, worker.pid, [queue_db, *targets], targets, args.tasks, args.enqueue
            )
        finally:
            await connection.close()
    finally:
        if worker is not None:
            await _stop(worker)
        for name in [queue_db, *targets]:
            await admin_fetch(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    print("| measure | value |\n|---|---|")
    print(
        f"| jobs through 1 graphile-worker {_graphile_worker_version()} process (Node.js "
        f"{node_version}), concurrency {args.concurrency}, {args.targets} target databases, "
        f"added with {args.enqueue} | {args.tasks} |"
    )
    print_runner_rows(
        args.tasks,
        "adding the jobs",
        ("jobs added, first start, last end", throughput.marks),
        throughput.running_seconds,
        throughput.worker_cpu,
        throughput.server_cpu,
    )
    print(
        f"| PostgreSQL CPU per task (and the backends opened during the run: "
        f"{throughput.backends_at_start} → {throughput.backends_at_end} backends) | "
        f"{1000 * throughput.all_server_cpu / args.tasks:.2f} ms |"
    )
    print_latency_rows([sample.to_start for sample in latencies])
    locks = [sample.to_locked for sample in latencies]
    print(
        f"| of which commit → job locked p50 / p99 (locked_at: now() of the claiming "
        f"statement) | {statistics.median(locks):.1f} / {percentile(locks, 0.99):.1f} ms |"
    )


def ensure_installed() -> None:
    """Install bench/runner_peer's lockfile with `npm ci` unless it is installed already."""
    lock = (PEER_DIR / "package-lock.json").read_bytes()
    if NODE.exists() and INSTALLED_LOCK.exists() and INSTALLED_LOCK.read_bytes() == lock:
        return
    npm_ci(PEER_DIR)
    INSTALLED_LOCK.write_bytes(lock)


def _graphile_worker_version() -> str:
    package = PEER_DIR / "node_modules" / "graphile-worker" / "package.json"
    version: str = json.loads(package.read_text())["version"]
    return version


async def ready_worker(queue_url: str, concurrency: int) -> tuple[asyncio.subprocess.Process, str]:
    """Start worker.mjs and return it and its Node.js version once it listens for new jobs."""
    worker = await asyncio.create_subprocess_exec(
        str(NODE),
        str(PEER_DIR / "worker.mjs"),
        cwd=PEER_DIR,
        env={
            **os.environ,
            "BENCH_QUEUE_URL": queue_url,
            "BENCH_SERVER_URL": server_url(),
            "BENCH_CONCURRENCY": str(concurrency),
        },
        stdout=asyncio.subprocess.PIPE,
    )
    assert worker.stdout is not None
    try:
        line = await asyncio.wait_for(worker.stdout.readline(), READY_TIMEOUT_SECONDS)
        if not line:
            raise RuntimeError(f"the graphile-worker process exited ({await worker.wait()})")
    except BaseException:
        worker.kill()
        await worker.wait()
        raise
    # As runner_catalog.ready_workers after /readyz: samples measure a running worker.
    await asyncio.sleep(1)
    node_version: str = json.loads(line)["node"]
    return worker, node_version


async def _stop(worker: asyncio.subprocess.Process) -> None:
    worker.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(worker.wait(), 30)
    except TimeoutError:
        worker.kill()
        await worker.wait()


@dataclass(frozen=True)
class _Sample:
    """Milliseconds from an enqueue's commit to its job's marks."""

    to_locked: float
    to_start: float


async def _latency_samples(
    connection: asyncpg.Connection, target: str, samples: int
) -> list[_Sample]:
    """Enqueue one job at a time (its own transaction) and time commit → its start."""
    measured = []
    for _ in range(samples):
        job_id = await connection.fetchval(ADD_JOB, target)
        committed = datetime.now(UTC)
        # The job writes its row at its end, with its start: polled for, then read.
        while (
            run := await connection.fetchrow(
                "SELECT locked_at, started_at FROM bench_runs WHERE job_id = $1", job_id
            )
        ) is None:
            await asyncio.sleep(SAMPLE_POLL_SECONDS)
        measured.append(
            _Sample(
                to_locked=_ms(run["locked_at"] - committed),
                to_start=_ms(run["started_at"] - committed),
            )
        )
        # The next sample once this job is done (deleted), as bench/runner.py waits for
        # its task to leave RUNNING.
        while await connection.fetchval(
            "SELECT EXISTS (SELECT FROM graphile_worker._private_jobs WHERE id = $1)", job_id
        ):
            await asyncio.sleep(0.005)
    return measured


@dataclass(frozen=True)
class _Throughput:
    """The throughput run's marks (milliseconds from its start) and CPU seconds."""

    jobs_added: float
    first_start: float
    last_end: float
    worker_cpu: float
    #: Of the server's processes open on the run's databases at its start (bench/runner.py's
    #: measure), and of those plus the ones opened during the run and still open at its end.
    server_cpu: float
    all_server_cpu: float
    backends_at_start: int
    backends_at_end: int

    @property
    def marks(self) -> tuple[float, float, float]:
        return (self.jobs_added, self.first_start, self.last_end)

    @property
    def running_seconds(self) -> float:
        return (self.last_end - self.first_start) / 1000


async def _throughput(
    connection: asyncpg.Connection,
    worker_pid: int,
    databases: list[str],
    targets: list[str],
    tasks: int,
    enqueue: str,
) -> _Throughput:
    """Add `tasks` jobs in one transaction, round robin over `targets`, and wait for all."""
    worker_cpu = cpu_seconds([worker_pid])
    serving = await backends(databases)
    server_cpu = cpu_seconds(serving)
    started_at = datetime.now(UTC)
    job_ids = [
        row["id"]
        for row in await connection.fetch(
            ADD_JOBS[enqueue], [targets[n % len(targets)] for n in range(tasks)]
        )
    ]
    committed_at = datetime.now(UTC)
    while True:
        state = await connection.fetchrow(THROUGHPUT_STATE, job_ids)
        assert state is not None  # a statement without FROM: one row
        if state["done"]:
            break
        if state["error"] is not None:
            raise RuntimeError(f"a job failed: {state['error']}")
        # Seldom, as in bench/runner.py: the run's end is read from the rows below.
        await asyncio.sleep(0.05)
    worker_cpu = cpu_seconds([worker_pid]) - worker_cpu
    server_cpu = cpu_seconds(serving) - server_cpu
    at_end = await backends(databases)
    opened = [pid for pid in at_end if pid not in serving]
    marks = await connection.fetchrow(
        "SELECT min(started_at) AS first_start, max(ended_at) AS last_end FROM bench_runs "
        "WHERE job_id = ANY($1::bigint[])",
        job_ids,
    )
    assert marks is not None  # aggregates without GROUP BY: one row
    return _Throughput(
        jobs_added=_ms(committed_at - started_at),
        first_start=_ms(marks["first_start"] - started_at),
        last_end=_ms(marks["last_end"] - started_at),
        worker_cpu=worker_cpu,
        server_cpu=server_cpu,
        # A backend opened during the run spent all its CPU time in it.
        all_server_cpu=server_cpu + cpu_seconds(opened),
        backends_at_start=len(serving),
        backends_at_end=len(at_end),
    )


def _ms(interval: timedelta) -> float:
    return interval.total_seconds() * 1000


if __name__ == "__main__":
    asyncio.run(main())
