from tortoise import migrations
from tortoise.migrations import operations as ops
from conveyor.domain.statuses import EventKind
from tortoise.fields.db_defaults import SqlDefault
from tortoise import fields
from tortoise.indexes import Index
from tortoise.migrations.constraints import CheckConstraint, UniqueConstraint


class Migration(migrations.Migration):
    dependencies = [("models", "0001_initial")]

    initial = False

    operations = [
        ops.RemoveConstraint(
            model_name="Event",
            name="event_kind_valid",
            fields=None,
        ),
        ops.AlterField(
            model_name="Event",
            name="kind",
            field=fields.CharEnumField(
                description="ISSUE_CREATED: ISSUE_CREATED\nPIPELINE_STATUS_CHANGED: PIPELINE_STATUS_CHANGED\nTASK_STATUS_CHANGED: TASK_STATUS_CHANGED\nTASK_APPROVED: TASK_APPROVED\nTASK_EDITED: TASK_EDITED\nTASK_CANCEL_REQUESTED: TASK_CANCEL_REQUESTED",
                enum_type=EventKind,
                max_length=32,
            ),
        ),
        ops.AddField(
            model_name="Event",
            name="transaction_id",
            field=fields.BigIntField(
                description="The id of the transaction that wrote the event: events of one change share it.",
                db_default=SqlDefault("pg_current_xact_id()::text::bigint"),
            ),
        ),
        ops.AddConstraint(
            model_name="Event",
            constraint=CheckConstraint(
                check="kind IN ('ISSUE_CREATED', 'PIPELINE_STATUS_CHANGED', 'TASK_STATUS_CHANGED', 'TASK_APPROVED', 'TASK_EDITED', 'TASK_CANCEL_REQUESTED')",
                name="event_kind_valid",
            ),
        ),
        ops.AddField(
            model_name="Task",
            name="approved_at",
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name="Task",
            name="approved_by",
            field=fields.CharField(null=True, max_length=100),
        ),
        ops.AddField(
            model_name="Task",
            name="cancel_requested_at",
            field=fields.DatetimeField(
                null=True,
                description="A person asked to stop the RUNNING task; its worker aborts the statement.",
                auto_now=False,
                auto_now_add=False,
            ),
        ),
        ops.AddField(
            model_name="Task",
            name="lease_expires_at",
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name="Task",
            name="lease_owner",
            field=fields.CharField(
                null=True,
                description="The worker that holds the RUNNING task, until its lease expires unrenewed.",
                max_length=100,
            ),
        ),
        ops.AddField(
            model_name="Task",
            name="status_reason",
            field=fields.TextField(
                null=True,
                description="Why the task is SKIPPED or FAILED, in a person's words or the runner's.",
                unique=False,
            ),
        ),
        ops.AddIndex(
            model_name="Task",
            index=Index(fields=["status", "lease_expires_at"]),
        ),
        ops.AddConstraint(
            model_name="Task",
            constraint=UniqueConstraint(
                fields=("database_id",),
                name="task_one_running_per_database",
                condition="status = 'RUNNING'",
            ),
        ),
        ops.AddField(
            model_name="TaskRun",
            name="transactional",
            field=fields.BooleanField(
                null=True,
                description="Whether the change ran inside one transaction (so an interruption rolled it back).",
            ),
        ),
        ops.AddField(
            model_name="TaskRun",
            name="worker",
            field=fields.CharField(
                null=True, description="The worker that made the attempt.", max_length=100
            ),
        ),
    ]
