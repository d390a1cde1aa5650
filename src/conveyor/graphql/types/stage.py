from typing import TYPE_CHECKING, Annotated, Self

import strawberry
from strawberry import relay

from conveyor.db import checks, models
from conveyor.domain.rollup import count_task_statuses, derive_stage_status
from conveyor.domain.statuses import TaskStatus as DomainTaskStatus
from conveyor.errors import invalid_input
from conveyor.graphql.context import Info
from conveyor.graphql.inputs import node_key
from conveyor.graphql.types.check import CheckSummary
from conveyor.graphql.types.enums import StageStatus
from conveyor.graphql.types.environment import Environment
from conveyor.graphql.types.node import LoadedNode
from conveyor.graphql.types.pagination import bounded
from conveyor.graphql.types.task import Task

if TYPE_CHECKING:
    from conveyor.graphql.types.pipeline import Pipeline


@strawberry.type(description="How many of a stage's tasks are in each status.")
class TaskStatusCounts:
    pending_approval: int
    pending: int
    running: int
    done: int
    failed: int
    canceled: int
    skipped: int
    total: int


@strawberry.type(description="One step of a pipeline, bound to one environment.")
class Stage(LoadedNode):
    loader_name = "stage"

    id: relay.NodeID[int]
    name: str
    position: int = strawberry.field(description="0 for the first stage of its pipeline.")
    pipeline_id: strawberry.Private[int]
    environment_id: strawberry.Private[int]

    @strawberry.field(
        description="The checks of the stage's tasks that can still run, as "
        "`Pipeline.checkSummary` counts them."
    )
    async def check_summary(self, info: Info) -> CheckSummary:
        return CheckSummary.from_domain(await checks.check_summary(stage_id=self.id))

    @strawberry.field
    async def environment(self, info: Info) -> Environment:
        return await Environment.load(info, self.environment_id)

    @strawberry.field
    async def pipeline(
        self, info: Info
    ) -> Annotated["Pipeline", strawberry.lazy("conveyor.graphql.types.pipeline")]:
        from conveyor.graphql.types.pipeline import Pipeline

        return await Pipeline.load(info, self.pipeline_id)

    @strawberry.field(
        description="The stage's tasks, in order: `first` of them (default "
        "CONVEYOR_DEFAULT_PAGE_SIZE, 20; at most CONVEYOR_MAX_PAGE_SIZE, 100), after the task "
        "`after` (the last task of the previous page). `taskCounts.total` says how many the "
        "stage holds."
    )
    async def tasks(
        self, info: Info, first: int | None = None, after: strawberry.ID | None = None
    ) -> list[Task]:
        rows = await info.context.loaders.tasks_by_stage.load(self.id)
        start = 0
        if after is not None:
            key = node_key(after, "Task", ("after",))
            start = next((index + 1 for index, row in enumerate(rows) if row.id == key), -1)
            if start < 0:
                raise invalid_input("not a task of this stage", ("after",))
        return [Task.from_row(row) for row in bounded(rows, first, start, info.context.settings)]

    @strawberry.field(
        description="The sequence number of the newest event of the stage's pipeline: its "
        "status and counts, derived from its tasks, are as of it. Of two copies, keep the "
        "one with the larger value."
    )
    async def last_sequence(self, info: Info) -> int:
        return await info.context.loaders.last_sequence_by_pipeline.load(self.pipeline_id)

    @strawberry.field(description="Derived from the tasks' statuses; never stored.")
    async def status(self, info: Info) -> StageStatus:
        return derive_stage_status(await self._task_statuses(info))

    @strawberry.field(description="How many tasks are in each status.")
    async def task_counts(self, info: Info) -> TaskStatusCounts:
        statuses = await self._task_statuses(info)
        counts = count_task_statuses(statuses)
        return TaskStatusCounts(
            pending_approval=counts[DomainTaskStatus.PENDING_APPROVAL],
            pending=counts[DomainTaskStatus.PENDING],
            running=counts[DomainTaskStatus.RUNNING],
            done=counts[DomainTaskStatus.DONE],
            failed=counts[DomainTaskStatus.FAILED],
            canceled=counts[DomainTaskStatus.CANCELED],
            skipped=counts[DomainTaskStatus.SKIPPED],
            total=len(statuses),
        )

    async def _task_statuses(self, info: Info) -> list[DomainTaskStatus]:
        return [task.status for task in await info.context.loaders.tasks_by_stage.load(self.id)]

    @classmethod
    def from_row(cls, row: models.Stage) -> Self:
        return cls(
            id=row.id,
            name=row.name,
            position=row.position,
            pipeline_id=row.pipeline_id,
            environment_id=row.environment_id,
        )
