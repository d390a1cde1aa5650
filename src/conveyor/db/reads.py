"""The read path: every query the API's reads issue, each batched over many keys at once.

Each function answers for a whole set of keys in one statement, so a request's statement
count depends on the shape of its GraphQL query, never on how many rows it touches.
"""

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from tortoise.expressions import Subquery
from tortoise.functions import Max
from tortoise.models import Model
from tortoise.queryset import QuerySet

from conveyor.db.models import (
    Database,
    Environment,
    Event,
    Instance,
    Issue,
    Pipeline,
    Stage,
    Task,
    TaskDependency,
    TaskRun,
)
from conveyor.domain.statuses import PipelineStatus

M = TypeVar("M", bound=Model)


async def rows_by_id(model: type[M], ids: Iterable[int]) -> dict[int, M]:
    """The rows of `model` with these ids, by id (missing ids are absent)."""
    wanted = set(ids)
    if not wanted:
        return {}
    return {row.pk: row for row in await model.filter(id__in=wanted)}


async def _rows_grouped(
    model: type[M], column: str, keys: Iterable[int], order: Sequence[str]
) -> dict[int, list[M]]:
    wanted = set(keys)
    groups: dict[int, list[M]] = defaultdict(list)
    if wanted:
        for row in await model.filter(**{f"{column}__in": wanted}).order_by(*order):
            groups[getattr(row, column)].append(row)
    return groups


async def pipelines_by_issue(issue_ids: Iterable[int]) -> dict[int, Pipeline]:
    groups = await _rows_grouped(Pipeline, "issue_id", issue_ids, ("id",))
    return {issue_id: rows[0] for issue_id, rows in groups.items()}


async def stages_by_pipeline(pipeline_ids: Iterable[int]) -> dict[int, list[Stage]]:
    return await _rows_grouped(Stage, "pipeline_id", pipeline_ids, ("position",))


async def tasks_by_stage(stage_ids: Iterable[int]) -> dict[int, list[Task]]:
    return await _rows_grouped(Task, "stage_id", stage_ids, ("position",))


async def tasks_by_pipeline(pipeline_ids: Iterable[int]) -> dict[int, list[Task]]:
    return await _rows_grouped(Task, "pipeline_id", pipeline_ids, ("stage_id", "position"))


async def blocker_ids_by_task(task_ids: Iterable[int]) -> dict[int, list[int]]:
    links = await _rows_grouped(TaskDependency, "task_id", task_ids, ("blocked_by_id",))
    return {task_id: [link.blocked_by_id for link in rows] for task_id, rows in links.items()}


async def runs_by_task(task_ids: Iterable[int]) -> dict[int, list[TaskRun]]:
    return await _rows_grouped(TaskRun, "task_id", task_ids, ("attempt",))


async def last_sequence_by_pipeline(pipeline_ids: Iterable[int]) -> dict[int, int]:
    """The sequence of the newest event of each pipeline (one index probe each)."""
    wanted = set(pipeline_ids)
    if not wanted:
        return {}
    rows = (
        await Event.filter(pipeline_id__in=wanted)
        .group_by("pipeline_id")
        .annotate(last=Max("id"))
        .values_list("pipeline_id", "last")
    )
    return dict(rows)


async def events_by_issue(issue_ids: Iterable[int]) -> dict[int, list[Event]]:
    return await _rows_grouped(Event, "issue_id", issue_ids, ("id",))


async def task_events(pipeline_id: int, task_id: int, after: int | None, limit: int) -> list[Event]:
    """The first `limit` events of one task after the one numbered `after`, oldest first.
    The pipeline narrows the read to the (pipeline_id, id) index."""
    queryset = Event.filter(pipeline_id=pipeline_id, task_id=task_id)
    if after is not None:
        queryset = queryset.filter(id__gt=after)
    return await queryset.order_by("id").limit(limit)


@dataclass(frozen=True)
class Page(Generic[M]):
    rows: list[M]
    has_next_page: bool
    has_previous_page: bool


async def _page(
    queryset: QuerySet[M], *, key: str, descending: bool, first: int, after: int | None
) -> Page[M]:
    # Keyset pagination: stable under inserts and as cheap on page 1,000 as on page 1.
    if after is not None:
        queryset = queryset.filter(**{f"{key}__{'lt' if descending else 'gt'}": after})
    rows = await queryset.order_by(f"-{key}" if descending else key).limit(first + 1)
    return Page(
        rows=rows[:first], has_next_page=len(rows) > first, has_previous_page=after is not None
    )


def issues_matching(
    status: PipelineStatus | None = None, environment_id: int | None = None
) -> QuerySet[Issue]:
    queryset: QuerySet[Issue] = Issue.all()
    if status is not None:
        queryset = queryset.filter(pipeline__status=status)
    if environment_id is not None:
        queryset = queryset.filter(
            id__in=Subquery(
                Pipeline.filter(stages__environment_id=environment_id).values("issue_id")
            )
        )
    return queryset


def pipelines_matching(
    status: PipelineStatus | None = None, environment_id: int | None = None
) -> QuerySet[Pipeline]:
    queryset: QuerySet[Pipeline] = Pipeline.all()
    if status is not None:
        queryset = queryset.filter(status=status)
    if environment_id is not None:
        queryset = queryset.filter(
            id__in=Subquery(Stage.filter(environment_id=environment_id).values("pipeline_id"))
        )
    return queryset


def environments_matching() -> QuerySet[Environment]:
    queryset: QuerySet[Environment] = Environment.all()
    return queryset


def instances_matching(environment_id: int | None = None) -> QuerySet[Instance]:
    queryset: QuerySet[Instance] = Instance.all()
    if environment_id is not None:
        queryset = queryset.filter(environment_id=environment_id)
    return queryset


def databases_matching(
    instance_id: int | None = None, environment_id: int | None = None
) -> QuerySet[Database]:
    queryset: QuerySet[Database] = Database.all()
    if instance_id is not None:
        queryset = queryset.filter(instance_id=instance_id)
    if environment_id is not None:
        queryset = queryset.filter(instance__environment_id=environment_id)
    return queryset


async def page_newest_first(queryset: QuerySet[M], first: int, after: int | None) -> Page[M]:
    """Rows newest first (by id), `first` of them after the row with id `after`."""
    return await _page(queryset, key="id", descending=True, first=first, after=after)


async def page_oldest_first(queryset: QuerySet[M], first: int, after: int | None) -> Page[M]:
    return await _page(queryset, key="id", descending=False, first=first, after=after)


async def page_environments(first: int, after: int | None) -> Page[Environment]:
    """Environments along the promotion path; `after` is an environment's order."""
    return await _page(Environment.all(), key="order", descending=False, first=first, after=after)
