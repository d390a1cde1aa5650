from datetime import datetime
from typing import Self

import strawberry
from strawberry import relay

from conveyor.db import checks, models
from conveyor.domain.rollup import active_stage_index
from conveyor.graphql.context import Info
from conveyor.graphql.types.check import CheckSummary
from conveyor.graphql.types.enums import PipelineStatus
from conveyor.graphql.types.issue import Issue
from conveyor.graphql.types.node import LoadedNode
from conveyor.graphql.types.stage import Stage


@strawberry.type(description="The ordered stages of one issue.")
class Pipeline(LoadedNode):
    loader_name = "pipeline"

    id: relay.NodeID[int]
    status: PipelineStatus
    created_at: datetime
    updated_at: datetime
    issue_id: strawberry.Private[int]

    @strawberry.field
    async def issue(self, info: Info) -> Issue:
        return await Issue.load(info, self.issue_id)

    @strawberry.field(
        description="The checks of the tasks that can still run: findings counted per level, "
        "the tasks they block and those still being checked."
    )
    async def check_summary(self, info: Info) -> CheckSummary:
        return CheckSummary.from_domain(await checks.check_summary(pipeline_id=self.id))

    @strawberry.field(description="The stages, in the order they run.")
    async def stages(self, info: Info) -> list[Stage]:
        return [
            Stage.from_row(row)
            for row in await info.context.loaders.stages_by_pipeline.load(self.id)
        ]

    @strawberry.field(
        description="The sequence number of the newest event of the pipeline: its fields "
        "(the derived `activeStage` too) are as of it. Of two copies (a mutation's answer, a "
        "subscription's message, a query's), keep the one with the larger value."
    )
    async def last_sequence(self, info: Info) -> int:
        return await info.context.loaders.last_sequence_by_pipeline.load(self.id)

    @strawberry.field(
        description="The first stage with a task not DONE or SKIPPED: only its tasks may "
        "start. Null once every task is DONE or SKIPPED."
    )
    async def active_stage(self, info: Info) -> Stage | None:
        loaders = info.context.loaders
        stages = await loaders.stages_by_pipeline.load(self.id)
        tasks = await loaders.tasks_by_stage.load_many([stage.id for stage in stages])
        index = active_stage_index([[task.status for task in stage_tasks] for stage_tasks in tasks])
        return None if index is None else Stage.from_row(stages[index])

    @classmethod
    def from_row(cls, row: models.Pipeline) -> Self:
        return cls(
            id=row.id,
            status=row.status,
            created_at=row.created_at,
            updated_at=row.updated_at,
            issue_id=row.issue_id,
        )
