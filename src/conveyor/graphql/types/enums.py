"""The domain's value sets, registered as GraphQL enums (the same Python classes)."""

import strawberry

from conveyor.domain.statuses import (
    ApprovalPolicy,
    Engine,
    EventKind,
    PipelineStatus,
    StageStatus,
    TaskRunStatus,
    TaskStatus,
    TaskType,
)

__all__ = [
    "ApprovalPolicy",
    "Engine",
    "EventKind",
    "PipelineStatus",
    "StageStatus",
    "TaskRunStatus",
    "TaskStatus",
    "TaskType",
]

strawberry.enum(TaskStatus, description="Where a task is in its life.")
strawberry.enum(StageStatus, description="A stage's status, derived from its tasks' statuses.")
strawberry.enum(PipelineStatus, description="The status of a pipeline and of its issue (1-to-1).")
strawberry.enum(ApprovalPolicy, description="Whether an environment's tasks wait for a person.")
strawberry.enum(Engine, description="The database engine of an instance.")
strawberry.enum(TaskType, description="What a task does to its target.")
strawberry.enum(TaskRunStatus, description="How an attempt ended.")
strawberry.enum(EventKind, description="What an event records.")
