"""The limits against hostile documents: each refused with its own code and a plain message."""

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from strawberry.types import ExecutionResult
from tortoise.context import TortoiseContext

from conveyor.crypto import PasswordCipher
from conveyor.graphql.context import Context
from conveyor.graphql.errors import LIMIT_CODES
from conveyor.graphql.schema import build_schema
from conveyor.settings import Settings
from tests.api.support import create_catalog
from tests.api.test_statement_count import CREATE_ISSUE, pipeline_plan
from tests.conftest import ConveyorProcess, GraphQLClient, Response, start_server


@pytest.fixture
def database_url(emptied_module_database_url: str) -> str:
    """The module's one database, emptied for each test: creating one costs more than a test."""
    return emptied_module_database_url


#: Words that would tell a client about the server's insides.
INTERNALS = ("Traceback", ".py", "strawberry", "graphql-core", "Exception", "Limiter", "Validat")


def assert_plain(error: dict[str, Any]) -> None:
    """A refusal a person understands that says nothing of the implementation."""
    message: str = error["message"]
    assert all(word not in message for word in INTERNALS), message
    assert set(error) <= {"message", "extensions", "locations", "path"}, error


class LimitedClient:
    """Runs documents in-process against a schema with the limits of `settings`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.schema = build_schema(settings)

    async def __call__(self, document: str) -> Response:
        context = Context(
            request=None,
            response=None,
            settings=self.settings,
            cipher=PasswordCipher(self.settings.secret_key or ""),
            actor="tester",
        )
        result = await self.schema.execute(document, context_value=context)
        return Response(
            data=result.data, errors=[dict(error.formatted) for error in result.errors or []]
        )

    async def ok(self, document: str) -> dict[str, Any]:
        response = await self(document)
        assert response.errors == [], response.errors
        assert response.data is not None
        return response.data

    async def refused(self, document: str, code: str) -> dict[str, Any]:
        """The one error of a document refused with `code`, before any execution."""
        response = await self(document)
        assert response.data is None
        assert response.error_codes == [code], response.errors
        error = response.errors[0]
        assert_plain(error)
        return error


def limited(settings: Settings, **limits: Any) -> LimitedClient:
    return LimitedClient(settings.model_copy(update=limits))


def typenames(count: int, *, aliased: bool = False) -> str:
    return " ".join(f"a{n}: __typename" if aliased else "__typename" for n in range(count))


async def test_query_depth(db: TortoiseContext, settings: Settings) -> None:
    client = limited(settings, max_query_depth=3)
    at_limit = "{ issues(first: 1) { edges { node { title } } } }"
    assert await client.ok(at_limit) == {"issues": {"edges": []}}

    # Two branches past the limit: one error says it.
    too_deep = """query Deep {
      issues(first: 1) { edges { node { pipeline { id } } } }
      pipelines(first: 1) { edges { node { issue { title } } } }
    }"""
    error = await client.refused(too_deep, "QUERY_TOO_DEEP")
    assert error["message"] == (
        "operation 'Deep' nests fields more than 3 levels deep, the most this server allows; "
        "ask for less at once"
    )
    assert error["extensions"]["limit"] == 3
    # Fragments count where they are spread.
    error = await client.refused(
        "{ issues(first: 1) { edges { ...N } } }"
        " fragment N on IssueEdge { node { pipeline { id } } }",
        "QUERY_TOO_DEEP",
    )
    assert error["message"].startswith("the operation nests fields more than 3 levels deep")


async def test_subscriptions_are_limited_too(settings: Settings) -> None:
    client = limited(settings, max_query_depth=1)
    document = """subscription {
      taskStatusChanged(taskId: "VGFzazox") { ... on TaskStatusChange { task { stage { name } } } }
    }"""
    stream = await client.schema.subscribe(document)
    assert not isinstance(stream, ExecutionResult)
    first = await anext(stream)
    assert [error.extensions for error in first.errors or []] == [
        {"code": "QUERY_TOO_DEEP", "field": None, "limit": 1}
    ]
    assert first.errors is not None
    assert first.errors[0].message.startswith("the operation nests fields more than 1 level deep")


async def test_aliases(db: TortoiseContext, settings: Settings) -> None:
    client = limited(settings, max_aliases=3)
    assert await client.ok(f"{{ {typenames(3, aliased=True)} }}") == {
        "a0": "Query",
        "a1": "Query",
        "a2": "Query",
    }

    error = await client.refused(f"{{ {typenames(4, aliased=True)} }}", "TOO_MANY_ALIASES")
    assert error["message"] == "the document uses 4 aliases; this server allows at most 3"
    assert error["extensions"] == {
        "code": "TOO_MANY_ALIASES",
        "field": None,
        "limit": 3,
        "count": 4,
    }


async def test_tokens(db: TortoiseContext, settings: Settings) -> None:
    client = limited(settings, max_tokens=10)
    # "{", 8 names and "}": 10 tokens.
    assert await client.ok(f"{{ {typenames(8)} }}") == {"__typename": "Query"}

    error = await client.refused(f"{{ {typenames(9)} }}", "TOO_MANY_TOKENS")
    assert error["message"] == (
        "the document has more than 10 tokens (names, punctuation and values), the most this "
        "server allows; pass large inputs as variables"
    )
    assert error["extensions"]["limit"] == 10
    # Comments are no way around it, and a hostile nesting stops at the limit, not deeper.
    await client.refused("{ __typename " + "# c\n" * 20 + "}", "TOO_MANY_TOKENS")
    await client.refused("{" + "issues {" * 5000 + "}" * 5001, "TOO_MANY_TOKENS")


async def test_directives(db: TortoiseContext, settings: Settings) -> None:
    client = limited(settings, max_directives=3)
    at_limit = """
    query { a: __typename @include(if: true) ...F @skip(if: false) }
    fragment F on Query { b: __typename @skip(if: false) }
    """
    assert await client.ok(at_limit) == {"a": "Query", "b": "Query"}

    past = at_limit.replace("b: __typename", "b: __typename @include(if: true)")
    error = await client.refused(past, "TOO_MANY_DIRECTIVES")
    assert error["message"] == "the document uses 4 directives; this server allows at most 3"
    assert error["extensions"] == {
        "code": "TOO_MANY_DIRECTIVES",
        "field": None,
        "limit": 3,
        "count": 4,
    }


async def test_introspection_can_be_turned_off(db: TortoiseContext, settings: Settings) -> None:
    document = "{ __schema { queryType { name } } }"
    assert await limited(settings).ok(document) == {"__schema": {"queryType": {"name": "Query"}}}

    off = limited(settings, introspection=False)
    # One error for each introspection field.
    response = await off(document)
    assert response.data is None
    assert response.error_codes == ["INTROSPECTION_DISABLED"] * 2
    assert response.errors[0]["message"] == (
        "GraphQL introspection has been disabled, but the requested query contained the field "
        "'__schema'."
    )
    response = await off('{ __type(name: "Query") { kind } }')
    assert response.data is None
    assert set(response.error_codes) == {"INTROSPECTION_DISABLED"}
    for error in response.errors:
        assert_plain(error)
    assert await off.ok("{ __typename }") == {"__typename": "Query"}


def readme_documents() -> list[str]:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    return re.findall(r"```graphql\n(.*?)```", readme, re.DOTALL)


async def test_the_defaults_allow_the_documented_queries(graphql: GraphQLClient) -> None:
    """The README's queries (depth 7 at most, 137 tokens) pass the default limits, which the
    shared `schema` applies (the statement-count tests run their 5-7 deep tree under them)."""
    documents = readme_documents()
    assert len(documents) == 3
    for document in documents:
        response = await graphql(document)
        # Only their variables are missing (and subscriptions need a WebSocket).
        assert not set(response.error_codes) & {*LIMIT_CODES, "GRAPHQL_VALIDATION_FAILED"}, (
            response.errors
        )


# --- over HTTP --------------------------------------------------------------------------------

LIMIT = 1000


@pytest.fixture
def limited_server(settings: Settings, tmp_path: Path) -> Iterator[ConveyorProcess]:
    """`conveyor serve` with a 1,000-byte request limit, no introspection and no GraphiQL."""
    assert settings.database_url is not None
    assert settings.secret_key is not None
    server = start_server(
        {
            "CONVEYOR_DATABASE_URL": settings.database_url,
            "CONVEYOR_DATA_DIR": str(settings.data_dir),
            "CONVEYOR_SECRET_KEY": settings.secret_key,
            "CONVEYOR_RUN_WORKER": "false",
            "CONVEYOR_MAX_REQUEST_BYTES": str(LIMIT),
            "CONVEYOR_INTROSPECTION": "false",
            "CONVEYOR_GRAPHIQL": "false",
        },
        tmp_path / "server.log",
    )
    yield server
    server.stop()


def body_of(size: int) -> bytes:
    """A JSON request of exactly `size` bytes (padded with trailing whitespace)."""
    body = json.dumps({"query": "{ __typename }"}).encode()
    return body + b" " * (size - len(body))


def post_bytes(server: ConveyorProcess, content: bytes | Iterator[bytes]) -> httpx.Response:
    return httpx.post(
        f"{server.url}/graphql",
        content=content,
        headers={"content-type": "application/json"},
        timeout=30,
    )


def assert_too_large(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    error = response.json()["errors"][0]
    assert response.json() == {
        "errors": [
            {
                "message": f"the request body is larger than {LIMIT} bytes, the most this "
                "server accepts",
                "extensions": {"code": "REQUEST_TOO_LARGE", "field": None, "limit": LIMIT},
            }
        ]
    }
    assert_plain(error)


def test_request_body_size(limited_server: ConveyorProcess) -> None:
    at_limit = post_bytes(limited_server, body_of(LIMIT))
    assert at_limit.status_code == 200, at_limit.text
    assert at_limit.json() == {"data": {"__typename": "Query"}}

    assert_too_large(post_bytes(limited_server, body_of(LIMIT + 1)))

    # Without a Content-Length (chunked), counted as it arrives.
    def chunks(size: int) -> Iterator[bytes]:
        body = body_of(size)
        yield from (body[start : start + 100] for start in range(0, len(body), 100))

    chunked = post_bytes(limited_server, chunks(LIMIT))
    assert chunked.status_code == 200, chunked.text
    assert_too_large(post_bytes(limited_server, chunks(LIMIT + 1)))
    assert_too_large(post_bytes(limited_server, chunks(100 * LIMIT)))

    # The server keeps serving.
    assert post_bytes(limited_server, body_of(100)).json() == {"data": {"__typename": "Query"}}


def test_introspection_and_graphiql_off_over_http(limited_server: ConveyorProcess) -> None:
    page = httpx.get(f"{limited_server.url}/graphql", headers={"accept": "text/html"}, timeout=30)
    assert page.status_code == 404
    assert "<html" not in page.text.lower()

    response = httpx.post(
        f"{limited_server.url}/graphql",
        json={"query": "{ __schema { types { name } } }"},
        timeout=30,
    )
    codes = [error["extensions"]["code"] for error in response.json()["errors"]]
    assert set(codes) == {"INTROSPECTION_DISABLED"}


def test_batching_is_refused(live_server: ConveyorProcess) -> None:
    response = httpx.post(
        f"{live_server.url}/graphql",
        json=[{"query": "{ __typename }"}, {"query": "{ __typename }"}],
        timeout=30,
    )
    assert response.status_code == 400
    assert response.json() == {
        "errors": [
            {
                "message": "batching is not supported: send one operation per request, as a "
                "JSON object",
                "extensions": {"code": "BATCHING_NOT_SUPPORTED", "field": None},
            }
        ]
    }
    assert_plain(response.json()["errors"][0])
    # GraphiQL and introspection are on by default.
    page = httpx.get(f"{live_server.url}/graphql", headers={"accept": "text/html"}, timeout=30)
    assert page.status_code == 200
    assert "<html" in page.text.lower()


async def test_the_default_body_limit_takes_a_plan_of_5000_tasks(
    graphql: GraphQLClient, settings: Settings, tmp_path: Path
) -> None:
    """A 10 x 500-task createIssue over HTTP: 0.81 MiB of JSON under the 2 MiB default."""
    catalog = await create_catalog(graphql)
    body = json.dumps(
        {"query": CREATE_ISSUE, "variables": {"input": pipeline_plan(catalog, 10, 500)}}
    ).encode()
    assert 800_000 < len(body) < settings.max_request_bytes
    assert settings.database_url is not None
    assert settings.secret_key is not None
    server = start_server(
        {
            "CONVEYOR_DATABASE_URL": settings.database_url,
            "CONVEYOR_DATA_DIR": str(settings.data_dir),
            "CONVEYOR_SECRET_KEY": settings.secret_key,
            "CONVEYOR_RUN_WORKER": "false",
        },
        tmp_path / "server.log",
    )
    try:
        async with httpx.AsyncClient(timeout=60) as client:
            response = await client.post(
                f"{server.url}/graphql",
                content=body,
                headers={"content-type": "application/json"},
            )
    finally:
        server.stop()
    assert response.status_code == 200, response.text
    assert "errors" not in response.json(), response.json()
