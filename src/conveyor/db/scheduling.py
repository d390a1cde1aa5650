"""Reading what the scheduling decision needs: pipelines' task states and the cluster's
occupancy. The worker and the API read through the same functions, so what the API shows as a
waiting reason is what the worker acts on."""

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.connection import get_connection

from conveyor.db.models import Pipeline, Stage
from conveyor.db.queries import RUNNER
from conveyor.domain.check_review import CheckFacts, CheckGate
from conveyor.domain.scheduling import (
    OCCUPYING_STATUSES,
    Occupancy,
    PipelineState,
    SchedulingDecision,
    StageState,
    TaskState,
    decide,
)
from conveyor.domain.statuses import FINISHED_TASK_STATUSES, PipelineStatus, TaskStatus


async def pipeline_states(
    pipeline_ids: Iterable[int], connection: BaseDBAsyncClient | None = None
) -> dict[int, PipelineState]:
    """The scheduling view of each pipeline, in three statements whatever their number."""
    wanted = set(pipeline_ids)
    if not wanted:
        return {}
    pipelines = await Pipeline.filter(id__in=wanted).using_db(connection).only("id", "status")
    stages = (
        await Stage.filter(pipeline_id__in=wanted)
        .using_db(connection)
        .order_by("position")
        .only("id", "name", "pipeline_id", "position")
    )
    # Raw rows, blockers aggregated in the same statement: this runs for every claim, and
    # building an ORM object per task of a large pipeline would dominate the worker's time.
    rows = await (connection or get_connection("default")).execute_query_dict(
        """
        SELECT t.id, t.status, t.stage_id, t.instance_id, t.database_id, t.not_before,
               t.statement_version, t.checked_version, t.blocking_rules,
               t.checks_overridden_version,
               array_remove(array_agg(d.blocked_by_id), NULL) AS blocked_by
        FROM task t LEFT JOIN task_dependency d ON d.task_id = t.id
        WHERE t.pipeline_id = ANY($1::int[])
        GROUP BY t.id
        """,
        [list(wanted)],
    )
    tasks_by_stage: dict[int, list[TaskState]] = defaultdict(list)
    for row in rows:
        tasks_by_stage[row["stage_id"]].append(_task_state(row))
    stages_by_pipeline: dict[int, list[StageState]] = defaultdict(list)
    for stage in stages:
        stages_by_pipeline[stage.pipeline_id].append(
            StageState(id=stage.id, name=stage.name, tasks=tuple(tasks_by_stage[stage.id]))
        )
    return {
        pipeline.id: PipelineState(
            status=pipeline.status, stages=tuple(stages_by_pipeline[pipeline.id])
        )
        for pipeline in pipelines
    }


async def start_candidates(
    connection: BaseDBAsyncClient,
    pipeline_id: int,
    status: PipelineStatus,
    startable: Iterable[TaskStatus],
) -> PipelineState:
    """What a claim decides on, in one statement: the pipeline (in `status`, held locked by
    the caller) narrowed to its active stage's tasks that the decision could start (see
    `start_candidates` in sql/runner.sql). `decide` on it starts what it would start on the
    whole pipeline: every task left out is one it would not start and that takes no slot."""
    rows = await connection.execute_query_dict(
        RUNNER["start_candidates"], _candidates_parameters(pipeline_id, startable)
    )
    return _candidates_state(rows, status)


#: `start_candidates`, and the claim locks (`pg_try_advisory_xact_lock($6, instance)`) of the
#: instances they run on that this transaction now holds, in the same statement: the
#: candidates are read under the pipeline's lock, which the caller holds already, so that
#: only the instances' occupancy has to be read after the locks (a statement of its own).
_CANDIDATES_AND_CLAIM_LOCKS = f"""
WITH candidates AS ({RUNNER["start_candidates"]})
SELECT c.*, (
    SELECT array_agg(i.instance_id)
    FROM (SELECT DISTINCT instance_id FROM candidates) AS i
    WHERE pg_try_advisory_xact_lock($6, i.instance_id)
) AS locked_instances
FROM candidates c
ORDER BY c.id
"""


async def start_candidates_locking(
    connection: BaseDBAsyncClient,
    pipeline_id: int,
    status: PipelineStatus,
    startable: Iterable[TaskStatus],
    lock_namespace: int,
) -> tuple[PipelineState, set[int]]:
    """`start_candidates`, and which of their instances' claim locks (advisory, transaction
    scoped, in `lock_namespace`) this transaction took: the others are another claimer's."""
    rows = await connection.execute_query_dict(
        _CANDIDATES_AND_CLAIM_LOCKS,
        [*_candidates_parameters(pipeline_id, startable), lock_namespace],
    )
    locked = set(rows[0]["locked_instances"] or ()) if rows else set()
    return _candidates_state(rows, status), locked


def _candidates_parameters(pipeline_id: int, startable: Iterable[TaskStatus]) -> list[Any]:
    return [
        pipeline_id,
        sorted(FINISHED_TASK_STATUSES),
        sorted(startable),
        sorted(OCCUPYING_STATUSES),
        sorted(set(TaskStatus) - FINISHED_TASK_STATUSES),
    ]


def _candidates_state(rows: list[dict[str, Any]], status: PipelineStatus) -> PipelineState:
    if not rows:
        return PipelineState(status=status, stages=())
    stage = StageState(
        id=rows[0]["stage_id"],
        name=rows[0]["stage_name"],
        tasks=tuple(sorted((_task_state(row) for row in rows), key=lambda task: task.id)),
    )
    return PipelineState(status=status, stages=(stage,))


def _task_state(row: Mapping[str, Any]) -> TaskState:
    checks = CheckFacts(
        statement_version=row["statement_version"],
        checked_version=row["checked_version"],
        blocking_rules=tuple(json.loads(row["blocking_rules"])),
        overridden_version=row["checks_overridden_version"],
    )
    return TaskState(
        id=row["id"],
        status=TaskStatus(row["status"]),
        instance_id=row["instance_id"],
        database_id=row["database_id"],
        not_before=row["not_before"],
        blocked_by=frozenset(row["blocked_by"]),
        checks_pending=checks.gate is CheckGate.PENDING,
        failed_checks=checks.holding_rules,
    )


async def occupancy(
    instance_ids: Iterable[int], connection: BaseDBAsyncClient | None = None
) -> Occupancy:
    """What runs anywhere on these instances (and so on their databases), and their limits,
    in one statement."""
    wanted = sorted(set(instance_ids))
    rows = (
        await (connection or get_connection("default")).execute_query_dict(
            RUNNER["occupancy"], [wanted, sorted(OCCUPYING_STATUSES)]
        )
        if wanted
        else []
    )
    running = [row for row in rows if row["task_id"] is not None]
    return Occupancy(
        running_task_by_database={
            row["database_id"]: row["task_id"] for row in running if row["database_id"] is not None
        },
        running_count_by_instance=Counter(row["instance_id"] for row in running),
        limit_by_instance={row["instance_id"]: row["max_running_tasks"] for row in rows},
    )


def instances_of(states: Iterable[PipelineState]) -> set[int]:
    return {task.instance_id for state in states for stage in state.stages for task in stage.tasks}


async def decisions(
    pipeline_ids: Iterable[int], now: datetime, connection: BaseDBAsyncClient | None = None
) -> dict[int, SchedulingDecision]:
    """The scheduling decision of each pipeline, as of `now`."""
    states = await pipeline_states(pipeline_ids, connection)
    cluster = await occupancy(instances_of(states.values()), connection)
    return {pipeline_id: decide(state, cluster, now) for pipeline_id, state in states.items()}
