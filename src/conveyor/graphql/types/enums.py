"""The domain's value sets, registered as GraphQL enums (the same Python classes)."""

import strawberry
from strawberry.types.enum import StrawberryEnumDefinition, has_enum_definition

from conveyor.domain.check_review import CheckGate, CheckSource
from conveyor.domain.checks import CheckLevel
from conveyor.domain.permissions import Role
from conveyor.domain.scheduling import WaitingKind
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
from conveyor.domain.transitions import TaskAction

__all__ = [
    "ApprovalPolicy",
    "CheckGate",
    "CheckLevel",
    "CheckSource",
    "Engine",
    "EventKind",
    "PipelineStatus",
    "Role",
    "StageStatus",
    "TaskAction",
    "TaskRunStatus",
    "TaskStatus",
    "TaskType",
    "WaitingKind",
]

strawberry.enum(TaskStatus, description="Where a task is in its life.")
strawberry.enum(StageStatus, description="A stage's status, derived from its tasks' statuses.")
strawberry.enum(PipelineStatus, description="The status of a pipeline and of its issue (1-to-1).")
strawberry.enum(ApprovalPolicy, description="Whether an environment's tasks wait for a person.")
strawberry.enum(Engine, description="The database engine of an instance.")
strawberry.enum(TaskType, description="What a task does to its target.")
strawberry.enum(TaskRunStatus, description="How an attempt ended.")
strawberry.enum(EventKind, description="What an event records.")
strawberry.enum(WaitingKind, description="What kind of thing a waiting task waits for.")
strawberry.enum(TaskAction, description="Something a person may do to a task.")
strawberry.enum(Role, description="What an API token may do.")
strawberry.enum(CheckLevel, description="How serious a check's finding is.")
strawberry.enum(CheckSource, description="What produced a check's finding.")
strawberry.enum(CheckGate, description="Where a task's checks leave it.")


def _definition(enum: object) -> StrawberryEnumDefinition:
    assert has_enum_definition(enum)
    return enum.__strawberry_definition__


# START, SUCCEED and FAIL are the runner's alone: no client ever takes them, so the API's enum
# leaves them out rather than offer values every mutation would refuse.
_definition(TaskAction).values = [
    value
    for value in _definition(TaskAction).values
    if not TaskAction(value.value).performed_by_runner
]
