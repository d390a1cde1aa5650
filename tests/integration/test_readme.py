"""The README's walk-through, as a newcomer follows it: a zero-configuration `conveyor serve`,
then the README's own documents and commands, read from README.md as written, until both the
demo's issue and the example's are DONE."""

import json
import re
import shlex
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ConveyorProcess, run_conveyor, start_server

README = Path(__file__).parents[2] / "README.md"
WALK_THROUGH = "## A first query and mutation"


def walk_through() -> str:
    """The README's section that takes a newcomer from the first query to an approval."""
    text = README.read_text()
    start = text.index(WALK_THROUGH)
    end = text.index("\n## ", start + len(WALK_THROUGH))
    return text[start:end]


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", walk_through(), re.DOTALL)


def document(operation: str) -> str:
    """The README's GraphQL block that defines `operation`."""
    (found,) = [
        block
        for block in blocks("graphql")
        if re.match(rf"(query|mutation) {operation}\b", block.strip())
    ]
    return found


def command(prefix: str) -> list[str]:
    """The README's shell command that starts with `prefix`, without `conveyor`."""
    (line,) = [
        line for block in blocks("sh") for line in block.splitlines() if line.startswith(prefix)
    ]
    words = shlex.split(line, comments=True)
    assert words[0] == "conveyor"
    return words[1:]


def answer(
    server: ConveyorProcess, token: str, text: str, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    response = httpx.post(
        f"{server.url}/graphql",
        json={"query": text, "variables": variables},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    body: dict[str, Any] = response.json()
    return body


def data(
    server: ConveyorProcess, token: str, text: str, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    body = answer(server, token, text, variables)
    assert "errors" not in body, body
    result: dict[str, Any] = body["data"]
    return result


def ids_by_name(connection: dict[str, Any]) -> dict[str, str]:
    return {edge["node"]["name"]: edge["node"]["id"] for edge in connection["edges"]}


def prod_stage_id(stages: list[dict[str, Any]]) -> str:
    (stage_id,) = [str(stage["id"]) for stage in stages if stage["name"] == "prod"]
    return stage_id


def test_the_readme_takes_the_demo_and_its_example_to_done(
    zero_config_env: dict[str, str], tmp_path: Path
) -> None:
    env = zero_config_env
    server = start_server(env, tmp_path / "serve.log")
    try:
        first = server.token
        issues = data(server, first, document("Pipelines"))["issues"]["edges"]
        (demo_issue,) = [
            edge["node"] for edge in issues if edge["node"]["title"] == "Add the orders table"
        ]

        ids = data(server, first, document("Ids"))
        environments = ids_by_name(ids["environments"])
        databases = ids_by_name(ids["databases"])
        (variables,) = [json.loads(block) for block in blocks("json")]
        assert variables == {
            "dev": environments["dev"],
            "prod": environments["prod"],
            "instance": ids_by_name(ids["instances"])["local"],
            "devDb": databases["demo_dev"],
            "prodDb": databases["demo_prod"],
        }
        # Before the demo's prod has created `orders`: the example must not depend on it.
        created = data(server, first, document("AddCustomers"), variables)["createIssue"]
        example_prod = {"stage": prod_stage_id(created["pipeline"]["stages"])}

        refused = answer(server, first, document("Approve"), example_prod)
        assert [error["extensions"]["code"] for error in refused["errors"]] == ["FORBIDDEN"]

        made = run_conveyor(command("conveyor token create --actor dba"), env)
        assert made.returncode == 0, made.stderr
        second = made.stdout.strip()
        data(server, second, document("Approve"), example_prod)
        demo_prod = {"stage": prod_stage_id(demo_issue["pipeline"]["stages"])}
        data(server, first, document("Approve"), demo_prod)

        statuses: dict[str, str] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            statuses = {
                issue_id: data(server, first, document("Issue"), {"issue": issue_id})["node"][
                    "status"
                ]
                for issue_id in (demo_issue["id"], created["id"])
            }
            if set(statuses.values()) == {"DONE"}:
                break
            time.sleep(0.5)
    finally:
        server.stop()

    assert statuses == {demo_issue["id"]: "DONE", created["id"]: "DONE"}, server.log()
