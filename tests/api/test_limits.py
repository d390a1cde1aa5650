"""The limits against hostile documents: each refused with its own code and a plain message."""

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from graphql import GraphQLError
from strawberry import relay
from strawberry.types import ExecutionResult
from tortoise.context import TortoiseContext

from conveyor.crypto import PasswordCipher
from conveyor.domain.permissions import Principal, Role
from conveyor.graphql.context import Context
from conveyor.graphql.errors import LIMIT_CODES
from conveyor.graphql.schema import _parse_once, build_schema
from conveyor.settings import Mode, Settings
from tests.api.support import create_catalog
from tests.api.test_statement_count import CREATE_ISSUE, pipeline_plan
from tests.conftest import ConveyorProcess, GraphQLClient, Response, conveyor_env, start_server


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
        self.context: Context | None = None

    @property
    def cost(self) -> int:
        """The cost of the last document run, as recorded for rate limiting."""
        assert self.context is not None
        return self.context.query_cost

    async def __call__(self, document: str, variables: dict[str, Any] | None = None) -> Response:
        self.context = Context(
            request=None,
            response=None,
            settings=self.settings,
            cipher=PasswordCipher(self.settings.secret_key or ""),
            principal=Principal(actor="tester", role=Role.ADMIN),
        )
        result = await self.schema.execute(
            document, variable_values=variables, context_value=self.context
        )
        return Response(
            data=result.data, errors=[dict(error.formatted) for error in result.errors or []]
        )

    async def ok(self, document: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = await self(document, variables)
        assert response.errors == [], response.errors
        assert response.data is not None
        return response.data

    async def refused(
        self, document: str, code: str, variables: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The one error of a document refused with `code`, before any execution."""
        response = await self(document, variables)
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


async def first_errors(client: LimitedClient, subscription: str) -> list[GraphQLError]:
    stream = await client.schema.subscribe(subscription)
    assert not isinstance(stream, ExecutionResult)
    first = await anext(stream)
    assert first.errors is not None
    return first.errors


async def test_subscriptions_are_limited_too(settings: Settings) -> None:
    # Cost: taskStatusChanged + task + stage + name = 4; depth 3.
    document = """subscription {
      taskStatusChanged(taskId: "VGFzazox") { ... on TaskStatusChange { task { stage { name } } } }
    }"""
    errors = await first_errors(limited(settings, max_query_depth=1), document)
    assert [error.extensions for error in errors] == [
        {"code": "QUERY_TOO_DEEP", "field": None, "limit": 1}
    ]
    assert errors[0].message.startswith("the operation nests fields more than 1 level deep")

    errors = await first_errors(limited(settings, max_query_cost=3), document)
    assert [error.extensions for error in errors] == [
        {"code": "QUERY_TOO_COSTLY", "field": None, "limit": 3, "cost": 4}
    ]


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


#: 1 (issues) + 10 items x (edges + node + id) = 1 + 10 * 3 = 31.
TEN_ISSUES = "{ issues(first: 10) { edges { node { id } } } }"
PAGE_OF_ISSUES = "query Page($n: Int) { issues(first: $n) { edges { node { id } } } }"


async def test_query_cost(db: TortoiseContext, settings: Settings) -> None:
    client = limited(settings, max_query_cost=31)
    assert await client.ok(TEN_ISSUES) == {"issues": {"edges": []}}
    assert client.cost == 31

    # One more field outside the connection: 1 + 31 = 32.
    past = "{ __typename issues(first: 10) { edges { node { id } } } }"
    error = await client.refused(past, "QUERY_TOO_COSTLY")
    assert error["message"] == (
        "the operation costs 32; this server allows at most 31 (each field counts 1, and "
        "everything inside a connection counts once per item of the page it asks for): ask "
        "for smaller pages or fewer fields"
    )
    assert error["extensions"] == {
        "code": "QUERY_TOO_COSTLY",
        "field": None,
        "limit": 31,
        "cost": 32,
    }
    assert client.cost == 32
    # Each field inside counts once per item: 1 + 10 * (edges + node + id + title) = 41.
    await client.refused(
        "{ issues(first: 10) { edges { node { id title } } } }", "QUERY_TOO_COSTLY"
    )
    assert client.cost == 41


async def test_query_cost_of_a_variable_page(db: TortoiseContext, settings: Settings) -> None:
    client = limited(settings, max_query_cost=31)
    await client.ok(PAGE_OF_ISSUES, {"n": 10})
    assert client.cost == 31
    # 1 + 11 * 3 = 34.
    error = await client.refused(PAGE_OF_ISSUES, "QUERY_TOO_COSTLY", {"n": 11})
    assert error["extensions"]["cost"] == 34
    # The variable's default counts when no value is given.
    with_default = PAGE_OF_ISSUES.replace("$n: Int", "$n: Int = 11")
    await client.refused(with_default, "QUERY_TOO_COSTLY")
    assert client.cost == 34
    await client.ok(with_default, {"n": 10})


async def test_query_cost_of_the_default_page(db: TortoiseContext, settings: Settings) -> None:
    assert settings.default_page_size == 20
    assert settings.max_page_size == 100
    # Without `first`, a page of 20: 1 + 20 * 3 = 61.
    client = limited(settings, max_query_cost=61)
    assert await client.ok("{ issues { edges { node { id } } } }") == {"issues": {"edges": []}}
    assert client.cost == 61
    await client.ok(PAGE_OF_ISSUES, {"n": None})
    assert client.cost == 61
    # A page larger than the largest counts as the largest (and is refused when it runs):
    # 1 + 100 * 3 = 301.
    generous = limited(settings)
    response = await generous("{ issues(first: 1000) { edges { node { id } } } }")
    assert response.error_codes == ["INVALID_INPUT"]
    assert generous.cost == 301
    # A page of 0 still resolves the connection's own fields: it counts as 1 item.
    await generous.ok("{ issues(first: 0) { totalCount } }")
    assert generous.cost == 2


def spreading_twice(count: int, leaf: str = "__typename") -> str:
    """An operation spreading a chain of `count` fragments, each spreading the next twice:
    its leaf stands 2 ** `count` times in the expanded operation."""
    fragments = [f"fragment F{n} on Query {{ ...F{n + 1} ...F{n + 1} }}" for n in range(count)]
    return " ".join(["{ ...F0 }", *fragments, f"fragment F{count} on Query {{ {leaf} }}"])


async def test_fragments_cost_where_they_are_spread(
    db: TortoiseContext, settings: Settings
) -> None:
    client = limited(settings, max_query_cost=2**10)
    assert await client.ok(spreading_twice(10)) == {"__typename": "Query"}
    assert client.cost == 2**10
    error = await client.refused(spreading_twice(11), "QUERY_TOO_COSTLY")
    assert error["extensions"]["cost"] == 2**11

    # Each fragment is measured once: 2 ** 40 spreads are refused at once (strawberry's own
    # depth and alias limiters walked each spread and took minutes for 20 of them).
    started = time.monotonic()
    response = await client(spreading_twice(40, leaf="a: __typename"))
    assert time.monotonic() - started < 2
    assert response.data is None
    assert response.error_codes == ["TOO_MANY_ALIASES", "QUERY_TOO_COSTLY"]
    assert [error["extensions"].get("count") for error in response.errors] == [2**40, None]
    assert response.errors[1]["extensions"]["cost"] == 2**40


async def test_circular_fragments_are_refused(db: TortoiseContext, settings: Settings) -> None:
    client = limited(settings)
    error = await client.refused(
        "{ ...A } fragment A on Query { ...B } fragment B on Query { __typename ...A }",
        "GRAPHQL_VALIDATION_FAILED",
    )
    assert error["message"] == "Cannot spread fragment 'A' within itself via 'B'."
    # Ten fragments each spreading all the others: every cycle is found, and fast.
    names = [f"F{n}" for n in range(10)]
    document = "{ ...F0 } " + " ".join(
        f"fragment {name} on Query {{ __typename "
        + " ".join(f"...{other}" for other in names if other != name)
        + " }"
        for name in names
    )
    started = time.monotonic()
    response = await client(document)
    assert time.monotonic() - started < 2
    assert response.data is None
    assert set(response.error_codes) == {"GRAPHQL_VALIDATION_FAILED"}


def unknown_fields(count: int) -> str:
    return "{ " + " ".join(f"unknown{n}" for n in range(count)) + " }"


async def test_errors_per_response(db: TortoiseContext, settings: Settings) -> None:
    client = limited(settings, max_errors=3)
    response = await client(unknown_fields(3))
    assert response.error_codes == ["GRAPHQL_VALIDATION_FAILED"] * 3
    # Validation stops after 3 errors: the last two are replaced by one.
    response = await client(unknown_fields(4))
    assert response.data is None
    assert response.error_codes == ["GRAPHQL_VALIDATION_FAILED"] * 2 + ["TOO_MANY_ERRORS"]
    assert response.errors[2] == {
        "message": "at least 2 more errors were left out: this server reports at most 3 "
        "errors in one response",
        "extensions": {"code": "TOO_MANY_ERRORS", "field": None, "limit": 3, "leftOut": 2},
    }
    assert_plain(response.errors[2])

    # Errors of execution: the response keeps its data.
    def bad_nodes(count: int) -> str:
        return "{ " + " ".join(f'n{n}: node(id: "x") {{ id }}' for n in range(count)) + " }"

    response = await client(bad_nodes(3))
    assert response.error_codes == ["INVALID_INPUT"] * 3
    response = await client(bad_nodes(5))
    assert response.data == {f"n{n}": None for n in range(5)}
    assert response.error_codes == ["INVALID_INPUT"] * 2 + ["TOO_MANY_ERRORS"]
    assert response.errors[2]["message"] == (
        "3 more errors were left out: this server reports at most 3 errors in one response"
    )
    assert [error["path"] for error in response.errors[:2]] == [["n0"], ["n1"]]


async def test_validation_stops_at_100_errors_whatever_the_limit(
    db: TortoiseContext, settings: Settings
) -> None:
    """graphql-core stops validating after 100 errors (strawberry gives no way to change
    it), so a larger limit only lets more errors of execution through."""
    response = await limited(settings, max_errors=150)(unknown_fields(120))
    assert response.error_codes == ["GRAPHQL_VALIDATION_FAILED"] * 100 + ["TOO_MANY_ERRORS"]
    assert response.errors[100]["message"].startswith("at least 1 more error was left out")


#: Client mistakes, with graphql-core's message: in development mode, then in production.
SUGGESTED = [
    (
        "{ issuez { totalCount } }",
        "Cannot query field 'issuez' on type 'Query'. Did you mean 'issues'?",
        "Cannot query field 'issuez' on type 'Query'.",
    ),
    (
        "{ issues(frist: 1) { totalCount } }",
        "Unknown argument 'frist' on field 'Query.issues'. Did you mean 'first'?",
        "Unknown argument 'frist' on field 'Query.issues'.",
    ),
    (
        '{ node(id: "x") { ... on Isue { id } } }',
        "Unknown type 'Isue'. Did you mean 'Issue'?",
        "Unknown type 'Isue'.",
    ),
    (
        '{ node(id: "x") { name } }',
        "Cannot query field 'name' on type 'Node'. Did you mean to use an inline fragment "
        "on 'Database', 'Environment', 'Instance', 'Stage', or 'Task'?",
        "Cannot query field 'name' on type 'Node'.",
    ),
    (
        "{ issues(status: OPN) { totalCount } }",
        "Value 'OPN' does not exist in 'PipelineStatus' enum. Did you mean the enum value 'OPEN'?",
        "Value 'OPN' does not exist in 'PipelineStatus' enum.",
    ),
    (
        'mutation { createIssue(input: {titel: "x", title: "x", stages: []}) { id } }',
        "Expected value of type 'CreateIssueInput' not to include unknown field 'titel'. Did "
        'you mean \'title\'? Found: { titel: "x", title: "x", stages: [] }.',
        "Expected value of type 'CreateIssueInput' not to include unknown field 'titel', "
        'found: { titel: "x", title: "x", stages: [] }.',
    ),
]


@pytest.mark.parametrize(("document", "development", "production"), SUGGESTED)
async def test_suggestions_only_in_development(
    db: TortoiseContext, settings: Settings, document: str, development: str, production: str
) -> None:
    for mode, message in [(Mode.DEVELOPMENT, development), (Mode.PRODUCTION, production)]:
        response = await limited(settings, mode=mode)(document)
        assert [error["message"] for error in response.errors] == [message]
    # Asked for, they are given in production too.
    response = await limited(settings, mode=Mode.PRODUCTION, field_suggestions=True)(document)
    assert [error["message"] for error in response.errors] == [development]


async def test_no_suggestions_in_variables_in_production(
    db: TortoiseContext, settings: Settings
) -> None:
    document = "query Issues($status: PipelineStatus) { issues(status: $status) { totalCount } }"
    response = await limited(settings, mode=Mode.PRODUCTION)(document, {"status": "OPN"})
    assert response.errors[0]["message"] == (
        "Variable '$status' has invalid value: Value 'OPN' does not exist in 'PipelineStatus' enum."
    )
    response = await limited(settings)(document, {"status": "OPN"})
    assert response.errors[0]["message"].endswith("Did you mean the enum value 'OPEN'?")


async def test_production_mode_turns_introspection_off(
    db: TortoiseContext, settings: Settings
) -> None:
    document = "{ __schema { queryType { name } } }"
    assert settings.mode is Mode.DEVELOPMENT
    assert await limited(settings).ok(document) == {"__schema": {"queryType": {"name": "Query"}}}
    production = limited(settings, mode=Mode.PRODUCTION)
    assert set((await production(document)).error_codes) == {"INTROSPECTION_DISABLED"}
    explicit = limited(settings, mode=Mode.PRODUCTION, introspection=True)
    assert await explicit.ok(document) == {"__schema": {"queryType": {"name": "Query"}}}


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
    assert len(documents) >= 6, "the README's GraphQL examples were not found"
    for document in documents:
        response = await graphql(document)
        # Only their variables are missing (and subscriptions need a WebSocket).
        assert not set(response.error_codes) & {*LIMIT_CODES, "GRAPHQL_VALIDATION_FAILED"}, (
            response.errors
        )


# --- over HTTP --------------------------------------------------------------------------------

LIMIT = 1000


def serve(settings: Settings, tmp_path: Path, **env: str) -> ConveyorProcess:
    """`conveyor serve` without a worker on the test's database, with `env` on top."""
    return start_server(
        conveyor_env(
            settings,
            CONVEYOR_RUN_WORKER="false",
            **env,
        ),
        tmp_path / "server.log",
    )


@pytest.fixture
def limited_server(settings: Settings, tmp_path: Path) -> Iterator[ConveyorProcess]:
    """`conveyor serve` with a 1,000-byte request limit, no introspection and no GraphiQL."""
    server = serve(
        settings,
        tmp_path,
        CONVEYOR_MAX_REQUEST_BYTES=str(LIMIT),
        CONVEYOR_INTROSPECTION="false",
        CONVEYOR_GRAPHIQL="false",
    )
    yield server
    server.stop()


@pytest.fixture
def production_server(settings: Settings, tmp_path: Path) -> Iterator[ConveyorProcess]:
    """`conveyor serve` in production mode, costs up to 31 and 3 errors per response."""
    server = serve(
        settings,
        tmp_path,
        CONVEYOR_MODE="production",
        CONVEYOR_MAX_QUERY_COST="31",
        CONVEYOR_MAX_ERRORS="3",
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
        headers={"content-type": "application/json", **server.auth},
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
        headers=limited_server.auth,
        timeout=30,
    )
    codes = [error["extensions"]["code"] for error in response.json()["errors"]]
    assert set(codes) == {"INTROSPECTION_DISABLED"}


def test_production_mode_over_http(production_server: ConveyorProcess) -> None:
    page = httpx.get(
        f"{production_server.url}/graphql", headers={"accept": "text/html"}, timeout=30
    )
    assert page.status_code == 404

    def post(document: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = httpx.post(
            f"{production_server.url}/graphql",
            json={"query": document, "variables": variables},
            headers=production_server.auth,
            timeout=30,
        )
        body: dict[str, Any] = response.json()
        return body

    def codes(body: dict[str, Any]) -> list[str]:
        return [error["extensions"]["code"] for error in body["errors"]]

    assert set(codes(post("{ __schema { types { name } } }"))) == {"INTROSPECTION_DISABLED"}
    assert [error["message"] for error in post("{ issuez { totalCount } }")["errors"]] == [
        "Cannot query field 'issuez' on type 'Query'."
    ]
    assert post(PAGE_OF_ISSUES, {"n": 10}) == {"data": {"issues": {"edges": []}}}
    refused = post(PAGE_OF_ISSUES, {"n": 11})
    assert codes(refused) == ["QUERY_TOO_COSTLY"]
    assert refused["errors"][0]["extensions"]["cost"] == 34
    assert codes(post(unknown_fields(4))) == ["GRAPHQL_VALIDATION_FAILED"] * 2 + ["TOO_MANY_ERRORS"]


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
    server = serve(settings, tmp_path)
    try:
        async with httpx.AsyncClient(timeout=60) as client:
            response = await client.post(
                f"{server.url}/graphql",
                content=body,
                headers={"content-type": "application/json", **server.auth},
            )
    finally:
        server.stop()
    assert response.status_code == 200, response.text
    assert "errors" not in response.json(), response.json()


NODES = "query($ids: [ID!]!) { nodes(ids: $ids) { id } }"


async def test_nodes_costs_once_per_id_asked_for(db: TortoiseContext, settings: Settings) -> None:
    # 1 + ids * (id 1): 10 ids cost 11.
    client = limited(settings, max_query_cost=11)
    ids = [str(relay.GlobalID("Issue", str(n))) for n in range(1, 12)]
    assert await client.ok(NODES, {"ids": ids[:10]}) == {"nodes": [None] * 10}
    assert client.cost == 11
    error = await client.refused(NODES, "QUERY_TOO_COSTLY", {"ids": ids})
    assert error["extensions"]["cost"] == 12
    literal = "{ nodes(ids: [" + ", ".join(json.dumps(id) for id in ids) + "]) { id } }"
    await client.refused(literal, "QUERY_TOO_COSTLY")


@pytest.mark.parametrize(
    ("text", "literal_code"),
    [
        ("nul \x00 inside", "INVALID_INPUT"),
        # The GraphQL spec forbids an unpaired surrogate escape in a literal: the parser says so.
        ("unpaired \ud800 surrogate", "GRAPHQL_PARSE_FAILED"),
    ],
)
async def test_text_postgresql_cannot_store_is_refused_before_anything_runs(
    graphql: GraphQLClient, text: str, literal_code: str
) -> None:
    document = (
        "mutation($input: CreateEnvironmentInput!) { createEnvironment(input: $input) { id } }"
    )
    response = await graphql(document, {"input": {"name": text, "order": 5}})
    assert response.data is None
    assert response.error_codes == ["INVALID_INPUT"]
    assert response.errors[0]["extensions"]["field"] == ["input", "name"]
    escaped = json.dumps(text)  # a literal with the same character, escaped
    literal = await graphql(
        "mutation { createEnvironment(input: {name: " + escaped + ", order: 5}) { id } }"
    )
    assert literal.error_codes == [literal_code]
    environments = await graphql.ok("{ environments { edges { node { name } } } }")
    assert environments["environments"]["edges"] == []


async def test_an_integer_too_long_for_python_is_described_without_python(
    graphql: GraphQLClient,
) -> None:
    digits = "9" * 5000
    for document in (
        "{ issues(first: " + digits + ") { totalCount } }",
        'mutation { createEnvironment(input: {name: "x", order: ' + digits + "}) { id } }",
    ):
        response = await graphql(document)
        assert response.error_codes == ["GRAPHQL_VALIDATION_FAILED"]
        message = response.errors[0]["message"]
        assert message.startswith(
            "Expected value of type 'Int', but encountered an integer with too many digits"
        )
        assert "sys." not in message
        assert "4300" not in message


async def test_bounded_lists_cost_once_per_item_they_may_return(
    db: TortoiseContext, settings: Settings
) -> None:
    client = limited(settings)
    stage_tasks = "query($id: ID!) { node(id: $id) { ... on Stage { tasks%s { id name } } } }"
    missing = {"id": "U3RhZ2U6MQ=="}
    # node + tasks + 20 (the default page) x (id + name) = 1 + 1 + 20 * 2 = 42.
    await client.ok(stage_tasks % "", missing)
    assert client.cost == 42
    await client.ok(stage_tasks % "(first: 3)", missing)
    assert client.cost == 1 + 1 + 3 * 2
    issue_events = "query($id: ID!) { node(id: $id) { ... on Issue { events%s { sequence } } } }"
    await client.ok(issue_events % "(first: 50)", missing)
    assert client.cost == 1 + 1 + 50


async def test_requests_of_one_document_share_one_syntax_tree(graphql: GraphQLClient) -> None:
    document = "query SharedTree { __typename environments(first: 1) { totalCount } }"
    before = _parse_once.cache_info()
    for _ in range(3):
        await graphql.ok(document)
    after = _parse_once.cache_info()

    # Parsed once, then found twice (ten thousand subscribers of a page hold one tree).
    assert (after.misses - before.misses, after.hits - before.hits) == (1, 2)
