"""The runner's side of the task table: claim, renew, finish, release and recover.

Lock order, as for every writer: a pipeline row before any of its task rows. A claim holds
its pipeline with FOR NO KEY UPDATE SKIP LOCKED: a person's action (FOR UPDATE) waits for it,
and a second claimer moves on to another pipeline. Claims on one instance serialise through a
transaction-scoped advisory lock taken with *try*, so two workers never wait on each other.
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from conveyor.db.models import Database, Instance, Pipeline, Task, TaskRun
from conveyor.db.scheduling import decisions, occupancy
from conveyor.db.task_status import StatusChange, apply_changes, lock_task, now_utc
from conveyor.domain.attempts import AttemptEnd, Outcome, recovery, safe_to_rerun
from conveyor.domain.scheduling import OCCUPYING_STATUSES, TaskState, capacity_reason
from conveyor.domain.statuses import PipelineStatus, TaskRunStatus, TaskStatus, TaskType
from conveyor.domain.transitions import TaskAction, statuses_allowing

logger = logging.getLogger(__name__)
#: Who the runner's events name as their actor.
RUNNER_ACTOR = "conveyor-runner"
#: The advisory-lock namespace of "claiming a task on instance N" (key: namespace, N).
_INSTANCE_CLAIM_LOCK = 7_437_812


@dataclass(frozen=True)
class ClaimedTask:
    """Everything a worker needs to run a task it holds."""

    task_id: int
    run_id: int
    attempt: int
    type: TaskType
    statement: str | None
    database_name: str | None
    instance_id: int
    host: str
    port: int
    username: str
    password_encrypted: str
    #: The instance's libpq options as stored (see domain.targets for the ones allowed).
    connection_options: dict[str, str]
    #: The target database's name; None for instance-level tasks.
    target_database: str | None


async def _pipelines_with_startable_work(connection: BaseDBAsyncClient, limit: int) -> list[int]:
    rows = await connection.execute_query_dict(
        """
        SELECT t.pipeline_id
        FROM task t JOIN pipeline p ON p.id = t.pipeline_id
        WHERE t.status = ANY($2::text[]) AND p.status = $3
          AND (t.not_before IS NULL OR t.not_before <= now())
        GROUP BY t.pipeline_id
        ORDER BY min(t.id)
        LIMIT $1
        """,
        [limit, sorted(statuses_allowing(TaskAction.START)), PipelineStatus.OPEN.value],
    )
    return [row["pipeline_id"] for row in rows]


async def claim_tasks(worker: str, lease: timedelta, limit: int) -> list[ClaimedTask]:
    """Claim up to `limit` tasks that scheduling allows to start now."""
    async with in_transaction() as connection:
        pipeline_ids = await _pipelines_with_startable_work(connection, limit=50)
    claimed: list[ClaimedTask] = []
    for pipeline_id in pipeline_ids:
        if len(claimed) >= limit:
            break
        try:
            claimed += await _claim_in_pipeline(pipeline_id, worker, lease, limit - len(claimed))
        except IntegrityError:
            # The one-running-task-per-database index caught a race the checks did not; the
            # whole claim rolled back, and the next round will see the winner.
            logger.info("a claim in pipeline %s lost a race; trying later", pipeline_id)
    return claimed


async def _claim_in_pipeline(
    pipeline_id: int,
    worker: str,
    lease: timedelta,
    limit: int,
) -> list[ClaimedTask]:
    # Several claims share one transaction: the decision is read once for all of them, and
    # every lock taken on the way is a SKIP LOCKED or a try-lock, so none of them can wait
    # on another worker, let alone deadlock.
    claimed: list[ClaimedTask] = []
    async with in_transaction() as connection:
        pipeline = (
            await Pipeline.filter(id=pipeline_id, status="OPEN")
            .select_for_update(skip_locked=True, no_key=True)
            .using_db(connection)
            .first()
        )
        if pipeline is None:
            return claimed
        decision = (await decisions([pipeline_id], now_utc(), connection))[pipeline_id]
        for task_id in decision.startable[: limit * 2]:
            if len(claimed) >= limit:
                break
            task = (
                await Task.filter(id=task_id)
                .select_for_update(skip_locked=True)
                .using_db(connection)
                .first()
            )
            if task is None or task.status not in statuses_allowing(TaskAction.START):
                continue
            if await _instance_has_room(connection, task):
                claimed.append(await _start(connection, pipeline, task, worker, lease))
    return claimed


async def _instance_has_room(connection: BaseDBAsyncClient, task: Task) -> bool:
    locked = await connection.execute_query_dict(
        "SELECT pg_try_advisory_xact_lock($1, $2) AS locked",
        [_INSTANCE_CLAIM_LOCK, task.instance_id],
    )
    if not locked[0]["locked"]:
        return False
    # Read again under the lock, by the decision's own query and rule: a claim that committed
    # since the decision is seen now.
    cluster = await occupancy([task.instance_id], connection)
    state = TaskState(
        id=task.id, status=task.status, instance_id=task.instance_id, database_id=task.database_id
    )
    return capacity_reason(state, cluster) is None


async def _start(
    connection: BaseDBAsyncClient,
    pipeline: Pipeline,
    task: Task,
    worker: str,
    lease: timedelta,
) -> ClaimedTask:
    started_at = now_utc()
    attempt = await TaskRun.filter(task_id=task.id).using_db(connection).count() + 1
    run = await TaskRun.create(
        using_db=connection,
        task_id=task.id,
        attempt=attempt,
        status=TaskRunStatus.RUNNING,
        started_at=started_at,
        worker=worker,
    )
    await apply_changes(
        connection,
        pipeline,
        [
            StatusChange(
                task,
                TaskAction.START,
                {
                    "lease_owner": worker,
                    "lease_expires_at": started_at + lease,
                    "cancel_requested_at": None,
                    "status_reason": None,
                },
            )
        ],
        RUNNER_ACTOR,
    )
    return await _claimed(connection, task, run)


async def _claimed(connection: BaseDBAsyncClient, task: Task, run: TaskRun) -> ClaimedTask:
    instance = await Instance.filter(id=task.instance_id).using_db(connection).get()
    database = (
        None
        if task.database_id is None
        else await Database.filter(id=task.database_id).using_db(connection).get()
    )
    return ClaimedTask(
        task_id=task.id,
        run_id=run.id,
        attempt=run.attempt,
        type=task.type,
        statement=task.statement,
        database_name=task.database_name,
        instance_id=instance.id,
        host=instance.host,
        port=instance.port,
        username=instance.username,
        password_encrypted=instance.password_encrypted,
        connection_options=dict(instance.connection_options),
        target_database=database.name if database is not None else None,
    )


async def renew_leases(worker: str, task_ids: Iterable[int], lease: timedelta) -> set[int]:
    """Extend the leases this worker still holds; the ids among them whose cancel was asked."""
    ids = list(task_ids)
    if not ids:
        return set()
    async with in_transaction() as connection:
        rows = await connection.execute_query_dict(
            """
            UPDATE task SET lease_expires_at = now() + $3 * interval '1 second'
            WHERE id = ANY($1::int[]) AND lease_owner = $2 AND status = ANY($4::text[])
            RETURNING id, cancel_requested_at IS NOT NULL AS cancel_requested
            """,
            [ids, worker, lease.total_seconds(), sorted(OCCUPYING_STATUSES)],
        )
    return {row["id"] for row in rows if row["cancel_requested"]}


async def finish_task(
    worker: str, claimed: ClaimedTask, end: AttemptEnd, outcome: Outcome | None = None
) -> bool:
    """Record the attempt and take its ending transition; False if this worker no longer
    held the task. `outcome` is None when the target never answered."""
    async with in_transaction() as connection:
        pipeline, task = await lock_task(connection, claimed.task_id)
        if task.status is not TaskStatus.RUNNING or task.lease_owner != worker:
            logger.warning("task %s was taken from this worker; its result is dropped", task.id)
            return False
        run_columns: dict[str, Any] = {
            "status": end.run_status,
            "ended_at": now_utc(),
            "error_code": end.error_code,
            "error_message": end.reason,
        }
        columns: dict[str, Any] = {
            "lease_owner": None,
            "lease_expires_at": None,
            "cancel_requested_at": None,
            "status_reason": end.status_reason,
        }
        if outcome is not None:
            run_columns |= {
                "result": outcome.result,
                "log": outcome.log,
                "transactional": outcome.transactional,
            }
            if outcome.created_database is not None:
                database = await _register_database(
                    connection, claimed.instance_id, outcome.created_database
                )
                columns["database_id"] = database.id
            for name in outcome.discovered_databases or ():
                await _register_database(connection, claimed.instance_id, name)
        await TaskRun.filter(id=claimed.run_id).using_db(connection).update(**run_columns)
        await apply_changes(
            connection, pipeline, [StatusChange(task, end.action, columns)], RUNNER_ACTOR
        )
    return True


async def _register_database(
    connection: BaseDBAsyncClient, instance_id: int, name: str
) -> Database:
    database, _ = await Database.get_or_create(
        instance_id=instance_id, name=name, using_db=connection
    )
    return database


async def expired_task_ids(limit: int = 20) -> list[int]:
    """RUNNING tasks whose worker stopped renewing their lease."""
    tasks = (
        await Task.filter(status=TaskStatus.RUNNING, lease_expires_at__lt=now_utc())
        .order_by("lease_expires_at")
        .limit(limit)
        .only("id")
    )
    return [task.id for task in tasks]


async def interrupted_attempt(task_id: int) -> ClaimedTask | None:
    """The attempt a dead worker left behind, if the task's lease is still expired."""
    task = await Task.filter(
        id=task_id, status=TaskStatus.RUNNING, lease_expires_at__lt=now_utc()
    ).first()
    run = await TaskRun.filter(task_id=task_id).order_by("-attempt").first()
    if task is None or run is None:
        return None
    async with in_transaction() as connection:
        return await _claimed(connection, task, run)


async def resolve_interrupted(claimed: ClaimedTask, *, applied: bool) -> TaskStatus | None:
    """Settle a task whose worker died, from whether the target shows its change applied
    (see domain.attempts.recovery); None when the task was settled meanwhile."""
    async with in_transaction() as connection:
        pipeline, task = await lock_task(connection, claimed.task_id)
        if (
            task.status is not TaskStatus.RUNNING
            or task.lease_expires_at is None
            or (task.lease_expires_at >= now_utc())
        ):
            return None
        end = recovery(
            applied=applied,
            transactional=safe_to_rerun(claimed.type, claimed.statement),
            cancel_requested=task.cancel_requested_at is not None,
        )
        await (
            TaskRun.filter(id=claimed.run_id)
            .using_db(connection)
            .update(
                status=end.run_status,
                ended_at=now_utc(),
                error_code=end.error_code,
                error_message=end.reason,
            )
        )
        await apply_changes(
            connection,
            pipeline,
            [
                StatusChange(
                    task,
                    end.action,
                    {
                        "lease_owner": None,
                        "lease_expires_at": None,
                        "cancel_requested_at": None,
                        "status_reason": end.status_reason,
                    },
                )
            ],
            RUNNER_ACTOR,
        )
    return task.status
