// The peer of `conveyor worker` in bench/runner_peer.py: one graphile-worker process running
// `select_one` jobs, each a `SELECT 1` on the target database its payload names.
//
// Environment (set by bench/runner_peer.py):
//   BENCH_QUEUE_URL    graphile-worker's database (its schema is migrated at start)
//   BENCH_SERVER_URL   the server of the target databases (its path is replaced by the database)
//   BENCH_CONCURRENCY  jobs run at once (8)
//
// Prints one JSON line on stdout once the worker listens for new jobs, and nothing else there;
// warnings and errors go to stderr. SIGTERM stops it gracefully.

import { performance } from "node:perf_hooks";
import { EventEmitter } from "node:events";
import { Logger, run } from "graphile-worker";
import pg from "pg";

// Wall-clock milliseconds with sub-millisecond digits: the process's start on the wall clock
// plus the monotonic clock since. bench/runner_peer.py compares them with its own wall clock
// (same machine), as bench/runner.py compares PostgreSQL's clock_timestamp() with Python's.
const wallNow = () => performance.timeOrigin + performance.now();

// Target sessions kept open between jobs, one pool per database (Conveyor keeps one pool per
// instance in a worker, at most the instance's limit over its databases, and closes a session
// idle for 30 s: the same idle time here).
const serverUrl = process.env.BENCH_SERVER_URL;
const pools = new Map();
function targetPool(database) {
  let pool = pools.get(database);
  if (pool === undefined) {
    const url = new URL(serverUrl);
    url.pathname = `/${database}`;
    pool = new pg.Pool({ connectionString: url.href, max: 8, idleTimeoutMillis: 30_000 });
    pools.set(database, pool);
  }
  return pool;
}

// The one write a job adds to graphile-worker's own (lock the job; delete it once done): its
// run's row, in the queue's database, through the worker's pool, after the change. Conveyor
// writes its run row (task_run, with started_at and ended_at) per task too, so this keeps
// one record per run on both sides and gives bench/runner_peer.py the marks it reads:
// started_at / ended_at around the target statement (node's clock, as taken), and the job's
// locked_at (PostgreSQL's now() in graphile-worker's claiming statement, the mark nearest
// Conveyor's started_at, which is clock_timestamp() in its claiming statement), read from the
// job's row while it is still there (it is deleted after the task returns). Prepared once
// per pooled session, as graphile-worker's own statements are.
const RECORD_RUN = {
  name: "bench_record_run",
  text: `INSERT INTO bench_runs (job_id, locked_at, started_at, ended_at)
         VALUES ($1::bigint,
                 (SELECT locked_at FROM graphile_worker._private_jobs WHERE id = $1::bigint),
                 to_timestamp($2::float8 / 1000), to_timestamp($3::float8 / 1000))`,
};

const taskList = {
  async select_one(payload, helpers) {
    const startedAt = wallNow();
    await targetPool(payload.db).query("SELECT 1");
    const endedAt = wallNow();
    const values = [helpers.job.id, startedAt, endedAt];
    await helpers.withPgClient((client) => client.query({ ...RECORD_RUN, values }));
  },
};

// As `conveyor worker` runs in the benchmark (CONVEYOR_LOG_LEVEL=warning): no line per job.
const logger = new Logger(() => (level, message) => {
  if (level === "error" || level === "warning") {
    process.stderr.write(`graphile-worker ${level}: ${message}\n`);
  }
});

const events = new EventEmitter();
const listening = new Promise((resolve) => events.once("pool:listen:success", resolve));

const runner = await run({
  connectionString: process.env.BENCH_QUEUE_URL,
  concurrency: Number(process.env.BENCH_CONCURRENCY ?? 8),
  // This script stops the runner itself (below), then closes its target pools.
  noHandleSignals: true,
  // pollInterval left at its default (2 s): new jobs wake the worker by LISTEN/NOTIFY
  // ("jobs:insert", sent by add_job), the poll is only the safety net.
  logger,
  events,
  taskList,
});
await listening;

process.once("SIGTERM", async () => {
  await runner.stop();
  await Promise.all([...pools.values()].map((pool) => pool.end()));
  // The wall clock as this process reads it against the one it read at start: a step of the
  // system clock during the run would show here.
  process.stderr.write(
    `runner_peer worker: wall clock minus timeOrigin + now(): ${(Date.now() - wallNow()).toFixed(1)} ms\n`,
  );
});

process.stdout.write(
  `${JSON.stringify({ ready: true, node: process.version, clockOffsetMs: Date.now() - wallNow() })}\n`,
);
