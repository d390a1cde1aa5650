"""The runner's side of the task table: claim, renew, finish, release and recover.

Lock order, as for every writer: a pipeline row before any of its task rows. A claim holds
its pipeline with FOR NO KEY UPDATE SKIP LOCKED: a person's action (FOR UPDATE) waits for it,
and a second claimer moves on to another pipeline. Claims on one instance serialise through a
transaction-scoped advisory lock taken with *try*, so two workers never wait on each other.
"""

import asyncio
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.connection import get_connection
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from conveyor.db.models import Database, Instance, Task, TaskRun
from conveyor.db.queries import RUNNER
from conveyor.db.scheduling import instances_of, occupancy, start_candidates_locking
from conveyor.db.task_status import (
    AttemptToEnd,
    HeldTask,
    LockedPipeline,
    StatusChange,
    apply_changes,
    end_attempts,
    lock_pipeline,
    lock_pipeline_of,
    lock_task,
    now_utc,
    start_tasks,
)
from conveyor.domain.attempts import AttemptEnd, Outcome, recovery, safe_to_rerun
from conveyor.domain.scheduling import OCCUPYING_STATUSES, decide
from conveyor.domain.statuses import PipelineStatus, TaskRunStatus, TaskStatus, TaskType
from conveyor.domain.transitions import TaskAction, next_status, statuses_allowing

logger = logging.getLogger(__name__)
#: Who the runner's events name as their actor.
RUNNER_ACTOR = "conveyor-runner"
#: The advisory-lock namespace of "claiming a task on instance N" (key: namespace, N).
_INSTANCE_CLAIM_LOCK = 7_437_812
#: The statuses a claim starts tasks from.
_STARTABLE = statuses_allowing(TaskAction.START)


@dataclass(frozen=True)
class ClaimedTask:
    """Everything a worker needs to run a task it holds."""

    task_id: int
    #: Its pipeline: the finishes of one pipeline's tasks are recorded together.
    pipeline_id: int
    run_id: int
    attempt: int
    #: The status the task is held in (the one START led to).
    status: TaskStatus
    type: TaskType
    statement: str | None
    database_name: str | None
    instance_id: int
    #: The instance's limit, which also bounds the worker's open sessions on it.
    max_running_tasks: int
    host: str
    port: int
    username: str
    password_encrypted: str
    #: The instance's libpq options as stored (see domain.targets for the ones allowed).
    connection_options: dict[str, str]
    #: The target database's name; None for instance-level tasks.
    target_database: str | None

    @property
    def held(self) -> HeldTask:
        return HeldTask(self.task_id, self.run_id, self.status)


@dataclass(frozen=True)
class ClaimFor:
    """Who claims, for how long, and how many tasks at most."""

    worker: str
    lease: timedelta
    limit: int


@dataclass(frozen=True)
class Claims:
    tasks: list[ClaimedTask]
    #: Another worker held a pipeline or an instance this round skipped: what it held may
    #: have work this round did not see, so the caller should look again soon.
    contended: bool


async def claim_tasks(worker: str, lease: timedelta, limit: int) -> Claims:
    """Claim up to `limit` tasks that scheduling allows to start now."""
    rows = await get_connection("default").execute_query_dict(
        RUNNER["pipelines_with_startable_work"],
        [50, sorted(_STARTABLE), PipelineStatus.OPEN.value],
    )
    claimed: list[ClaimedTask] = []
    contended = False
    for row in rows:
        if len(claimed) >= limit:
            break
        try:
            tasks, skipped = await _claim_in_pipeline(
                row["pipeline_id"], worker, lease, limit - len(claimed)
            )
        except IntegrityError:
            # The one-running-task-per-database index caught a race the checks did not; the
            # whole claim rolled back, and the next round will see the winner.
            logger.info("a claim in pipeline %s lost a race; trying later", row["pipeline_id"])
            tasks, skipped = [], True
        claimed += tasks
        contended = contended or skipped
    return Claims(claimed, contended)


async def _claim_in_pipeline(
    pipeline_id: int, worker: str, lease: timedelta, limit: int
) -> tuple[list[ClaimedTask], bool]:
    """The tasks started, and whether a lock held by another worker made this skip some."""
    # One transaction, every lock in it a SKIP LOCKED or a try-lock, so no claim waits on
    # another worker, let alone deadlocks: the pipeline, then the claim locks of the instances
    # its startable tasks run on; then the cluster's occupancy is read under those locks (a
    # claim that committed meanwhile is seen), the scheduling decision taken on it, and the
    # tasks it allows started in one statement.
    async with in_transaction() as connection:
        held = await connection.execute_query_dict(
            RUNNER["lock_pipeline_for_claim"], [pipeline_id, PipelineStatus.OPEN.value]
        )
        if not held:
            return [], True
        return await _start_in_held_pipeline(connection, pipeline_id, worker, lease, limit)


async def _start_in_held_pipeline(
    connection: BaseDBAsyncClient, pipeline_id: int, worker: str, lease: timedelta, limit: int
) -> tuple[list[ClaimedTask], bool]:
    """START up to `limit` tasks that scheduling allows in an OPEN pipeline this transaction
    holds locked; and whether another worker's claim lock on an instance made this skip some."""
    # The candidates and their instances' claim locks in one statement, the occupancy read
    # after it (a statement started once the locks are held sees every claim committed).
    state, instances = await start_candidates_locking(
        connection, pipeline_id, PipelineStatus.OPEN, _STARTABLE, _INSTANCE_CLAIM_LOCK
    )
    tasks = {task.id: task for stage in state.stages for task in stage.tasks}
    wanted = sorted({task.instance_id for task in tasks.values() if task.status in _STARTABLE})
    if not wanted:
        return [], False
    if not instances:
        return [], True
    cluster = await occupancy(instances_of([state]), connection)
    decision = decide(state, cluster, now_utc())
    chosen = [
        (task_id, tasks[task_id].status)
        for task_id in decision.startable
        if tasks[task_id].instance_id in instances
    ][:limit]
    rows = await start_tasks(connection, chosen, worker, lease, RUNNER_ACTOR)
    running = next_running_status()
    return [_claimed(row, running) for row in rows], len(instances) < len(wanted)


async def start_in_held_pipelines(
    connection: BaseDBAsyncClient, pipeline_ids: Sequence[int], claim: ClaimFor
) -> list[ClaimedTask]:
    """START what scheduling allows in these OPEN pipelines, which this transaction holds
    locked (as a claim locks them), up to `claim.limit` tasks in all, in pipeline order."""
    claimed: list[ClaimedTask] = []
    for pipeline_id in pipeline_ids:
        room = claim.limit - len(claimed)
        if room <= 0:
            break
        started, _ = await _start_in_held_pipeline(
            connection, pipeline_id, claim.worker, claim.lease, room
        )
        claimed += started
    return claimed


class _WarmedUp(Exception):
    """Ends a warm-up transaction by rolling it back."""


async def prepare_hot_path(worker: str, lease: timedelta, sessions: int) -> None:
    """Open `sessions` of the pool's connections and have each prepare the statements of a
    claim, a finish and a lease renewal, by running each on no task, in a transaction rolled
    back: a worker is ready before it takes work, instead of its first tasks paying a
    connection and a parse of each statement (asyncpg prepares a statement on a connection
    the first time that connection runs it)."""

    async def prepare_one() -> None:
        startable = sorted(_STARTABLE)
        running = next_running_status()
        try:
            async with in_transaction() as connection:
                await connection.execute_query_dict(
                    RUNNER["pipelines_with_startable_work"],
                    [0, startable, PipelineStatus.OPEN.value],
                )
                await connection.execute_query_dict(
                    RUNNER["lock_pipeline_for_claim"], [0, PipelineStatus.OPEN.value]
                )
                await start_candidates_locking(
                    connection, 0, PipelineStatus.OPEN, _STARTABLE, _INSTANCE_CLAIM_LOCK
                )
                await occupancy([0], connection)
                await start_tasks(connection, [(0, TaskStatus(startable[0]))], worker, lease, "")
                await lock_pipeline(connection, 0)
                locked = await lock_pipeline_of(connection, 0)
                await end_attempts(
                    connection,
                    worker,
                    [
                        AttemptToEnd(
                            HeldTask(0, 0, running),
                            AttemptEnd(TaskAction.SUCCEED, TaskRunStatus.DONE, None, None),
                        )
                    ],
                    RUNNER_ACTOR,
                    locked=locked or LockedPipeline(0, 0, PipelineStatus.OPEN),
                )
                await connection.execute_query_dict(
                    RUNNER["renew_leases"],
                    [[0], worker, lease.total_seconds(), sorted(OCCUPYING_STATUSES)],
                )
                # start_tasks may take the event-order lock even on no task: rolling back
                # gives it back at once, and leaves nothing written.
                raise _WarmedUp
        except _WarmedUp:
            pass

    await asyncio.gather(*(prepare_one() for _ in range(sessions)))


def next_running_status() -> TaskStatus:
    """The status a claimed task is held in."""
    [status] = {next_status(status, TaskAction.START) for status in _STARTABLE}
    return status


def _claimed(row: Mapping[str, Any], status: TaskStatus) -> ClaimedTask:
    options = row["connection_options"]
    return ClaimedTask(
        task_id=row["task_id"],
        pipeline_id=row["pipeline_id"],
        run_id=row["run_id"],
        attempt=row["attempt"],
        status=status,
        type=TaskType(row["type"]),
        statement=row["statement"],
        database_name=row["database_name"],
        instance_id=row["instance_id"],
        max_running_tasks=row["max_running_tasks"],
        host=row["host"],
        port=row["port"],
        username=row["username"],
        password_encrypted=row["password_encrypted"],
        connection_options=json.loads(options) if isinstance(options, str) else dict(options),
        target_database=row["target_database"],
    )


async def renew_leases(worker: str, task_ids: Iterable[int], lease: timedelta) -> set[int]:
    """Extend the leases this worker still holds; the ids among them whose cancel was asked."""
    ids = list(task_ids)
    if not ids:
        return set()
    rows = await get_connection("default").execute_query_dict(
        RUNNER["renew_leases"], [ids, worker, lease.total_seconds(), sorted(OCCUPYING_STATUSES)]
    )
    return {row["id"] for row in rows if row["cancel_requested"]}


class _NotHeld(Exception):
    """The worker no longer holds the task: what its report would have written is undone."""

    def __init__(self, task_id: int) -> None:
        super().__init__(task_id)
        self.task_id = task_id


@dataclass(frozen=True)
class Finished:
    """An attempt to record: how it ended, what the target answered (None: it never did),
    and its log lines not streamed yet."""

    claimed: ClaimedTask
    end: AttemptEnd
    outcome: Outcome | None = None
    log_lines: Sequence[dict[str, Any]] = ()


@dataclass(frozen=True)
class FinishedRound:
    """What recording finished attempts left: the tasks claimed in their freed slots, and the
    ids of the attempts whose report was dropped (the worker no longer held them)."""

    claimed: list[ClaimedTask]
    dropped: list[int]


async def finish_task(
    worker: str,
    claimed: ClaimedTask,
    end: AttemptEnd,
    outcome: Outcome | None = None,
    log_lines: Sequence[dict[str, Any]] = (),
) -> bool:
    """Record the attempt and take its ending transition, after the attempt's `log_lines` not
    streamed yet; False if this worker no longer held the task. `outcome` is None when the
    target never answered."""
    return await finish_and_claim(worker, claimed, end, outcome, log_lines) is not None


async def finish_and_claim(
    worker: str,
    claimed: ClaimedTask,
    end: AttemptEnd,
    outcome: Outcome | None = None,
    log_lines: Sequence[dict[str, Any]] = (),
    lease: timedelta | None = None,
    limit: int = 0,
) -> list[ClaimedTask] | None:
    """`finish_task`, then, in the same transaction and under the pipeline's lock it already
    holds, a claim of up to `limit` tasks of the same pipeline (held for `lease`): the slot the
    attempt frees goes to the next task without a transaction of its own, nor a claim that
    finds the pipeline held by a finish. The tasks claimed; None if this worker no longer
    held the task."""
    round_ = await finish_and_claim_together(
        worker, [Finished(claimed, end, outcome, log_lines)], lease, claim=limit > 0, limit=limit
    )
    return None if round_.dropped else round_.claimed


async def finish_and_claim_together(
    worker: str,
    finished: Sequence[Finished],
    lease: timedelta | None,
    *,
    claim: bool,
    limit: int | None = None,
) -> FinishedRound:
    """Record attempts of one pipeline in one transaction, under one lock of it, and, if
    `claim`, claim in the same transaction up to `limit` (default: one per attempt recorded)
    tasks of that pipeline: a worker whose attempts finish while another finish holds their
    pipeline records them together, rather than each waiting in turn for the lock.

    An attempt this worker no longer holds is dropped and the others are recorded without it;
    a claim that loses a race the checks did not see (the one-running-task-per-database index)
    takes the finish's rollback with it, and the attempts are recorded without a claim."""
    pipelines = {item.claimed.pipeline_id for item in finished}
    if len(pipelines) > 1:
        raise ValueError("finished attempts are recorded together only within one pipeline")
    if not pipelines:
        return FinishedRound([], [])
    [pipeline_id] = pipelines
    return await finish_queued_and_claim(
        worker, pipeline_id, lambda: finished, lease, claim=claim, limit=limit
    )


async def finish_queued_and_claim(
    worker: str,
    pipeline_id: int,
    take: Callable[[], Sequence[Finished]],
    lease: timedelta | None,
    *,
    claim: bool,
    limit: int | None = None,
) -> FinishedRound:
    """`finish_and_claim_together` for attempts of `pipeline_id` that `take` hands over, once:
    when the first transaction holds the pipeline's lock. A caller that queues its finishes
    may start this while an earlier finish still holds the pipeline: the transaction waits
    for that lock in PostgreSQL, and records every attempt that finished meanwhile as soon as
    the earlier one commits, instead of beginning only then."""
    pending: list[Finished] | None = None

    def attempts() -> list[Finished]:
        nonlocal pending
        if pending is None:
            pending = sorted(take(), key=lambda item: item.claimed.task_id)
            if any(item.claimed.pipeline_id != pipeline_id for item in pending):
                raise ValueError("finished attempts are recorded together only within one pipeline")
        return pending

    dropped: list[int] = []
    while pending is None or pending:
        try:
            claimed = await _finish(worker, pipeline_id, attempts, lease, claim, limit)
        except _NotHeld as not_held:
            logger.warning(
                "task %s was taken from this worker; its result is dropped", not_held.task_id
            )
            dropped.append(not_held.task_id)
            pending = [item for item in attempts() if item.claimed.task_id != not_held.task_id]
            continue
        except IntegrityError:
            if not claim:
                raise
            logger.info("a claim in pipeline %s's finish lost a race; finishing alone", pipeline_id)
            claim = False
            continue
        return FinishedRound(claimed, dropped)
    return FinishedRound([], dropped)


async def _finish(
    worker: str,
    pipeline_id: int,
    attempts_to_record: Callable[[], Sequence[Finished]],
    lease: timedelta | None,
    claim: bool,
    limit: int | None,
) -> list[ClaimedTask]:
    async with in_transaction() as connection:
        locked = await lock_pipeline(connection, pipeline_id)
        finished = attempts_to_record()
        if not finished:
            return []
        if locked is None:  # no such pipeline: none of its tasks is held
            raise _NotHeld(finished[0].claimed.task_id)
        attempts = []
        for item in finished:
            claimed, outcome = item.claimed, item.outcome
            database_id = None
            if outcome is not None and outcome.created_database is not None:
                created = await _register_database(
                    connection, claimed.instance_id, outcome.created_database
                )
                database_id = created.id
            for name in (outcome.discovered_databases if outcome is not None else None) or ():
                await _register_database(connection, claimed.instance_id, name)
            attempts.append(
                AttemptToEnd(claimed.held, item.end, outcome, database_id, item.log_lines)
            )
        ended = await end_attempts(connection, worker, attempts, RUNNER_ACTOR, locked=locked)
        assert ended is not None  # only None when it locks the pipeline itself
        for attempt in attempts:
            if attempt.held.task_id not in ended.task_ids:
                raise _NotHeld(attempt.held.task_id)
        wanted = (len(attempts) if limit is None else limit) if claim else 0
        if wanted <= 0 or lease is None or ended.pipeline.status is not PipelineStatus.OPEN:
            return []
        started, _ = await _start_in_held_pipeline(
            connection, ended.pipeline.pipeline_id, worker, lease, wanted
        )
        return started


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
    instance = await Instance.get(id=task.instance_id)
    database = None if task.database_id is None else await Database.get(id=task.database_id)
    return ClaimedTask(
        task_id=task.id,
        pipeline_id=task.pipeline_id,
        run_id=run.id,
        attempt=run.attempt,
        status=task.status,
        type=task.type,
        statement=task.statement,
        database_name=task.database_name,
        instance_id=instance.id,
        max_running_tasks=instance.max_running_tasks,
        host=instance.host,
        port=instance.port,
        username=instance.username,
        password_encrypted=instance.password_encrypted,
        connection_options=dict(instance.connection_options),
        target_database=None if database is None else database.name,
    )


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
