from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Self

import strawberry

from conveyor.domain import scheduling
from conveyor.graphql.context import Info
from conveyor.graphql.types.enums import WaitingKind

if TYPE_CHECKING:
    from conveyor.graphql.types.stage import Stage
    from conveyor.graphql.types.task import Task


@strawberry.type(description="Why a task that is not running does not start yet.")
class WaitingReason:
    kind: WaitingKind
    message: str = strawberry.field(description="The reason in words a person can read.")
    not_before: datetime | None = strawberry.field(
        description="When the task may start, for NOT_BEFORE."
    )
    limit: int | None = strawberry.field(
        description="The instance's limit of running tasks, for INSTANCE_AT_LIMIT."
    )
    rules: list[str] = strawberry.field(
        description="The rules whose findings block the task, for CHECKS_FAILED."
    )
    stage_id: strawberry.Private[int | None]
    task_id: strawberry.Private[int | None]

    @strawberry.field(description="The earlier stage that is not finished, for EARLIER_STAGE.")
    async def stage(
        self, info: Info
    ) -> Annotated["Stage", strawberry.lazy("conveyor.graphql.types.stage")] | None:
        from conveyor.graphql.types.stage import Stage

        return await Stage.load_optional(info, self.stage_id)

    @strawberry.field(
        description="The task waited for: the unfinished blocker for BLOCKED_BY, the task "
        "running against the database (of any pipeline) for DATABASE_BUSY."
    )
    async def blocking_task(
        self, info: Info
    ) -> Annotated["Task", strawberry.lazy("conveyor.graphql.types.task")] | None:
        from conveyor.graphql.types.task import Task

        return await Task.load_optional(info, self.task_id)

    @classmethod
    def from_domain(cls, reason: scheduling.WaitingReason) -> Self:
        return cls(
            kind=reason.kind,
            message=reason.message,
            not_before=reason.not_before,
            limit=reason.limit,
            rules=list(reason.rules),
            stage_id=reason.stage_id,
            task_id=reason.task_id,
        )
