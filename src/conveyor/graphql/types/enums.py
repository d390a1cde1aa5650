"""The domain's value sets, exposed as GraphQL enums."""

import strawberry

from conveyor.domain import statuses

TaskStatus = strawberry.enum(statuses.TaskStatus, description="Where a task is in its life.")
StageStatus = strawberry.enum(
    statuses.StageStatus, description="A stage's status, derived from its tasks' statuses."
)
PipelineStatus = strawberry.enum(
    statuses.PipelineStatus, description="The status of a pipeline and of its issue (1-to-1)."
)
ApprovalPolicy = strawberry.enum(
    statuses.ApprovalPolicy, description="Whether an environment's tasks wait for a person."
)
Engine = strawberry.enum(statuses.Engine, description="The database engine of an instance.")
TaskType = strawberry.enum(statuses.TaskType, description="What a task does to its target.")
TaskRunStatus = strawberry.enum(statuses.TaskRunStatus, description="How an attempt ended.")
EventKind = strawberry.enum(statuses.EventKind, description="What an event records.")
