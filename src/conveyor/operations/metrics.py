"""The metrics of one process, in Prometheus' format.

Each process (an API replica, a `conveyor worker`) makes one `Metrics` at start and passes it
to what it measures; every metric lives in that object's own registry, never in
prometheus-client's global one, so that several apps built in one process (the tests) do not
share or collide. Counters are moved where things happen; what is a state (open
subscriptions, the hub's lag, pools, tasks by status) is read when the metrics are scraped.
"""

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from conveyor.db import monitoring
from conveyor.db.outages import database_unavailable
from conveyor.domain.statuses import TaskRunStatus, TaskStatus, TaskType
from conveyor.operations.requests import COMPILED, RESOLVERS

#: Operation names are the client's to choose: past this many distinct ones, the rest are
#: counted as OTHER_OPERATION, so that a client cannot grow the metrics without bound.
MAX_OPERATION_NAMES = 200
OTHER_OPERATION = "other"
#: The name of an operation sent without one.
ANONYMOUS_OPERATION = "anonymous"
#: The outcome of a request without errors; else the code of its first error.
OK = "OK"
#: How long counts read from the database for a scrape are reused by the next ones.
TASK_COUNTS_TTL_SECONDS = 5.0
#: How long a scrape or a readiness check waits for Conveyor's database.
DATABASE_WAIT_SECONDS = 1.0

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
TASK_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)
COST_BUCKETS = (1, 10, 30, 100, 300, 1000, 3000, 10_000, 30_000)


class HubState(Protocol):
    events_read: int
    events_handed_out: int
    slow_subscribers_closed: int

    @property
    def subscriber_count(self) -> int: ...
    @property
    def lag(self) -> int: ...


class WorkerState(Protocol):
    @property
    def running_count(self) -> int: ...
    @property
    def claiming(self) -> bool: ...


class _ProcessState(Collector):
    """What the process holds right now, read at each scrape."""

    def __init__(self) -> None:
        self.hub: HubState | None = None
        self.worker: WorkerState | None = None
        self.tasks_by_status: dict[str, int] = {}
        self.tasks_by_waiting_reason: dict[str, int] = {}
        self.live_renders: Mapping[str, int] = {}

    def collect(self) -> Iterator[Metric]:
        if self.hub is not None:
            yield GaugeMetricFamily(
                "conveyor_subscriptions_open",
                "Live subscriptions served by this process.",
                value=self.hub.subscriber_count,
            )
            yield GaugeMetricFamily(
                "conveyor_event_hub_lag_events",
                "Newest event sequence heard minus the last one the hub handed out.",
                value=self.hub.lag,
            )
            yield CounterMetricFamily(
                "conveyor_events_written",
                "Events committed by any process, as this process's hub read them (each once).",
                value=self.hub.events_read,
            )
            yield CounterMetricFamily(
                "conveyor_events_fanned_out",
                "Events handed to live subscriptions (one per event and subscription).",
                value=self.hub.events_handed_out,
            )
            yield CounterMetricFamily(
                "conveyor_slow_subscribers_closed",
                "Subscriptions closed for falling more than CONVEYOR_SUBSCRIBER_BUFFER behind.",
                value=self.hub.slow_subscribers_closed,
            )
        renders = CounterMetricFamily(
            "conveyor_live_renders",
            "Batches of live events rendered, by how: `compiled` (one statement of the "
            "compiled read path) or `resolvers` (graphql-core's field resolution).",
            labels=["path"],
        )
        for path in (RESOLVERS, COMPILED):
            renders.add_metric([path], self.live_renders.get(path, 0))
        yield renders
        in_use, size = monitoring.pool_connections()
        pool = GaugeMetricFamily(
            "conveyor_pool_connections",
            "Connections of this process: to Conveyor's database (pool `conveyor`, in use and "
            "open) and to targets (pool `targets`, one per running task).",
            labels=["pool", "state"],
        )
        pool.add_metric(["conveyor", "in_use"], in_use)
        pool.add_metric(["conveyor", "open"], size)
        if self.worker is not None:
            pool.add_metric(["targets", "in_use"], self.worker.running_count)
            yield GaugeMetricFamily(
                "conveyor_worker_claiming",
                "1 while this process's worker looks for work (its readiness check), else 0.",
                value=int(self.worker.claiming),
            )
        yield pool
        yield _family(
            "conveyor_tasks",
            "Tasks in each status (all processes; read at most every few seconds).",
            "status",
            self.tasks_by_status,
        )
        yield _family(
            "conveyor_tasks_waiting",
            "Unfinished tasks by what they wait for (all processes; read at most every few "
            "seconds).",
            "reason",
            self.tasks_by_waiting_reason,
        )


def _family(name: str, documentation: str, label: str, counts: dict[str, int]) -> Metric:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for value, count in sorted(counts.items()):
        family.add_metric([value], count)
    return family


class Metrics:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = CollectorRegistry()
        self._clock = clock
        self._operation_names: set[str] = set()
        self._task_counts_read_at: float | None = None
        self._state = _ProcessState()
        self.registry.register(self._state)
        registry = self.registry
        self.requests = Counter(
            "conveyor_graphql_requests",
            "GraphQL requests over HTTP by operation name and outcome (OK, or the code of the "
            "first error).",
            ["operation", "outcome"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "conveyor_graphql_request_duration_seconds",
            "Time from a GraphQL request's arrival to its response, by operation name.",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.errors = Counter(
            "conveyor_graphql_errors",
            "Errors in GraphQL responses by code.",
            ["code"],
            registry=registry,
        )
        self.query_cost = Histogram(
            "conveyor_graphql_query_cost",
            "The cost of the operations run (see CONVEYOR_MAX_QUERY_COST).",
            buckets=COST_BUCKETS,
            registry=registry,
        )
        self.reads = Counter(
            "conveyor_graphql_reads",
            "Queries by how they were answered: `compiled` (the compiled read path) or "
            "`resolvers` (graphql-core's field resolution).",
            ["path"],
            registry=registry,
        )
        self.websockets_open = Gauge(
            "conveyor_websockets_open", "WebSockets open at /graphql.", registry=registry
        )
        self.claims = Counter(
            "conveyor_worker_claims", "Tasks claimed by this process's worker.", registry=registry
        )
        self.task_runs = Counter(
            "conveyor_task_runs",
            "Task runs finished by this process's worker, by task type and outcome.",
            ["type", "outcome"],
            registry=registry,
        )
        self.task_run_duration = Histogram(
            "conveyor_task_run_duration_seconds",
            "How long task runs took on their targets, by task type and outcome.",
            ["type", "outcome"],
            buckets=TASK_DURATION_BUCKETS,
            registry=registry,
        )
        self.lease_recoveries = Counter(
            "conveyor_lease_recoveries",
            "Tasks whose worker stopped renewing its lease, settled by this process, by the "
            "status they were settled as.",
            ["status"],
            registry=registry,
        )

        # Every known series from the start, at 0: a rate over a series that appears with its
        # first increment misses that increment.
        for task_type in TaskType:
            for status in (TaskRunStatus.DONE, TaskRunStatus.FAILED, TaskRunStatus.CANCELED):
                self.task_runs.labels(task_type.value, status.value)
        for settled in (TaskStatus.DONE, TaskStatus.PENDING, TaskStatus.FAILED):
            self.lease_recoveries.labels(settled.value)
        for path in (RESOLVERS, COMPILED):
            self.reads.labels(path)

    def watch_hub(self, hub: HubState | None) -> None:
        self._state.hub = hub

    def watch_worker(self, worker: WorkerState | None) -> None:
        self._state.worker = worker

    def watch_live_renders(self, counts: Mapping[str, int]) -> None:
        """Counts of rendered batches by path, read at each scrape."""
        self._state.live_renders = counts

    def operation_label(self, name: str | None) -> str:
        """The label of an operation name, bounded in number."""
        if not name:
            return ANONYMOUS_OPERATION
        if name in self._operation_names:
            return name
        if len(self._operation_names) >= MAX_OPERATION_NAMES:
            return OTHER_OPERATION
        self._operation_names.add(name)
        return name

    def count_errors(self, codes: Iterable[str]) -> None:
        for code in codes:
            self.errors.labels(code).inc()

    async def exposition(self) -> bytes:
        """The metrics in Prometheus' text format, the task counts refreshed when stale."""
        now = self._clock()
        read_at = self._task_counts_read_at
        if read_at is None or now - read_at >= TASK_COUNTS_TTL_SECONDS:
            try:
                async with asyncio.timeout(DATABASE_WAIT_SECONDS):
                    by_status = await monitoring.tasks_by_status()
                    by_reason = await monitoring.tasks_by_waiting_reason()
            except Exception as error:
                # The database is away: the last counts stand, and the process's own metrics
                # still reach the scraper, which is when they matter most.
                if not (isinstance(error, TimeoutError) or database_unavailable(error)):
                    raise
            else:
                self._state.tasks_by_status = by_status
                self._state.tasks_by_waiting_reason = by_reason
                self._task_counts_read_at = now
        return generate_latest(self.registry)
