"""Per-request DataLoaders over the batched reads of `conveyor.db.reads`."""

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from strawberry.dataloader import DataLoader
from tortoise.models import Model

from conveyor.db import checks, reads, scheduling
from conveyor.db.models import (
    Database,
    Environment,
    Event,
    Instance,
    Issue,
    Pipeline,
    Stage,
    Task,
    TaskCheck,
    TaskRun,
)
from conveyor.domain.scheduling import SchedulingDecision

K = TypeVar("K")
V = TypeVar("V")
M = TypeVar("M", bound=Model)


def _keyed(
    fetch: Callable[[Iterable[int]], Awaitable[Mapping[int, V]]], missing: Callable[[], Any]
) -> DataLoader[int, V]:
    async def load(keys: list[int]) -> list[V]:
        found = await fetch(keys)
        return [found[key] if key in found else missing() for key in keys]

    return DataLoader(load_fn=load)


def _by_id(model: type[M]) -> DataLoader[int, M | None]:
    async def fetch(ids: Iterable[int]) -> dict[int, M]:
        return await reads.rows_by_id(model, ids)

    return _keyed(fetch, lambda: None)


def _grouped(
    fetch: Callable[[Iterable[int]], Awaitable[Mapping[int, list[V]]]],
) -> DataLoader[int, list[V]]:
    return _keyed(fetch, list)


#: What a pipeline that does not exist decides: nothing starts, nothing waits.
_NO_DECISION = SchedulingDecision(startable=(), waiting={})


@dataclass
class Loaders:
    #: When the request arrived: scheduling is decided as of this moment, the same for every
    #: pipeline the request shows.
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    environment: DataLoader[int, Environment | None] = field(
        default_factory=lambda: _by_id(Environment)
    )
    instance: DataLoader[int, Instance | None] = field(default_factory=lambda: _by_id(Instance))
    database: DataLoader[int, Database | None] = field(default_factory=lambda: _by_id(Database))
    issue: DataLoader[int, Issue | None] = field(default_factory=lambda: _by_id(Issue))
    pipeline: DataLoader[int, Pipeline | None] = field(default_factory=lambda: _by_id(Pipeline))
    stage: DataLoader[int, Stage | None] = field(default_factory=lambda: _by_id(Stage))
    task: DataLoader[int, Task | None] = field(default_factory=lambda: _by_id(Task))
    task_run: DataLoader[int, TaskRun | None] = field(default_factory=lambda: _by_id(TaskRun))
    event: DataLoader[int, Event | None] = field(default_factory=lambda: _by_id(Event))
    #: The newest event's sequence of each pipeline (0 when none).
    last_sequence_by_pipeline: DataLoader[int, int] = field(
        default_factory=lambda: _keyed(reads.last_sequence_by_pipeline, int)
    )
    pipeline_by_issue: DataLoader[int, Pipeline | None] = field(
        default_factory=lambda: _keyed(reads.pipelines_by_issue, lambda: None)
    )
    stages_by_pipeline: DataLoader[int, list[Stage]] = field(init=False)
    tasks_by_stage: DataLoader[int, list[Task]] = field(init=False)
    blocker_ids_by_task: DataLoader[int, list[int]] = field(
        default_factory=lambda: _grouped(reads.blocker_ids_by_task)
    )
    runs_by_task: DataLoader[int, list[TaskRun]] = field(
        default_factory=lambda: _grouped(reads.runs_by_task)
    )
    #: Each task's check findings for its current statement.
    checks_by_task: DataLoader[int, list[TaskCheck]] = field(
        default_factory=lambda: _grouped(checks.findings_by_task)
    )
    events_by_issue: DataLoader[int, list[Event]] = field(
        default_factory=lambda: _grouped(reads.events_by_issue)
    )

    scheduling_decision: DataLoader[int, SchedulingDecision] = field(init=False)

    def __post_init__(self) -> None:
        # A row met through its parent is not fetched again when something names it by id.
        self.stages_by_pipeline = _grouped(_priming(reads.stages_by_pipeline, self.stage))
        self.tasks_by_stage = _grouped(_priming(reads.tasks_by_stage, self.task))
        # The worker decides through the same function: a waiting reason shown is the one acted on.
        self.scheduling_decision = _keyed(self._decide, lambda: _NO_DECISION)

    def forget(self) -> None:
        """Start afresh, as for a new request: for a connection that outlives one answer (a
        subscription's), whose later messages must not show rows cached for earlier ones."""
        # Clearing caches costs microseconds where building new loaders costs about a
        # millisecond, once per message and subscriber.
        self.now = datetime.now(UTC)
        for loader in vars(self).values():
            if isinstance(loader, DataLoader):
                loader.clear_all()

    async def _decide(self, pipeline_ids: Iterable[int]) -> dict[int, SchedulingDecision]:
        return await scheduling.decisions(pipeline_ids, self.now)


def _priming(
    fetch: Callable[[Iterable[int]], Awaitable[Mapping[int, list[M]]]],
    by_id: DataLoader[int, M | None],
) -> Callable[[Iterable[int]], Awaitable[Mapping[int, list[M]]]]:
    async def fetch_and_prime(keys: Iterable[int]) -> Mapping[int, list[M]]:
        groups = await fetch(keys)
        for rows in groups.values():
            for row in rows:
                by_id.prime(row.pk, row)
        return groups

    return fetch_and_prime
