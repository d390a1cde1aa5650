"""The compiled read path answers exactly as the resolvers do: same data (key order
included) and same errors, for generated documents over generated data, for every role."""

import gc
import importlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from graphql import GraphQLObjectType, GraphQLSchema, get_named_type, parse
from graphql.execution.values import get_variable_values
from graphql.utilities import get_operation_ast
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conveyor.crypto import PasswordCipher
from conveyor.db.models import Issue, Pipeline, Stage, Task, TaskRun
from conveyor.domain.permissions import Principal, Role
from conveyor.domain.statuses import TaskRunStatus, TaskStatus
from conveyor.graphql.compiled import extension
from conveyor.graphql.compiled.plan import Plan, compile_plan
from conveyor.graphql.context import Context
from conveyor.graphql.schema import ConveyorSchema, build_schema
from conveyor.graphql.types.pagination import encode_cursor
from conveyor.settings import Settings
from tests.api.support import (
    CANCEL_ISSUE,
    Catalog,
    create_catalog,
    create_issue,
    database_task,
    global_id,
    instance_task,
    put_task_in,
    row_key,
)
from tests.conftest import ConveyorProcess, GraphQLClient


@pytest.fixture
def database_url(emptied_module_database_url: str) -> str:
    return emptied_module_database_url


# --- running one document both ways ---------------------------------------------------------


@dataclass
class BothPaths:
    compiled: ConveyorSchema
    resolvers: ConveyorSchema
    settings: Settings

    async def run(
        self, schema: ConveyorSchema, document: str, variables: dict[str, Any], principal: Principal
    ) -> tuple[str, list[dict[str, Any]]]:
        context = Context(
            request=None,
            response=None,
            settings=self.settings,
            cipher=PasswordCipher(self.settings.secret_key or ""),
            principal=principal,
        )
        result = await schema.execute(document, variable_values=variables, context_value=context)
        errors = [dict(error.formatted) for error in result.errors or []]
        # JSON text: equal only with the keys in the same order.
        return json.dumps(result.data), errors

    async def compare(
        self, document: str, variables: dict[str, Any], principal: Principal
    ) -> tuple[str, str]:
        """Both answers, asserted equal; and which path the compiled schema took."""
        before = extension.served[extension.COMPILED]
        compiled = await self.run(self.compiled, document, variables, principal)
        path = extension.COMPILED if extension.served[extension.COMPILED] > before else "resolvers"
        resolved = await self.run(self.resolvers, document, variables, principal)
        assert compiled == resolved, document
        return compiled[0], path


def paths_of(settings: Settings) -> BothPaths:
    """The schemas of `settings` with and without the compiled reads."""
    return BothPaths(
        compiled=build_schema(settings),
        resolvers=build_schema(settings.model_copy(update={"compiled_reads": False})),
        settings=settings,
    )


def generous_paths(settings: Settings, queries: ModuleType) -> BothPaths:
    """Both paths as the benchmark's servers run: a stage's tasks asked for whole, its cost
    allowed."""
    return paths_of(
        settings.model_copy(
            update={"max_page_size": queries.TASKS_PER_STAGE, "max_query_cost": 1_000_000}
        )
    )


@pytest.fixture
def both_paths(settings: Settings) -> BothPaths:
    return paths_of(settings)


# --- the data ---------------------------------------------------------------------------------


@dataclass
class DataSet:
    ids: dict[str, list[str]] = field(default_factory=dict)
    environment_ids: list[str] = field(default_factory=list)
    instance_ids: list[str] = field(default_factory=list)

    def add(self, type_name: str, key: int) -> None:
        self.ids.setdefault(type_name, []).append(global_id(type_name, key))


LATER = datetime.now(UTC) + timedelta(days=3)
EARLIER = datetime(2020, 2, 29, 12, 0, 0, tzinfo=UTC)


async def create_data(graphql: GraphQLClient, catalog: Catalog) -> DataSet:
    """Pipelines of every shape: many stages, every status, nulls, unicode, an empty stage and
    an empty pipeline, runs with JSON, events, and two creators."""
    statuses = list(TaskStatus)
    issues = []
    for number in range(4):
        stages: dict[str, list[dict[str, Any]]] = {
            "dev": [
                database_task(
                    catalog,
                    "SCHEMA_UPDATE",
                    ref=f"a{n}",
                    name=f"tâche {n} ✓" if n % 2 else f"task {n}",
                    statement=f'ALTER TABLE t{n} ADD c int -- "quoted" \\ {number}',
                    blockedBy=[f"a{n - 1}"] if n % 3 == 2 else [],
                )
                for n in range(3 + number)
            ],
            "test": [
                instance_task(catalog, "INSTANCE_SYNC", "beta", name="sync"),
                database_task(catalog, "DATA_UPDATE", "beta", statement="UPDATE t SET x = 1"),
            ],
        }
        if number % 2 == 0:
            stages["prod"] = [
                database_task(catalog, "SCHEMA_UPDATE", statement="ALTER TABLE p ADD d int")
            ]
        issues.append(
            await create_issue(
                graphql,
                catalog,
                stages,
                title=f"Issue {number} «ünïcode» 🚀" if number % 2 else f"Issue {number}",
                actor="ada" if number % 2 else "bob",
            )
        )
    data = DataSet(environment_ids=list(catalog.environments.values()))
    data.instance_ids = list(catalog.instances.values())
    busy_databases: set[int | None] = set()
    for index, task in enumerate(await Task.all().order_by("id")):
        status = statuses[index % len(statuses)]
        if status is TaskStatus.RUNNING and task.database_id in busy_databases:
            status = TaskStatus.PENDING  # one task at a time runs against a database
        elif status is TaskStatus.RUNNING and task.database_id is not None:
            busy_databases.add(task.database_id)
        columns: dict[str, Any] = {}
        if index % 4 == 1:
            columns["not_before"] = LATER if index % 8 == 1 else EARLIER
        if status is TaskStatus.RUNNING and index % 2:
            columns["cancel_requested_at"] = EARLIER
        if status in (TaskStatus.FAILED, TaskStatus.SKIPPED):
            columns["status_reason"] = "ñ reason"
        # Checks of every kind of outcome: pending, failed (some overridden), passed.
        if index % 3 == 1:
            columns["checked_version"] = None
        elif index % 3 == 2:
            columns["blocking_rules"] = ["truncate", "syntax"]
            if index % 6 == 5:
                columns["checks_overridden_version"] = 1
        if index % 5 == 0:
            columns["approved_by"] = "dba"
            columns["approved_at"] = EARLIER + timedelta(microseconds=1234)
        await put_task_in(task.id, status, **columns)
        if status in (TaskStatus.RUNNING, TaskStatus.FAILED, TaskStatus.DONE):
            await TaskRun.create(
                task_id=task.id,
                attempt=1,
                status=TaskRunStatus.FAILED if status is TaskStatus.FAILED else TaskRunStatus.DONE,
                started_at=EARLIER,
                ended_at=None if status is TaskStatus.RUNNING else LATER,
                error_code="42P01" if status is TaskStatus.FAILED else None,
                error_message="relation « t » does not exist"
                if status is TaskStatus.FAILED
                else None,
                result={"rows": 3, "duration_ms": 1.5, "zé": [1, None, "x"]},
                log=[{"statement": "SELECT 1", "notice": None}],
            )
    await graphql.ok(CANCEL_ISSUE, {"id": issues[3].id})
    await graphql.ok(
        "mutation($id: ID!) { reopenIssue(input: {issueId: $id}) { status } }", {"id": issues[3].id}
    )
    await graphql.ok(CANCEL_ISSUE, {"id": issues[2].id})
    # An empty stage, and an issue whose pipeline has no stage: neither can be made through the
    # API, but the reads must not depend on that.
    pipeline_key = row_key(issues[0].pipeline_id)
    await Stage.create(
        pipeline_id=pipeline_key,
        position=99,
        name="empty",
        environment_id=row_key(catalog.environments["test"]),
    )
    bare = await Issue.create(title="no stages", description="", creator="carol")
    await Pipeline.create(issue_id=bare.id, status="OPEN")
    done = await Issue.create(title="done", description="", creator="carol")
    await Pipeline.create(issue_id=done.id, status="DONE")
    # Many stages: more than there are environments, each with tasks of mixed statuses.
    long_pipeline = row_key(issues[1].pipeline_id)
    instance = row_key(catalog.instances["alpha"])
    for position in range(3, 11):
        stage = await Stage.create(
            pipeline_id=long_pipeline,
            position=position,
            name=f"stage {position}",
            environment_id=row_key(list(catalog.environments.values())[position % 3]),
        )
        for task_position in range(position % 3):
            await Task.create(
                pipeline_id=long_pipeline,
                stage_id=stage.id,
                position=task_position,
                name=f"s{position}t{task_position}",
                type="INSTANCE_SYNC",
                status=statuses[(position + task_position) % len(statuses)]
                if position % 2
                else TaskStatus.DONE,
                instance_id=instance,
            )
    for issue in await Issue.all():
        data.add("Issue", issue.id)
    for pipeline in await Pipeline.all():
        data.add("Pipeline", pipeline.id)
    for stage in await Stage.all():
        data.add("Stage", stage.id)
    for task_row in await Task.all():
        data.add("Task", task_row.id)
    for run in await TaskRun.all():
        data.add("TaskRun", run.id)
    data.ids["Environment"] = list(catalog.environments.values())
    data.ids["Instance"] = list(catalog.instances.values())
    data.ids["Database"] = list(catalog.databases.values())
    return data


# --- documents --------------------------------------------------------------------------------

NODE_TYPES = [
    "Environment",
    "Instance",
    "Database",
    "Issue",
    "Pipeline",
    "Stage",
    "Task",
    "TaskRun",
]
CONNECTIONS = ["issues", "pipelines", "environments", "instances", "databases"]
#: Fields the compiler leaves to the resolvers: choosing one makes the document uncovered.
UNCOVERED_FIELDS = {
    ("Instance", "connectionOptions"),
    # Added with the checks (issue 14): derived from the checks' rows, not compiled yet.
    ("Task", "checks"),
    ("Task", "checkStatus"),
    ("Task", "checksOverride"),
    ("Pipeline", "checkSummary"),
    ("Stage", "checkSummary"),
    ("Environment", "reviewPolicy"),
}
#: The objects a waiting reason names, and the derived fields, which the compiler does not
#: fill in below those objects.
WAITING_OBJECTS = {("WaitingReason", "stage"), ("WaitingReason", "blockingTask")}
DERIVED_FIELDS = {
    ("Stage", "status"),
    ("Stage", "taskCounts"),
    ("Task", "waitingReason"),
    ("Task", "availableActions"),
    ("Pipeline", "activeStage"),
}
MAX_DEPTH = 3


class DocumentBuilder:
    """Draws one operation: its text, its variables, and whether every part of it is one the
    compiler covers (so that it must take the compiled path)."""

    def __init__(self, draw: st.DrawFn, data: DataSet, schema: GraphQLSchema) -> None:
        self.draw = draw
        self.data = data
        self.schema = schema
        self.definitions: list[str] = []
        self.values: dict[str, Any] = {}
        self.fragments: list[str] = []
        self.covered = True
        self.below_waiting_object = False

    def variable(
        self, type_text: str, values: st.SearchStrategy[Any], default: str | None = None
    ) -> str:
        name = f"v{len(self.definitions)}"
        with_default = default is not None and self.draw(st.booleans())
        self.definitions.append(f"${name}: {type_text}" + (f" = {default}" if with_default else ""))
        if not with_default or self.draw(st.booleans()):
            self.values[name] = self.draw(values)
        return f"${name}"

    def condition(self) -> str:
        choice = self.draw(st.sampled_from(["true", "false", "variable"]))
        if choice == "variable":
            return self.variable("Boolean!", st.booleans(), default="true")
        return choice

    def directives(self) -> str:
        kind = self.draw(st.sampled_from(["", "", "", "include", "skip"]))
        return f" @{kind}(if: {self.condition()})" if kind else ""

    def alias(self, name: str) -> str:
        return self.draw(st.sampled_from(["", "", "", f"{name}A: ", f"{name}B: "]))

    def page(self, argument: str = "first") -> str:
        choice = self.draw(st.sampled_from(["none", "literal", "variable", "too large"]))
        if choice == "none":
            return ""
        if choice == "too large":
            self.covered = False
            return f"{argument}: 101"
        if choice == "literal":
            return f"{argument}: {self.draw(st.integers(0, 4))}"
        return f"{argument}: " + self.variable(
            "Int", st.one_of(st.none(), st.integers(0, 4)), default="2"
        )

    def arguments(self, type_name: str, name: str) -> str:
        parts = []
        if (type_name, name) in (("Stage", "tasks"), ("Issue", "events")):
            parts.append(self.page())
            if type_name == "Stage" and self.draw(st.integers(0, 9)) == 0:
                self.covered = False
                parts.append(f'after: "{self.draw(st.sampled_from(self.data.ids["Task"]))}"')
            if type_name == "Issue" and self.draw(st.booleans()):
                parts.append(f"afterSequence: {self.draw(st.integers(0, 40))}")
        text = ", ".join(part for part in parts if part)
        return f"({text})" if text else ""

    def selection(self, type_name: str, depth: int) -> str:
        object_type = self.schema.type_map[type_name]
        assert isinstance(object_type, GraphQLObjectType)
        names = [*object_type.fields, "__typename"]
        chosen = self.draw(st.lists(st.sampled_from(names), min_size=1, max_size=6))
        parts = [self.field(object_type, name, depth) for name in chosen]
        if len(parts) > 1 and self.draw(st.booleans()):
            split = self.draw(st.integers(1, len(parts) - 1))
            inner = " ".join(parts[:split])
            kind = self.draw(st.sampled_from(["inline", "untyped", "named"]))
            if kind == "inline":
                wrapped = f"... on {type_name}{self.directives()} {{ {inner} }}"
            elif kind == "untyped":
                wrapped = f"...{self.directives()} {{ {inner} }}"
            else:
                fragment = f"F{len(self.fragments)}"
                self.fragments.append(f"fragment {fragment} on {type_name} {{ {inner} }}")
                wrapped = f"...{fragment}{self.directives()}"
            position = self.draw(st.integers(0, len(parts) - split))
            rest = parts[split:]
            parts = [*rest[:position], wrapped, *rest[position:]]
        return " ".join(parts)

    def field(self, object_type: GraphQLObjectType, name: str, depth: int) -> str:
        if name == "__typename":
            return f"{self.alias(name)}__typename{self.directives()}"
        if (object_type.name, name) in UNCOVERED_FIELDS or (
            self.below_waiting_object and (object_type.name, name) in DERIVED_FIELDS
        ):
            self.covered = False
        named = get_named_type(object_type.fields[name].type)
        head = (
            f"{self.alias(name)}{name}{self.arguments(object_type.name, name)}{self.directives()}"
        )
        if not isinstance(named, GraphQLObjectType):
            return head
        if depth >= MAX_DEPTH:
            return "__typename"
        outer = self.below_waiting_object
        self.below_waiting_object = outer or (object_type.name, name) in WAITING_OBJECTS
        selection = self.selection(named.name, depth + 1)
        self.below_waiting_object = outer
        return f"{head} {{ {selection} }}"

    def node_id(self) -> str:
        kind = self.draw(st.sampled_from([*NODE_TYPES, *NODE_TYPES, "bogus"]))
        if kind != "bogus":
            return self.draw(st.sampled_from(self.data.ids[kind]))
        bogus = self.draw(
            st.sampled_from(
                [
                    global_id("Task", 999_999),
                    global_id("ApiToken", 1),
                    "bm90IGFuIGlk",
                    "%%%",
                    global_id("Task", 0),
                ]
            )
        )
        if bogus != global_id("Task", 999_999):
            self.covered = False
        return bogus

    def node_selection(self) -> str:
        parts = self.draw(st.lists(st.sampled_from(["id", "__typename"]), max_size=2))
        for type_name in self.draw(st.lists(st.sampled_from(NODE_TYPES), min_size=1, max_size=3)):
            parts.append(f"... on {type_name} {{ {self.selection(type_name, 1)} }}")
        return " ".join(parts)

    def root(self, name: str) -> str:
        alias = self.alias(name)
        if name == "__typename":
            return f"{alias}__typename"
        if name == "node":
            value = self.variable("ID!", st.just(self.node_id()))
            return f"{alias}node(id: {value}) {{ {self.node_selection()} }}"
        if name == "nodes":
            ids = [self.node_id() for _ in range(self.draw(st.integers(0, 3)))]
            value = self.variable("[ID!]!", st.just(ids))
            return f"{alias}nodes(ids: {value}) {{ {self.node_selection()} }}"
        arguments = [self.page()]
        if name in ("issues", "pipelines"):
            status = self.draw(st.sampled_from(["", "OPEN", "CANCELED", "DONE"]))
            arguments.append(f"status: {status}" if status else "")
        if name != "environments" and self.draw(st.booleans()):
            if self.draw(st.integers(0, 5)) == 0:
                self.covered = False
                arguments.append(f'environmentId: "{self.data.ids["Task"][0]}"')
            else:
                arguments.append(
                    f'environmentId: "{self.draw(st.sampled_from(self.data.environment_ids))}"'
                )
        if name == "databases" and self.draw(st.booleans()):
            arguments.append(f'instanceId: "{self.draw(st.sampled_from(self.data.instance_ids))}"')
        if self.draw(st.integers(0, 4)) == 0:
            key = self.draw(st.integers(0, 30))
            cursor = encode_cursor(key) if self.draw(st.booleans()) else "bm9wZQ=="
            self.covered = self.covered and cursor != "bm9wZQ=="
            arguments.append(f'after: "{cursor}"')
        text = ", ".join(argument for argument in arguments if argument)
        model = {
            "issues": "Issue",
            "pipelines": "Pipeline",
            "environments": "Environment",
            "instances": "Instance",
            "databases": "Database",
        }[name]
        parts = []
        for part in self.draw(
            st.lists(
                st.sampled_from(["totalCount", "pageInfo", "edges", "__typename"]),
                min_size=1,
                max_size=4,
            )
        ):
            if part == "pageInfo":
                infos = self.draw(
                    st.lists(
                        st.sampled_from(
                            [
                                "hasNextPage",
                                "hasPreviousPage",
                                "startCursor",
                                "endCursor",
                                "__typename",
                            ]
                        ),
                        min_size=1,
                        max_size=4,
                    )
                )
                parts.append(f"{self.alias(part)}pageInfo {{ {' '.join(infos)} }}")
            elif part == "edges":
                edge = self.draw(
                    st.lists(
                        st.sampled_from(["cursor", "node", "__typename"]), min_size=1, max_size=3
                    )
                )
                inner = " ".join(
                    f"node {{ {self.selection(model, 1)} }}" if each == "node" else each
                    for each in edge
                )
                parts.append(f"{self.alias(part)}edges {{ {inner} }}")
            else:
                parts.append(f"{self.alias(part)}{part}")
        return f"{alias}{name}{'(' + text + ')' if text else ''} {{ {' '.join(parts)} }}"

    def document(self) -> str:
        roots = self.draw(
            st.lists(
                st.sampled_from(["node", "nodes", *CONNECTIONS, "__typename"]),
                min_size=1,
                max_size=3,
            )
        )
        body = " ".join(self.root(name) for name in roots)
        definitions = f"({', '.join(self.definitions)})" if self.definitions else ""
        return " ".join([f"query Generated{definitions} {{ {body} }}", *self.fragments])


@dataclass(frozen=True)
class Drawn:
    document: str
    variables: dict[str, Any]
    covered: bool


@st.composite
def documents(draw: st.DrawFn, data: DataSet, schema: GraphQLSchema) -> Drawn:
    builder = DocumentBuilder(draw, data, schema)
    document = builder.document()
    return Drawn(document, builder.values, builder.covered)


principals = st.builds(
    Principal, actor=st.sampled_from(["ada", "bob", "carol"]), role=st.sampled_from(list(Role))
)


@pytest.fixture
async def data_set(graphql: GraphQLClient) -> DataSet:
    return await create_data(graphql, await create_catalog(graphql))


@pytest.fixture
def garbage_collected() -> Iterator[None]:
    """Collect the test's garbage before it ends, while its warning filters still apply."""
    yield
    gc.collect()


# When a field error nulls a list, graphql-core drops the coroutines of the list's other items
# unawaited: the resolver path's behaviour on such documents (a page too large inside a list),
# reported when the garbage collector finds them.
@pytest.mark.usefixtures("garbage_collected")
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <coroutine object GraphQLCoreConverter.from_resolver"
    ":pytest.PytestUnraisableExceptionWarning"
)
@settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(drawing=st.data())
async def test_generated_documents_answer_alike(
    both_paths: BothPaths, data_set: DataSet, drawing: st.DataObject
) -> None:
    drawn = drawing.draw(documents(data_set, both_paths.compiled._schema))
    principal = drawing.draw(principals)

    data, path = await both_paths.compare(drawn.document, drawn.variables, principal)

    if drawn.covered and data != "null":
        assert path == extension.COMPILED, drawn.document


# --- the benchmark's documents, the pipeline page, the fallback, HTTP -------------------------


def bench_queries() -> ModuleType:
    """bench/tree_queries.py: the documents the read benchmark sends."""
    bench = Path(__file__).resolve().parents[2] / "bench"
    with pytest.MonkeyPatch.context() as patch:
        # Its sibling modules (tree_seed) import as they do when a benchmark script runs.
        patch.syspath_prepend(str(bench))
        return importlib.import_module("tree_queries")


async def test_the_benchmark_reads_and_the_pipeline_page_are_compiled(
    graphql: GraphQLClient, settings: Settings
) -> None:
    queries = bench_queries()
    catalog = await create_catalog(graphql)
    small = [
        await create_issue(
            graphql,
            catalog,
            {
                environment: [database_task(catalog, "SCHEMA_UPDATE", statement="SELECT 1")] * 5
                for environment in ("dev", "test")
            },
            title=f"small {number}",
        )
        for number in range(queries.PAGE_SIZE + 1)
    ]
    large = await create_issue(
        graphql,
        catalog,
        {
            environment: [
                database_task(catalog, "DATA_UPDATE", statement=f"UPDATE t SET x = {n}")
                for n in range(120)
            ]
            for environment in ("dev", "test", "prod")
        },
        title="large",
    )
    for index, task in enumerate(await Task.filter(stage__position=0).order_by("id")):
        await put_task_in(task.id, TaskStatus.DONE if index % 3 else TaskStatus.SKIPPED)
    paths = generous_paths(settings, queries)
    admin = Principal(actor="ada", role=Role.ADMIN)
    cases = [
        (queries.CONVEYOR_ONE, {"id": small[0].pipeline_id}),
        (queries.CONVEYOR_PAGE, {"first": queries.PAGE_SIZE}),
        (queries.CONVEYOR_ONE, {"id": large.pipeline_id}),
        (queries.CONVEYOR_PIPELINE_PAGE, {"id": small[0].pipeline_id}),
        (queries.CONVEYOR_PIPELINE_PAGE, {"id": large.pipeline_id}),
    ]
    for document, variables in cases:
        data, path = await paths.compare(document, variables, admin)

        assert path == extension.COMPILED, document
        assert '"tasks": [{' in data
    # Nothing runs: the first pending task of the large pipeline's second stage may start, and
    # the others wait for the database it will hold.
    first = await Task.filter(stage__position=1, pipeline_id=row_key(large.pipeline_id)).first()
    assert first is not None
    data, path = await paths.compare(
        queries.CONVEYOR_PIPELINE_PAGE, {"id": large.pipeline_id}, admin
    )
    assert path == extension.COMPILED
    assert json.loads(data)["node"]["stages"][1]["tasks"][1]["waitingReason"] == {
        "kind": "DATABASE_BUSY",
        "message": f"database busy with task {first.id}",
        "stage": None,
        "blockingTask": {"id": global_id("Task", first.id), "name": first.name},
    }
    # Another task runs against that database: the others wait for it.
    busy = await Task.filter(stage__position=1, pipeline_id=row_key(large.pipeline_id)).last()
    assert busy is not None
    await put_task_in(busy.id, TaskStatus.RUNNING)
    data, _ = await paths.compare(queries.CONVEYOR_PIPELINE_PAGE, {"id": large.pipeline_id}, admin)
    page = json.loads(data)["node"]
    assert page["activeStage"]["id"] == page["stages"][1]["id"]
    # The page's waiting reasons name what is waited for.
    assert {
        "kind": "DATABASE_BUSY",
        "message": f"database busy with task {busy.id}",
        "stage": None,
        "blockingTask": {"id": global_id("Task", busy.id), "name": busy.name},
    } in [task["waitingReason"] for task in page["stages"][1]["tasks"]]
    assert [stage["taskCounts"]["total"] for stage in page["stages"]] == [120, 120, 120]
    # prod is MANUAL: its tasks wait for approval before they wait for the earlier stage.
    assert {task["waitingReason"]["kind"] for task in page["stages"][2]["tasks"]} == {"APPROVAL"}


#: Texts a client may write that look like the spliced form's markers, or end its facts.
MARKER_LIKE = [
    '{"#w0" : [1, 2]}',
    '", "#f0" : [3, [1]], "x" : "',
    ']}{"#a1" : ["SCHEMA_UPDATE"]}',
    '{"#s0" : ["PENDING"]} \\" ]} \\',
    '{"#v0" : [2, []]}ü\u2028',
]


def plan_of(schema: ConveyorSchema, document: str, variables: dict[str, Any]) -> Plan:
    graphql_schema = schema._schema
    parsed = parse(document)
    operation = get_operation_ast(parsed)
    assert operation is not None
    coerced = get_variable_values(graphql_schema, operation.variable_definitions or (), variables)
    assert not isinstance(coerced, list)
    return compile_plan(graphql_schema, tuple(parsed.definitions), operation, coerced)


async def test_the_spliced_form_takes_no_client_text_for_a_marker(
    graphql: GraphQLClient, settings: Settings
) -> None:
    catalog = await create_catalog(graphql)
    created = await create_issue(
        graphql,
        catalog,
        {
            environment: [
                database_task(catalog, "SCHEMA_UPDATE", statement=f"SELECT {n}") for n in range(3)
            ]
            for environment in ("dev", "test", "prod")
        },
        actor=MARKER_LIKE[1],
    )
    pipeline_key = row_key(created.pipeline_id)
    tasks = await Task.filter(pipeline_id=pipeline_key).order_by("id")
    for index, task in enumerate(tasks):
        await Task.filter(id=task.id).update(name=MARKER_LIKE[index % len(MARKER_LIKE)])
    for index, stage in enumerate(await Stage.filter(pipeline_id=pipeline_key).order_by("id")):
        await Stage.filter(id=stage.id).update(name=MARKER_LIKE[-1 - index])
    await put_task_in(tasks[0].id, TaskStatus.FAILED)
    await TaskRun.create(
        task_id=tasks[0].id,
        attempt=1,
        status=TaskRunStatus.FAILED,
        started_at=EARLIER,
        error_message=MARKER_LIKE[0],
        result={"#w0": [1, 2], '{"#a0" : [': MARKER_LIKE[2]},
    )
    queries = bench_queries()
    paths = generous_paths(settings, queries)
    page = queries.CONVEYOR_PIPELINE_PAGE
    with_json = page.replace("runs { attempt", "runs { result attempt")
    variables = {"id": created.pipeline_id}
    assert plan_of(paths.compiled, page, variables).spliced
    # A JSON column's keys are a client's: such a read fills its derived fields in the
    # parsed tree instead.
    assert not plan_of(paths.compiled, with_json, variables).spliced
    for document in (page, with_json):
        for role in Role:
            data, path = await paths.compare(
                document, variables, Principal(actor=MARKER_LIKE[1], role=role)
            )

            assert path == extension.COMPILED
            node = json.loads(data)["node"]
            assert node["stages"][0]["tasks"][0]["waitingReason"]["kind"] == "TASK_FAILED"
            assert node["stages"][2]["name"] == MARKER_LIKE[-3]


async def test_a_document_with_a_field_not_covered_falls_back_whole(
    both_paths: BothPaths, data_set: DataSet
) -> None:
    document = """
    query($id: ID!) {
      viewer { role }
      node(id: $id) { ... on Instance { name connectionOptions { name } } }
    }
    """
    before = dict(extension.served)

    data, path = await both_paths.compare(
        document, {"id": data_set.ids["Instance"][0]}, Principal(actor="ada", role=Role.VIEWER)
    )

    assert path == "resolvers"
    assert extension.served[extension.RESOLVERS] == before.get(extension.RESOLVERS, 0) + 1
    assert json.loads(data) == {
        "viewer": {"role": "VIEWER"},
        "node": {"name": "alpha", "connectionOptions": []},
    }
    # Without the uncovered fields, the same read is compiled.
    _, path = await both_paths.compare(
        "query($id: ID!) { node(id: $id) { ... on Instance { name } } }",
        {"id": data_set.ids["Instance"][0]},
        Principal(actor="ada", role=Role.VIEWER),
    )
    assert path == extension.COMPILED


def test_over_http_the_compiled_json_is_sent_as_postgresql_built_it(
    live_server: ConveyorProcess,
) -> None:
    document = "{ environments { totalCount edges { node { name } } } }"

    response = httpx.post(
        f"{live_server.url}/graphql",
        json={"query": document},
        headers={"Authorization": f"Bearer {live_server.token}"},
        timeout=30,
    )

    assert response.status_code == 200
    # json_build_object's spacing: PostgreSQL's text, not a re-encoding.
    assert response.content == b'{"data":{"environments" : {"totalCount" : 0, "edges" : []}}}'
