from tortoise import migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("models", "0004_live_activity")]

    initial = False

    # One row, made once: the identity of this installation of Conveyor. It goes with the
    # database through a dump and restore; a new installation (a new database) gets its own.
    operations = [
        ops.RunSQL(
            [
                'CREATE TABLE "installation" ("id" UUID PRIMARY KEY, '
                '"created_at" TIMESTAMPTZ NOT NULL DEFAULT now(), '
                '"one_row" BOOLEAN NOT NULL DEFAULT true UNIQUE CHECK ("one_row"))',
                'INSERT INTO "installation" ("id") VALUES (gen_random_uuid())',
            ],
            reverse_sql=['DROP TABLE "installation"'],
        ),
    ]
