from tortoise import migrations
from tortoise.migrations import operations as ops
from conveyor.domain.check_review import CheckSource
from conveyor.domain.statuses import EventKind
from orjson import loads
from tortoise.fields.base import OnDelete
from tortoise.fields.data import JSON_DUMPS
from tortoise import fields
from tortoise.indexes import Index
from tortoise.migrations.constraints import CheckConstraint


class Migration(migrations.Migration):
    dependencies = [("models", "0005_installation")]

    initial = False

    operations = [
        ops.CreateModel(
            name="TaskCheck",
            fields=[
                (
                    "id",
                    fields.BigIntField(
                        generated=True, primary_key=True, unique=True, db_index=True
                    ),
                ),
                (
                    "task",
                    fields.ForeignKeyField(
                        "models.Task",
                        source_field="task_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="checks",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                ("statement_version", fields.IntField()),
                (
                    "source",
                    fields.CharEnumField(
                        description="STATEMENT: STATEMENT\nTARGET: TARGET\nDRY_RUN: DRY_RUN",
                        enum_type=CheckSource,
                        max_length=16,
                    ),
                ),
                ("rule", fields.CharField(max_length=100)),
                ("level", fields.CharField(max_length=16)),
                ("message", fields.TextField(unique=False)),
                ("statement", fields.TextField(null=True, unique=False)),
                ("line", fields.IntField(null=True)),
                ("column", fields.IntField(null=True)),
                ("doc_url", fields.CharField(null=True, max_length=500)),
                (
                    "detail",
                    fields.JSONField(
                        null=True,
                        description="A dry run's outcome: rows affected, duration, SQLSTATE.",
                        encoder=JSON_DUMPS,
                        decoder=loads,
                    ),
                ),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={
                "table": "task_check",
                "app": "models",
                "constraints": [
                    CheckConstraint(
                        check="source IN ('STATEMENT', 'TARGET', 'DRY_RUN')",
                        name="task_check_source_valid",
                    ),
                    CheckConstraint(
                        check="level IN ('ERROR', 'WARNING', 'NOTICE')",
                        name="task_check_level_valid",
                    ),
                ],
                "indexes": [Index(fields=["task_id", "statement_version"])],
                "pk_attr": "id",
                "table_description": "One finding of a task's checks (statement, target or dry run) for one statement",
            },
            bases=["Model"],
        ),
        ops.AddField(
            model_name="Environment",
            name="review_blocking_level",
            field=fields.CharField(
                null=True,
                description="From which level a finding blocks a task here; null keeps the default (ERROR).",
                max_length=16,
            ),
        ),
        ops.AddField(
            model_name="Environment",
            name="review_levels",
            field=fields.JSONField(
                description="The review policy's rule levels where they differ from the defaults (rule -> level, or",
                db_default="{}",
                encoder=JSON_DUMPS,
                decoder=loads,
            ),
        ),
        ops.RemoveConstraint(
            model_name="Event",
            name="event_kind_valid",
            fields=None,
        ),
        ops.AlterField(
            model_name="Event",
            name="kind",
            field=fields.CharEnumField(
                description="ISSUE_CREATED: ISSUE_CREATED\nPIPELINE_STATUS_CHANGED: PIPELINE_STATUS_CHANGED\nTASK_STATUS_CHANGED: TASK_STATUS_CHANGED\nTASK_APPROVED: TASK_APPROVED\nTASK_EDITED: TASK_EDITED\nTASK_CANCEL_REQUESTED: TASK_CANCEL_REQUESTED\nSTAGE_STATUS_CHANGED: STAGE_STATUS_CHANGED\nTASK_LOG: TASK_LOG\nTASK_CHECKED: TASK_CHECKED\nTASK_CHECKS_OVERRIDDEN: TASK_CHECKS_OVERRIDDEN\nTASK_DRY_RUN_REQUESTED: TASK_DRY_RUN_REQUESTED\nTASK_DRY_RUN_FINISHED: TASK_DRY_RUN_FINISHED",
                enum_type=EventKind,
                max_length=32,
            ),
        ),
        ops.AddConstraint(
            model_name="Event",
            constraint=CheckConstraint(
                check="kind IN ('ISSUE_CREATED', 'PIPELINE_STATUS_CHANGED', 'TASK_STATUS_CHANGED', 'TASK_APPROVED', 'TASK_EDITED', 'TASK_CANCEL_REQUESTED', 'STAGE_STATUS_CHANGED', 'TASK_LOG', 'TASK_CHECKED', 'TASK_CHECKS_OVERRIDDEN', 'TASK_DRY_RUN_REQUESTED', 'TASK_DRY_RUN_FINISHED')",
                name="event_kind_valid",
            ),
        ),
        ops.AddField(
            model_name="Task",
            name="blocking_rules",
            field=fields.JSONField(
                description="The rules of the blocking findings of the last finished checks.",
                db_default="[]",
                encoder=JSON_DUMPS,
                decoder=loads,
            ),
        ),
        ops.AddField(
            model_name="Task",
            name="checked_version",
            field=fields.IntField(
                null=True,
                description="The statement version whose checks finished; null or older: checks are pending.",
            ),
        ),
        ops.AddField(
            model_name="Task",
            name="checks_lease_expires_at",
            field=fields.DatetimeField(
                null=True,
                description="A worker checking the task holds it until then; an expired hold is taken over.",
                auto_now=False,
                auto_now_add=False,
            ),
        ),
        ops.AddField(
            model_name="Task",
            name="checks_overridden_at",
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name="Task",
            name="checks_overridden_by",
            field=fields.CharField(null=True, max_length=100),
        ),
        ops.AddField(
            model_name="Task",
            name="checks_overridden_version",
            field=fields.IntField(
                null=True,
                description="A DBA let the task run despite its blocking findings, for this statement version only.",
            ),
        ),
        ops.AddField(
            model_name="Task",
            name="checks_override_reason",
            field=fields.TextField(null=True, unique=False),
        ),
        ops.AddField(
            model_name="Task",
            name="dry_run_lease_expires_at",
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name="Task",
            name="dry_run_requested_at",
            field=fields.DatetimeField(
                null=True,
                description="A person asked for a dry run; a worker runs it and clears this.",
                auto_now=False,
                auto_now_add=False,
            ),
        ),
        ops.AddField(
            model_name="Task",
            name="dry_run_requested_by",
            field=fields.CharField(null=True, max_length=100),
        ),
        ops.AddField(
            model_name="Task",
            name="statement_version",
            field=fields.IntField(
                description="Bumped on every edit of the statement; checks and overrides name the version they saw.",
                db_default=1,
            ),
        ),
        ops.AddIndex(
            model_name="Task",
            index=Index(fields=["dry_run_requested_at"]),
        ),
        ops.AddConstraint(
            "TaskCheck",
            CheckConstraint(
                check="source IN ('STATEMENT', 'TARGET', 'DRY_RUN')", name="task_check_source_valid"
            ),
        ),
        ops.AddConstraint(
            "TaskCheck",
            CheckConstraint(
                check="level IN ('ERROR', 'WARNING', 'NOTICE')", name="task_check_level_valid"
            ),
        ),
        # The workers' queue of tasks to check: small, whatever the size of the task table.
        ops.RunSQL(
            "CREATE INDEX task_checks_due ON task (id) WHERE checked_version IS DISTINCT FROM statement_version",
            reverse_sql="DROP INDEX task_checks_due",
        ),
    ]
