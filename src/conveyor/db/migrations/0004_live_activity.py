from tortoise import migrations
from tortoise.migrations import operations as ops
from conveyor.domain.statuses import EventKind
from tortoise import fields
from tortoise.migrations.constraints import CheckConstraint


class Migration(migrations.Migration):
    dependencies = [("models", "0003_security")]

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
                description="ISSUE_CREATED: ISSUE_CREATED\nPIPELINE_STATUS_CHANGED: PIPELINE_STATUS_CHANGED\nTASK_STATUS_CHANGED: TASK_STATUS_CHANGED\nTASK_APPROVED: TASK_APPROVED\nTASK_EDITED: TASK_EDITED\nTASK_CANCEL_REQUESTED: TASK_CANCEL_REQUESTED\nSTAGE_STATUS_CHANGED: STAGE_STATUS_CHANGED\nTASK_LOG: TASK_LOG",
                enum_type=EventKind,
                max_length=32,
            ),
        ),
        ops.AddConstraint(
            model_name="Event",
            constraint=CheckConstraint(
                check="kind IN ('ISSUE_CREATED', 'PIPELINE_STATUS_CHANGED', 'TASK_STATUS_CHANGED', 'TASK_APPROVED', 'TASK_EDITED', 'TASK_CANCEL_REQUESTED', 'STAGE_STATUS_CHANGED', 'TASK_LOG')",
                name="event_kind_valid",
            ),
        ),
    ]
