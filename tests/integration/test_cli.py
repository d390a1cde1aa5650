"""`conveyor` commands as an operator runs them: real processes, their output and their log."""

from pathlib import Path

import httpx

from conveyor.settings import Settings
from tests.conftest import conveyor_env, run_conveyor, start_server


def test_a_command_beside_a_running_server_attaches_to_its_postgres_and_leaves_it_running(
    zero_config_env: dict[str, str], tmp_path: Path
) -> None:
    env = zero_config_env
    pgdata = (Path(env["CONVEYOR_DATA_DIR"]) / "pgdata").resolve()
    server = start_server(env, tmp_path / "serve.log", "--no-demo")
    try:
        listed = run_conveyor(["token", "list"], env)
        still_answers = httpx.get(f"{server.url}/healthz", headers=server.auth, timeout=10)
    finally:
        server.stop()

    assert listed.returncode == 0, listed.stderr
    assert f"attached to the embedded PostgreSQL already running in {pgdata}" in listed.stderr
    assert (
        f"detached from the embedded PostgreSQL in {pgdata}, leaving it running for the other "
        "conveyor processes that use it"
    ) in listed.stderr
    assert "started the embedded PostgreSQL" not in listed.stderr
    assert "stopped the embedded PostgreSQL" not in listed.stderr
    assert still_answers.status_code == 200
    log = server.log()
    assert f"started the embedded PostgreSQL in {pgdata}" in log
    assert f"stopped the embedded PostgreSQL in {pgdata}" in log
    assert log.count("Tortoise-ORM shutdown") == 1, log


def test_token_revoke_takes_the_number_or_the_api_id(settings: Settings) -> None:
    env = conveyor_env(settings)
    for actor in ("by-number", "by-api-id"):
        created = run_conveyor(["token", "create", "--actor", actor, "--role", "VIEWER"], env)
        assert created.returncode == 0, created.stderr

    by_number = run_conveyor(["token", "revoke", "1"], env)
    # QXBpVG9rZW46Mg== is the API's id of token 2 ("ApiToken:2").
    by_api_id = run_conveyor(["token", "revoke", "QXBpVG9rZW46Mg=="], env)
    listed = run_conveyor(["token", "list", "--all"], env)

    assert by_number.returncode == 0, by_number.stderr
    assert by_api_id.returncode == 0, by_api_id.stderr
    assert "token 2 (" in by_api_id.stderr
    assert "of by-api-id is revoked" in by_api_id.stderr
    assert [line.split("\t")[-1] for line in listed.stdout.splitlines()] == ["revoked"] * 2


def test_token_revoke_refuses_an_id_of_another_type_or_none_at_all(settings: Settings) -> None:
    env = conveyor_env(settings)
    created = run_conveyor(["token", "create", "--actor", "kept", "--role", "VIEWER"], env)
    assert created.returncode == 0, created.stderr

    # SXNzdWU6MQ== is "Issue:1": the API's id of an issue, whose number is the token's.
    of_an_issue = run_conveyor(["token", "revoke", "SXNzdWU6MQ=="], env)
    of_nothing = run_conveyor(["token", "revoke", "not-an-id"], env)
    listed = run_conveyor(["token", "list"], env)

    assert of_an_issue.returncode == 2
    assert "SXNzdWU6MQ== is an id of type Issue, not ApiToken" in of_an_issue.stderr
    assert of_nothing.returncode == 2
    assert "'not-an-id' is neither a token's number nor an API token id" in of_nothing.stderr
    assert listed.stdout.split("\t")[2:4] == ["kept", "VIEWER"]
    assert "expires never" in listed.stdout
