"""`conveyor serve` as a user runs it: a real process, real HTTP, its own PostgreSQL."""

import asyncio
import signal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
import pytest

from tests.conftest import ConveyorProcess, start_server

DEMO_TREE = """
{ issues(first: 10) { totalCount edges { node { title status pipeline { stages {
    name status environment { name approvalPolicy } tasks { name type status database { name } }
} } } } } }
"""


def post(server: ConveyorProcess, document: str, token: str) -> dict[str, Any]:
    response = httpx.post(
        f"{server.url}/graphql",
        json={"query": document},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def postmasters_of(pgdata: Path) -> list[psutil.Process]:
    """Running PostgreSQL servers whose data directory is `pgdata`."""
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        command_line = process.info["cmdline"] or []
        if process.info["name"] == "postgres" and str(pgdata) in " ".join(command_line):
            found.append(process)
    return found


def test_serves_graphql_over_http(live_server: ConveyorProcess) -> None:
    body = post(live_server, "{ environments { totalCount } }", live_server.token)

    assert body == {"data": {"environments": {"totalCount": 0}}}


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_zero_config_serve_shows_the_demo_and_stops_its_postgres(
    tmp_path: Path, zero_config_env: dict[str, str], stop_signal: signal.Signals
) -> None:
    data_dir = Path(zero_config_env["CONVEYOR_DATA_DIR"])
    server = start_server(zero_config_env, tmp_path / "log")
    try:
        # What a person does next: read the admin token the server wrote, then use it.
        token = (data_dir / "admin-token").read_text().strip()
        body = post(server, DEMO_TREE, token)
        assert postmasters_of(data_dir / "pgdata"), "the embedded server should be running"
    finally:
        exit_code = server.stop(stop_signal)

    assert "errors" not in body
    issues = body["data"]["issues"]
    assert issues["totalCount"] == 2
    orders = next(edge["node"] for edge in issues["edges"] if "orders" in edge["node"]["title"])
    stages = orders["pipeline"]["stages"]
    assert [stage["name"] for stage in stages] == ["dev", "test", "prod"]
    assert stages[2]["status"] == "PENDING_APPROVAL"
    # uvicorn re-raises the signal once it has shut down cleanly.
    assert exit_code in (0, -stop_signal), server.log()
    assert "Application shutdown complete" in server.log()
    assert str(data_dir / "admin-token") in server.log()
    assert token not in server.log()
    assert postmasters_of(data_dir / "pgdata") == []


def test_a_killed_server_leaves_no_orphan_after_the_next_clean_stop(
    tmp_path: Path, zero_config_env: dict[str, str]
) -> None:
    data_dir = Path(zero_config_env["CONVEYOR_DATA_DIR"])
    killed = start_server(zero_config_env, tmp_path / "first.log", "--no-demo")
    killed.stop(signal.SIGKILL)
    # An unclean exit leaves PostgreSQL running, and the dead pid in the wheel's handle file.
    assert postmasters_of(data_dir / "pgdata")

    restarted = start_server(zero_config_env, tmp_path / "second.log", "--no-demo")
    try:
        body = post(restarted, "{ environments { totalCount } }", restarted.token)
    finally:
        exit_code = restarted.stop()

    assert body == {"data": {"environments": {"totalCount": 0}}}
    assert exit_code in (0, -signal.SIGTERM), restarted.log()
    assert postmasters_of(data_dir / "pgdata") == []


DEMO_RUN = """
{ issues(first: 10) { edges { node { title pipeline { stages { name tasks {
    name status runs { errorCode errorMessage result } } } } } } }
  instances(first: 10) { edges { node { name username } } }
  databases(first: 100) { edges { node { name } } } }
"""


def test_zero_config_serve_runs_the_demo_as_a_role_of_its_own(
    tmp_path: Path, zero_config_env: dict[str, str]
) -> None:
    data_dir = Path(zero_config_env["CONVEYOR_DATA_DIR"])
    server = start_server(zero_config_env, tmp_path / "log")
    try:
        token = (data_dir / "admin-token").read_text().strip()

        def demo_ran() -> dict[str, Any] | None:
            body = post(server, DEMO_RUN, token)
            tasks = [
                task
                for edge in body["data"]["issues"]["edges"]
                for stage in edge["node"]["pipeline"]["stages"]
                if stage["name"] != "prod"  # waits for a person's approval
                for task in stage["tasks"]
            ]
            finished = all(task["status"] in {"DONE", "FAILED"} for task in tasks)
            return body["data"] if finished else None

        server.wait_until(lambda: demo_ran() is not None, "the demo's dev and test stages")
        data = demo_ran()
        superusers = asyncio.run(superuser_names(data_dir / "pgdata"))
    finally:
        server.stop()

    assert data is not None
    statuses = {
        (stage["name"], task["name"]): (task["status"], task["runs"])
        for edge in data["issues"]["edges"]
        for stage in edge["node"]["pipeline"]["stages"]
        if stage["name"] != "prod"
        for task in stage["tasks"]
    }
    assert {status for status, _ in statuses.values()} == {"DONE"}, statuses
    [instance] = [edge["node"] for edge in data["instances"]["edges"]]
    assert instance["username"] == "conveyor_demo"
    assert "conveyor_demo" not in superusers
    # The sync found what the demo's role may connect to, and left Conveyor's database out.
    databases = {edge["node"]["name"] for edge in data["databases"]["edges"]}
    assert {"demo_dev", "demo_test", "demo_prod", "postgres"} <= databases
    assert "conveyor" not in databases


async def superuser_names(pgdata: Path) -> set[str]:
    """The superuser roles of the embedded server in `pgdata`, asked over its socket."""
    connection = await asyncpg.connect(host=str(pgdata), user="postgres", database="postgres")
    try:
        rows = await connection.fetch("SELECT rolname FROM pg_roles WHERE rolsuper")
    finally:
        await connection.close()
    return {row["rolname"] for row in rows}
