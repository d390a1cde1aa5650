"""A live message rendered by the compiled read path equals the resolvers' rendering of it:
two real servers on one database, one of them with the compiled reads off, subscribed with
the same generated `pipelineActivity` selections and sent the same events."""

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from graphql import parse, validate
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from tortoise.transactions import in_transaction

from conveyor.db.events import NewEvent, record_events
from conveyor.db.models import Pipeline, Stage, Task
from conveyor.domain.statuses import EventKind
from conveyor.graphql.schema import schema
from conveyor.settings import Settings
from tests.api.support import create_catalog, global_id
from tests.api.test_compiled_differential import DataSet, DocumentBuilder, Drawn, create_data
from tests.conftest import ConveyorProcess, GraphQLClient, conveyor_env, run_conveyor, start_server
from tests.integration.subscribers import LiveSubscription, subscribed, websocket_url
from tests.integration.test_pipeline_activity import ACTIVITY


@pytest.fixture
def servers(settings: Settings, tmp_path: Path) -> Iterator[dict[str, ConveyorProcess]]:
    """Two servers on the test's database, with and without the compiled reads; no worker,
    so that nothing changes the rows between their renderings."""
    env = conveyor_env(settings, CONVEYOR_RUN_WORKER="false")
    started: dict[str, ConveyorProcess] = {}
    try:
        started["compiled"] = start_server(env, tmp_path / "compiled.log")
        started["resolvers"] = start_server(
            {**env, "CONVEYOR_COMPILED_READS": "false"}, tmp_path / "resolvers.log"
        )
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture
def developer_token(settings: Settings) -> str:
    created = run_conveyor(
        ["token", "create", "--actor", "ada", "--role", "DEVELOPER"], conveyor_env(settings)
    )
    created.check_returncode()
    return created.stdout.strip()


@pytest.fixture
async def data_set(graphql: GraphQLClient) -> DataSet:
    return await create_data(graphql, await create_catalog(graphql))


_COMPILED_RENDERS = re.compile(r'^conveyor_live_renders_total\{path="compiled"\} (\S+)$', re.M)


async def compiled_renders(server: ConveyorProcess) -> float:
    async with httpx.AsyncClient() as client:
        answer = await client.get(f"{server.url}/metrics", headers=server.auth)
    found = _COMPILED_RENDERS.search(answer.text)
    assert found is not None, "the renders are counted"
    return float(found.group(1))


async def events_of(pipeline: Pipeline, *, probe: bool = False) -> list[int]:
    """Events of every shape on `pipeline`, in one transaction: of a task, of a stage, of the
    pipeline, with and without a reason and detail."""
    task = await Task.filter(pipeline_id=pipeline.id).order_by("id").first()
    stage = await Stage.filter(pipeline_id=pipeline.id).order_by("position").first()
    of_pipeline = partial(NewEvent, issue_id=pipeline.issue_id, pipeline_id=pipeline.id)
    events = [of_pipeline(EventKind.PIPELINE_STATUS_CHANGED, old_status="OPEN", new_status="OPEN")]
    if not probe and task is not None and stage is not None:
        of_task = partial(of_pipeline, stage_id=stage.id, task_id=task.id)
        events += [
            of_task(
                EventKind.TASK_STATUS_CHANGED,
                old_status="RUNNING",
                new_status="FAILED",
                detail={"reason": 'relation « t » "missing"'},
            ),
            of_task(EventKind.TASK_EDITED, detail={"statement": "SELECT 1"}),
            of_task(
                EventKind.TASK_LOG,
                detail={"entries": [{"at": "now", "kind": "notice", "text": "ü"}]},
            ),
            of_pipeline(
                EventKind.STAGE_STATUS_CHANGED,
                stage_id=stage.id,
                old_status="RUNNING",
                new_status="FAILED",
            ),
        ]
    async with in_transaction() as connection:
        return await record_events(connection, "tester", events)


@contextlib.asynccontextmanager
async def live_on_both(
    servers: dict[str, ConveyorProcess], document: str, variables: dict[str, Any], token: str
) -> AsyncIterator[dict[str, LiveSubscription]]:
    async with contextlib.AsyncExitStack() as stack:
        yield {
            name: await stack.enter_async_context(
                subscribed(websocket_url(server), document, variables, token=token)
            )
            for name, server in servers.items()
        }


async def until_live(subscriptions: dict[str, LiveSubscription], pipeline: Pipeline) -> None:
    """Probe events until each subscription has had one: registered, and, once its first
    live event is out, served by its shared stream."""
    waiting = set(subscriptions)
    while waiting:
        await events_of(pipeline, probe=True)
        for name in list(waiting):
            with contextlib.suppress(TimeoutError):
                # Not there yet: probe again rather than wait for a message that will not come.
                await asyncio.wait_for(subscriptions[name].next(), 1.0)
                waiting.discard(name)
    # The probes that reached one subscription before the other was registered.
    for live in subscriptions.values():
        with contextlib.suppress(TimeoutError):
            while True:
                await asyncio.wait_for(live.next(), 0.3)


@st.composite
def subscription_documents(draw: st.DrawFn, data: DataSet) -> Drawn:
    """A `pipelineActivity` subscription with a generated selection of its events."""
    builder = DocumentBuilder(draw, data, schema._schema)
    selection = builder.selection("Event", 0)
    definitions = ", ".join(["$pipelineId: ID!", *builder.definitions])
    document = (
        f"subscription({definitions}) {{ {builder.alias('pipelineActivity')}"
        f"pipelineActivity(pipelineId: $pipelineId) {{ {selection} }} }} "
        + " ".join(builder.fragments)
    )
    # A document graphql-core refuses (a variable left unused where a field was cut at the
    # depth limit) is refused by both servers alike, before any rendering.
    assume(not validate(schema._schema, parse(document)))
    return Drawn(document, builder.values, builder.covered)


async def render_on_both(
    servers: dict[str, ConveyorProcess],
    document: str,
    variables: dict[str, Any],
    token: str,
    pipeline: Pipeline,
) -> bool:
    """Subscribe on both servers, write events of every shape on `pipeline`, and assert both
    sent the same messages; whether the compiled server rendered some by the compiled path."""
    before = await compiled_renders(servers["compiled"])
    variables = {**variables, "pipelineId": global_id("Pipeline", pipeline.id)}
    async with live_on_both(servers, document, variables, token) as subscriptions:
        await until_live(subscriptions, pipeline)
        sequences = await events_of(pipeline)
        messages = {name: await live.take(len(sequences)) for name, live in subscriptions.items()}

    # JSON text: equal only with the keys in the same order.
    assert json.dumps(messages["compiled"]) == json.dumps(messages["resolvers"]), document
    return await compiled_renders(servers["compiled"]) > before


async def test_a_pipeline_page_s_messages_are_compiled_and_render_alike(
    servers: dict[str, ConveyorProcess], developer_token: str, data_set: DataSet
) -> None:
    # With `detail`, a JSON column, the derived fields are filled into the parsed tree;
    # without it they are spliced into PostgreSQL's text (db.compiled_reads.Statement).
    without_detail = ACTIVITY.replace(" reason detail\n", " reason\n")
    assert without_detail != ACTIVITY
    for pipeline in await Pipeline.filter(tasks__id__isnull=False).distinct().order_by("id"):
        for token in (servers["compiled"].token, developer_token):
            for document in (ACTIVITY, without_detail):
                assert await render_on_both(servers, document, {}, token, pipeline)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(drawing=st.data())
async def test_generated_selections_render_alike(
    servers: dict[str, ConveyorProcess],
    developer_token: str,
    data_set: DataSet,
    drawing: st.DataObject,
) -> None:
    drawn = drawing.draw(subscription_documents(data_set))
    pipeline = drawing.draw(st.sampled_from(await Pipeline.all().order_by("id")))
    token = drawing.draw(st.sampled_from([servers["compiled"].token, developer_token]))

    compiled = await render_on_both(servers, drawn.document, drawn.variables, token, pipeline)

    if drawn.covered:
        assert compiled, drawn.document
