"""The GraphQL-over-HTTP audit suite of the npm package graphql-http (`serverAudits`), run by
Node against a real `conveyor serve`: every MUST and every SHOULD of the spec holds.

Needs Node.js (18 or later, for its fetch) and npm, and reaches the npm registry once: the
pinned package is installed into `.cache/` of the repository. Skipped when node or npm is
missing, unless CONVEYOR_REQUIRE_NODE=1, which turns the skip into a failure (as in CI).
"""

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.graphql.media_types import GRAPHQL_RESPONSE_JSON
from conveyor.settings import Settings
from tests.conftest import ConveyorProcess, conveyor_env, start_server

#: Pinned, so that a new release's new audits do not change what this test means.
AUDIT_PACKAGES = ("graphql-http@1.23.1", "graphql@16.11.0")
INSTALL_DIR = (
    Path(__file__).resolve().parents[2] / ".cache" / "graphql-http-audit" / "-".join(AUDIT_PACKAGES)
)
SCRIPT = Path(__file__).with_name("graphql_http_audit.mjs")


@dataclass(frozen=True)
class Audit:
    node: str
    install_dir: Path


@pytest.fixture
def audit() -> Audit:
    """node, and the directory where the pinned audit package is installed."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        message = "the graphql-http audit needs node and npm on the PATH"
        if os.environ.get("CONVEYOR_REQUIRE_NODE") == "1":
            pytest.fail(f"CONVEYOR_REQUIRE_NODE=1 but {message}")
        pytest.skip(message)
    if not (INSTALL_DIR / "node_modules" / "graphql-http" / "package.json").exists():
        INSTALL_DIR.mkdir(parents=True, exist_ok=True)
        options = ["--no-save", "--no-audit", "--no-fund", "--prefix", str(INSTALL_DIR)]
        installed = subprocess.run(
            [npm, "install", *options, *AUDIT_PACKAGES],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert installed.returncode == 0, f"npm install failed:\n{installed.stderr}"
    return Audit(node=node, install_dir=INSTALL_DIR)


def test_the_graphql_over_http_audit_passes_without_errors_or_warnings(
    audit: Audit, live_server: ConveyorProcess
) -> None:
    audited = subprocess.run(
        [audit.node, str(SCRIPT), str(audit.install_dir), f"{live_server.url}/graphql"],
        env={**os.environ, "CONVEYOR_AUDIT_TOKEN": live_server.token},
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    results: list[dict[str, Any]] = json.loads(audited.stdout)
    failed = [result for result in results if result["status"] in ("warn", "error")]

    assert len(results) == 61, "every audit of the pinned version ran"
    assert failed == []
    assert "Traceback" not in live_server.log()


def test_graphql_response_json_says_with_its_status_code_what_happened(
    settings: Settings, tmp_path: Path
) -> None:
    # 1 + 10 * (edges 1 + node 1 + id 1) = 31: three fit in a cost allowance of 100.
    env = conveyor_env(settings, CONVEYOR_RATE_LIMIT_COST="100")
    server = start_server(env, tmp_path / "server.log")
    graphql_response = {**server.auth, "accept": GRAPHQL_RESPONSE_JSON}
    unknown_token = {"query": 'mutation { revokeApiToken(input: {id: "QXBpVG9rZW46OTk5"}) { id } }'}
    costly = {"query": "{ issues(first: 10) { edges { node { id } } } }"}
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            ok = client.post("/graphql", json={"query": "{ __typename }"}, headers=graphql_response)
            invalid = client.post("/graphql", json={"query": "{ nope }"}, headers=graphql_response)
            invalid_as_json = client.post(
                "/graphql", json={"query": "{ nope }"}, headers=server.auth
            )
            field_error = client.post("/graphql", json=unknown_token, headers=graphql_response)
            no_token = client.post(
                "/graphql",
                json={"query": "{ __typename }"},
                headers={"accept": GRAPHQL_RESPONSE_JSON},
            )
            costs = [
                client.post("/graphql", json=costly, headers=graphql_response) for _ in range(4)
            ]
    finally:
        server.stop()

    assert (ok.status_code, ok.headers["content-type"]) == (200, GRAPHQL_RESPONSE_JSON)
    assert ok.json() == {"data": {"__typename": "Query"}}
    # Refused before execution: 400 and no data entry.
    assert (invalid.status_code, invalid.headers["content-type"]) == (400, GRAPHQL_RESPONSE_JSON)
    assert "data" not in invalid.json()
    assert invalid.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    # application/json as before: 200 and `"data": null`.
    assert (invalid_as_json.status_code, invalid_as_json.headers["content-type"]) == (
        200,
        "application/json",
    )
    assert invalid_as_json.json()["data"] is None
    # A field's error happens during execution: 200 with the data entry (null here).
    assert field_error.status_code == 200
    assert field_error.json()["data"] is None
    assert field_error.json()["errors"][0]["path"] == ["revokeApiToken"]
    # Refusals made before strawberry sees the request answer in the negotiated type too.
    assert (no_token.status_code, no_token.headers["content-type"]) == (401, GRAPHQL_RESPONSE_JSON)
    # A status code set already (the token's query cost ran out) is kept.
    assert [answer.status_code for answer in costs] == [200, 200, 200, 429]
    assert "data" not in costs[-1].json()
    assert costs[-1].json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
