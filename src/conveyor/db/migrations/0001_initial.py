from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from conveyor.domain.statuses import (
    ApprovalPolicy,
    Engine,
    EventKind,
    PipelineStatus,
    TaskRunStatus,
    TaskStatus,
    TaskType,
)
from json import dumps, loads
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index
from tortoise.migrations.constraints import CheckConstraint


class Migration(migrations.Migration):
    initial = True

    operations = [
        ops.CreateModel(
            name="Environment",
            fields=[
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ("updated_at", fields.DatetimeField(auto_now=True, auto_now_add=False)),
                (
                    "id",
                    fields.IntField(generated=True, primary_key=True, unique=True, db_index=True),
                ),
                ("name", fields.CharField(unique=True, max_length=100)),
                (
                    "order",
                    fields.IntField(
                        unique=True,
                        description="Position on the promotion path: dev < test < staging < prod.",
                    ),
                ),
                (
                    "approval_policy",
                    fields.CharEnumField(
                        description="AUTOMATIC: AUTOMATIC\nMANUAL: MANUAL",
                        enum_type=ApprovalPolicy,
                        max_length=16,
                    ),
                ),
            ],
            options={"table": "environment", "app": "models", "pk_attr": "id"},
            bases=["Timestamped"],
        ),
        ops.CreateModel(
            name="Instance",
            fields=[
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ("updated_at", fields.DatetimeField(auto_now=True, auto_now_add=False)),
                (
                    "id",
                    fields.IntField(generated=True, primary_key=True, unique=True, db_index=True),
                ),
                ("name", fields.CharField(unique=True, max_length=100)),
                (
                    "engine",
                    fields.CharEnumField(
                        description="POSTGRES: POSTGRES", enum_type=Engine, max_length=16
                    ),
                ),
                ("host", fields.CharField(max_length=255)),
                ("port", fields.IntField()),
                ("username", fields.CharField(max_length=100)),
                (
                    "password_encrypted",
                    fields.TextField(
                        description="Fernet token; the plain password never reaches this table.",
                        unique=False,
                    ),
                ),
                (
                    "environment",
                    fields.ForeignKeyField(
                        "models.Environment",
                        source_field="environment_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="instances",
                        on_delete=OnDelete.RESTRICT,
                    ),
                ),
                ("max_running_tasks", fields.IntField(db_default=1)),
            ],
            options={
                "table": "instance",
                "app": "models",
                "indexes": [Index(fields=["environment_id"])],
                "pk_attr": "id",
            },
            bases=["Timestamped"],
        ),
        ops.CreateModel(
            name="Database",
            fields=[
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ("updated_at", fields.DatetimeField(auto_now=True, auto_now_add=False)),
                (
                    "id",
                    fields.IntField(generated=True, primary_key=True, unique=True, db_index=True),
                ),
                (
                    "instance",
                    fields.ForeignKeyField(
                        "models.Instance",
                        source_field="instance_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="databases",
                        on_delete=OnDelete.RESTRICT,
                    ),
                ),
                ("name", fields.CharField(max_length=63)),
            ],
            options={
                "table": "database",
                "app": "models",
                "unique_together": (("instance_id", "name"),),
                "pk_attr": "id",
            },
            bases=["Timestamped"],
        ),
        ops.CreateModel(
            name="Issue",
            fields=[
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ("updated_at", fields.DatetimeField(auto_now=True, auto_now_add=False)),
                (
                    "id",
                    fields.IntField(generated=True, primary_key=True, unique=True, db_index=True),
                ),
                ("title", fields.CharField(max_length=200)),
                ("description", fields.TextField(db_default="", unique=False)),
                ("creator", fields.CharField(max_length=100)),
            ],
            options={
                "table": "issue",
                "app": "models",
                "indexes": [Index(fields=["created_at"])],
                "pk_attr": "id",
            },
            bases=["Timestamped"],
        ),
        ops.CreateModel(
            name="Event",
            fields=[
                (
                    "id",
                    fields.BigIntField(
                        generated=True, primary_key=True, unique=True, db_index=True
                    ),
                ),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
                (
                    "kind",
                    fields.CharEnumField(
                        description="ISSUE_CREATED: ISSUE_CREATED\nPIPELINE_STATUS_CHANGED: PIPELINE_STATUS_CHANGED\nTASK_STATUS_CHANGED: TASK_STATUS_CHANGED\nTASK_APPROVED: TASK_APPROVED\nTASK_EDITED: TASK_EDITED",
                        enum_type=EventKind,
                        max_length=32,
                    ),
                ),
                ("actor", fields.CharField(max_length=100)),
                (
                    "issue",
                    fields.ForeignKeyField(
                        "models.Issue",
                        source_field="issue_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="events",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                ("pipeline_id", fields.IntField()),
                ("stage_id", fields.IntField(null=True)),
                ("task_id", fields.IntField(null=True)),
                ("old_status", fields.CharField(null=True, max_length=32)),
                ("new_status", fields.CharField(null=True, max_length=32)),
                (
                    "detail",
                    fields.JSONField(
                        null=True,
                        encoder=functools.partial(dumps, separators=(",", ":")),
                        decoder=loads,
                    ),
                ),
            ],
            options={
                "table": "event",
                "app": "models",
                "indexes": [Index(fields=["issue_id", "id"]), Index(fields=["pipeline_id", "id"])],
                "pk_attr": "id",
                "table_description": "An append-only record of a change; `id` is the sequence number clients resume from.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="Pipeline",
            fields=[
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ("updated_at", fields.DatetimeField(auto_now=True, auto_now_add=False)),
                (
                    "id",
                    fields.IntField(generated=True, primary_key=True, unique=True, db_index=True),
                ),
                (
                    "issue",
                    fields.OneToOneField(
                        "models.Issue",
                        source_field="issue_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="pipeline",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                (
                    "status",
                    fields.CharEnumField(
                        description="OPEN: OPEN\nDONE: DONE\nCANCELED: CANCELED",
                        enum_type=PipelineStatus,
                        max_length=16,
                    ),
                ),
            ],
            options={
                "table": "pipeline",
                "app": "models",
                "indexes": [Index(fields=["status"])],
                "pk_attr": "id",
            },
            bases=["Timestamped"],
        ),
        ops.CreateModel(
            name="Stage",
            fields=[
                (
                    "id",
                    fields.IntField(generated=True, primary_key=True, unique=True, db_index=True),
                ),
                (
                    "pipeline",
                    fields.ForeignKeyField(
                        "models.Pipeline",
                        source_field="pipeline_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="stages",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                ("position", fields.IntField()),
                ("name", fields.CharField(max_length=100)),
                (
                    "environment",
                    fields.ForeignKeyField(
                        "models.Environment",
                        source_field="environment_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="stages",
                        on_delete=OnDelete.RESTRICT,
                    ),
                ),
            ],
            options={
                "table": "stage",
                "app": "models",
                "unique_together": (("pipeline_id", "position"),),
                "indexes": [Index(fields=["environment_id"])],
                "pk_attr": "id",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="Task",
            fields=[
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ("updated_at", fields.DatetimeField(auto_now=True, auto_now_add=False)),
                (
                    "id",
                    fields.IntField(generated=True, primary_key=True, unique=True, db_index=True),
                ),
                (
                    "pipeline",
                    fields.ForeignKeyField(
                        "models.Pipeline",
                        source_field="pipeline_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="tasks",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                (
                    "stage",
                    fields.ForeignKeyField(
                        "models.Stage",
                        source_field="stage_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="tasks",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                ("position", fields.IntField()),
                ("name", fields.CharField(max_length=100)),
                (
                    "type",
                    fields.CharEnumField(
                        description="DATABASE_CREATE: DATABASE_CREATE\nSCHEMA_UPDATE: SCHEMA_UPDATE\nDATA_UPDATE: DATA_UPDATE\nINSTANCE_SYNC: INSTANCE_SYNC",
                        enum_type=TaskType,
                        max_length=32,
                    ),
                ),
                (
                    "status",
                    fields.CharEnumField(
                        description="PENDING_APPROVAL: PENDING_APPROVAL\nPENDING: PENDING\nRUNNING: RUNNING\nDONE: DONE\nFAILED: FAILED\nCANCELED: CANCELED\nSKIPPED: SKIPPED",
                        enum_type=TaskStatus,
                        max_length=32,
                    ),
                ),
                (
                    "instance",
                    fields.ForeignKeyField(
                        "models.Instance",
                        source_field="instance_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="tasks",
                        on_delete=OnDelete.RESTRICT,
                    ),
                ),
                (
                    "database",
                    fields.ForeignKeyField(
                        "models.Database",
                        source_field="database_id",
                        null=True,
                        db_constraint=True,
                        to_field="id",
                        related_name="tasks",
                        on_delete=OnDelete.RESTRICT,
                    ),
                ),
                ("statement", fields.TextField(null=True, unique=False)),
                (
                    "database_name",
                    fields.CharField(
                        null=True,
                        description="The name a DATABASE_CREATE task gives the database it creates.",
                        max_length=63,
                    ),
                ),
                ("not_before", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                (
                    "version",
                    fields.IntField(
                        description="Bumped on every change; a client's stale write is refused as a conflict.",
                        db_default=1,
                    ),
                ),
            ],
            options={
                "table": "task",
                "app": "models",
                "unique_together": (("stage_id", "position"),),
                "indexes": [
                    Index(fields=["pipeline_id", "status"]),
                    Index(fields=["instance_id", "status"]),
                    Index(fields=["database_id", "status"]),
                ],
                "pk_attr": "id",
            },
            bases=["Timestamped"],
        ),
        ops.CreateModel(
            name="TaskDependency",
            fields=[
                (
                    "id",
                    fields.IntField(generated=True, primary_key=True, unique=True, db_index=True),
                ),
                (
                    "task",
                    fields.ForeignKeyField(
                        "models.Task",
                        source_field="task_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="dependencies",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                (
                    "blocked_by",
                    fields.ForeignKeyField(
                        "models.Task",
                        source_field="blocked_by_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="dependents",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
            ],
            options={
                "table": "task_dependency",
                "app": "models",
                "unique_together": (("task_id", "blocked_by_id"),),
                "indexes": [Index(fields=["blocked_by_id"])],
                "pk_attr": "id",
                "table_description": "`task` may not start before `blocked_by` is DONE or SKIPPED.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="TaskRun",
            fields=[
                (
                    "id",
                    fields.IntField(generated=True, primary_key=True, unique=True, db_index=True),
                ),
                (
                    "task",
                    fields.ForeignKeyField(
                        "models.Task",
                        source_field="task_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="runs",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                ("attempt", fields.IntField()),
                (
                    "status",
                    fields.CharEnumField(
                        description="RUNNING: RUNNING\nDONE: DONE\nFAILED: FAILED\nCANCELED: CANCELED",
                        enum_type=TaskRunStatus,
                        max_length=16,
                    ),
                ),
                ("started_at", fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ("ended_at", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ("error_code", fields.CharField(null=True, max_length=32)),
                ("error_message", fields.TextField(null=True, unique=False)),
                (
                    "result",
                    fields.JSONField(
                        null=True,
                        encoder=functools.partial(dumps, separators=(",", ":")),
                        decoder=loads,
                    ),
                ),
                (
                    "log",
                    fields.JSONField(
                        description="Statements executed and server notices, in order.",
                        db_default="[]",
                        encoder=functools.partial(dumps, separators=(",", ":")),
                        decoder=loads,
                    ),
                ),
            ],
            options={
                "table": "task_run",
                "app": "models",
                "unique_together": (("task_id", "attempt"),),
                "pk_attr": "id",
                "table_description": "One attempt at running a task.",
            },
            bases=["Model"],
        ),
        ops.AddConstraint(
            "Environment",
            CheckConstraint(check="length(btrim(name)) > 0", name="environment_name_not_blank"),
        ),
        ops.AddConstraint(
            "Environment",
            CheckConstraint(
                check="approval_policy IN ('AUTOMATIC', 'MANUAL')", name="environment_policy_valid"
            ),
        ),
        ops.AddConstraint(
            "Instance",
            CheckConstraint(check="length(btrim(name)) > 0", name="instance_name_not_blank"),
        ),
        ops.AddConstraint(
            "Instance",
            CheckConstraint(check="engine IN ('POSTGRES')", name="instance_engine_valid"),
        ),
        ops.AddConstraint(
            "Instance",
            CheckConstraint(check="port BETWEEN 1 AND 65535", name="instance_port_valid"),
        ),
        ops.AddConstraint(
            "Instance",
            CheckConstraint(check="max_running_tasks >= 1", name="instance_limit_positive"),
        ),
        ops.AddConstraint(
            "Database",
            CheckConstraint(check="length(btrim(name)) > 0", name="database_name_not_blank"),
        ),
        ops.AddConstraint(
            "Issue", CheckConstraint(check="length(btrim(title)) > 0", name="issue_title_not_blank")
        ),
        ops.AddConstraint(
            "Event",
            CheckConstraint(
                check="kind IN ('ISSUE_CREATED', 'PIPELINE_STATUS_CHANGED', 'TASK_STATUS_CHANGED', 'TASK_APPROVED', 'TASK_EDITED')",
                name="event_kind_valid",
            ),
        ),
        ops.AddConstraint(
            "Pipeline",
            CheckConstraint(
                check="status IN ('OPEN', 'DONE', 'CANCELED')", name="pipeline_status_valid"
            ),
        ),
        ops.AddConstraint(
            "Stage", CheckConstraint(check="length(btrim(name)) > 0", name="stage_name_not_blank")
        ),
        ops.AddConstraint(
            "Stage", CheckConstraint(check="position >= 0", name="stage_position_valid")
        ),
        ops.AddConstraint(
            "Task", CheckConstraint(check="length(btrim(name)) > 0", name="task_name_not_blank")
        ),
        ops.AddConstraint(
            "Task",
            CheckConstraint(
                check="type IN ('DATABASE_CREATE', 'SCHEMA_UPDATE', 'DATA_UPDATE', 'INSTANCE_SYNC')",
                name="task_type_valid",
            ),
        ),
        ops.AddConstraint(
            "Task",
            CheckConstraint(
                check="status IN ('PENDING_APPROVAL', 'PENDING', 'RUNNING', 'DONE', 'FAILED', 'CANCELED', 'SKIPPED')",
                name="task_status_valid",
            ),
        ),
        ops.AddConstraint(
            "Task",
            CheckConstraint(
                check="type NOT IN ('SCHEMA_UPDATE', 'DATA_UPDATE') OR (database_id IS NOT NULL AND statement IS NOT NULL)",
                name="task_change_has_database_and_statement",
            ),
        ),
        ops.AddConstraint(
            "Task",
            CheckConstraint(
                check="type <> 'DATABASE_CREATE' OR database_name IS NOT NULL",
                name="task_create_has_database_name",
            ),
        ),
        ops.AddConstraint(
            "TaskDependency",
            CheckConstraint(check="task_id <> blocked_by_id", name="task_dependency_not_self"),
        ),
        ops.AddConstraint(
            "TaskRun",
            CheckConstraint(
                check="status IN ('RUNNING', 'DONE', 'FAILED', 'CANCELED')",
                name="task_run_status_valid",
            ),
        ),
        ops.AddConstraint(
            "TaskRun", CheckConstraint(check="attempt >= 1", name="task_run_attempt_positive")
        ),
        # The task's pipeline must be its stage's pipeline.
        ops.RunSQL(
            [
                'ALTER TABLE "stage" ADD CONSTRAINT "stage_id_pipeline_unique" UNIQUE ("id", "pipeline_id")',
                'ALTER TABLE "task" ADD CONSTRAINT "task_stage_in_pipeline" FOREIGN KEY ("stage_id", "pipeline_id") REFERENCES "stage" ("id", "pipeline_id") ON DELETE CASCADE',
            ],
            reverse_sql=[
                'ALTER TABLE "task" DROP CONSTRAINT "task_stage_in_pipeline"',
                'ALTER TABLE "stage" DROP CONSTRAINT "stage_id_pipeline_unique"',
            ],
        ),
    ]
