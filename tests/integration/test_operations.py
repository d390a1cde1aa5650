"""Operating Conveyor: readiness through an outage of its database, the metrics of a served
API and of a worker."""

import asyncio
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from cryptography.fernet import Fernet
from prometheus_client.parser import text_string_to_metric_families
from strawberry.relay import GlobalID
from tortoise.context import TortoiseContext
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from conveyor.db.migrate import migrate_database
from conveyor.operations.metrics import Metrics
from conveyor.settings import Settings
from tests.conftest import (
    ConveyorProcess,
    GraphQLClient,
    conveyor_env,
    free_port,
    launch,
    start_server,
)
from tests.integration.conftest import EngineCatalog, build_engine_catalog
from tests.integration.subscribers import TRANSPORT_WS, raw_subscribe, subscribed, websocket_url
from tests.postgres_server import LoopbackPostgres
from tests.redis_server import redis_server


@pytest.fixture
def loopback_server() -> Iterator[LoopbackPostgres]:
    """A PostgreSQL of this test's own on a fixed port, for it to stop and start."""
    with (
        tempfile.TemporaryDirectory(prefix="conveyor-ops-pg-") as data_dir,
        LoopbackPostgres(Path(data_dir), free_port()) as server,
    ):
        yield server


@pytest.fixture
async def loopback_settings(loopback_server: LoopbackPostgres, tmp_path: Path) -> Settings:
    url = loopback_server.url()
    await migrate_database(url)
    return Settings(
        database_url=url, data_dir=tmp_path / "data", secret_key=Fernet.generate_key().decode()
    )


def start_worker(env: dict[str, str], log_path: Path) -> ConveyorProcess:
    """`conveyor worker` serving /healthz, /readyz and /metrics on a free port."""
    port = free_port()
    worker = launch(["worker"], {**env, "CONVEYOR_METRICS_PORT": str(port)}, log_path)
    worker.url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{worker.url}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    worker.wait_until(ready, "the worker to be ready")
    return worker


async def status_of(http: httpx.AsyncClient, url: str) -> int:
    try:
        return (await http.get(url, timeout=1.5)).status_code
    except httpx.TransportError:
        return 0


async def seconds_until(http: httpx.AsyncClient, url: str, status: int, within: float) -> float:
    """How long until `url` answers `status`, polled every 0.1 s."""
    started = time.monotonic()
    while (await status_of(http, url)) != status:
        if time.monotonic() - started > within:
            raise AssertionError(f"{url} did not answer {status} within {within} s")
        await asyncio.sleep(0.1)
    return time.monotonic() - started


def port_of(process: ConveyorProcess) -> str:
    return process.url.rsplit(":", 1)[1]


def container_health_check(**env: str) -> int:
    """The exit code of the Docker image's HEALTHCHECK command with `env`."""
    dockerfile = (Path(__file__).parents[2] / "Dockerfile").read_text()
    command = json.loads(re.findall(r"^HEALTHCHECK .* CMD (\[.*\])$", dockerfile, re.M)[0])
    assert command[0] == "python"
    return subprocess.run([sys.executable, *command[1:]], env=env, timeout=30).returncode


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


async def test_readyz_follows_the_database_while_healthz_stays_up(
    loopback_server: LoopbackPostgres,
    loopback_settings: Settings,
    http: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    env = conveyor_env(loopback_settings)
    server = start_server(env, tmp_path / "serve.log")
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        for process in (server, worker):
            ready = await http.get(f"{process.url}/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"] == {
                "database": True,
                "migrations": True,
                "listener": True,
                "notDraining": True,
                "workerClaiming": True,
            }

        loopback_server.stop()
        try:
            for process in (server, worker):
                assert await seconds_until(http, f"{process.url}/readyz", 503, within=2) < 2
                unready = await http.get(f"{process.url}/readyz", timeout=3)
                assert unready.json()["status"] == "unready"
                assert unready.json()["checks"]["database"] is False
                assert (await http.get(f"{process.url}/healthz")).status_code == 200
            # The image's health check (liveness) passes meanwhile, for either command.
            assert container_health_check(CONVEYOR_PORT=port_of(server)) == 0
            assert container_health_check(CONVEYOR_METRICS_PORT=port_of(worker)) == 0
            assert container_health_check(CONVEYOR_PORT=str(free_port())) == 1
        finally:
            loopback_server.start()

        for process in (server, worker):
            await seconds_until(http, f"{process.url}/readyz", 200, within=30)
            assert (await http.get(f"{process.url}/healthz")).status_code == 200
    finally:
        server.stop()
        worker.stop()
    for process in (server, worker):
        assert "Traceback" not in process.log()


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

CREATE_ISSUE = """
mutation CreateIssue($input: CreateIssueInput!) {
  createIssue(input: $input) { id pipeline { id stages { tasks { id } } } }
}
"""
ISSUES = "query Issues { issues(first: 5) { edges { node { id status } } } }"
BROKEN = "query Broken { noSuchField }"
#: Not covered by the compiled read path: the resolvers answer it.
VIEWER = "query Viewer { viewer { actor } }"
TASK_CHANGES = """
subscription Watch($pipelineId: ID) {
  taskStatusChanged(pipelineId: $pipelineId, snapshot: true) {
    sequence
    ... on TaskStatusChange { taskId newStatus }
  }
}
"""
#: What every scrape of each process must show, whatever happened.
API_FAMILIES = {
    "conveyor_graphql_requests",
    "conveyor_graphql_request_duration_seconds",
    "conveyor_graphql_errors",
    "conveyor_graphql_query_cost",
    "conveyor_graphql_reads",
    "conveyor_websockets_open",
    "conveyor_subscriptions_open",
    "conveyor_event_hub_lag_events",
    "conveyor_events_written",
    "conveyor_events_fanned_out",
    "conveyor_slow_subscribers_closed",
    "conveyor_pool_connections",
    "conveyor_tasks",
    "conveyor_tasks_waiting",
}
WORKER_FAMILIES = {
    "conveyor_worker_claims",
    "conveyor_task_runs",
    "conveyor_task_run_duration_seconds",
    "conveyor_lease_recoveries",
    "conveyor_pool_connections",
    "conveyor_tasks",
    "conveyor_tasks_waiting",
}


async def scrape(
    http: httpx.AsyncClient, process: ConveyorProcess, headers: dict[str, str] | None = None
) -> tuple[set[str], Samples]:
    """The metric families a process serves, and every sample by name and labels."""
    response = await http.get(f"{process.url}/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = list(text_string_to_metric_families(response.text))
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in families
        for sample in family.samples
    }
    return {family.name for family in families}, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def task(catalog: EngineCatalog, task_type: str, statement: str) -> dict[str, Any]:
    return {
        "type": task_type,
        "instanceId": catalog.instance,
        "databaseId": catalog.databases["main"],
        "statement": statement,
    }


async def test_the_api_and_a_worker_serve_metrics_that_follow_a_pipeline_run(
    graphql: GraphQLClient,
    settings: Settings,
    server_url: str,
    target_databases: Callable[[], Awaitable[str]],
    http: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    catalog = await build_engine_catalog(graphql, server_url, {"main": await target_databases()})
    # The API lets only the token read its metrics; the worker, loopback (the default).
    scraper = {"Authorization": "Bearer scrape-secret"}
    server = start_server(
        conveyor_env(
            settings,
            CONVEYOR_RUN_WORKER="false",
            CONVEYOR_METRICS_TOKEN="scrape-secret",
            CONVEYOR_METRICS_NETWORKS="",
        ),
        tmp_path / "serve.log",
    )
    worker: ConveyorProcess | None = None
    graphql_url = f"{server.url}/graphql"
    try:
        refused = await http.get(f"{server.url}/metrics")
        wrong = await http.get(f"{server.url}/metrics", headers={"Authorization": "Bearer no"})
        api_families, before = await scrape(http, server, scraper)

        waiting = await http.post(
            graphql_url,
            headers=server.auth,
            json={
                "query": CREATE_ISSUE,
                "variables": {
                    "input": {
                        "title": "waits for approval",
                        "stages": [
                            {
                                "environmentId": catalog.environments["prod"],
                                "tasks": [task(catalog, "DATA_UPDATE", "SELECT 1")],
                            }
                        ],
                    }
                },
            },
        )
        assert waiting.status_code == 200, waiting.text
        # A pipeline that runs, watched from before it starts: the worker starts once the
        # subscription's snapshot came, so every change of its tasks goes through the hub.
        plan = {
            "title": "runs",
            "stages": [
                {
                    "environmentId": catalog.environments["dev"],
                    "tasks": [
                        task(catalog, "SCHEMA_UPDATE", "CREATE TABLE t (id int)"),
                        task(catalog, "DATA_UPDATE", "INSERT INTO t VALUES (1)"),
                    ],
                }
            ],
        }
        created = await http.post(
            graphql_url,
            headers=server.auth,
            json={"query": CREATE_ISSUE, "variables": {"input": plan}},
        )
        pipeline = created.json()["data"]["createIssue"]["pipeline"]
        task_ids = {t["id"] for stage in pipeline["stages"] for t in stage["tasks"]}
        async with subscribed(
            websocket_url(server),
            TASK_CHANGES,
            {"pipelineId": pipeline["id"]},
            token=server.token,
        ) as live:
            # The snapshot comes first (a change would carry its taskId).
            assert "taskId" not in await live.next()
            worker = start_worker(conveyor_env(settings), tmp_path / "worker.log")
            worker_families, _ = await scrape(http, worker)
            done: set[str] = set()
            while done != task_ids:
                change = await live.next()
                if change.get("newStatus") == "DONE":
                    done.add(change["taskId"])
            _, during = await scrape(http, server, scraper)

        answered = await http.post(graphql_url, headers=server.auth, json={"query": ISSUES})
        resolved = await http.post(graphql_url, headers=server.auth, json={"query": VIEWER})
        broken = await http.post(graphql_url, headers=server.auth, json={"query": BROKEN})

        async def counted() -> tuple[Samples, Samples]:
            assert worker is not None
            _, api = await scrape(http, server, scraper)
            _, work = await scrape(http, worker)
            return api, work

        deadline = time.monotonic() + 20
        api, work = await counted()
        # Task counts are read at most every few seconds.
        while value(api, "conveyor_tasks", status="DONE") < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            api, work = await counted()
    finally:
        server.stop()
        if worker is not None:
            worker.stop()

    assert refused.status_code == 403
    assert wrong.status_code == 403
    assert answered.status_code == 200
    assert resolved.status_code == 200
    assert broken.status_code == 200 or broken.status_code == 400
    assert api_families >= API_FAMILIES, API_FAMILIES - api_families
    assert worker_families >= WORKER_FAMILIES, WORKER_FAMILIES - worker_families

    requests = "conveyor_graphql_requests_total"
    assert value(api, requests, operation="CreateIssue", outcome="OK") == 2
    assert value(api, requests, operation="Issues", outcome="OK") == 1
    assert value(api, requests, operation="Broken", outcome="GRAPHQL_VALIDATION_FAILED") == 1
    duration = "conveyor_graphql_request_duration_seconds_count"
    assert value(api, duration, operation="CreateIssue") == 2
    assert value(api, "conveyor_graphql_errors_total", code="GRAPHQL_VALIDATION_FAILED") == 1
    # Two createIssue and two queries ran; the broken one was refused before it cost anything.
    assert value(api, "conveyor_graphql_query_cost_count") == 4
    assert value(api, "conveyor_graphql_query_cost_sum") > 4
    assert value(api, "conveyor_graphql_reads_total", path="compiled") == 1
    assert value(api, "conveyor_graphql_reads_total", path="resolvers") == 1

    assert value(during, "conveyor_websockets_open") == 1
    assert value(during, "conveyor_subscriptions_open") == 1
    assert value(api, "conveyor_websockets_open") == 0
    assert value(api, "conveyor_subscriptions_open") == 0
    written = value(api, "conveyor_events_written_total")
    # Each run task went PENDING -> RUNNING -> DONE, and more events besides.
    assert written - value(before, "conveyor_events_written_total") >= 4
    assert value(api, "conveyor_events_fanned_out_total") >= 4
    assert value(api, "conveyor_event_hub_lag_events") == 0
    assert value(api, "conveyor_slow_subscribers_closed_total") == 0
    assert value(api, "conveyor_pool_connections", pool="conveyor", state="open") >= 1
    assert value(api, "conveyor_tasks", status="DONE") == 2
    assert value(api, "conveyor_tasks", status="PENDING_APPROVAL") == 1
    assert value(api, "conveyor_tasks_waiting", reason="APPROVAL") == 1

    assert value(work, "conveyor_worker_claims_total") == 2
    for task_type in ("SCHEMA_UPDATE", "DATA_UPDATE"):
        assert value(work, "conveyor_task_runs_total", type=task_type, outcome="DONE") == 1
        count = "conveyor_task_run_duration_seconds_count"
        assert value(work, count, type=task_type, outcome="DONE") == 1
    assert value(work, "conveyor_task_runs_total", type="DATA_UPDATE", outcome="FAILED") == 0
    assert value(work, "conveyor_lease_recoveries_total", status="DONE") == 0
    assert value(work, "conveyor_pool_connections", pool="targets", state="in_use") == 0
    assert value(work, "conveyor_tasks", status="DONE") == 2
    assert value(work, "conveyor_worker_claiming") == 1


async def test_json_logs_carry_the_request_and_the_access_log_no_query_string(
    settings: Settings, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    server = start_server(
        conveyor_env(settings, CONVEYOR_LOG_FORMAT="json", CONVEYOR_RUN_WORKER="false"),
        tmp_path / "serve.log",
    )
    try:
        posted = await http.post(
            f"{server.url}/graphql",
            headers={**server.auth, "Content-Type": "application/json"},
            json={"query": "query Environments { environments { totalCount } }"},
        )
        fetched = await http.get(
            f"{server.url}/graphql",
            headers=server.auth,
            params={"query": '{ issues(filter: "kept-out-of-the-log") { totalCount } }'},
        )
    finally:
        server.stop()
    assert posted.status_code == 200, posted.text
    assert fetched.status_code in (200, 400), fetched.text

    log = server.log()
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    for line in lines:
        assert {"timestamp", "level", "logger", "message"} <= line.keys(), line
        datetime.fromisoformat(line["timestamp"])
    assert any(line["logger"] == "conveyor.db.migrate" for line in lines)
    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    graphql_access = [line for line in access if line["path"] == "/graphql"]
    assert len(graphql_access) == 2, access
    first, second = graphql_access
    assert first["method"] == "POST"
    assert first["status"] == 200
    assert first["operation"] == "Environments"
    assert first["actor"] == "admin"
    assert len(first["correlationId"]) == 32
    assert first["durationSeconds"] > 0
    assert second["method"] == "GET"
    assert second["correlationId"] != first["correlationId"]
    assert "kept-out-of-the-log" not in log
    assert "query=" not in log


WATCH_TASK = """
subscription($taskId: ID, $after: Int) {
  taskStatusChanged(taskId: $taskId, after: $after) {
    sequence
    ... on TaskStatusChange { oldStatus newStatus }
  }
}
"""
ENVIRONMENTS = "query Environments { environments { totalCount } }"


async def waiting_task(graphql: GraphQLClient, server_url: str) -> str:
    """A task of a MANUAL stage (it waits for an approval it never gets), to act on."""
    catalog = await build_engine_catalog(graphql, server_url, {"main": "conveyor_never_created"})
    data = await graphql.ok(
        CREATE_ISSUE,
        {
            "input": {
                "title": "drained",
                "stages": [
                    {
                        "environmentId": catalog.environments["prod"],
                        "tasks": [task(catalog, "DATA_UPDATE", "SELECT 1")],
                    }
                ],
            }
        },
    )
    task_id: str = data["createIssue"]["pipeline"]["stages"][0]["tasks"][0]["id"]
    return task_id


async def cancel_and_retry(graphql: GraphQLClient, task_id: str) -> None:
    """Two status changes of a waiting task: canceled, then back to its gate."""
    for action in ("cancelTask", "retryTask"):
        await graphql.ok(
            f"mutation($i: TaskActionInput!) {{ {action}(input: $i) {{ status }} }}",
            {"i": {"taskId": task_id}},
        )


async def sequences_until_closed(connection: ClientConnection) -> tuple[list[int], int | None]:
    """The sequences of the messages read until the server closes, and its close code."""
    sequences: list[int] = []
    try:
        while True:
            message = json.loads(await asyncio.wait_for(connection.recv(), 15))
            sequences.append(message["payload"]["data"]["taskStatusChanged"]["sequence"])
    except ConnectionClosed as closed:
        return sequences, closed.rcvd.code if closed.rcvd is not None else None


async def test_sigterm_drains_subscribers_to_another_replica_without_losing_an_event(
    graphql: GraphQLClient,
    settings: Settings,
    server_url: str,
    database_url: str,
    http: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    task_id = await waiting_task(graphql, server_url)
    env = conveyor_env(settings, CONVEYOR_RUN_WORKER="false")
    draining = start_server({**env, "CONVEYOR_DRAIN_SECONDS": "1.5"}, tmp_path / "a.log")
    other = start_server(env, tmp_path / "b.log")
    locker = await asyncpg.connect(database_url)
    try:
        first = await raw_subscribe(
            websocket_url(draining), WATCH_TASK, {"taskId": task_id}, token=draining.token
        )
        await cancel_and_retry(graphql, task_id)
        # A request in flight when the signal comes: it waits on a lock until after it.
        await locker.execute("BEGIN; LOCK TABLE environment IN ACCESS EXCLUSIVE MODE")
        in_flight = asyncio.create_task(
            http.post(
                f"{draining.url}/graphql",
                headers=draining.auth,
                json={"query": ENVIRONMENTS},
                timeout=30,
            )
        )
        await asyncio.sleep(0.5)
        draining.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        # Draining: not ready, and no new WebSocket, while the old ones are still served.
        unready = await http.get(f"{draining.url}/readyz")
        with pytest.raises(InvalidStatus):
            await connect(websocket_url(draining), subprotocols=[TRANSPORT_WS])
        # Retrying reads the environment: the lock goes first.
        await locker.execute("COMMIT")
        await cancel_and_retry(graphql, task_id)
        seen, close_code = await sequences_until_closed(first)
        # Changes made while the client reconnects are in the log: `after` brings them.
        await cancel_and_retry(graphql, task_id)
        second = await raw_subscribe(
            websocket_url(other),
            WATCH_TASK,
            {"taskId": task_id, "after": seen[-1]},
            token=other.token,
        )
        await cancel_and_retry(graphql, task_id)
        for _ in range(8 - len(seen)):
            message = json.loads(await asyncio.wait_for(second.recv(), 15))
            seen.append(message["payload"]["data"]["taskStatusChanged"]["sequence"])
        await second.close()
        answered = await in_flight
        exit_code = draining.process.wait(timeout=30)
    finally:
        await locker.close()
        draining.stop()
        other.stop()

    assert unready.status_code == 503
    assert unready.json()["checks"]["notDraining"] is False
    assert close_code == 1012
    assert answered.status_code == 200, answered.text
    assert answered.json() == {"data": {"environments": {"totalCount": 3}}}
    rows = await fetch_sequences(database_url, task_id)
    assert len(rows) == 8
    assert seen == rows
    assert exit_code in (0, -signal.SIGTERM)
    assert "Traceback" not in draining.log()


async def fetch_sequences(database_url: str, task_id: str) -> list[int]:
    """The sequences of the task's status changes, from the event log."""
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT id FROM event WHERE task_id = $1 AND kind = 'TASK_STATUS_CHANGED' ORDER BY id",
            int(GlobalID.from_id(task_id).node_id),
        )
    finally:
        await connection.close()
    return [row["id"] for row in rows]


@pytest.fixture
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


async def test_replicas_sharing_a_redis_storage_allow_a_token_its_limit_once(
    settings: Settings, redis_url: str, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    limit = 3
    env = conveyor_env(
        settings,
        CONVEYOR_RUN_WORKER="false",
        CONVEYOR_RATE_LIMIT_REQUESTS=str(limit),
        CONVEYOR_RATE_LIMIT_STORAGE=redis_url,
    )
    replicas = [start_server(env, tmp_path / f"replica{n}.log") for n in range(2)]
    try:
        answers = [
            await http.post(
                f"{replicas[n % 2].url}/graphql",
                headers=replicas[0].auth,
                json={"query": ENVIRONMENTS},
            )
            for n in range(limit + 1)
        ]
    finally:
        for replica in replicas:
            replica.stop()

    assert [answer.status_code for answer in answers] == [200] * limit + [429]
    assert [answer.headers["RateLimit-Remaining"] for answer in answers] == ["2", "1", "0", "0"]
    assert answers[-1].json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"


@dataclass
class StillHub:
    events_read: int = 0
    events_handed_out: int = 0
    slow_subscribers_closed: int = 0
    subscriber_count: int = 0
    lag: int = 0


@dataclass
class StillWorker:
    running_count: int = 0
    claiming: bool = True


async def test_the_dashboard_uses_only_metrics_conveyor_serves(db: TortoiseContext) -> None:
    metrics = Metrics()
    metrics.watch_hub(StillHub())
    metrics.watch_worker(StillWorker())
    served = {
        family.name
        for family in text_string_to_metric_families((await metrics.exposition()).decode())
    }
    dashboard = (Path(__file__).parents[2] / "docs" / "grafana-dashboard.json").read_text()
    # By family: a counter's samples end in _total, a histogram's in _bucket.
    used = {
        re.sub(r"_(total|bucket)$", "", name) for name in re.findall(r"\bconveyor_\w+", dashboard)
    }
    assert used <= served, used - served
    assert len(json.loads(dashboard)["panels"]) >= 10


async def test_an_unreachable_rate_limit_storage_leaves_requests_unlimited_and_logs_once(
    settings: Settings, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    nobody_listens = f"redis://127.0.0.1:{free_port()}/0"
    server = start_server(
        conveyor_env(
            settings,
            CONVEYOR_RUN_WORKER="false",
            CONVEYOR_RATE_LIMIT_REQUESTS="1",
            CONVEYOR_RATE_LIMIT_STORAGE=nobody_listens,
        ),
        tmp_path / "serve.log",
    )
    try:
        answers = [
            await http.post(
                f"{server.url}/graphql", headers=server.auth, json={"query": ENVIRONMENTS}
            )
            for _ in range(3)
        ]
    finally:
        server.stop()

    assert [answer.status_code for answer in answers] == [200] * 3
    log = server.log()
    assert log.count("rate limits: their storage is unreachable") == 1
    assert "Traceback" not in log
