"""Checks and dry runs in Conveyor's database: the workers' queues, the findings, overrides,
the review policy of each environment, and the reads the API shows.

Lock order, as for every writer: pipeline rows (in id order) before any of their task rows.
"""

import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.connection import get_connection
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from conveyor.db.claims import ClaimedTask, ClaimFor, start_in_held_pipelines
from conveyor.db.events import EVENT_ORDER_LOCK_KEY, RUNNER_CHANNEL, NewEvent, record_events
from conveyor.db.models import Environment, Pipeline, Task, TaskCheck
from conveyor.db.queries import ASYNCHRONOUS_COMMIT
from conveyor.db.task_status import issue_creator, lock_task, now_utc, task_event
from conveyor.domain.check_review import (
    CheckFacts,
    CheckSource,
    CheckSummary,
    environment_review_policy,
    override_reason_problems,
    override_refusal,
    policy_problems,
    review_policy_of,
    summarize,
)
from conveyor.domain.checks import Finding, ReviewPolicy
from conveyor.domain.permissions import (
    Operation,
    Principal,
    issue_action_refusal,
    refuse_if,
    require,
)
from conveyor.domain.statuses import ApprovalPolicy, EventKind, PipelineStatus, TaskStatus, TaskType
from conveyor.errors import ConveyorError, FieldPath, conflict, not_found

logger = logging.getLogger(__name__)
#: Who the workers' check events name as their actor.
CHECKER_ACTOR = "conveyor-checker"
#: The statuses whose tasks are checked: every one a task can still run from.
CHECKED_STATUSES = (
    TaskStatus.PENDING_APPROVAL,
    TaskStatus.PENDING,
    TaskStatus.FAILED,
    TaskStatus.CANCELED,
)
_CHECKED = [status.value for status in CHECKED_STATUSES]
#: The task types a dry run runs: those with a statement.
DRY_RUN_TYPES = (TaskType.SCHEMA_UPDATE, TaskType.DATA_UPDATE)


@dataclass(frozen=True)
class TaskToCheck:
    """A task a worker holds for its checks or its dry run, and how to reach its target."""

    task_id: int
    statement_version: int
    type: TaskType
    statement: str | None
    #: DATABASE_CREATE: the name of the database to create.
    database_name: str | None
    #: The target database; None for instance-level tasks.
    target_database: str | None
    instance_id: int
    host: str
    port: int
    username: str
    password_encrypted: str
    connection_options: dict[str, str]
    policy: ReviewPolicy
    #: For a dry run: the request it answers (a newer one is left for the next round).
    dry_run_requested_at: datetime | None


_HELD_COLUMNS = """
    t.id AS task_id, t.statement_version, t.type, t.statement, t.database_name,
    d.name AS target_database, i.id AS instance_id, i.host, i.port, i.username,
    i.password_encrypted, i.connection_options, e.approval_policy, e.review_levels,
    e.review_blocking_level, t.dry_run_requested_at
    FROM held JOIN task t ON t.id = held.id
    JOIN instance i ON i.id = t.instance_id
    LEFT JOIN database d ON d.id = t.database_id
    JOIN stage s ON s.id = t.stage_id
    JOIN environment e ON e.id = s.environment_id
    ORDER BY t.id
"""

# Each claim takes the rows whose hold is free or expired (the worker holding them died), and
# skips the rows another worker is locking right now: no worker waits on another. A claim
# writes a lease and nothing else, so it commits without waiting for its WAL to reach the disk
# (`ASYNCHRONOUS_COMMIT`): that wait was most of a claim's time, and a new issue's first task
# waits for its checks' claim.
_CLAIM_CHECKS = f"""
    WITH held AS (
        UPDATE task SET checks_lease_expires_at = now() + $2 * interval '1 second'
        WHERE id IN (
            SELECT t.id FROM task t JOIN pipeline p ON p.id = t.pipeline_id
            WHERE t.checked_version IS DISTINCT FROM t.statement_version
              AND t.status = ANY($3::text[]) AND p.status = $4
              AND (t.checks_lease_expires_at IS NULL OR t.checks_lease_expires_at < now())
            ORDER BY t.id LIMIT $1
            FOR NO KEY UPDATE OF t SKIP LOCKED)
        RETURNING id, {ASYNCHRONOUS_COMMIT})
    SELECT {_HELD_COLUMNS}
"""

_CLAIM_DRY_RUNS = f"""
    WITH held AS (
        UPDATE task SET dry_run_lease_expires_at = now() + $2 * interval '1 second'
        WHERE id IN (
            SELECT t.id FROM task t
            WHERE t.dry_run_requested_at IS NOT NULL
              AND (t.dry_run_lease_expires_at IS NULL OR t.dry_run_lease_expires_at < now())
            ORDER BY t.dry_run_requested_at, t.id LIMIT $1
            FOR NO KEY UPDATE OF t SKIP LOCKED)
        RETURNING id, {ASYNCHRONOUS_COMMIT})
    SELECT {_HELD_COLUMNS}
"""


def _held(row: Mapping[str, Any]) -> TaskToCheck:
    options = row["connection_options"]
    levels = row["review_levels"]
    return TaskToCheck(
        task_id=row["task_id"],
        statement_version=row["statement_version"],
        type=TaskType(row["type"]),
        statement=row["statement"],
        database_name=row["database_name"],
        target_database=row["target_database"],
        instance_id=row["instance_id"],
        host=row["host"],
        port=row["port"],
        username=row["username"],
        password_encrypted=row["password_encrypted"],
        connection_options=json.loads(options) if isinstance(options, str) else options,
        policy=environment_review_policy(
            ApprovalPolicy(row["approval_policy"]),
            json.loads(levels) if isinstance(levels, str) else levels,
            row["review_blocking_level"],
        ),
        dry_run_requested_at=row["dry_run_requested_at"],
    )


async def claim_tasks_to_check(lease: timedelta, limit: int) -> list[TaskToCheck]:
    """Hold up to `limit` tasks whose checks are due (never run, or run on an older statement)."""
    rows = await get_connection("default").execute_query_dict(
        _CLAIM_CHECKS, [limit, lease.total_seconds(), _CHECKED, PipelineStatus.OPEN.value]
    )
    return [_held(row) for row in rows]


async def claim_dry_runs(lease: timedelta, limit: int) -> list[TaskToCheck]:
    """Hold up to `limit` tasks with a dry run asked for, oldest request first."""
    rows = await get_connection("default").execute_query_dict(
        _CLAIM_DRY_RUNS, [limit, lease.total_seconds()]
    )
    return [_held(row) for row in rows]


@dataclass(frozen=True)
class CheckOutcome:
    """What a worker found on one task, for the statement version it read."""

    task_id: int
    statement_version: int
    findings: Sequence[tuple[CheckSource, Finding]]
    blocking_rules: tuple[str, ...]


_FindingRow = tuple[int, int, CheckSource, Finding, dict[str, Any] | None]


def _findings_insert(first: int, where: str = "") -> str:
    """The INSERT of task_check rows from `_findings_parameters`, its arrays numbered from
    `$first`; `where` filters them (on `f.task_id`)."""
    arrays = ", ".join(
        f"${first + n}::{kind}[]"
        for n, kind in enumerate(
            ["int", "int", "text", "text", "text", "text", "text", "int", "int", "text", "jsonb"]
        )
    )
    return f"""
        INSERT INTO task_check (task_id, statement_version, source, rule, level, message,
            statement, line, "column", doc_url, detail, created_at)
        SELECT f.*, now()
        FROM unnest({arrays})
            AS f(task_id, statement_version, source, rule, level, message, statement, line,
                 "column", doc_url, detail)
        {where}
    """


def _findings_parameters(rows: Sequence[_FindingRow]) -> list[list[Any]]:
    return [
        [row[0] for row in rows],
        [row[1] for row in rows],
        [row[2].value for row in rows],
        [row[3].rule for row in rows],
        [row[3].level.value for row in rows],
        [row[3].message for row in rows],
        [row[3].statement for row in rows],
        [row[3].line for row in rows],
        [row[3].column for row in rows],
        [row[3].doc_url for row in rows],
        [None if row[4] is None else json.dumps(row[4]) for row in rows],
    ]


async def _insert_findings(connection: BaseDBAsyncClient, rows: Sequence[_FindingRow]) -> None:
    if not rows:
        return
    await connection.execute_query(_findings_insert(1), _findings_parameters(rows))


# One statement for what a round's findings change, on the tasks still at the statement
# version checked (locked, in id order, after their pipelines, which it locks first as a claim
# does), and each such task's TASK_CHECKED event with its NOTIFY, as db.events.record_events
# writes them (the event-order lock before a sequence number is drawn): three round trips fewer
# between a new issue's commit and its first task's start. Every row it writes is one it
# locked (a row changed meanwhile is read anew), and the claim that follows it is a statement
# of its own, which sees whatever committed before these locks were granted. A statement sees
# the tables as they were when it started, so the DELETE leaves the rows the INSERT adds.
# $1 task ids, $2 their statement versions checked, $3 their blocking rules (JSON), $4 their
# events' details (JSON), $5 the source kept (dry runs), $6 the event kind, $7 actor, $8 the
# event-order lock key, $9 channel, $10 the open pipeline status, $11.. the findings
# (`_findings_parameters`).
_RECORD_CHECKS = f"""
    WITH pipelines AS MATERIALIZED (
        SELECT id, status FROM pipeline
        WHERE id IN (SELECT pipeline_id FROM task WHERE id = ANY($1::int[]))
        ORDER BY id
        FOR NO KEY UPDATE
    ), outcome AS (
        SELECT * FROM unnest($1::int[], $2::int[], $3::text[], $4::text[])
            AS o(id, version, rules, detail)
    ), current AS (
        -- A task edited meanwhile keeps waiting for the checks of its new statement. Its
        -- pipelines are locked first, every one of them: the count reads them all, once,
        -- before the first task row (a condition on no row is evaluated before any row).
        SELECT t.id FROM task t JOIN outcome o ON o.id = t.id AND o.version = t.statement_version
        WHERE t.id = ANY($1::int[]) AND (SELECT count(*) FROM pipelines) > 0
        ORDER BY t.id
        FOR UPDATE OF t
    ), cleared AS (
        DELETE FROM task_check
        WHERE task_id IN (SELECT id FROM current) AND source <> $5
    ), found AS ({_findings_insert(11, "WHERE f.task_id IN (SELECT id FROM current)")}
    ), checked AS (
        UPDATE task SET checked_version = o.version, blocking_rules = o.rules::jsonb,
            checks_lease_expires_at = NULL
        FROM outcome o
        WHERE task.id = o.id AND task.id IN (SELECT id FROM current)
        RETURNING task.id, task.stage_id, task.pipeline_id, o.detail
    ), ordered AS (
        SELECT pg_advisory_xact_lock($8) AS held WHERE EXISTS (SELECT FROM checked)
    ), events AS (
        INSERT INTO event (kind, actor, issue_id, pipeline_id, stage_id, task_id, detail,
            created_at)
        SELECT $6, $7, p.issue_id, c.pipeline_id, c.stage_id, c.id, c.detail::jsonb, now()
        FROM ordered, checked c JOIN pipeline p ON p.id = c.pipeline_id
        ORDER BY c.id
        RETURNING id
    ), notified AS (
        SELECT pg_notify($9, max(id)::text) AS sent FROM events HAVING count(*) > 0
    )
    SELECT c.id, (SELECT count(*) FROM notified) AS notified,
        ARRAY(SELECT id FROM pipelines WHERE status = $10 ORDER BY id) AS open_pipelines
    FROM checked c
    ORDER BY c.id
"""


async def record_checks(
    outcomes: Sequence[CheckOutcome], claim: ClaimFor | None = None
) -> list[ClaimedTask]:
    """Keep each task's findings and blocking rules, and tell subscribers, in one transaction;
    a task edited meanwhile keeps waiting for the checks of its new statement. With `claim`,
    the same transaction then claims what may start in the tasks' open pipelines, which it
    holds locked already: the tasks claimed (to run once this returns, the claim committed)."""
    if not outcomes:
        return []
    try:
        return await _record_checks(outcomes, claim)
    except IntegrityError:
        if claim is None:
            raise
        # The one-running-task-per-database index caught a race the claim's decision did not
        # see; the checks rolled back with it, and are recorded again without a claim.
        logger.info("a claim after checks lost a race; recording the checks alone")
        return await _record_checks(outcomes, None)


async def _record_checks(
    outcomes: Sequence[CheckOutcome], claim: ClaimFor | None
) -> list[ClaimedTask]:
    async with in_transaction() as connection:
        checked = await connection.execute_query_dict(
            _RECORD_CHECKS,
            [
                [outcome.task_id for outcome in outcomes],
                [outcome.statement_version for outcome in outcomes],
                [json.dumps(list(outcome.blocking_rules)) for outcome in outcomes],
                [json.dumps(_checked_detail(outcome)) for outcome in outcomes],
                CheckSource.DRY_RUN.value,
                EventKind.TASK_CHECKED.value,
                CHECKER_ACTOR,
                EVENT_ORDER_LOCK_KEY,
                RUNNER_CHANNEL,
                PipelineStatus.OPEN.value,
                *_findings_parameters(
                    [
                        (outcome.task_id, outcome.statement_version, source, finding, None)
                        for outcome in outcomes
                        for source, finding in outcome.findings
                    ]
                ),
            ],
        )
        if not checked or claim is None:
            return []
        # After the events: subscribers see a task checked before they see it start. The
        # pipelines' locks, taken first in this transaction, are the ones a claim takes, and
        # what the claim reads (the checks just written included) comes after them.
        return await start_in_held_pipelines(connection, checked[0]["open_pipelines"], claim)


async def record_advisory_findings(
    added: Sequence[tuple[CheckOutcome, Sequence[tuple[CheckSource, Finding]]]],
) -> None:
    """Add findings that cannot block to checks `record_checks` kept (each outcome as it was
    recorded, with what to add to it), and tell subscribers, in one transaction; a task edited
    or rechecked meanwhile is left alone. Its blocking rules stay: the gate was decided."""
    if not added:
        return
    async with in_transaction() as connection:
        # KEY SHARE on the tasks: a recheck (FOR UPDATE) waits for this, the runner's status
        # changes do not; no pipeline lock, which claims would have to skip.
        rows = await connection.execute_query_dict(
            """
            SELECT t.id, t.stage_id, t.pipeline_id, p.issue_id
            FROM task t JOIN pipeline p ON p.id = t.pipeline_id
            JOIN unnest($1::int[], $2::int[]) AS c (id, version) ON c.id = t.id
            WHERE t.statement_version = c.version AND t.checked_version = c.version
            ORDER BY t.id
            FOR KEY SHARE OF t
            """,
            [
                [outcome.task_id for outcome, _ in added],
                [outcome.statement_version for outcome, _ in added],
            ],
        )
        current = {row["id"]: row for row in rows}
        kept = [(outcome, found) for outcome, found in added if outcome.task_id in current]
        await _insert_findings(
            connection,
            [
                (outcome.task_id, outcome.statement_version, source, finding, None)
                for outcome, found in kept
                for source, finding in found
            ],
        )
        await record_events(
            connection,
            CHECKER_ACTOR,
            [
                NewEvent(
                    EventKind.TASK_CHECKED,
                    issue_id=current[outcome.task_id]["issue_id"],
                    pipeline_id=current[outcome.task_id]["pipeline_id"],
                    stage_id=current[outcome.task_id]["stage_id"],
                    task_id=outcome.task_id,
                    detail={
                        **_checked_detail(
                            CheckOutcome(
                                outcome.task_id,
                                outcome.statement_version,
                                [*outcome.findings, *found],
                                outcome.blocking_rules,
                            )
                        ),
                        "advisory": True,
                    },
                )
                for outcome, found in kept
            ],
            RUNNER_CHANNEL,
        )


def _checked_detail(outcome: CheckOutcome) -> dict[str, Any]:
    counts: dict[str, int] = defaultdict(int)
    for _, finding in outcome.findings:
        counts[finding.level.value] += 1
    return {
        "statementVersion": outcome.statement_version,
        "counts": dict(counts),
        "blockingRules": list(outcome.blocking_rules),
    }


async def release_checks(task_ids: Sequence[int]) -> None:
    """Give back held tasks unchecked (the worker is stopping), for another worker to take."""
    if task_ids:
        await get_connection("default").execute_query(
            "UPDATE task SET checks_lease_expires_at = NULL WHERE id = ANY($1)", [list(task_ids)]
        )


async def record_dry_run(
    held: TaskToCheck, findings: Sequence[Finding], detail: dict[str, Any]
) -> None:
    """Keep a dry run's outcome as the task's dry-run findings, and tell subscribers."""
    async with in_transaction() as connection:
        pipeline, task = await lock_task(connection, held.task_id)
        if task.statement_version == held.statement_version:
            await connection.execute_query(
                "DELETE FROM task_check WHERE task_id = $1 AND source = $2",
                [task.id, CheckSource.DRY_RUN.value],
            )
            await _insert_findings(
                connection,
                [
                    (task.id, held.statement_version, CheckSource.DRY_RUN, finding, detail)
                    for finding in findings
                ],
            )
        # A request made while this one ran is left for the next round, on the newer statement.
        if task.dry_run_requested_at == held.dry_run_requested_at:
            task.dry_run_requested_at = None
            task.dry_run_requested_by = None
        task.dry_run_lease_expires_at = None
        await task.save(
            using_db=connection,
            update_fields=[
                "dry_run_requested_at",
                "dry_run_requested_by",
                "dry_run_lease_expires_at",
            ],
        )
        await record_events(
            connection,
            CHECKER_ACTOR,
            [
                task_event(
                    pipeline,
                    task,
                    EventKind.TASK_DRY_RUN_FINISHED,
                    detail={"statementVersion": held.statement_version, **detail},
                )
            ],
            RUNNER_CHANNEL,
        )


# --- a person's actions ----------------------------------------------------------------------


async def override_checks(principal: Principal, task_id: int, reason: str) -> Task:
    """Let a task run despite its failed checks, for its current statement version."""
    field: FieldPath = ("input", "taskId")
    problems = override_reason_problems(reason, ("input", "reason"))
    if problems:
        raise ConveyorError(problems)
    async with in_transaction() as connection:
        pipeline, task = await lock_task(connection, task_id)
        if pipeline.status is not PipelineStatus.OPEN:
            raise conflict(f"the issue is {pipeline.status.value}", field)
        refused = override_refusal(principal, CheckFacts.of(task), task.status, field)
        if refused is not None:
            raise refused
        task.checks_overridden_version = task.statement_version
        task.checks_overridden_by = principal.actor
        task.checks_overridden_at = now_utc()
        task.checks_override_reason = reason.strip()
        task.version += 1
        await task.save(
            using_db=connection,
            update_fields=[
                "checks_overridden_version",
                "checks_overridden_by",
                "checks_overridden_at",
                "checks_override_reason",
                "version",
                "updated_at",
            ],
        )
        await record_events(
            connection,
            principal.actor,
            [
                task_event(
                    pipeline,
                    task,
                    EventKind.TASK_CHECKS_OVERRIDDEN,
                    detail={
                        "reason": task.checks_override_reason,
                        "statementVersion": task.statement_version,
                        "rules": list(task.blocking_rules),
                    },
                )
            ],
        )
    return task


def edited_statement_columns(task: Task) -> dict[str, Any]:
    """The columns an edit of the statement sets besides the statement: a new version, whose
    checks are due, and no override (it was given for the statement replaced)."""
    return {
        "statement_version": task.statement_version + 1,
        "checks_overridden_version": None,
        "checks_overridden_by": None,
        "checks_overridden_at": None,
        "checks_override_reason": None,
        "checks_lease_expires_at": None,
    }


async def request_dry_runs(
    principal: Principal,
    *,
    task_id: int | None = None,
    stage_id: int | None = None,
    pipeline_id: int | None = None,
) -> list[Task]:
    """Ask the workers for a dry run of one task, a stage's or a pipeline's tasks with a
    statement that have not run yet."""
    field: FieldPath = (
        ("input", "taskId")
        if task_id is not None
        else ("input", "stageId")
        if stage_id is not None
        else ("input", "pipelineId")
    )
    require(principal, Operation.CREATE_ISSUE)
    async with in_transaction() as connection:
        if task_id is not None:
            pipeline = await Pipeline.filter(tasks__id=task_id).using_db(connection).first()
        elif stage_id is not None:
            pipeline = await Pipeline.filter(stages__id=stage_id).using_db(connection).first()
        else:
            pipeline = await Pipeline.filter(id=pipeline_id).using_db(connection).first()
        if pipeline is None:
            raise not_found(str(field[-1]).removesuffix("Id"), field)
        pipeline = (
            await Pipeline.filter(id=pipeline.id).select_for_update().using_db(connection).get()
        )
        refuse_if(
            issue_action_refusal(principal, await issue_creator(connection, pipeline.issue_id)),
            field,
        )
        if pipeline.status is not PipelineStatus.OPEN:
            raise conflict(f"the issue is {pipeline.status.value}", field)
        query = Task.filter(pipeline_id=pipeline.id)
        if task_id is not None:
            query = query.filter(id=task_id)
        if stage_id is not None:
            query = query.filter(stage_id=stage_id)
        tasks = await query.select_for_update().using_db(connection).order_by("id")
        runnable = [
            task for task in tasks if task.type in DRY_RUN_TYPES and task.status in CHECKED_STATUSES
        ]
        if not runnable:
            raise conflict(
                "nothing to dry-run: only schema and data changes that have not run yet are",
                field,
            )
        requested_at = now_utc()
        for task in runnable:
            task.dry_run_requested_at = requested_at
            task.dry_run_requested_by = principal.actor
        await Task.bulk_update(
            runnable,
            fields=["dry_run_requested_at", "dry_run_requested_by"],
            using_db=connection,
        )
        await record_events(
            connection,
            principal.actor,
            [task_event(pipeline, task, EventKind.TASK_DRY_RUN_REQUESTED) for task in runnable],
        )
    return runnable


async def set_review_policy(
    principal: Principal,
    environment_id: int,
    rules: Sequence[tuple[str, str | None]],
    blocking: str | None,
) -> Environment:
    """Replace an environment's own rule levels and blocking level; its tasks that can still
    run are checked again under the new policy."""
    require(principal, Operation.MANAGE_CATALOG)
    problems = policy_problems(rules, blocking, ("input",))
    if problems:
        raise ConveyorError(problems)
    async with in_transaction() as connection:
        environment = (
            await Environment.filter(id=environment_id)
            .select_for_update()
            .using_db(connection)
            .first()
        )
        if environment is None:
            raise not_found("environment", ("input", "environmentId"))
        environment.review_levels = dict(rules)
        environment.review_blocking_level = blocking
        await environment.save(
            using_db=connection, update_fields=["review_levels", "review_blocking_level"]
        )
        await connection.execute_query(
            """
            UPDATE task SET checked_version = NULL, checks_lease_expires_at = NULL
            WHERE stage_id IN (SELECT id FROM stage WHERE environment_id = $1)
              AND status = ANY($2::text[])
              AND pipeline_id IN (SELECT id FROM pipeline WHERE status = $3)
            """,
            [environment_id, _CHECKED, PipelineStatus.OPEN.value],
        )
    return environment


# --- reads -----------------------------------------------------------------------------------


async def findings_by_task(task_ids: Iterable[int]) -> dict[int, list[TaskCheck]]:
    """Each task's findings for its current statement, statement checks first, in order."""
    wanted = list(task_ids)
    versions = dict(await Task.filter(id__in=wanted).values_list("id", "statement_version"))
    rows = await TaskCheck.filter(task_id__in=wanted).order_by(
        "task_id", "-source", "line", "column", "id"
    )
    found: dict[int, list[TaskCheck]] = defaultdict(list)
    for row in rows:
        if row.statement_version == versions.get(row.task_id):
            found[row.task_id].append(row)
    return found


async def check_summary(
    *, pipeline_id: int | None = None, stage_id: int | None = None
) -> CheckSummary:
    """The roll-up of a pipeline's (or a stage's) checks on the tasks' current statements."""
    column, key = (
        ("pipeline_id", pipeline_id) if pipeline_id is not None else ("stage_id", stage_id)
    )
    rows = await get_connection("default").execute_query_dict(
        f"""
        SELECT t.id, t.statement_version, t.checked_version, t.blocking_rules,
               t.checks_overridden_version,
               coalesce((SELECT array_agg(c.level) FROM task_check c WHERE c.task_id = t.id
                         AND c.statement_version = t.statement_version), '{{}}') AS levels
        FROM task t WHERE t.{column} = $1 AND t.status = ANY($2::text[])
        """,
        [key, _CHECKED],
    )
    facts = {
        row["id"]: CheckFacts(
            statement_version=row["statement_version"],
            checked_version=row["checked_version"],
            blocking_rules=tuple(
                json.loads(row["blocking_rules"])
                if isinstance(row["blocking_rules"], str)
                else row["blocking_rules"]
            ),
            overridden_version=row["checks_overridden_version"],
        )
        for row in rows
    }
    return summarize({row["id"]: row["levels"] for row in rows}, facts)


async def review_policies(environment_ids: Iterable[int]) -> dict[int, ReviewPolicy]:
    """The review policy of each environment."""
    environments = await Environment.filter(id__in=list(environment_ids))
    return {environment.id: review_policy_of(environment) for environment in environments}
