"""Conveyor's own database is never a target: not recorded when registered or found by a sync,
and refused by the runner before any work, however its row got into the catalog. Recognised
by the server's system identifier and the database's oid, not by name."""

import asyncio
import logging
from datetime import timedelta
from urllib.parse import urlparse

from conveyor.crypto import PasswordCipher
from conveyor.db import claims
from conveyor.db.models import ApiToken, Database, Instance
from conveyor.db.outages import Outage
from conveyor.db.own_database import conveyor_database
from conveyor.db.tokens import issue_token
from conveyor.domain.permissions import SYSTEM, Role
from conveyor.domain.statuses import TaskType
from conveyor.domain.targets import UNRESTRICTED
from conveyor.runner.checking import Checker
from conveyor.runner.reach import Reach
from conveyor.runner.targets import execute
from conveyor.runner.worker import Worker, running_worker
from conveyor.settings import Settings
from tests.api.support import global_id, row_key
from tests.conftest import GraphQLClient, free_port
from tests.integration.conftest import address_of, build_engine_catalog
from tests.integration.test_engine_tasks import (
    CREATE_ISSUE,
    create_issue,
    registered_databases,
    wait_for_task,
)
from tests.integration.test_targets import change_of, target_of

REGISTER = "mutation($i: RegisterDatabaseInput!) { registerDatabase(input: $i) { id } }"
UPDATE_INSTANCE = "mutation($i: UpdateInstanceInput!) { updateInstance(input: $i) { port } }"
#: What a DEVELOPER would run on Conveyor's database to make their own token an ADMIN's.
ESCALATE = "UPDATE api_token SET role = 'ADMIN' WHERE actor = 'mallory'"


def own_name(database_url: str) -> str:
    """The name of Conveyor's database in a test: the test's own database."""
    return urlparse(database_url).path.lstrip("/")


async def test_the_runner_refuses_to_connect_to_conveyors_own_database(
    db: object, database_url: str, server_url: str
) -> None:
    target = target_of(
        server_url, own_name(database_url), conveyor_database=await conveyor_database()
    )

    outcome = await execute(target, change_of(ESCALATE, type=TaskType.DATA_UPDATE))

    assert outcome.error_code == "CONVEYOR_DATABASE", outcome
    assert outcome.error_message is not None
    assert "Conveyor's own database" in outcome.error_message
    assert [entry["kind"] for entry in outcome.log] == ["error"], "nothing ran there"


async def test_registering_conveyors_own_database_is_refused(
    graphql: GraphQLClient, database_url: str, server_url: str
) -> None:
    catalog = await build_engine_catalog(graphql, server_url, {})

    response = await graphql(
        REGISTER, {"i": {"instanceId": catalog.instance, "name": own_name(database_url)}}
    )

    assert response.error_codes == ["FORBIDDEN"], response.errors
    assert response.errors[0]["extensions"]["field"] == ["input", "name"]
    assert "Conveyor's own database" in response.errors[0]["message"]
    assert not await Database.exists(name=own_name(database_url))


async def test_an_instance_cannot_move_onto_conveyors_database(
    graphql: GraphQLClient, database_url: str, server_url: str
) -> None:
    # Recorded while the instance pointed at a port where nothing listens (nothing could be
    # asked, so nothing was refused), then moved to the server Conveyor's database is on.
    catalog = await build_engine_catalog(graphql, server_url, {}, port=free_port())
    await graphql.ok(
        REGISTER, {"i": {"instanceId": catalog.instance, "name": own_name(database_url)}}
    )
    real_port = address_of(server_url).port

    response = await graphql(UPDATE_INSTANCE, {"i": {"id": catalog.instance, "port": real_port}})

    assert response.error_codes == ["FORBIDDEN"], response.errors
    assert response.errors[0]["extensions"]["field"] == ["input", "host"]
    assert (await Instance.get(name="local")).port != real_port, "nothing was written"


async def test_a_sync_does_not_record_conveyors_own_database(
    graphql: GraphQLClient, worker: Worker, database_url: str, server_url: str
) -> None:
    catalog = await build_engine_catalog(graphql, server_url, {})
    _, tasks = await create_issue(
        graphql,
        catalog.environments["dev"],
        {"type": "INSTANCE_SYNC", "name": "sync", "instanceId": catalog.instance},
    )

    task = await wait_for_task(graphql, tasks["sync"], "DONE", "FAILED")

    assert task["status"] == "DONE", task["statusReason"]
    (run,) = task["runs"]
    assert "postgres" in run["result"]["databases"], "other databases there are targets"
    assert own_name(database_url) not in run["result"]["databases"]
    assert own_name(database_url) not in await registered_databases(graphql, catalog.instance)
    assert any("Conveyor's own database" in entry["text"] for entry in run["log"])


async def open_escalation(graphql: GraphQLClient, server_url: str, database_url: str) -> str:
    """The attack on the demo's set-up before the fix, up to the plan: an instance on
    Conveyor's server as its superuser, Conveyor's database in the catalog (written straight
    into the table, the way a sync recorded it before the check existed), and a DEVELOPER's
    issue in dev that makes their token an ADMIN's. The task's id."""
    catalog = await build_engine_catalog(graphql, server_url, {})
    instance = await Instance.get(name="local")
    own = await Database.create(instance_id=instance.id, name=own_name(database_url))
    await issue_token(SYSTEM, "mallory", Role.DEVELOPER)
    task = {
        "type": "DATA_UPDATE",
        "name": "escalate",
        "instanceId": catalog.instance,
        "databaseId": global_id("Database", own.id),
        "statement": ESCALATE,
    }
    # dev approves automatically: only the runner stands between the plan and the run.
    plan = {
        "title": "nothing to see",
        "stages": [{"environmentId": catalog.environments["dev"], "tasks": [task]}],
    }
    created = await graphql.ok(CREATE_ISSUE, {"input": plan}, actor="mallory", role=Role.DEVELOPER)
    [stage] = created["createIssue"]["pipeline"]["stages"]
    task_id: str = stage["tasks"][0]["id"]
    return task_id


async def test_a_developer_cannot_make_their_token_admin_through_conveyors_database(
    graphql: GraphQLClient, worker: Worker, server_url: str, database_url: str
) -> None:
    task_id = await open_escalation(graphql, server_url, database_url)

    task = await wait_for_task(graphql, task_id, "DONE", "FAILED")

    assert task["status"] == "FAILED"
    (run,) = task["runs"]
    assert run["errorCode"] == "CONVEYOR_DATABASE"
    assert "Conveyor's own database" in run["errorMessage"]
    assert (await ApiToken.get(actor="mallory")).role is Role.DEVELOPER


async def test_an_interrupted_task_on_conveyors_database_is_settled_not_stuck(
    graphql: GraphQLClient, engine_settings: Settings, server_url: str, database_url: str
) -> None:
    # Claimed by a worker that died before it connected (or by one from before the fix):
    # recovery asks the target whether the change was applied, and must not wait forever for
    # an answer the runner refuses to ask of Conveyor's database.
    task_id = await open_escalation(graphql, server_url, database_url)
    cipher = PasswordCipher(engine_settings.secret_key or "")
    # The dead worker had checked the task first, as workers do before any claim.
    reach = Reach(
        cipher, await conveyor_database(), UNRESTRICTED, engine_settings.connect_timeout_seconds
    )
    checker = Checker(engine_settings, reach, Outage(logging.getLogger(__name__), "checks"))
    assert await checker.check_round() == 1
    await checker.close()
    lease = timedelta(seconds=0.1)
    [claimed] = (await claims.claim_tasks("dead-worker", lease, 1)).tasks
    await asyncio.sleep(lease.total_seconds())

    async with running_worker(engine_settings, cipher, database_url):
        task = await wait_for_task(graphql, task_id, "DONE", "FAILED")

    assert claimed.task_id == row_key(task_id)
    assert task["status"] == "FAILED"
    assert [run["errorCode"] for run in task["runs"]] == ["INTERRUPTED", "CONVEYOR_DATABASE"]
    assert (await ApiToken.get(actor="mallory")).role is Role.DEVELOPER
