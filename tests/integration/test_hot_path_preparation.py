"""A worker prepares its hot path before its first claim (`db.claims.prepare_hot_path`): that
must write nothing, hold no lock after it, and leave the sessions it opened able to claim."""

from datetime import timedelta

from tortoise.connection import get_connection
from tortoise.expressions import F

from conveyor.db.claims import claim_tasks, prepare_hot_path
from conveyor.db.models import Event, Task, TaskRun
from tests.api.support import create_catalog, create_issue, database_task
from tests.conftest import GraphQLClient


async def test_preparing_the_hot_path_writes_nothing_and_the_claim_then_works(
    graphql: GraphQLClient,
) -> None:
    catalog = await create_catalog(graphql)
    await create_issue(
        graphql,
        catalog,
        {"dev": [database_task(catalog, "DATA_UPDATE", name="a1", statement="SELECT 1")]},
    )
    await Task.all().update(checked_version=F("statement_version"))
    before = (
        await Task.all().values_list("id", "status", "version"),
        await Event.all().count(),
        await TaskRun.all().count(),
    )

    await prepare_hot_path("worker-test", timedelta(seconds=30), sessions=3)

    after = (
        await Task.all().values_list("id", "status", "version"),
        await Event.all().count(),
        await TaskRun.all().count(),
    )
    assert after == before
    # The event-order lock start_tasks may take on no task went with the rollback.
    advisory = await get_connection("default").execute_query_dict(
        "SELECT count(*) AS held FROM pg_locks WHERE locktype = 'advisory'"
    )
    assert advisory[0]["held"] == 0
    claims = await claim_tasks("worker-test", timedelta(seconds=30), limit=8)
    assert [task.task_id for task in claims.tasks] == [task_id for task_id, _, _ in before[0]]
