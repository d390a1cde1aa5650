"""The committed artefacts that describe the schema stay true to the code."""

from pathlib import Path

from tortoise.context import TortoiseContext
from tortoise.migrations.autodetector import MigrationAutodetector

from conveyor.cli import main
from conveyor.db.config import tortoise_config
from conveyor.graphql.schema import schema

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_schema_graphql_is_the_served_schema() -> None:
    committed = (REPO_ROOT / "schema.graphql").read_text()

    assert committed == schema.as_str() + "\n", (
        "schema.graphql is stale: run `conveyor export-schema`"
    )


def test_export_schema_writes_the_served_schema(tmp_path: Path) -> None:
    output = tmp_path / "schema.graphql"

    main(["export-schema", str(output)])

    assert output.read_text() == schema.as_str() + "\n"


async def test_migrations_match_the_models(db: TortoiseContext, database_url: str) -> None:
    apps_config = tortoise_config(database_url)["apps"]

    assert db.apps is not None
    pending = await MigrationAutodetector(db.apps, apps_config).changes()

    assert [writer.name for writer in pending] == [], (
        "models changed without a migration: run `tortoise makemigrations`"
    )
