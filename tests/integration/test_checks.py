"""Checks before anything runs, against real targets, through the API alone: a failed check
holds a prod task until the statement is fixed or a DBA overrides; target checks; dry runs that
leave the target as it was, a worker killed in the middle of one included; plans checked
without being created."""

import asyncio
import contextlib
import logging
import signal
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
from strawberry import relay

from conveyor.crypto import PasswordCipher
from conveyor.db.claims import ClaimedTask, ClaimFor
from conveyor.db.models import Event, Issue
from conveyor.db.outages import Outage
from conveyor.db.own_database import conveyor_database
from conveyor.domain.permissions import Role
from conveyor.domain.statuses import EventKind
from conveyor.domain.targets import UNRESTRICTED
from conveyor.runner.checking import Checker
from conveyor.runner.reach import Reach
from conveyor.runner.worker import Worker
from conveyor.settings import Settings
from tests.conftest import GraphQLClient, conveyor_env, launch
from tests.integration.conftest import (
    EngineCatalog,
    address_of,
    build_engine_catalog,
    eventually,
    target_fetch,
)

CREATE_ISSUE = """
mutation($input: CreateIssueInput!) {
  createIssue(input: $input) { id pipeline { id stages { id tasks(first: 100) { id name } } } }
}
"""
TASK = """
query($id: ID!) { node(id: $id) { ... on Task {
  id name status version statementVersion checkStatus dryRunRequested
  waitingReason { kind message rules }
  checksOverride { by reason statementVersion }
  checks { rule level source message statement line column docUrl detail }
  runs { status }
} } }
"""
SUMMARY = """
query($id: ID!) { node(id: $id) { ... on Pipeline {
  checkSummary { errors warnings notices blockedTasks { name } pendingTasks { name } }
  stages { checkSummary { errors blockedTasks { name } } }
} } }
"""
OVERRIDE = """
mutation($i: OverrideTaskChecksInput!) {
  overrideTaskChecks(input: $i) { checkStatus checksOverride { by reason statementVersion } }
}
"""
EDIT = """
mutation($i: UpdateTaskStatementInput!) {
  updateTaskStatement(input: $i) { statementVersion checksOverride { by } }
}
"""
APPROVE = "mutation($i: TaskActionInput!) { approveTask(input: $i) { status } }"
DRY_RUN = "mutation($i: DryRunInput!) { dryRun(input: $i) { name dryRunRequested } }"


def task_plan(
    catalog: EngineCatalog, database: str, name: str, statement: str, task_type: str
) -> dict[str, Any]:
    return {
        "type": task_type,
        "name": name,
        "instanceId": catalog.instance,
        "databaseId": catalog.databases[database],
        "statement": statement,
    }


async def create(
    graphql: GraphQLClient, catalog: EngineCatalog, stages: dict[str, list[dict[str, Any]]]
) -> tuple[str, str, dict[str, str], list[str]]:
    """The issue's id, its pipeline's, its tasks' ids by name and its stages' ids."""
    plan = {
        "title": "checked",
        "stages": [
            {"environmentId": catalog.environments[env], "tasks": tasks}
            for env, tasks in stages.items()
        ],
    }
    created = (await graphql.ok(CREATE_ISSUE, {"input": plan}))["createIssue"]
    stage_rows = created["pipeline"]["stages"]
    tasks = {task["name"]: task["id"] for stage in stage_rows for task in stage["tasks"]}
    return created["id"], created["pipeline"]["id"], tasks, [stage["id"] for stage in stage_rows]


async def values(server_url: str, database: str, query: str) -> list[Any]:
    """The first column of each row `query` returns on the target."""
    return [row[0] for row in await target_fetch(server_url, database, query)]


async def task_state(graphql: GraphQLClient, task_id: str) -> dict[str, Any]:
    node: dict[str, Any] = (await graphql.ok(TASK, {"id": task_id}))["node"]
    return node


async def until(
    graphql: GraphQLClient, task_id: str, ready: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        state = await task_state(graphql, task_id)
        return state if ready(state) else None

    found: dict[str, Any] = await eventually(check, what=what)
    return found


def rules_of(state: dict[str, Any]) -> set[str]:
    return {check["rule"] for check in state["checks"]}


async def checked_wipe(
    graphql: GraphQLClient, server_url: str, target_databases: Callable[[], Awaitable[str]]
) -> tuple[EngineCatalog, str]:
    """A catalog, and the id of a prod task (`TRUNCATE orders`) whose checks have failed."""
    catalog = await build_engine_catalog(graphql, server_url, {"prod": await target_databases()})
    _, _, tasks, _ = await create(
        graphql,
        catalog,
        {"prod": [task_plan(catalog, "prod", "wipe", "TRUNCATE orders", "DATA_UPDATE")]},
    )
    await until(graphql, tasks["wipe"], lambda t: t["checkStatus"] == "FAILED", "wipe checked")
    return catalog, tasks["wipe"]


async def test_a_failed_check_in_prod_holds_the_task_until_fixed_or_overridden(
    graphql: GraphQLClient,
    worker: Worker,
    server_url: str,
    target_databases: Callable[[], Awaitable[str]],
) -> None:
    names = {"dev": await target_databases(), "prod": await target_databases()}
    catalog = await build_engine_catalog(graphql, server_url, names)
    await target_fetch(server_url, names["prod"], "CREATE TABLE orders (id int, note text)")
    await target_fetch(server_url, names["prod"], "INSERT INTO orders VALUES (1, 'a'), (2, 'b')")
    _, pipeline_id, tasks, _ = await create(
        graphql,
        catalog,
        {
            "dev": [
                task_plan(catalog, "dev", "dev", "CREATE TABLE orders (id int)", "SCHEMA_UPDATE")
            ],
            "prod": [
                task_plan(
                    catalog, "prod", "drop", "ALTER TABLE orders DROP COLUMN note", "SCHEMA_UPDATE"
                ),
                task_plan(catalog, "prod", "purge", "DELETE FROM orders", "DATA_UPDATE"),
                task_plan(
                    catalog, "prod", "fine", "UPDATE orders SET id = id WHERE id = 1", "DATA_UPDATE"
                ),
            ],
        },
    )

    # The checks run in the background; then the data-loss rules, errors in prod, block.
    drop = await until(
        graphql, tasks["drop"], lambda t: t["checkStatus"] == "FAILED", "drop checked"
    )
    purge = await until(
        graphql, tasks["purge"], lambda t: t["checkStatus"] == "FAILED", "purge checked"
    )
    fine = await until(graphql, tasks["fine"], lambda t: t["checkStatus"] == "PASSED", "fine")
    assert drop["waitingReason"] == {
        "kind": "CHECKS_FAILED",
        "message": "checks failed: ban-drop-column",
        "rules": ["ban-drop-column"],
    }
    [finding] = [check for check in drop["checks"] if check["rule"] == "ban-drop-column"]
    assert finding["level"] == "ERROR"
    assert finding["source"] == "STATEMENT"
    assert (finding["line"], finding["statement"]) == (1, "ALTER TABLE orders DROP COLUMN note")
    assert finding["docUrl"] == "https://squawkhq.com/docs/ban-drop-column"
    assert purge["waitingReason"]["rules"] == ["delete-without-where"]
    assert "delete-without-where" not in rules_of(fine)
    summary = (await graphql.ok(SUMMARY, {"id": pipeline_id}))["node"]
    assert {task["name"] for task in summary["checkSummary"]["blockedTasks"]} == {"drop", "purge"}
    assert summary["checkSummary"]["errors"] >= 2
    assert summary["stages"][0]["checkSummary"] == {"errors": 0, "blockedTasks": []}

    # Approving does not get past the checks: the dev stage finishes, prod still waits.
    await until(graphql, tasks["dev"], lambda t: t["status"] == "DONE", "dev to run")
    for name in ("drop", "purge", "fine"):
        await graphql.ok(APPROVE, {"i": {"taskId": tasks[name]}})
    await until(graphql, tasks["fine"], lambda t: t["status"] == "DONE", "fine to run")
    for name in ("drop", "purge"):
        state = await task_state(graphql, tasks[name])
        assert (state["status"], state["waitingReason"]["kind"], state["runs"]) == (
            "PENDING",
            "CHECKS_FAILED",
            [],
        )

    # Fixed: the edit re-runs the checks, which pass; the edit dismissed the approval too.
    edited = await graphql.ok(
        EDIT, {"i": {"taskId": tasks["purge"], "statement": "DELETE FROM orders WHERE id = 2"}}
    )
    assert edited["updateTaskStatement"]["statementVersion"] == 2
    await until(graphql, tasks["purge"], lambda t: t["checkStatus"] == "PASSED", "purge fixed")
    await graphql.ok(APPROVE, {"i": {"taskId": tasks["purge"]}})
    await until(graphql, tasks["purge"], lambda t: t["status"] == "DONE", "purge to run")

    # Overridden: by a DBA, with a reason; not by the DEVELOPER who opened nothing here.
    refused = await graphql(
        OVERRIDE,
        {"i": {"taskId": tasks["drop"], "reason": "note is unused"}},
        actor="dev",
        role=Role.DEVELOPER,
    )
    assert refused.errors[0]["extensions"]["code"] == "FORBIDDEN"
    blank = await graphql(OVERRIDE, {"i": {"taskId": tasks["drop"], "reason": "  "}}, role=Role.DBA)
    assert blank.errors[0]["extensions"]["code"] == "INVALID_INPUT"
    assert blank.errors[0]["extensions"]["field"] == ["input", "reason"]
    overridden = await graphql.ok(
        OVERRIDE,
        {"i": {"taskId": tasks["drop"], "reason": "note is unused"}},
        actor="dora",
        role=Role.DBA,
    )
    assert overridden["overrideTaskChecks"] == {
        "checkStatus": "OVERRIDDEN",
        "checksOverride": {"by": "dora", "reason": "note is unused", "statementVersion": 1},
    }
    again = await graphql(OVERRIDE, {"i": {"taskId": tasks["drop"], "reason": "x"}}, role=Role.DBA)
    assert again.errors[0]["extensions"]["code"] == "CONFLICT"
    await until(graphql, tasks["drop"], lambda t: t["status"] == "DONE", "drop to run")
    columns = await target_fetch(
        server_url,
        names["prod"],
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'orders'",
    )
    assert [row["column_name"] for row in columns] == ["id"]
    assert await values(server_url, names["prod"], "SELECT id FROM orders") == [1]
    event = await Event.get(kind=EventKind.TASK_CHECKS_OVERRIDDEN)
    assert (event.actor, event.detail) == (
        "dora",
        {"reason": "note is unused", "statementVersion": 1, "rules": ["ban-drop-column"]},
    )
    assert await Event.filter(kind=EventKind.TASK_CHECKED).count() >= 5


async def test_an_edit_dismisses_the_override(
    graphql: GraphQLClient,
    worker: Worker,
    server_url: str,
    target_databases: Callable[[], Awaitable[str]],
) -> None:
    _, wipe = await checked_wipe(graphql, server_url, target_databases)
    await graphql.ok(OVERRIDE, {"i": {"taskId": wipe, "reason": "staging copy"}})

    edited = await graphql.ok(EDIT, {"i": {"taskId": wipe, "statement": "TRUNCATE t2"}})

    assert edited["updateTaskStatement"] == {"statementVersion": 2, "checksOverride": None}
    state = await until(graphql, wipe, lambda t: t["checkStatus"] == "FAILED", "wipe checked again")
    assert state["waitingReason"]["rules"] == ["truncate"]
    assert [check["statement"] for check in state["checks"] if check["rule"] == "truncate"] == [
        "TRUNCATE t2"
    ]


async def test_target_checks_report_a_missing_database_and_no_create_privilege(
    graphql: GraphQLClient,
    worker: Worker,
    server_url: str,
    target_databases: Callable[[], Awaitable[str]],
) -> None:
    names = {"gone": await target_databases(), "here": await target_databases()}
    catalog = await build_engine_catalog(graphql, server_url, names)
    role = f"conveyor_noperm_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'noperm'")
        await admin.execute(f'DROP DATABASE "{names["gone"]}" WITH (FORCE)')
        address = address_of(server_url)
        instance = await graphql.ok(
            "mutation($i: CreateInstanceInput!) { createInstance(input: $i) { id } }",
            {
                "i": {
                    "name": "no-privilege",
                    "environmentId": catalog.environments["prod"],
                    "host": address.host,
                    "port": address.port,
                    "username": role,
                    "password": "noperm",
                }
            },
        )
        instance_id = instance["createInstance"]["id"]
        database = await graphql.ok(
            "mutation($i: RegisterDatabaseInput!) { registerDatabase(input: $i) { id } }",
            {"i": {"instanceId": instance_id, "name": names["here"]}},
        )
        unprivileged = {
            "type": "SCHEMA_UPDATE",
            "name": "unprivileged",
            "instanceId": instance_id,
            "databaseId": database["registerDatabase"]["id"],
            "statement": "CREATE TABLE public.t (id int)",
        }
        _, _, tasks, _ = await create(
            graphql,
            catalog,
            {
                "prod": [
                    task_plan(
                        catalog, "gone", "missing", "CREATE TABLE t (id int)", "SCHEMA_UPDATE"
                    ),
                    unprivileged,
                    task_plan(catalog, "here", "fine", "CREATE TABLE t (id int)", "SCHEMA_UPDATE"),
                ]
            },
        )
        missing = await until(
            graphql, tasks["missing"], lambda t: t["checkStatus"] != "PENDING", "missing checked"
        )
        denied = await until(
            graphql, tasks["unprivileged"], lambda t: t["checkStatus"] != "PENDING", "checked"
        )
        fine = await until(graphql, tasks["fine"], lambda t: t["checkStatus"] != "PENDING", "fine")
    finally:
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()

    [gone] = [check for check in missing["checks"] if check["source"] == "TARGET"]
    assert (gone["rule"], gone["level"]) == ("target-database-missing", "ERROR")
    assert names["gone"] in gone["message"]
    assert missing["waitingReason"]["rules"] == ["target-database-missing"]
    [refused] = [check for check in denied["checks"] if check["source"] == "TARGET"]
    assert (refused["rule"], refused["level"]) == ("target-privilege", "ERROR")
    assert refused["message"] == "the instance's role may not create objects in schema public"
    assert denied["checkStatus"] == "FAILED"
    assert [check for check in fine["checks"] if check["source"] == "TARGET"] == []
    assert fine["checkStatus"] == "PASSED"


async def test_a_dry_run_of_a_stage_reports_each_outcome_and_leaves_the_target_unchanged(
    graphql: GraphQLClient,
    worker: Worker,
    server_url: str,
    target_databases: Callable[[], Awaitable[str]],
) -> None:
    names = {"prod": await target_databases()}
    catalog = await build_engine_catalog(graphql, server_url, names)
    await target_fetch(server_url, names["prod"], "CREATE TABLE kept (id int)")
    await target_fetch(server_url, names["prod"], "INSERT INTO kept VALUES (1), (2), (3)")
    _, _, tasks, stages = await create(
        graphql,
        catalog,
        {
            "prod": [
                task_plan(
                    catalog,
                    "prod",
                    "works",
                    "UPDATE kept SET id = id + 10 WHERE id > 1",
                    "DATA_UPDATE",
                ),
                task_plan(
                    catalog,
                    "prod",
                    "second-fails",
                    "CREATE TABLE made (id int);\nINSERT INTO made VALUES ('x')",
                    "SCHEMA_UPDATE",
                ),
                task_plan(
                    catalog,
                    "prod",
                    "concurrent",
                    "CREATE INDEX CONCURRENTLY kept_id ON kept (id)",
                    "SCHEMA_UPDATE",
                ),
            ]
        },
    )

    asked = await graphql.ok(DRY_RUN, {"i": {"stageId": stages[0]}})

    assert {task["name"] for task in asked["dryRun"]} == {"works", "second-fails", "concurrent"}
    assert all(task["dryRunRequested"] for task in asked["dryRun"])
    states = {
        name: await until(
            graphql, tasks[name], lambda t: not t["dryRunRequested"], f"{name}'s dry run"
        )
        for name in tasks
    }
    [works] = [c for c in states["works"]["checks"] if c["source"] == "DRY_RUN"]
    assert (works["level"], works["detail"]["rowsAffected"]) == ("NOTICE", 2)
    assert works["detail"]["rolledBack"] is True
    [failed] = [c for c in states["second-fails"]["checks"] if c["source"] == "DRY_RUN"]
    assert failed["level"] == "ERROR"
    assert (failed["detail"]["sqlstate"], failed["detail"]["failedStatement"]) == ("22P02", 2)
    assert (failed["line"], failed["statement"]) == (2, "INSERT INTO made VALUES ('x')")
    assert "SQLSTATE 22P02" in failed["message"]
    [skipped] = [c for c in states["concurrent"]["checks"] if c["source"] == "DRY_RUN"]
    assert skipped["detail"] == {"executed": False, "message": skipped["message"]}
    assert "not executed" in skipped["message"]
    # A dry run informs; it does not hold the task back.
    assert states["second-fails"]["checkStatus"] == "PASSED"
    # On the target, nothing happened.
    assert await values(server_url, names["prod"], "SELECT id FROM kept ORDER BY id") == [1, 2, 3]
    made = await target_fetch(server_url, names["prod"], "SELECT to_regclass('made') AS t")
    index = await target_fetch(server_url, names["prod"], "SELECT to_regclass('kept_id') AS t")
    assert (made[0]["t"], index[0]["t"]) == (None, None)
    finished = await Event.filter(kind=EventKind.TASK_DRY_RUN_FINISHED).count()
    assert finished == 3


async def test_a_worker_killed_mid_dry_run_leaves_the_target_unchanged(
    graphql: GraphQLClient,
    settings: Settings,
    tmp_path: Path,
    server_url: str,
    target_databases: Callable[[], Awaitable[str]],
) -> None:
    names = {"prod": await target_databases()}
    catalog = await build_engine_catalog(graphql, server_url, names)
    await target_fetch(server_url, names["prod"], "CREATE TABLE kept (id int)")
    statement = "INSERT INTO kept VALUES (1);\nCREATE TABLE made (id int);\nSELECT pg_sleep(2)"
    _, _, tasks, _ = await create(
        graphql,
        catalog,
        {"prod": [task_plan(catalog, "prod", "slow", statement, "SCHEMA_UPDATE")]},
    )
    env = conveyor_env(settings, CONVEYOR_LEASE_SECONDS="3", CONVEYOR_POLL_SECONDS="0.3")
    victim = launch(["worker"], env, tmp_path / "victim.log")
    try:
        victim.wait_until(lambda: " started" in victim.log(), "the worker to start")
        await graphql.ok(DRY_RUN, {"i": {"taskId": tasks["slow"]}})

        async def sleeping() -> bool:
            rows = await target_fetch(
                server_url,
                names["prod"],
                "SELECT count(*) AS n FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'",
            )
            return bool(rows[0]["n"])

        await eventually(sleeping, what="the dry run to reach its last statement")
        victim.stop(signal.SIGKILL)
    finally:
        victim.stop(signal.SIGKILL)

    async def backend_gone() -> bool:
        return not await sleeping()

    await eventually(backend_gone, what="the killed worker's session to end")
    assert await values(server_url, names["prod"], "SELECT count(*) FROM kept") == [0]
    made = await target_fetch(server_url, names["prod"], "SELECT to_regclass('made') AS t")
    assert made[0]["t"] is None

    # Another worker takes the dry run over once the lease has expired, and finishes it.
    rescuer = launch(["worker"], env, tmp_path / "rescuer.log")
    try:
        state = await until(
            graphql, tasks["slow"], lambda t: not t["dryRunRequested"], "the dry run to finish"
        )
    finally:
        rescuer.stop()
    [outcome] = [c for c in state["checks"] if c["source"] == "DRY_RUN"]
    assert (outcome["level"], outcome["detail"]["executed"]) == ("NOTICE", True)
    assert await values(server_url, names["prod"], "SELECT count(*) FROM kept") == [0]
    made = await target_fetch(server_url, names["prod"], "SELECT to_regclass('made') AS t")
    assert made[0]["t"] is None


CHECK_PLAN = """
query($input: CreateIssueInput!) {
  checkPlan(input: $input) {
    blocked
    tasks { stagePosition taskPosition ref blockingRules findings { rule level line column } }
  }
}
"""


async def test_check_plan_tells_each_task_what_it_would_get_and_writes_nothing(
    graphql: GraphQLClient, server_url: str, target_databases: Callable[[], Awaitable[str]]
) -> None:
    names = {"dev": await target_databases(), "prod": await target_databases()}
    catalog = await build_engine_catalog(graphql, server_url, names)
    plan: dict[str, Any] = {
        "title": "checked only",
        "stages": [
            {
                "environmentId": catalog.environments["dev"],
                "tasks": [task_plan(catalog, "dev", "a", "DELETE FROM t", "DATA_UPDATE")],
            },
            {
                "environmentId": catalog.environments["prod"],
                "tasks": [
                    task_plan(catalog, "prod", "b", "DELETE FROM t", "DATA_UPDATE"),
                    task_plan(catalog, "prod", "c", "SELECT 1;\nSELEC 2", "DATA_UPDATE"),
                ],
            },
        ],
    }
    events_before = await Event.all().count()

    checked = (await graphql.ok(CHECK_PLAN, {"input": plan}))["checkPlan"]

    dev, prod, typo = checked["tasks"]
    # The data-loss rule is a warning in dev and an error in prod (the defaults).
    assert [(f["rule"], f["level"]) for f in dev["findings"]] == [
        ("delete-without-where", "WARNING")
    ]
    assert dev["blockingRules"] == []
    assert [(f["rule"], f["level"]) for f in prod["findings"]] == [
        ("delete-without-where", "ERROR")
    ]
    assert prod["blockingRules"] == ["delete-without-where"]
    assert (typo["stagePosition"], typo["taskPosition"]) == (1, 1)
    assert [(f["rule"], f["line"]) for f in typo["findings"]] == [("syntax", 2)]
    assert checked["blocked"] is True
    assert await Issue.all().count() == 0
    assert await Event.all().count() == events_before

    plan["stages"][0]["tasks"][0]["databaseId"] = None
    refused = await graphql(CHECK_PLAN, {"input": plan})
    assert refused.errors[0]["extensions"]["code"] == "INVALID_INPUT"


async def test_an_environment_s_review_policy_changes_what_blocks_and_rechecks(
    graphql: GraphQLClient,
    worker: Worker,
    server_url: str,
    target_databases: Callable[[], Awaitable[str]],
) -> None:
    catalog, wipe = await checked_wipe(graphql, server_url, target_databases)

    changed = await graphql.ok(
        """mutation($i: SetReviewPolicyInput!) { setReviewPolicy(input: $i) {
            reviewPolicy { blocking rules { rule level } } } }""",
        {
            "i": {
                "environmentId": catalog.environments["prod"],
                "rules": [{"rule": "truncate", "level": "WARNING"}],
            }
        },
        role=Role.DBA,
    )

    policy = changed["setReviewPolicy"]["reviewPolicy"]
    assert policy["blocking"] == "ERROR"
    assert {"rule": "truncate", "level": "WARNING"} in policy["rules"]
    state = await until(graphql, wipe, lambda t: t["checkStatus"] == "PASSED", "wipe checked again")
    assert [(c["rule"], c["level"]) for c in state["checks"] if c["rule"] == "truncate"] == [
        ("truncate", "WARNING")
    ]
    duplicate = await graphql(
        "mutation($i: SetReviewPolicyInput!) { setReviewPolicy(input: $i) { id } }",
        {
            "i": {
                "environmentId": catalog.environments["prod"],
                "rules": [{"rule": "truncate", "level": None}, {"rule": "truncate", "level": None}],
            }
        },
    )
    assert duplicate.errors[0]["extensions"]["field"] == ["input", "rules", 1, "rule"]


async def test_checks_wait_while_nothing_checks_them(
    graphql: GraphQLClient, server_url: str, target_databases: Callable[[], Awaitable[str]]
) -> None:
    names = {"dev": await target_databases()}
    catalog = await build_engine_catalog(graphql, server_url, names)
    _, _, tasks, _ = await create(
        graphql,
        catalog,
        {"dev": [task_plan(catalog, "dev", "a", "CREATE TABLE a (id int)", "SCHEMA_UPDATE")]},
    )
    await asyncio.sleep(0)

    state = await task_state(graphql, tasks["a"])

    assert (state["checkStatus"], state["waitingReason"]["kind"]) == ("PENDING", "CHECKS_PENDING")


#: Each rule of the default policy in a protected environment: a statement it reports, of a
#: task type, and a near miss it lets pass (which other rules may still report).
RULE_CASES: list[tuple[str, str, str, str]] = [
    (
        "syntax",
        "DATA_UPDATE",
        "UPDATE orders SET id = WHERE id = 1",
        "UPDATE orders SET id = 1 WHERE id = 1",
    ),
    (
        "ddl-in-data-update",
        "DATA_UPDATE",
        "CREATE TABLE made (id int)",
        "INSERT INTO orders VALUES (3, 'c')",
    ),
    (
        "dml-in-schema-update",
        "SCHEMA_UPDATE",
        "UPDATE orders SET id = id WHERE id = 1",
        "CREATE TABLE made (id int)",
    ),
    (
        "update-without-where",
        "DATA_UPDATE",
        "UPDATE orders SET note = 'x'",
        "UPDATE orders SET note = 'x' WHERE id = 1",
    ),
    (
        "delete-without-where",
        "DATA_UPDATE",
        "DELETE FROM orders",
        "DELETE FROM orders WHERE id = 3",
    ),
    ("truncate", "DATA_UPDATE", "TRUNCATE orders", "DELETE FROM orders WHERE id = 3"),
    ("drop-database", "SCHEMA_UPDATE", "DROP DATABASE not_here", "CREATE TABLE made (id int)"),
    (
        "grant-to-public",
        "SCHEMA_UPDATE",
        "GRANT SELECT ON orders TO PUBLIC",
        "GRANT SELECT ON orders TO CURRENT_USER",
    ),
    (
        "ban-drop-column",
        "SCHEMA_UPDATE",
        "ALTER TABLE orders DROP COLUMN note",
        "ALTER TABLE orders ADD COLUMN extra text",
    ),
    (
        "require-concurrent-index-creation",
        "SCHEMA_UPDATE",
        "CREATE INDEX orders_id ON orders (id)",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_id ON orders (id)",
    ),
    (
        "adding-not-nullable-field",
        "SCHEMA_UPDATE",
        "ALTER TABLE orders ALTER COLUMN id SET NOT NULL",
        "ALTER TABLE orders ALTER COLUMN id DROP NOT NULL",
    ),
    (
        "adding-required-field",
        "SCHEMA_UPDATE",
        "ALTER TABLE orders ADD COLUMN n int NOT NULL",
        "ALTER TABLE orders ADD COLUMN n int NOT NULL DEFAULT 0",
    ),
    (
        "changing-column-type",
        "SCHEMA_UPDATE",
        "ALTER TABLE orders ALTER COLUMN note TYPE varchar(10)",
        "ALTER TABLE orders ALTER COLUMN note SET DEFAULT 'x'",
    ),
    (
        "constraint-missing-not-valid",
        "SCHEMA_UPDATE",
        "ALTER TABLE orders ADD CONSTRAINT positive CHECK (id > 0)",
        "ALTER TABLE orders ADD CONSTRAINT positive CHECK (id > 0) NOT VALID",
    ),
    (
        "prefer-robust-stmts",
        "SCHEMA_UPDATE",
        "CREATE INDEX CONCURRENTLY orders_note ON orders (note)",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_note ON orders (note)",
    ),
]


async def test_each_rule_reports_on_a_real_target_and_lets_its_near_miss_pass(
    graphql: GraphQLClient,
    worker: Worker,
    server_url: str,
    target_databases: Callable[[], Awaitable[str]],
) -> None:
    database = await target_databases()
    catalog = await build_engine_catalog(graphql, server_url, {"prod": database})
    await target_fetch(server_url, database, "CREATE TABLE orders (id int, note text)")
    plans = []
    for rule, task_type, reported, near_miss in RULE_CASES:
        plans.append(task_plan(catalog, "prod", f"{rule}: reported", reported, task_type))
        plans.append(task_plan(catalog, "prod", f"{rule}: passes", near_miss, task_type))
    _, _, tasks, _ = await create(graphql, catalog, {"prod": plans})

    found = {}
    for name, task_id in tasks.items():
        state = await until(
            graphql, task_id, lambda t: t["checkStatus"] != "PENDING", f"{name} checked"
        )
        found[name] = rules_of(state)
    for rule, *_ in RULE_CASES:
        assert rule in found[f"{rule}: reported"], (rule, found[f"{rule}: reported"])
        assert rule not in found[f"{rule}: passes"], (rule, found[f"{rule}: passes"])
    # Nothing ran: every task waits in prod, for its approval or its checks.
    assert await values(server_url, database, "SELECT count(*) FROM orders") == [0]


async def test_squawk_s_findings_are_advisory_where_they_cannot_block_and_awaited_where_they_can(
    graphql: GraphQLClient,
    worker: Worker,
    server_url: str,
    target_databases: Callable[[], Awaitable[str]],
) -> None:
    # dev's default policy: squawk reports warnings at most, and only errors block; prod's
    # makes squawk's data-loss rules errors. The same statement in each draws a squawk warning.
    names = {"dev": await target_databases(), "prod": await target_databases()}
    catalog = await build_engine_catalog(graphql, server_url, names)
    for database in names.values():
        await target_fetch(server_url, database, "CREATE TABLE orders (id int, note text)")
    statement = "CREATE INDEX orders_id ON orders (id)"
    _, _, tasks, _ = await create(
        graphql,
        catalog,
        {
            "dev": [task_plan(catalog, "dev", "dev", statement, "SCHEMA_UPDATE")],
            "prod": [task_plan(catalog, "prod", "prod", statement, "SCHEMA_UPDATE")],
        },
    )
    rule = "require-concurrent-index-creation"

    found = {
        name: await until(graphql, tasks[name], lambda t: rule in rules_of(t), f"{name} linted")
        for name in ("dev", "prod")
    }

    assert {name: state["checkStatus"] for name, state in found.items()} == {
        "dev": "PASSED",
        "prod": "PASSED",
    }
    ids = {name: int(relay.GlobalID.from_id(tasks[name]).node_id) for name in ("dev", "prod")}
    events: dict[str, list[dict[str, Any]]] = {
        name: [
            event.detail or {}
            for event in await Event.filter(kind=EventKind.TASK_CHECKED, task_id=task_id).order_by(
                "id"
            )
        ]
        for name, task_id in ids.items()
    }
    # dev: its gate was recorded on Conveyor's rules and the target's alone (no warning yet),
    # then squawk's warning as advisory, the blocking rules untouched.
    first, advisory = events["dev"]
    assert first["counts"].get("WARNING", 0) == 0
    assert "advisory" not in first
    assert advisory["advisory"] is True
    assert advisory["counts"]["WARNING"] >= 1
    assert advisory["blockingRules"] == first["blockingRules"] == []
    # prod: one record, squawk's warning in it: its gate waited for squawk.
    [recorded] = events["prod"]
    assert recorded["counts"]["WARNING"] >= 1
    assert "advisory" not in recorded


async def test_a_check_round_starts_what_its_checks_let_run_in_their_own_transaction(
    graphql: GraphQLClient,
    engine_settings: Settings,
    server_url: str,
    target_databases: Callable[[], Awaitable[str]],
) -> None:
    # A worker's checker claims, in the transaction that records the checks, the tasks they let
    # start (one per database here): no claim round of its own after the commit, and
    # subscribers see each task checked before they see it start.
    catalog = await build_engine_catalog(graphql, server_url, {"dev": await target_databases()})
    _, _, tasks, _ = await create(
        graphql,
        catalog,
        {
            "dev": [
                task_plan(catalog, "dev", "first", "SELECT 1", "DATA_UPDATE"),
                task_plan(catalog, "dev", "second", "SELECT 2", "DATA_UPDATE"),
            ]
        },
    )
    reach = Reach(
        PasswordCipher(engine_settings.secret_key or ""),
        await conveyor_database(),
        UNRESTRICTED,
        engine_settings.connect_timeout_seconds,
    )
    slots_held: list[bool] = []
    started: list[ClaimedTask] = []

    @contextlib.contextmanager
    def room() -> Iterator[ClaimFor | None]:
        slots_held.append(True)
        yield ClaimFor("checking-worker", timedelta(seconds=30), 4)
        slots_held[-1] = False

    def start(claimed: list[ClaimedTask]) -> None:
        assert slots_held == [True], "started after its slots were given back"
        started.extend(claimed)

    checker = Checker(
        engine_settings,
        reach,
        Outage(logging.getLogger(__name__), "checks"),
        claim_room=room,
        start_claimed=start,
    )
    try:
        assert await checker.check_round() == 2
    finally:
        await checker.close()

    first = int(relay.GlobalID.from_id(tasks["first"]).node_id)
    assert [claimed.task_id for claimed in started] == [first]
    assert (await task_state(graphql, tasks["first"]))["status"] == "RUNNING"
    waiting = await task_state(graphql, tasks["second"])
    assert (waiting["status"], waiting["checkStatus"]) == ("PENDING", "PASSED")
    kinds = [event.kind for event in await Event.filter(task_id=first).order_by("id")]
    assert kinds.index(EventKind.TASK_CHECKED) < kinds.index(EventKind.TASK_STATUS_CHANGED)
