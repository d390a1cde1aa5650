from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Self

import strawberry
from strawberry import relay

from conveyor.db import models, reads
from conveyor.domain.check_review import CheckFacts
from conveyor.domain.permissions import ApprovalRules
from conveyor.domain.task_actions import TaskAccess, TaskFacts, actions_for
from conveyor.graphql.context import Info
from conveyor.graphql.types.check import CheckFinding, ChecksOverride
from conveyor.graphql.types.database import Database
from conveyor.graphql.types.enums import CheckGate, TaskAction, TaskStatus, TaskType
from conveyor.graphql.types.event import Event
from conveyor.graphql.types.instance import Instance
from conveyor.graphql.types.node import LoadedNode
from conveyor.graphql.types.pagination import page_size
from conveyor.graphql.types.task_run import TaskRun
from conveyor.graphql.types.waiting_reason import WaitingReason

if TYPE_CHECKING:
    from conveyor.graphql.types.pipeline import Pipeline
    from conveyor.graphql.types.stage import Stage


@strawberry.type(description="One operation against one instance (and usually one database).")
class Task(LoadedNode):
    loader_name = "task"

    id: relay.NodeID[int]
    name: str
    type: TaskType
    status: TaskStatus
    statement: str | None = strawberry.field(description="The SQL a schema or data change runs.")
    database_name: str | None = strawberry.field(
        description="The name of the database a DATABASE_CREATE task creates."
    )
    not_before: datetime | None = strawberry.field(
        description="The task does not start before this time."
    )
    version: int = strawberry.field(
        description="Grows with every change; pass it back as expectedVersion to refuse "
        "overwriting a change you have not seen."
    )
    status_reason: str | None = strawberry.field(
        description="Why the task is SKIPPED (a person's words) or FAILED (the runner's)."
    )
    approved_by: str | None = strawberry.field(
        description="Who let the task past its approval gate; null until someone has, and "
        "again after an edit or a retry."
    )
    approved_at: datetime | None
    cancel_requested: bool = strawberry.field(
        description="A person asked to stop the RUNNING task; it stays RUNNING until its "
        "worker has aborted it."
    )
    statement_version: int = strawberry.field(
        description="Grows with every edit of the statement; checks and overrides are for one."
    )
    check_status: CheckGate = strawberry.field(
        description="Where the task's checks leave it: PENDING until a worker has checked its "
        "current statement, then PASSED, FAILED (it waits with CHECKS_FAILED) or OVERRIDDEN."
    )
    checks_override: ChecksOverride | None = strawberry.field(
        description="The DBA's override of the current statement's failed checks, if any."
    )
    dry_run_requested: bool = strawberry.field(
        description="A dry run was asked for and has not finished yet."
    )
    created_at: datetime
    updated_at: datetime
    stage_id: strawberry.Private[int]
    pipeline_id: strawberry.Private[int]
    instance_id: strawberry.Private[int]
    database_id: strawberry.Private[int | None]
    row: strawberry.Private[models.Task]

    @strawberry.field
    async def instance(self, info: Info) -> Instance:
        return await Instance.load(info, self.instance_id)

    @strawberry.field(description="The target database; null for instance-level tasks.")
    async def database(self, info: Info) -> Database | None:
        return await Database.load_optional(info, self.database_id)

    @strawberry.field
    async def stage(
        self, info: Info
    ) -> Annotated["Stage", strawberry.lazy("conveyor.graphql.types.stage")]:
        from conveyor.graphql.types.stage import Stage

        return await Stage.load(info, self.stage_id)

    @strawberry.field
    async def pipeline(
        self, info: Info
    ) -> Annotated["Pipeline", strawberry.lazy("conveyor.graphql.types.pipeline")]:
        from conveyor.graphql.types.pipeline import Pipeline

        return await Pipeline.load(info, self.pipeline_id)

    @strawberry.field(
        description="The sequence number of the newest event of the task's pipeline: the "
        "task's fields, and those derived from the rest of the pipeline (`waitingReason`, "
        "`availableActions`), are as of it. Of two copies (a mutation's answer, a "
        "subscription's message, a query's), keep the one with the larger value."
    )
    async def last_sequence(self, info: Info) -> int:
        return await info.context.loaders.last_sequence_by_pipeline.load(self.pipeline_id)

    @strawberry.field(description="Tasks that must be DONE or SKIPPED before this one starts.")
    async def blocked_by(self, info: Info) -> list["Task"]:
        blocker_ids = await info.context.loaders.blocker_ids_by_task.load(self.id)
        rows = await info.context.loaders.task.load_many(blocker_ids)
        return [Task.from_row(row) for row in rows if row is not None]

    @strawberry.field(
        description="The task's part of its issue's audit trail, oldest first: `first` events "
        "(default CONVEYOR_DEFAULT_PAGE_SIZE, 20; at most CONVEYOR_MAX_PAGE_SIZE, 100) after "
        "the one numbered `afterSequence` (the last `sequence` of the previous page)."
    )
    async def events(
        self, info: Info, first: int | None = None, after_sequence: int | None = None
    ) -> list[Event]:
        limit = page_size(first, info.context.settings)
        rows = await reads.task_events(self.pipeline_id, self.id, after_sequence, limit)
        return [Event.from_row(row) for row in rows]

    @strawberry.field(description="Every attempt at running the task, first to last.")
    async def runs(self, info: Info) -> list[TaskRun]:
        return [
            TaskRun.from_row(row) for row in await info.context.loaders.runs_by_task.load(self.id)
        ]

    @strawberry.field(
        description="What the checks found on the current statement: the statement's own "
        "rules, the target's, and the last dry run's outcome; statement findings first, each "
        "source in the statement's order."
    )
    async def checks(self, info: Info) -> list[CheckFinding]:
        return [
            CheckFinding.from_row(row)
            for row in await info.context.loaders.checks_by_task.load(self.id)
        ]

    @strawberry.field(
        description="Why the task does not start yet; null when it is running, finished, or "
        "free to start now."
    )
    async def waiting_reason(self, info: Info) -> WaitingReason | None:
        decision = await info.context.loaders.scheduling_decision.load(self.pipeline_id)
        reason = decision.waiting.get(self.id)
        return None if reason is None else WaitingReason.from_domain(reason)

    @strawberry.field(
        description="What the caller may do to the task now: exactly the mutations that would "
        "not be refused, given its state, the caller's role and the environment's policy."
    )
    async def available_actions(self, info: Info) -> list[TaskAction]:
        loaders = info.context.loaders
        pipeline = await loaders.pipeline.load(self.pipeline_id)
        stage = await loaders.stage.load(self.stage_id)
        assert pipeline is not None, "every task has a pipeline"
        assert stage is not None, "every task has a stage"
        issue = await loaders.issue.load(pipeline.issue_id)
        environment = await loaders.environment.load(stage.environment_id)
        assert issue is not None, "every pipeline has an issue"
        assert environment is not None, "every stage has an environment"
        access = TaskAccess(info.context.acting, issue.creator, ApprovalRules.of(environment))
        return actions_for(TaskFacts.of(self.row, pipeline.status), access)

    @classmethod
    def from_row(cls, row: models.Task) -> Self:
        return cls(
            id=row.id,
            name=row.name,
            type=row.type,
            status=row.status,
            statement=row.statement,
            database_name=row.database_name,
            not_before=row.not_before,
            version=row.version,
            status_reason=row.status_reason,
            approved_by=row.approved_by,
            approved_at=row.approved_at,
            cancel_requested=row.cancel_requested_at is not None,
            statement_version=row.statement_version,
            check_status=CheckFacts.of(row).gate,
            checks_override=ChecksOverride(
                by=row.checks_overridden_by,
                at=row.checks_overridden_at,
                reason=row.checks_override_reason,
                statement_version=row.checks_overridden_version,
            )
            if row.checks_overridden_version == row.statement_version
            and row.checks_overridden_by is not None
            and row.checks_overridden_at is not None
            and row.checks_override_reason is not None
            else None,
            dry_run_requested=row.dry_run_requested_at is not None,
            created_at=row.created_at,
            updated_at=row.updated_at,
            stage_id=row.stage_id,
            pipeline_id=row.pipeline_id,
            instance_id=row.instance_id,
            database_id=row.database_id,
            row=row,
        )
