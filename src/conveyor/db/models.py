"""Conveyor's tables, as tortoise models. Integrity rules live here too, as constraints."""

from typing import Any

from tortoise import fields
from tortoise.indexes import Index
from tortoise.migrations.constraints import CheckConstraint, UniqueConstraint
from tortoise.models import Model

from conveyor.domain.check_review import CheckSource
from conveyor.domain.permissions import Role
from conveyor.domain.plan import DATABASE_NAME_MAX_LENGTH, NAME_MAX_LENGTH, TITLE_MAX_LENGTH
from conveyor.domain.statuses import (
    ApprovalPolicy,
    Engine,
    EventKind,
    PipelineStatus,
    TaskRunStatus,
    TaskStatus,
    TaskType,
)


def one_of(column: str, values: type[object]) -> str:
    """A CHECK expression that keeps `column` within an enum's values."""
    quoted = ", ".join(f"'{value}'" for value in values)  # type: ignore[attr-defined]
    return f"{column} IN ({quoted})"


def not_blank(column: str) -> str:
    return f"length(btrim({column})) > 0"


class Timestamped(Model):
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        abstract = True


class Environment(Timestamped):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=NAME_MAX_LENGTH, unique=True)
    #: Position on the promotion path: dev < test < staging < prod.
    order = fields.IntField(unique=True)
    approval_policy = fields.CharEnumField(ApprovalPolicy, max_length=16)
    #: Who may approve here besides ADMIN and DBA tokens: see domain.permissions.ApprovalRules.
    developers_may_approve = fields.BooleanField(db_default=False)
    creator_may_approve = fields.BooleanField(db_default=True)
    #: The review policy's rule levels where they differ from the defaults (rule -> level, or
    #: null to turn the rule off): see domain.check_review.environment_review_policy.
    review_levels: dict[str, str | None] = fields.JSONField(db_default="{}")
    #: From which level a finding blocks a task here; null keeps the default (ERROR).
    review_blocking_level = fields.CharField(max_length=16, null=True)

    class Meta:
        table = "environment"
        constraints = (
            CheckConstraint(check=not_blank("name"), name="environment_name_not_blank"),
            CheckConstraint(
                check=one_of("approval_policy", ApprovalPolicy), name="environment_policy_valid"
            ),
        )


class Instance(Timestamped):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=NAME_MAX_LENGTH, unique=True)
    engine = fields.CharEnumField(Engine, max_length=16)
    host = fields.CharField(max_length=255)
    port = fields.IntField()
    username = fields.CharField(max_length=NAME_MAX_LENGTH)
    #: Fernet token; the plain password never reaches this table.
    password_encrypted = fields.TextField()
    environment: fields.ForeignKeyRelation[Environment] = fields.ForeignKeyField(
        "models.Environment", related_name="instances", on_delete=fields.RESTRICT
    )
    environment_id: int
    max_running_tasks = fields.IntField(db_default=1)
    #: libpq connection options from an allow-list (runner.targets), e.g. {"sslmode": "require"}.
    connection_options: dict[str, str] = fields.JSONField(db_default="{}")

    class Meta:
        table = "instance"
        indexes = (Index(fields=("environment_id",)),)
        constraints = (
            CheckConstraint(check=not_blank("name"), name="instance_name_not_blank"),
            CheckConstraint(check=one_of("engine", Engine), name="instance_engine_valid"),
            CheckConstraint(check="port BETWEEN 1 AND 65535", name="instance_port_valid"),
            CheckConstraint(check="max_running_tasks >= 1", name="instance_limit_positive"),
        )


class Database(Timestamped):
    id = fields.IntField(primary_key=True)
    instance: fields.ForeignKeyRelation[Instance] = fields.ForeignKeyField(
        "models.Instance", related_name="databases", on_delete=fields.RESTRICT
    )
    instance_id: int
    name = fields.CharField(max_length=DATABASE_NAME_MAX_LENGTH)

    class Meta:
        table = "database"
        unique_together = (("instance_id", "name"),)
        constraints = (CheckConstraint(check=not_blank("name"), name="database_name_not_blank"),)


class Issue(Timestamped):
    id = fields.IntField(primary_key=True)
    title = fields.CharField(max_length=TITLE_MAX_LENGTH)
    description = fields.TextField(db_default="")
    creator = fields.CharField(max_length=NAME_MAX_LENGTH)

    class Meta:
        table = "issue"
        indexes = (Index(fields=("created_at",)),)
        constraints = (CheckConstraint(check=not_blank("title"), name="issue_title_not_blank"),)


class Pipeline(Timestamped):
    id = fields.IntField(primary_key=True)
    issue: fields.OneToOneRelation[Issue] = fields.OneToOneField(
        "models.Issue", related_name="pipeline", on_delete=fields.CASCADE
    )
    issue_id: int
    status = fields.CharEnumField(PipelineStatus, max_length=16)

    class Meta:
        table = "pipeline"
        indexes = (Index(fields=("status",)),)
        constraints = (
            CheckConstraint(check=one_of("status", PipelineStatus), name="pipeline_status_valid"),
        )


class Stage(Model):
    id = fields.IntField(primary_key=True)
    pipeline: fields.ForeignKeyRelation[Pipeline] = fields.ForeignKeyField(
        "models.Pipeline", related_name="stages", on_delete=fields.CASCADE
    )
    pipeline_id: int
    position = fields.IntField()
    name = fields.CharField(max_length=NAME_MAX_LENGTH)
    environment: fields.ForeignKeyRelation[Environment] = fields.ForeignKeyField(
        "models.Environment", related_name="stages", on_delete=fields.RESTRICT
    )
    environment_id: int

    class Meta:
        table = "stage"
        unique_together = (("pipeline_id", "position"),)
        indexes = (Index(fields=("environment_id",)),)
        constraints = (
            CheckConstraint(check=not_blank("name"), name="stage_name_not_blank"),
            CheckConstraint(check="position >= 0", name="stage_position_valid"),
        )


class Task(Timestamped):
    id = fields.IntField(primary_key=True)
    # Denormalised from the stage so that per-pipeline scheduling reads one index; a composite
    # foreign key (stage_id, pipeline_id), added in the initial migration, keeps it consistent.
    pipeline: fields.ForeignKeyRelation[Pipeline] = fields.ForeignKeyField(
        "models.Pipeline", related_name="tasks", on_delete=fields.CASCADE
    )
    pipeline_id: int
    stage: fields.ForeignKeyRelation[Stage] = fields.ForeignKeyField(
        "models.Stage", related_name="tasks", on_delete=fields.CASCADE
    )
    stage_id: int
    position = fields.IntField()
    name = fields.CharField(max_length=NAME_MAX_LENGTH)
    type = fields.CharEnumField(TaskType, max_length=32)
    status = fields.CharEnumField(TaskStatus, max_length=32)
    instance: fields.ForeignKeyRelation[Instance] = fields.ForeignKeyField(
        "models.Instance", related_name="tasks", on_delete=fields.RESTRICT
    )
    instance_id: int
    database: fields.ForeignKeyNullableRelation[Database] = fields.ForeignKeyField(
        "models.Database", related_name="tasks", null=True, on_delete=fields.RESTRICT
    )
    database_id: int | None
    statement = fields.TextField(null=True)
    #: The name a DATABASE_CREATE task gives the database it creates.
    database_name = fields.CharField(max_length=DATABASE_NAME_MAX_LENGTH, null=True)
    not_before = fields.DatetimeField(null=True)
    #: Bumped on every change; a client's stale write is refused as a conflict.
    version = fields.IntField(db_default=1)
    #: Why the task is SKIPPED or FAILED, in a person's words or the runner's.
    status_reason = fields.TextField(null=True)
    approved_by = fields.CharField(max_length=NAME_MAX_LENGTH, null=True)
    approved_at = fields.DatetimeField(null=True)
    #: The worker that holds the RUNNING task, until its lease expires unrenewed.
    lease_owner = fields.CharField(max_length=NAME_MAX_LENGTH, null=True)
    lease_expires_at = fields.DatetimeField(null=True)
    #: A person asked to stop the RUNNING task; its worker aborts the statement.
    cancel_requested_at = fields.DatetimeField(null=True)
    #: Bumped on every edit of the statement; checks and overrides name the version they saw.
    statement_version = fields.IntField(db_default=1)
    #: The statement version whose checks finished; null or older: checks are pending.
    checked_version = fields.IntField(null=True)
    #: The rules of the blocking findings of the last finished checks.
    blocking_rules: list[str] = fields.JSONField(db_default="[]")
    #: A worker checking the task holds it until then; an expired hold is taken over.
    checks_lease_expires_at = fields.DatetimeField(null=True)
    #: A DBA let the task run despite its blocking findings, for this statement version only.
    checks_overridden_version = fields.IntField(null=True)
    checks_overridden_by = fields.CharField(max_length=NAME_MAX_LENGTH, null=True)
    checks_overridden_at = fields.DatetimeField(null=True)
    checks_override_reason = fields.TextField(null=True)
    #: A person asked for a dry run; a worker runs it and clears this.
    dry_run_requested_at = fields.DatetimeField(null=True)
    dry_run_requested_by = fields.CharField(max_length=NAME_MAX_LENGTH, null=True)
    dry_run_lease_expires_at = fields.DatetimeField(null=True)

    class Meta:
        table = "task"
        unique_together = (("stage_id", "position"),)
        indexes = (
            Index(fields=("pipeline_id", "status")),
            Index(fields=("instance_id", "status")),
            Index(fields=("database_id", "status")),
            Index(fields=("status", "lease_expires_at")),
            Index(fields=("dry_run_requested_at",)),
        )
        constraints = (
            CheckConstraint(check=not_blank("name"), name="task_name_not_blank"),
            CheckConstraint(check=one_of("type", TaskType), name="task_type_valid"),
            CheckConstraint(check=one_of("status", TaskStatus), name="task_status_valid"),
            CheckConstraint(
                check="type NOT IN ('SCHEMA_UPDATE', 'DATA_UPDATE') "
                "OR (database_id IS NOT NULL AND statement IS NOT NULL)",
                name="task_change_has_database_and_statement",
            ),
            CheckConstraint(
                check="type <> 'DATABASE_CREATE' OR database_name IS NOT NULL",
                name="task_create_has_database_name",
            ),
            # The last line of defence of "one task at a time per database", whatever the
            # number of workers.
            UniqueConstraint(
                fields=("database_id",),
                condition="status = 'RUNNING'",
                name="task_one_running_per_database",
            ),
        )


class TaskDependency(Model):
    """`task` may not start before `blocked_by` is DONE or SKIPPED."""

    id = fields.IntField(primary_key=True)
    task: fields.ForeignKeyRelation[Task] = fields.ForeignKeyField(
        "models.Task", related_name="dependencies", on_delete=fields.CASCADE
    )
    task_id: int
    blocked_by: fields.ForeignKeyRelation[Task] = fields.ForeignKeyField(
        "models.Task", related_name="dependents", on_delete=fields.CASCADE
    )
    blocked_by_id: int

    class Meta:
        table = "task_dependency"
        unique_together = (("task_id", "blocked_by_id"),)
        indexes = (Index(fields=("blocked_by_id",)),)
        constraints = (
            CheckConstraint(check="task_id <> blocked_by_id", name="task_dependency_not_self"),
        )


class TaskRun(Model):
    """One attempt at running a task."""

    id = fields.IntField(primary_key=True)
    task: fields.ForeignKeyRelation[Task] = fields.ForeignKeyField(
        "models.Task", related_name="runs", on_delete=fields.CASCADE
    )
    task_id: int
    attempt = fields.IntField()
    status = fields.CharEnumField(TaskRunStatus, max_length=16)
    started_at = fields.DatetimeField()
    ended_at = fields.DatetimeField(null=True)
    error_code = fields.CharField(max_length=32, null=True)
    error_message = fields.TextField(null=True)
    #: Whether the change ran inside one transaction (so an interruption rolled it back).
    transactional = fields.BooleanField(null=True)
    #: The worker that made the attempt.
    worker = fields.CharField(max_length=NAME_MAX_LENGTH, null=True)
    result: dict[str, Any] | None = fields.JSONField(null=True)
    #: Statements executed and server notices, in order.
    log: list[dict[str, Any]] = fields.JSONField(db_default="[]")

    class Meta:
        table = "task_run"
        unique_together = (("task_id", "attempt"),)
        constraints = (
            CheckConstraint(check=one_of("status", TaskRunStatus), name="task_run_status_valid"),
            CheckConstraint(check="attempt >= 1", name="task_run_attempt_positive"),
        )


class TaskCheck(Model):
    """One finding of a task's checks (statement, target or dry run) for one statement
    version."""

    id = fields.BigIntField(primary_key=True)
    task: fields.ForeignKeyRelation[Task] = fields.ForeignKeyField(
        "models.Task", related_name="checks", on_delete=fields.CASCADE
    )
    task_id: int
    statement_version = fields.IntField()
    #: What produced it: see domain.check_review.CheckSource.
    source = fields.CharEnumField(CheckSource, max_length=16)
    rule = fields.CharField(max_length=100)
    level = fields.CharField(max_length=16)
    message = fields.TextField()
    statement = fields.TextField(null=True)
    line = fields.IntField(null=True)
    column = fields.IntField(null=True)
    doc_url = fields.CharField(max_length=500, null=True)
    #: A dry run's outcome: rows affected, duration, SQLSTATE.
    detail: dict[str, Any] | None = fields.JSONField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "task_check"
        indexes = (Index(fields=("task_id", "statement_version")),)
        constraints = (
            CheckConstraint(check=one_of("source", CheckSource), name="task_check_source_valid"),
            CheckConstraint(
                check="level IN ('ERROR', 'WARNING', 'NOTICE')", name="task_check_level_valid"
            ),
        )


class Event(Model):
    """An append-only record of a change; `id` is the sequence number clients resume from."""

    id = fields.BigIntField(primary_key=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    kind = fields.CharEnumField(EventKind, max_length=32)
    actor = fields.CharField(max_length=NAME_MAX_LENGTH)
    issue: fields.ForeignKeyRelation[Issue] = fields.ForeignKeyField(
        "models.Issue", related_name="events", on_delete=fields.CASCADE
    )
    issue_id: int
    pipeline_id = fields.IntField()
    stage_id = fields.IntField(null=True)
    task_id = fields.IntField(null=True)
    old_status = fields.CharField(max_length=32, null=True)
    new_status = fields.CharField(max_length=32, null=True)
    detail: dict[str, Any] | None = fields.JSONField(null=True)
    #: The id of the transaction that wrote the event: events of one change share it.
    transaction_id = fields.BigIntField(
        db_default=fields.SqlDefault("pg_current_xact_id()::text::bigint")
    )

    class Meta:
        table = "event"
        indexes = (
            Index(fields=("issue_id", "id")),
            Index(fields=("pipeline_id", "id")),
        )
        constraints = (CheckConstraint(check=one_of("kind", EventKind), name="event_kind_valid"),)


class ApiToken(Model):
    """A bearer token: only its SHA-256 digest is kept; the token itself is shown once."""

    id = fields.IntField(primary_key=True)
    #: The name recorded as the actor of everything done with the token.
    actor = fields.CharField(max_length=NAME_MAX_LENGTH)
    role = fields.CharEnumField(Role, max_length=16)
    description = fields.CharField(max_length=TITLE_MAX_LENGTH, db_default="")
    digest = fields.CharField(max_length=64, unique=True)
    #: The token's first characters, so that a person can tell their tokens apart.
    prefix = fields.CharField(max_length=16)
    created_by = fields.CharField(max_length=NAME_MAX_LENGTH)
    created_at = fields.DatetimeField(auto_now_add=True)
    expires_at = fields.DatetimeField(null=True)
    revoked_at = fields.DatetimeField(null=True)
    revoked_by = fields.CharField(max_length=NAME_MAX_LENGTH, null=True)
    last_used_at = fields.DatetimeField(null=True)

    class Meta:
        table = "api_token"
        constraints = (
            CheckConstraint(check=not_blank("actor"), name="api_token_actor_not_blank"),
            CheckConstraint(check=one_of("role", Role), name="api_token_role_valid"),
        )
