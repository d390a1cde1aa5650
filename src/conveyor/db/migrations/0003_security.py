from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from conveyor.domain.permissions import Role
from json import dumps, loads
from tortoise import fields
from tortoise.migrations.constraints import CheckConstraint


class Migration(migrations.Migration):
    dependencies = [("models", "0002_execution_engine")]

    initial = False

    operations = [
        ops.CreateModel(
            name="ApiToken",
            fields=[
                (
                    "id",
                    fields.IntField(generated=True, primary_key=True, unique=True, db_index=True),
                ),
                (
                    "actor",
                    fields.CharField(
                        description="The name recorded as the actor of everything done with the token.",
                        max_length=100,
                    ),
                ),
                (
                    "role",
                    fields.CharEnumField(
                        description="ADMIN: ADMIN\nDBA: DBA\nDEVELOPER: DEVELOPER\nVIEWER: VIEWER",
                        enum_type=Role,
                        max_length=16,
                    ),
                ),
                ("description", fields.CharField(db_default="", max_length=200)),
                ("digest", fields.CharField(unique=True, max_length=64)),
                (
                    "prefix",
                    fields.CharField(
                        description="The token's first characters, so that a person can tell their tokens apart.",
                        max_length=16,
                    ),
                ),
                ("created_by", fields.CharField(max_length=100)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ("expires_at", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ("revoked_at", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ("revoked_by", fields.CharField(null=True, max_length=100)),
                (
                    "last_used_at",
                    fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
                ),
            ],
            options={
                "table": "api_token",
                "app": "models",
                "pk_attr": "id",
                "table_description": "A bearer token: only its SHA-256 digest is kept; the token itself is shown once.",
            },
            bases=["Model"],
        ),
        ops.AddField(
            model_name="Environment",
            name="creator_may_approve",
            field=fields.BooleanField(db_default=True),
        ),
        ops.AddField(
            model_name="Environment",
            name="developers_may_approve",
            field=fields.BooleanField(
                description="Who may approve here besides ADMIN and DBA tokens: see domain.permissions.ApprovalRules.",
                db_default=False,
            ),
        ),
        ops.AddField(
            model_name="Instance",
            name="connection_options",
            field=fields.JSONField(
                description='libpq connection options from an allow-list (runner.targets), e.g. {"sslmode": "require"}.',
                db_default="{}",
                encoder=functools.partial(dumps, separators=(",", ":")),
                decoder=loads,
            ),
        ),
        # CreateModel drops Meta.constraints (see 0001_initial).
        ops.AddConstraint(
            "ApiToken",
            CheckConstraint(check="length(btrim(actor)) > 0", name="api_token_actor_not_blank"),
        ),
        ops.AddConstraint(
            "ApiToken",
            CheckConstraint(
                check="role IN ('ADMIN', 'DBA', 'DEVELOPER', 'VIEWER')", name="api_token_role_valid"
            ),
        ),
    ]
