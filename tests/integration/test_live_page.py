"""A pipeline page as a frontend builds one: a GraphQL client (gql) with a normalized cache
(objects by __typename and id, the newer copy by `lastSequence` kept), fed only by
`pipelineActivity` messages after its first query, with mutation answers arriving late.
At every quiet point its state must equal a fresh query's."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from gql import Client, GraphQLRequest
from gql.transport.httpx import HTTPXAsyncTransport
from gql.transport.websockets import WebsocketsTransport

from conveyor.db.events import latest_event_sequence
from tests.conftest import ConveyorProcess, GraphQLClient
from tests.integration.conftest import build_engine_catalog
from tests.integration.subscribers import MESSAGE_WAIT_SECONDS, bearer, websocket_url

TASK_FIELDS = """
fragment TaskFields on Task {
  __typename id name status version statement statusReason approvedBy cancelRequested
  lastSequence availableActions waitingReason { __typename kind message }
}
"""
PIPELINE_FIELDS = """
fragment PipelineFields on Pipeline {
  __typename id status lastSequence activeStage { __typename id }
  stages {
    __typename id name status lastSequence
    taskCounts { __typename pendingApproval pending running done failed canceled skipped total }
    tasks { ...TaskFields }
  }
}
"""
PAGE = (
    """
query Page($id: ID!) { node(id: $id) { ...PipelineFields } }
"""
    + PIPELINE_FIELDS
    + TASK_FIELDS
)
#: The selection the README recommends to a page of a small pipeline: the changed task, and
#: the whole pipeline's derived state with it.
ACTIVITY = (
    """
subscription Activity($pipelineId: ID!, $after: Int) {
  pipelineActivity(pipelineId: $pipelineId, after: $after) {
    __typename id sequence kind
    task { ...TaskFields }
    pipeline { ...PipelineFields }
  }
}
"""
    + PIPELINE_FIELDS
    + TASK_FIELDS
)
CREATE_ISSUE = """
mutation($input: CreateIssueInput!) {
  createIssue(input: $input) { pipeline { id stages { id tasks { id name } } } }
}
"""


class NormalizedCache:
    """Apollo's InMemoryCache in miniature: each object by `__typename:id`, fields merged,
    and (the typePolicy the README gives) an object copy with a smaller `lastSequence` than
    the one held is ignored."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}

    def write(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.write(item) for item in value]
        if not isinstance(value, dict):
            return value
        fields = {name: self.write(field) for name, field in value.items()}
        if "id" not in value:
            return fields
        key = f"{value['__typename']}:{value['id']}"
        held = self.objects.setdefault(key, {})
        if held.get("lastSequence", -1) <= fields.get("lastSequence", -1):
            held.update(fields)
        return {"__ref": key}

    def read(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.read(item) for item in value]
        if isinstance(value, dict):
            if "__ref" in value:
                return self.read(self.objects[value["__ref"]])
            return {name: self.read(field) for name, field in value.items()}
        return value


class Page:
    def __init__(self, server: ConveyorProcess, pipeline_id: str) -> None:
        self.pipeline_id = pipeline_id
        self.cache = NormalizedCache()
        self.late_answers: list[dict[str, Any]] = []
        self.http = Client(
            transport=HTTPXAsyncTransport(url=f"{server.url}/graphql", headers=bearer(server.token))
        )
        self.messages = 0

    async def fresh(self) -> dict[str, Any]:
        """The pipeline as a fresh query shows it, through a cache of its own."""
        async with self.http as session:
            data = await session.execute(
                GraphQLRequest(PAGE, variable_values={"id": self.pipeline_id})
            )
        cache = NormalizedCache()
        return cache.read(cache.write(data["node"]))  # type: ignore[no-any-return]

    def shown(self) -> dict[str, Any]:
        return self.cache.read({"__ref": f"Pipeline:{self.pipeline_id}"})  # type: ignore[no-any-return]

    async def act(self, document: str, variables: dict[str, Any]) -> None:
        """A mutation whose answer the page applies only later, after newer messages."""
        async with self.http as session:
            data = await session.execute(GraphQLRequest(document, variable_values=variables))
        self.late_answers.append(data)


async def quiet(page: Page, until: Callable[[dict[str, Any]], bool]) -> None:
    """Wait until the page shows what `until` wants and has every event of its pipeline."""
    deadline = asyncio.get_running_loop().time() + MESSAGE_WAIT_SECONDS
    while True:
        shown = page.shown()
        if until(shown) and shown["lastSequence"] == await latest_event_sequence():
            return
        assert asyncio.get_running_loop().time() < deadline, f"the page never showed it: {shown}"
        await asyncio.sleep(0.05)


def task_named(shown: dict[str, Any], name: str) -> dict[str, Any]:
    return next(
        task for stage in shown["stages"] for task in stage["tasks"] if task["name"] == name
    )


def status_of(name: str, status: str) -> Callable[[dict[str, Any]], bool]:
    return lambda shown: task_named(shown, name)["status"] == status


@contextlib.asynccontextmanager
async def live_page(server: ConveyorProcess, pipeline_id: str) -> AsyncIterator[Page]:
    """A page that loads the pipeline once, then applies only subscription messages."""
    page = Page(server, pipeline_id)
    first = await page.fresh()
    page.cache.write(first)
    transport = WebsocketsTransport(url=websocket_url(server), init_payload=bearer(server.token))
    async with Client(transport=transport) as session:
        request = GraphQLRequest(
            ACTIVITY, variable_values={"pipelineId": pipeline_id, "after": first["lastSequence"]}
        )

        async def apply() -> None:
            async for message in session.subscribe(request):
                page.cache.write(message["pipelineActivity"])
                page.messages += 1

        applying = asyncio.create_task(apply())
        try:
            yield page
        finally:
            applying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await applying


async def test_a_page_fed_only_by_messages_matches_a_fresh_query_at_every_quiet_point(
    graphql: GraphQLClient,
    live_server: ConveyorProcess,
    server_url: str,
    target_databases: Callable[[], Awaitable[str]],
) -> None:
    catalog = await build_engine_catalog(graphql, server_url, {"main": await target_databases()})

    def task(name: str, statement: str, task_type: str = "DATA_UPDATE") -> dict[str, Any]:
        return {
            "type": task_type,
            "name": name,
            "instanceId": catalog.instance,
            "databaseId": catalog.databases["main"],
            "statement": statement,
        }

    created = await graphql.ok(
        CREATE_ISSUE,
        {
            "input": {
                "title": "page",
                "stages": [
                    {
                        "environmentId": catalog.environments["test"],
                        "tasks": [
                            task("create", "CREATE TABLE t (id int)", "SCHEMA_UPDATE"),
                            task("insert", "INSERT INTO missing VALUES (1)"),
                        ],
                    },
                    {
                        "environmentId": catalog.environments["prod"],
                        "tasks": [
                            task("sleep", "SELECT pg_sleep(60)"),
                            task("unneeded", "SELECT 4"),
                            task("last", "SELECT 5"),
                        ],
                    },
                ],
            }
        },
    )
    pipeline = created["createIssue"]["pipeline"]
    ids = {task["name"]: task["id"] for stage in pipeline["stages"] for task in stage["tasks"]}
    checkpoints = 0

    async with live_page(live_server, pipeline["id"]) as page:

        async def checkpoint(until: Callable[[dict[str, Any]], bool]) -> None:
            nonlocal checkpoints
            # A running task still writes its log lines: a quiet point is one where the fresh
            # read has no event the page has not had yet.
            while True:
                await quiet(page, until)
                fresh = await page.fresh()
                if fresh["lastSequence"] == page.shown()["lastSequence"]:
                    break
            # The answers of the mutations made since the last quiet point arrive now,
            # after the messages of what happened next: they must change nothing.
            for answer in page.late_answers:
                page.cache.write(answer)
            page.late_answers.clear()
            assert page.shown() == fresh
            checkpoints += 1

        # The automatic stage runs at once: one task succeeds, the other fails.
        await checkpoint(lambda shown: shown["stages"][0]["status"] == "FAILED")
        # An edit of the failed task sends it back to its gate, and it runs again.
        await page.act(
            "mutation($i: UpdateTaskStatementInput!) { updateTaskStatement(input: $i) "
            "{ ...TaskFields } }" + TASK_FIELDS,
            {"i": {"taskId": ids["insert"], "statement": "INSERT INTO t VALUES (1)"}},
        )
        await checkpoint(status_of("insert", "DONE"))
        # Approved, the sleeper runs; canceled, it stops.
        await page.act(
            "mutation($i: TaskActionInput!) { approveTask(input: $i) { ...TaskFields } }"
            + TASK_FIELDS,
            {"i": {"taskId": ids["sleep"]}},
        )
        await checkpoint(status_of("sleep", "RUNNING"))
        await page.act(
            "mutation($i: TaskActionInput!) { cancelTask(input: $i) { ...TaskFields } }"
            + TASK_FIELDS,
            {"i": {"taskId": ids["sleep"]}},
        )
        await checkpoint(status_of("sleep", "CANCELED"))
        # Retried, it waits for approval again; edited, approved, it runs and finishes.
        for document, variables in (
            ("retryTask(input: $i)", {"taskId": ids["sleep"]}),
            ("updateTaskStatement(input: $i)", {"taskId": ids["sleep"], "statement": "SELECT 3"}),
        ):
            input_type = (
                "UpdateTaskStatementInput" if "statement" in variables else "TaskActionInput"
            )
            await page.act(
                f"mutation($i: {input_type}!) {{ {document} {{ ...TaskFields }} }}" + TASK_FIELDS,
                {"i": variables},
            )
        await checkpoint(status_of("sleep", "PENDING_APPROVAL"))
        await page.act(
            "mutation($i: SkipTaskInput!) { skipTask(input: $i) { ...TaskFields } }" + TASK_FIELDS,
            {"i": {"taskId": ids["unneeded"], "reason": "covered by another change"}},
        )
        await page.act(
            "mutation($i: StageActionInput!) { approveStage(input: $i) { __typename id } }",
            {"i": {"stageId": pipeline["stages"][1]["id"]}},
        )
        await checkpoint(lambda shown: shown["status"] == "DONE")
        shown = page.shown()

    assert checkpoints == 6
    assert page.messages > 20
    assert task_named(shown, "unneeded")["statusReason"] == "covered by another change"
    assert [task["status"] for stage in shown["stages"] for task in stage["tasks"]] == [
        "DONE",
        "DONE",
        "DONE",
        "SKIPPED",
        "DONE",
    ]
