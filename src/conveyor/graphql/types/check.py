"""What the checks found, on a task, a stage or a pipeline, and the review policy weighing it."""

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Self, cast

import strawberry
from strawberry.scalars import JSON

from conveyor.db import models
from conveyor.domain.check_review import CheckSummary as CheckSummaryFacts
from conveyor.domain.checks import Finding, ReviewPolicy
from conveyor.graphql.context import Info
from conveyor.graphql.types.enums import CheckLevel, CheckSource

if TYPE_CHECKING:
    from conveyor.graphql.types.task import Task


@strawberry.type(description="One finding of a task's checks, for its current statement.")
class CheckFinding:
    rule: str = strawberry.field(description="The rule that found it; see `docUrl`.")
    level: CheckLevel
    source: CheckSource
    message: str
    statement: str | None = strawberry.field(description="The statement it is about.")
    line: int | None = strawberry.field(description="1-based, in the task's whole statement.")
    column: int | None = strawberry.field(description="1-based, in characters.")
    doc_url: str | None = strawberry.field(description="Where the rule is explained.")
    detail: JSON | None = strawberry.field(
        description="A dry run's outcome: `executed`, `rowsAffected`, `durationMs`, "
        "`statements` (each `statusTag`, `rowsAffected`, `durationMs`), and on failure "
        "`sqlstate`, `error`, `failedStatement` (1-based)."
    )
    created_at: datetime

    @classmethod
    def from_row(cls, row: models.TaskCheck) -> Self:
        return cls(
            rule=row.rule,
            level=CheckLevel(row.level),
            source=row.source,
            message=row.message,
            statement=row.statement,
            line=row.line,
            column=row.column,
            doc_url=row.doc_url,
            detail=cast(JSON, row.detail),
            created_at=row.created_at,
        )

    @classmethod
    def from_finding(cls, finding: Finding, source: CheckSource, at: datetime) -> Self:
        return cls(
            rule=finding.rule,
            level=finding.level,
            source=source,
            message=finding.message,
            statement=finding.statement,
            line=finding.line,
            column=finding.column,
            doc_url=finding.doc_url,
            detail=None,
            created_at=at,
        )


@strawberry.type(description="A DBA let a task run despite its failed checks.")
class ChecksOverride:
    by: str
    at: datetime
    reason: str
    statement_version: int = strawberry.field(
        description="The statement version it holds for; an edit dismisses it."
    )


@strawberry.type(description="The checks of a pipeline's (or a stage's) tasks that can still run.")
class CheckSummary:
    errors: int
    warnings: int
    notices: int
    blocked_task_ids: strawberry.Private[tuple[int, ...]]
    pending_task_ids: strawberry.Private[tuple[int, ...]]

    @strawberry.field(description="Tasks their checks keep from running (CHECKS_FAILED).")
    async def blocked_tasks(
        self, info: Info
    ) -> list[Annotated["Task", strawberry.lazy("conveyor.graphql.types.task")]]:
        return await _tasks(info, self.blocked_task_ids)

    @strawberry.field(description="Tasks whose checks have not finished (CHECKS_PENDING).")
    async def pending_tasks(
        self, info: Info
    ) -> list[Annotated["Task", strawberry.lazy("conveyor.graphql.types.task")]]:
        return await _tasks(info, self.pending_task_ids)

    @classmethod
    def from_domain(cls, summary: CheckSummaryFacts) -> Self:
        return cls(
            errors=summary.errors,
            warnings=summary.warnings,
            notices=summary.notices,
            blocked_task_ids=summary.blocked_task_ids,
            pending_task_ids=summary.pending_task_ids,
        )


async def _tasks(info: Info, ids: tuple[int, ...]) -> list["Task"]:
    from conveyor.graphql.types.task import Task

    rows = await info.context.loaders.task.load_many(list(ids))
    return [Task.from_row(row) for row in rows if row is not None]


@strawberry.type(description="The level a review policy gives a rule; null: the rule is off.")
class RuleLevel:
    rule: str
    level: CheckLevel | None


@strawberry.type(
    name="ReviewPolicy",
    description="How an environment weighs check findings: each rule's level, and from "
    "which level a finding keeps the task from running.",
)
class ReviewPolicyView:
    blocking: CheckLevel
    rules: list[RuleLevel] = strawberry.field(
        description="Every rule the policy names, the defaults included, by name."
    )

    @classmethod
    def from_domain(cls, policy: ReviewPolicy) -> Self:
        return cls(
            blocking=policy.blocking,
            rules=[
                RuleLevel(rule=rule, level=level) for rule, level in sorted(policy.levels.items())
            ],
        )


@strawberry.type(description="What the statement checks would tell one task of a plan.")
class PlannedTaskCheck:
    stage_position: int = strawberry.field(description="0 for the plan's first stage.")
    task_position: int = strawberry.field(description="0 for the stage's first task.")
    ref: str | None = strawberry.field(description="The task's ref in the plan, if it has one.")
    findings: list[CheckFinding]
    blocking_rules: list[str] = strawberry.field(
        description="The rules that would keep the task from running (CHECKS_FAILED)."
    )


@strawberry.type(description="A plan checked without being created.")
class PlanCheck:
    tasks: list[PlannedTaskCheck]
    blocked: bool = strawberry.field(
        description="Whether any task would wait with CHECKS_FAILED once created."
    )
