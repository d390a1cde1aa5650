"""Mutation inputs, and their translation to the domain's plain values."""

from datetime import datetime

import strawberry
from strawberry import relay
from strawberry.relay import GlobalIDValueError

from conveyor.domain.check_review import (
    OVERRIDE_REASON_MAX_LENGTH,
    POLICY_RULES_MAX,
    RULE_NAME_MAX_LENGTH,
)
from conveyor.domain.checks import CheckLevel
from conveyor.domain.plan import (
    DATABASE_NAME_MAX_LENGTH,
    DESCRIPTION_MAX_LENGTH,
    MALFORMED_ID,
    MALFORMED_ID_MESSAGE,
    MAX_BLOCKED_BY,
    MAX_STAGES,
    MAX_TASKS_PER_STAGE,
    NAME_MAX_LENGTH,
    STATEMENT_MAX_LENGTH,
    TITLE_MAX_LENGTH,
    UNKNOWN_ROW,
    IssuePlan,
    StagePlan,
    TaskPlan,
)
from conveyor.domain.targets import ALLOWED_OPTIONS, HOST_MAX_LENGTH
from conveyor.domain.task_actions import REASON_MAX_LENGTH
from conveyor.errors import FieldPath, invalid_input, not_found
from conveyor.graphql.types.enums import ApprovalPolicy, Engine, Role, TaskType
from conveyor.graphql.types.node import parse_node_id


def _global_id(raw: str) -> relay.GlobalID | None:
    try:
        return relay.GlobalID.from_id(raw)
    except GlobalIDValueError:
        return None


# Ids arrive as plain `ID`s and are decoded here rather than by strawberry, which refuses a
# malformed one before any resolver runs: without the field it came in, and alone.
def node_key(raw: str | None, type_name: str, field: FieldPath) -> int | None:
    """The row id behind a global id of the expected type; INVALID_INPUT naming `field` when
    `raw` is no global id, NOT_FOUND when it names no row of that type."""
    if raw is None:
        return None
    global_id = _global_id(raw)
    if global_id is None:
        raise invalid_input(MALFORMED_ID_MESSAGE, field)
    key = parse_node_id(global_id.node_id)
    if global_id.type_name != type_name or key is None:
        raise not_found(type_name.lower(), field)
    return key


def plan_key(raw: str | None, type_name: str) -> int | None:
    """The row id behind a global id in a plan; validation reports a stand-in at its field."""
    if raw is None:
        return None
    global_id = _global_id(raw)
    if global_id is None:
        return MALFORMED_ID
    key = parse_node_id(global_id.node_id)
    return key if global_id.type_name == type_name and key is not None else UNKNOWN_ROW


NAME_DESCRIPTION = f"At most {NAME_MAX_LENGTH:,} characters."
STATEMENT_DESCRIPTION = (
    f"The SQL of a SCHEMA_UPDATE or DATA_UPDATE, at most {STATEMENT_MAX_LENGTH:,} characters: "
    "at least one statement (not only comments), and no BEGIN, COMMIT, ROLLBACK or other "
    "statement that begins or ends a transaction, since Conveyor runs the change in a "
    "transaction of its own."
)


@strawberry.input(description="A new environment.")
class CreateEnvironmentInput:
    name: str = strawberry.field(description=NAME_DESCRIPTION)
    order: int = strawberry.field(description="Position on the promotion path; lower is earlier.")
    approval_policy: ApprovalPolicy = ApprovalPolicy.AUTOMATIC
    developers_may_approve: bool = strawberry.field(
        default=False,
        description="DEVELOPER tokens may approve tasks here (ADMIN and DBA always may).",
    )
    creator_may_approve: bool = strawberry.field(
        default=True,
        description="An issue's creator may approve its own tasks here. Turn off to require a "
        "second person in a protected environment.",
    )


@strawberry.input(description="Changes to an environment; omitted fields stay as they are.")
class UpdateEnvironmentInput:
    id: strawberry.ID
    name: str | None = strawberry.field(default=None, description=NAME_DESCRIPTION)
    order: int | None = None
    approval_policy: ApprovalPolicy | None = None
    developers_may_approve: bool | None = None
    creator_may_approve: bool | None = None


@strawberry.input(description="A libpq connection option, from the few Conveyor allows.")
class ConnectionOptionInput:
    name: str
    value: str


CONNECTION_OPTIONS_DESCRIPTION = (
    "libpq options for the connection, each at most once: "
    + "; ".join(f"`{name}` ({', '.join(values)})" for name, values in ALLOWED_OPTIONS.items())
    + ". Others are refused: Conveyor chooses where it connects, as whom, with which session "
    "settings, and never reads a file for an instance."
)


def connection_option_pairs(
    options: list[ConnectionOptionInput] | None,
) -> tuple[tuple[str, str], ...] | None:
    if options is None:
        return None
    return tuple((option.name, option.value) for option in options)


@strawberry.input(description="A new database server. The password is stored encrypted.")
class CreateInstanceInput:
    name: str = strawberry.field(description=NAME_DESCRIPTION)
    environment_id: strawberry.ID
    host: str = strawberry.field(description=f"At most {HOST_MAX_LENGTH} characters.")
    port: int = 5432
    username: str = strawberry.field(description=NAME_DESCRIPTION)
    password: str
    engine: Engine = Engine.POSTGRES
    max_running_tasks: int = 1
    connection_options: list[ConnectionOptionInput] = strawberry.field(
        default_factory=list, description=CONNECTION_OPTIONS_DESCRIPTION
    )


@strawberry.input(description="Changes to an instance; omitted fields stay as they are.")
class UpdateInstanceInput:
    id: strawberry.ID
    name: str | None = strawberry.field(default=None, description=NAME_DESCRIPTION)
    environment_id: strawberry.ID | None = None
    host: str | None = strawberry.field(
        default=None, description=f"At most {HOST_MAX_LENGTH} characters."
    )
    port: int | None = None
    username: str | None = strawberry.field(default=None, description=NAME_DESCRIPTION)
    password: str | None = strawberry.field(
        default=None, description="A new password; it can be written but never read."
    )
    max_running_tasks: int | None = None
    connection_options: list[ConnectionOptionInput] | None = strawberry.field(
        default=None,
        description=CONNECTION_OPTIONS_DESCRIPTION + " A list replaces all the options.",
    )


@strawberry.input(description="A database that exists on an instance.")
class RegisterDatabaseInput:
    instance_id: strawberry.ID
    name: str = strawberry.field(
        description=f"At most {DATABASE_NAME_MAX_LENGTH} bytes in UTF-8, as PostgreSQL allows."
    )


@strawberry.input(description="One task of a new pipeline.")
class TaskPlanInput:
    type: TaskType
    instance_id: strawberry.ID | None = None
    database_id: strawberry.ID | None = strawberry.field(
        default=None, description="Required by SCHEMA_UPDATE and DATA_UPDATE."
    )
    name: str | None = strawberry.field(
        default=None, description=f"Defaults to type and position. {NAME_DESCRIPTION}"
    )
    ref: str | None = strawberry.field(
        default=None,
        description="A name other tasks of this plan use in `blockedBy`, unique in the plan. "
        + NAME_DESCRIPTION,
    )
    statement: str | None = strawberry.field(default=None, description=STATEMENT_DESCRIPTION)
    database_name: str | None = strawberry.field(
        default=None,
        description="The database a DATABASE_CREATE task creates: at most "
        f"{DATABASE_NAME_MAX_LENGTH} bytes in UTF-8, as PostgreSQL allows.",
    )
    not_before: datetime | None = None
    blocked_by: list[str] = strawberry.field(
        default_factory=list,
        description="Refs of tasks of this or an earlier stage that must finish first, each "
        f"at most once; at most {MAX_BLOCKED_BY}.",
    )


@strawberry.input(description="One stage of a new pipeline.")
class StagePlanInput:
    environment_id: strawberry.ID | None = None
    tasks: list[TaskPlanInput] = strawberry.field(
        description=f"1 to {MAX_TASKS_PER_STAGE:,} tasks."
    )
    name: str | None = strawberry.field(
        default=None, description=f"Defaults to the environment's. {NAME_DESCRIPTION}"
    )


@strawberry.input(
    description="An issue and its whole pipeline plan, created at once or not at all."
)
class CreateIssueInput:
    title: str = strawberry.field(description=f"At most {TITLE_MAX_LENGTH} characters.")
    description: str = strawberry.field(
        default="", description=f"At most {DESCRIPTION_MAX_LENGTH:,} characters."
    )
    stages: list[StagePlanInput] = strawberry.field(
        description=f"1 to {MAX_STAGES} stages, run in this order."
    )

    def to_plan(self) -> IssuePlan:
        return IssuePlan(
            title=self.title,
            description=self.description,
            stages=tuple(
                StagePlan(
                    name=stage.name,
                    environment_id=plan_key(stage.environment_id, "Environment"),
                    tasks=tuple(_task_plan(task) for task in stage.tasks),
                )
                for stage_index, stage in enumerate(self.stages)
            ),
        )


def _task_plan(task: TaskPlanInput) -> TaskPlan:
    return TaskPlan(
        type=task.type,
        instance_id=plan_key(task.instance_id, "Instance"),
        database_id=plan_key(task.database_id, "Database"),
        name=task.name,
        ref=task.ref,
        statement=task.statement,
        database_name=task.database_name,
        not_before=task.not_before,
        blocked_by=tuple(task.blocked_by),
    )


@strawberry.input(description="The task a person acts on.")
class TaskActionInput:
    task_id: strawberry.ID
    expected_version: int | None = strawberry.field(
        default=None,
        description="Refuse the action with CONFLICT if the task is no longer at this version.",
    )


@strawberry.input(description="A new statement for a waiting or failed task.")
class UpdateTaskStatementInput(TaskActionInput):
    statement: str = strawberry.field(description=STATEMENT_DESCRIPTION)


@strawberry.input(description="A task to skip, and why.")
class SkipTaskInput(TaskActionInput):
    reason: str = strawberry.field(
        description="Why the task is passed over; kept on the task. At most "
        f"{REASON_MAX_LENGTH:,} characters."
    )


@strawberry.input(description="The stage whose waiting tasks a person approves.")
class StageActionInput:
    stage_id: strawberry.ID


@strawberry.input
class IssueActionInput:
    issue_id: strawberry.ID


@strawberry.input(description="A new API token.")
class CreateApiTokenInput:
    actor: str = strawberry.field(
        description="The name recorded as the actor of everything done with the token; an "
        f"issue's creator is matched by it. {NAME_DESCRIPTION}"
    )
    role: Role
    description: str = strawberry.field(
        default="", description=f"At most {TITLE_MAX_LENGTH} characters."
    )
    expires_at: datetime | None = strawberry.field(
        default=None, description="When the token stops working; never when omitted."
    )


@strawberry.input(description="The API token to revoke.")
class RevokeApiTokenInput:
    id: strawberry.ID


@strawberry.input(description="A task whose failed checks a DBA lets pass, and why.")
class OverrideTaskChecksInput:
    task_id: strawberry.ID
    reason: str = strawberry.field(
        description="Why the findings may be ignored; kept on the task and in its event. At "
        f"most {OVERRIDE_REASON_MAX_LENGTH:,} characters."
    )


@strawberry.input(
    description="What to dry-run: one task, a stage's tasks or a pipeline's (give exactly one)."
)
class DryRunInput:
    task_id: strawberry.ID | None = None
    stage_id: strawberry.ID | None = None
    pipeline_id: strawberry.ID | None = None


@strawberry.input(description="The level a review policy gives a rule.")
class RuleLevelInput:
    rule: str = strawberry.field(
        description=f"A rule's name, e.g. ban-drop-column; at most {RULE_NAME_MAX_LENGTH} "
        "characters."
    )
    level: CheckLevel | None = strawberry.field(description="null turns the rule off.")


@strawberry.input(description="An environment's own review policy, replacing the one it had.")
class SetReviewPolicyInput:
    environment_id: strawberry.ID
    blocking: CheckLevel | None = strawberry.field(
        default=None, description="From which level a finding blocks; null keeps ERROR."
    )
    rules: list[RuleLevelInput] = strawberry.field(
        default_factory=list,
        description="Levels that differ from the defaults, each rule once; at most "
        f"{POLICY_RULES_MAX}.",
    )

    def levels(self) -> list[tuple[str, str | None]]:
        return [
            (rule.rule, None if rule.level is None else rule.level.value) for rule in self.rules
        ]
