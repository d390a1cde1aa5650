"""A claim decides on a narrowed read of the pipeline (`db.scheduling.start_candidates`): the
scheduling decision on it must start exactly what the decision on the whole pipeline starts."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tortoise.expressions import F
from tortoise.transactions import in_transaction

from conveyor.db.claims import _STARTABLE
from conveyor.db.models import Instance, Pipeline, Task
from conveyor.db.scheduling import instances_of, occupancy, pipeline_states, start_candidates
from conveyor.domain.scheduling import decide
from conveyor.domain.statuses import PipelineStatus, TaskStatus
from tests.api.support import create_catalog, create_issue, database_task, instance_task, row_key
from tests.conftest import GraphQLClient

PENDING, RUNNING, DONE, SKIPPED, FAILED, CANCELED, APPROVAL = (
    TaskStatus.PENDING,
    TaskStatus.RUNNING,
    TaskStatus.DONE,
    TaskStatus.SKIPPED,
    TaskStatus.FAILED,
    TaskStatus.CANCELED,
    TaskStatus.PENDING_APPROVAL,
)
#: A PENDING task whose checks have not finished.
CHECKS_PENDING = object()
#: A PENDING task whose checks found something blocking.
CHECKS_FAILED = object()
#: A PENDING task whose blocking findings a DBA let pass.
CHECKS_OVERRIDDEN = object()
#: Statuses by task name (the others stay PENDING), and what the whole-pipeline decision starts.
CASES: list[tuple[dict[str, Any], set[str]]] = [
    # The first task on alpha's database may not run: the next one on it does.
    ({"a1": CHECKS_PENDING}, {"a2", "b1", "sync_alpha", "sync_beta"}),
    ({"a1": CHECKS_FAILED}, {"a2", "b1", "sync_alpha", "sync_beta"}),
    ({"a1": CHECKS_OVERRIDDEN}, {"a1", "b1", "sync_alpha", "sync_beta"}),
    ({"a1": CHECKS_FAILED, "a2": CHECKS_PENDING, "b1": RUNNING}, {"sync_alpha", "sync_beta"}),
    ({}, {"a1", "b1", "sync_alpha", "sync_beta"}),
    ({"a1": DONE}, {"a2", "b1", "sync_alpha", "sync_beta"}),
    ({"a1": RUNNING}, {"b1", "sync_alpha", "sync_beta"}),
    ({"a1": RUNNING, "sync_alpha": RUNNING}, {"b1", "sync_beta"}),
    ({"a1": FAILED, "b1": CANCELED}, {"a2", "b2", "sync_alpha", "sync_beta"}),
    ({"a1": APPROVAL, "b1": SKIPPED}, {"a2", "b2", "sync_alpha", "sync_beta"}),
    ({"a1": DONE, "a2": DONE, "b1": DONE, "sync_alpha": DONE, "sync_beta": DONE}, {"b2"}),
    (
        {"a1": DONE, "a2": DONE, "b1": DONE, "b2": FAILED, "sync_alpha": DONE, "sync_beta": DONE},
        set(),
    ),
    (
        {"a1": DONE, "a2": SKIPPED, "b1": DONE, "b2": DONE, "sync_alpha": DONE, "sync_beta": DONE},
        {"t1", "t3"},
    ),
    (
        {
            **{name: DONE for name in ("a1", "a2", "b1", "b2", "sync_alpha", "sync_beta", "t1")},
            "t3": DONE,
        },
        {"t0"},
    ),
    (
        {
            **{name: DONE for name in ("a1", "a2", "b1", "b2", "sync_alpha", "sync_beta", "t1")},
            "t0": DONE,
        },
        {"t2", "t3"},
    ),
]


@pytest.mark.parametrize(("statuses", "expected"), CASES)
async def test_the_decision_on_the_candidates_is_the_decision_on_the_pipeline(
    graphql: GraphQLClient, statuses: dict[str, Any], expected: set[str]
) -> None:
    catalog = await create_catalog(graphql)
    issue = await create_issue(
        graphql,
        catalog,
        {
            "dev": [
                database_task(catalog, "DATA_UPDATE", ref="a1", name="a1", statement="SELECT 1"),
                database_task(catalog, "DATA_UPDATE", name="a2", statement="SELECT 2"),
                database_task(catalog, "DATA_UPDATE", "beta", name="b1", statement="SELECT 1"),
                database_task(catalog, "DATA_UPDATE", "beta", name="b2", statement="SELECT 2"),
                instance_task(catalog, "INSTANCE_SYNC", "alpha", name="sync_alpha"),
                instance_task(catalog, "INSTANCE_SYNC", "beta", name="sync_beta"),
            ],
            "test": [
                # The first on alpha's database, blocked by a task on beta's.
                database_task(
                    catalog, "DATA_UPDATE", name="t0", statement="SELECT 0", blockedBy=["t3"]
                ),
                database_task(catalog, "DATA_UPDATE", ref="t1", name="t1", statement="SELECT 1"),
                # Blocked by a task of this stage, and later on alpha's database than t1.
                database_task(
                    catalog, "DATA_UPDATE", name="t2", statement="SELECT 2", blockedBy=["t1"]
                ),
                database_task(
                    catalog, "DATA_UPDATE", "beta", ref="t3", name="t3", statement="SELECT 3"
                ),
            ],
        },
    )
    # Room for a database task and an instance-level one on each instance, not for three.
    await Instance.all().update(max_running_tasks=2)
    ids = {name: issue.task_key(name) for name in issue.tasks}
    # Checked, with nothing blocking: the checks' gate is open (but where a case says not).
    await Task.filter(id__in=list(ids.values())).update(checked_version=F("statement_version"))
    for name, status in statuses.items():
        if status is CHECKS_PENDING:
            await Task.filter(id=ids[name]).update(checked_version=None)
        elif status is CHECKS_FAILED:
            await Task.filter(id=ids[name]).update(blocking_rules=["column_type_change"])
        elif status is CHECKS_OVERRIDDEN:
            await Task.filter(id=ids[name]).update(
                blocking_rules=["column_type_change"],
                checks_overridden_version=F("statement_version"),
            )
        else:
            await Task.filter(id=ids[name]).update(status=status)
    pipeline_id = row_key(issue.pipeline_id)
    now = datetime.now(UTC) + timedelta(seconds=1)

    async with in_transaction() as connection:
        await Pipeline.filter(id=pipeline_id).using_db(connection).select_for_update().get()
        whole = (await pipeline_states([pipeline_id], connection))[pipeline_id]
        narrowed = await start_candidates(connection, pipeline_id, PipelineStatus.OPEN, _STARTABLE)
        on_whole = decide(whole, await occupancy(instances_of([whole]), connection), now)
        on_narrowed = decide(narrowed, await occupancy(instances_of([narrowed]), connection), now)

    names = {task_id: name for name, task_id in ids.items()}
    assert {names[task_id] for task_id in on_whole.startable} == expected
    assert on_narrowed.startable == on_whole.startable
    # Narrowed: one stage, at most one row per database, plus the instance-level tasks.
    assert len(narrowed.stages) <= 1
    databases = [task.database_id for stage in narrowed.stages for task in stage.tasks]
    databases = [database for database in databases if database is not None]
    assert len(databases) == len(set(databases))
