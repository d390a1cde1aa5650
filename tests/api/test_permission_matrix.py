"""Acceptance: a role, action and environment matrix covers every mutation and subscription.

The policy is written out below as tables, one cell per mutation, environment and principal.
Each cell starts from an empty database, then a state where the mutation is allowed
state-wise, so that only who asks decides. Allowed: no error, the database changed, and every
new event names the principal. Forbidden: FORBIDDEN, and every row of every table as it was.
Before acting on a task, the principal reads its availableActions: exactly what the tables
allow in its state.
"""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import pytest
from graphql import GraphQLEnumType, GraphQLField, GraphQLObjectType
from strawberry.types import ExecutionResult
from tortoise.connection import get_connection

from conveyor.db.catalog import (
    EnvironmentChanges,
    InstanceChanges,
    register_database,
    save_environment,
    save_instance,
)
from conveyor.db.checks import CheckOutcome, record_checks
from conveyor.db.models import Event
from conveyor.domain.check_review import CheckSource
from conveyor.domain.checks import CheckLevel, Finding
from conveyor.domain.permissions import SYSTEM, ApprovalRules, Principal, Role
from conveyor.domain.statuses import ApprovalPolicy, Engine, TaskStatus
from conveyor.domain.targets import InstanceNetworks
from conveyor.events.hub import EventHub
from conveyor.graphql.context import Context
from conveyor.graphql.schema import schema
from conveyor.runner.own_database import OwnDatabaseCheck
from tests.api.support import (
    CANCEL_ISSUE,
    Catalog,
    CreatedIssue,
    create_issue,
    database_task,
    global_id,
    issue_plan,
    put_task_in,
    row_key,
    the_error,
)
from tests.conftest import GraphQLClient


class Who(StrEnum):
    ADMIN = "ADMIN"
    DBA = "DBA"
    #: The DEVELOPER who opened the issue.
    CREATOR = "CREATOR"
    #: A DEVELOPER who did not.
    DEVELOPER = "DEVELOPER"
    VIEWER = "VIEWER"
    #: An ADMIN who opened the issue.
    ADMIN_CREATOR = "ADMIN_CREATOR"
    #: A DBA who opened the issue.
    DBA_CREATOR = "DBA_CREATOR"


#: Each principal's actor and role. Whether they opened the issue is told by the actor's name.
PRINCIPALS: dict[Who, Principal] = {
    Who.ADMIN: Principal("ada", Role.ADMIN),
    Who.DBA: Principal("dan", Role.DBA),
    Who.CREATOR: Principal("dora", Role.DEVELOPER),
    Who.DEVELOPER: Principal("otto", Role.DEVELOPER),
    Who.VIEWER: Principal("vic", Role.VIEWER),
    Who.ADMIN_CREATOR: Principal("ada", Role.ADMIN),
    Who.DBA_CREATOR: Principal("dan", Role.DBA),
}


def issue_creator(who: Who) -> Principal:
    """Who opens the issue of a cell: the principal themselves if they are its creator."""
    if who in (Who.ADMIN_CREATOR, Who.DBA_CREATOR):
        return PRINCIPALS[who]
    return PRINCIPALS[Who.CREATOR]


class Env(StrEnum):
    AUTOMATIC = "automatic"
    MANUAL = "manual"
    PROTECTED = "protected"


#: Each environment's approval policy and rules.
ENVIRONMENTS: dict[Env, tuple[ApprovalPolicy, ApprovalRules]] = {
    Env.AUTOMATIC: (
        ApprovalPolicy.AUTOMATIC,
        ApprovalRules(developers_may_approve=False, creator_may_approve=True),
    ),
    Env.MANUAL: (
        ApprovalPolicy.MANUAL,
        ApprovalRules(developers_may_approve=True, creator_may_approve=True),
    ),
    Env.PROTECTED: (
        ApprovalPolicy.MANUAL,
        ApprovalRules(developers_may_approve=False, creator_may_approve=False),
    ),
}


class Outcome(StrEnum):
    ALLOWED = "ALLOWED"
    FORBIDDEN = "FORBIDDEN"
    UNAUTHENTICATED = "UNAUTHENTICATED"


OK, NO, ANON = Outcome.ALLOWED, Outcome.FORBIDDEN, Outcome.UNAUTHENTICATED
AUTOMATIC, MANUAL, PROTECTED = Env.AUTOMATIC, Env.MANUAL, Env.PROTECTED

# --- the policy -------------------------------------------------------------------------------

ROLE_COLUMNS = (Who.ADMIN, Who.DBA, Who.DEVELOPER, Who.VIEWER)
# fmt: off
#: Mutations decided by the role alone.
BY_ROLE: dict[str, tuple[Outcome, ...]] = {
    #                    ADMIN DBA DEVELOPER VIEWER
    "createEnvironment": (OK,  OK, NO,       NO),
    "updateEnvironment": (OK,  OK, NO,       NO),
    "createInstance":    (OK,  OK, NO,       NO),
    "updateInstance":    (OK,  OK, NO,       NO),
    "registerDatabase":  (OK,  OK, NO,       NO),
    "createApiToken":    (OK,  NO, NO,       NO),
    "revokeApiToken":    (OK,  NO, NO,       NO),
    "setReviewPolicy":   (OK,  OK, NO,       NO),
}
# fmt: on

ISSUE_COLUMNS = (
    Who.ADMIN,
    Who.DBA,
    Who.CREATOR,
    Who.DEVELOPER,
    Who.VIEWER,
    Who.ADMIN_CREATOR,
    Who.DBA_CREATOR,
)
# fmt: off
#: Mutations on an issue, or on the tasks of its one stage, by the stage's environment.
#: CREATOR: the DEVELOPER who opened the issue; DEV: another DEVELOPER; ADMIN*, DBA*: an ADMIN,
#: a DBA who opened it themselves.
BY_ENVIRONMENT: dict[tuple[str, Env], tuple[Outcome, ...]] = {
    #                                  ADMIN DBA CREATOR DEV VIEWER ADMIN* DBA*
    ("createIssue", AUTOMATIC):         (OK, OK, OK,     OK, NO,    OK,    OK),
    ("createIssue", MANUAL):            (OK, OK, OK,     OK, NO,    OK,    OK),
    ("createIssue", PROTECTED):         (OK, OK, OK,     OK, NO,    OK,    OK),
    ("cancelIssue", AUTOMATIC):         (OK, OK, OK,     NO, NO,    OK,    OK),
    ("cancelIssue", MANUAL):            (OK, OK, OK,     NO, NO,    OK,    OK),
    ("cancelIssue", PROTECTED):         (OK, OK, OK,     NO, NO,    OK,    OK),
    ("reopenIssue", AUTOMATIC):         (OK, OK, OK,     NO, NO,    OK,    OK),
    ("reopenIssue", MANUAL):            (OK, OK, OK,     NO, NO,    OK,    OK),
    ("reopenIssue", PROTECTED):         (OK, OK, OK,     NO, NO,    OK,    OK),
    ("updateTaskStatement", AUTOMATIC): (OK, OK, OK,     NO, NO,    OK,    OK),
    ("updateTaskStatement", MANUAL):    (OK, OK, OK,     NO, NO,    OK,    OK),
    ("updateTaskStatement", PROTECTED): (OK, OK, OK,     NO, NO,    OK,    OK),
    # Developers may approve only in MANUAL; nobody may approve their own issue in PROTECTED.
    ("approveTask", AUTOMATIC):         (OK, OK, NO,     NO, NO,    OK,    OK),
    ("approveTask", MANUAL):            (OK, OK, OK,     OK, NO,    OK,    OK),
    ("approveTask", PROTECTED):         (OK, OK, NO,     NO, NO,    NO,    NO),
    ("approveStage", AUTOMATIC):        (OK, OK, NO,     NO, NO,    OK,    OK),
    ("approveStage", MANUAL):           (OK, OK, OK,     OK, NO,    OK,    OK),
    ("approveStage", PROTECTED):        (OK, OK, NO,     NO, NO,    NO,    NO),
    ("retryTask", AUTOMATIC):           (OK, OK, OK,     NO, NO,    OK,    OK),
    ("retryTask", MANUAL):              (OK, OK, OK,     NO, NO,    OK,    OK),
    ("retryTask", PROTECTED):           (OK, OK, OK,     NO, NO,    OK,    OK),
    ("cancelTask", AUTOMATIC):          (OK, OK, OK,     NO, NO,    OK,    OK),
    ("cancelTask", MANUAL):             (OK, OK, OK,     NO, NO,    OK,    OK),
    ("cancelTask", PROTECTED):          (OK, OK, OK,     NO, NO,    OK,    OK),
    ("skipTask", AUTOMATIC):            (OK, OK, OK,     NO, NO,    OK,    OK),
    ("skipTask", MANUAL):               (OK, OK, OK,     NO, NO,    OK,    OK),
    ("skipTask", PROTECTED):            (OK, OK, OK,     NO, NO,    OK,    OK),
    ("runTaskNow", AUTOMATIC):          (OK, OK, OK,     NO, NO,    OK,    OK),
    ("runTaskNow", MANUAL):             (OK, OK, OK,     NO, NO,    OK,    OK),
    ("runTaskNow", PROTECTED):          (OK, OK, OK,     NO, NO,    OK,    OK),
    ("dryRun", AUTOMATIC):              (OK, OK, OK,     NO, NO,    OK,    OK),
    ("dryRun", MANUAL):                 (OK, OK, OK,     NO, NO,    OK,    OK),
    ("dryRun", PROTECTED):              (OK, OK, OK,     NO, NO,    OK,    OK),
    # The checks stand for a DBA's review: only a DBA (or an ADMIN) may overrule them.
    ("overrideTaskChecks", AUTOMATIC):  (OK, OK, NO,     NO, NO,    OK,    OK),
    ("overrideTaskChecks", MANUAL):     (OK, OK, NO,     NO, NO,    OK,    OK),
    ("overrideTaskChecks", PROTECTED):  (OK, OK, NO,     NO, NO,    OK,    OK),
}
# fmt: on

SUBSCRIBER_COLUMNS = (Who.ADMIN, Who.DBA, Who.DEVELOPER, Who.VIEWER, None)
# fmt: off
#: Subscriptions: every role may read; a request without a principal may not.
BY_SUBSCRIBER: dict[str, tuple[Outcome, ...]] = {
    #                        ADMIN DBA DEVELOPER VIEWER nobody
    "taskStatusChanged":     (OK,  OK, OK,       OK,    ANON),
    "pipelineStatusChanged": (OK,  OK, OK,       OK,    ANON),
    "pipelineActivity":      (OK,  OK, OK,       OK,    ANON),
    "activity":              (OK,  OK, OK,       OK,    ANON),
}
# fmt: on

#: The task action (the API's TaskAction) each mutation on a task takes.
ACTION_OF: dict[str, str] = {
    "approveTask": "APPROVE",
    "approveStage": "APPROVE",
    "cancelTask": "CANCEL",
    "retryTask": "RETRY",
    "skipTask": "SKIP",
    "updateTaskStatement": "EDIT",
    "runTaskNow": "RUN_NOW",
}
#: What each state the matrix puts a task in allows, whoever asks (the task has a notBefore).
STATE_ALLOWS: dict[str, set[str]] = {
    "PENDING": {"CANCEL", "SKIP", "EDIT", "RUN_NOW"},
    "PENDING_APPROVAL": {"APPROVE", "CANCEL", "SKIP", "EDIT", "RUN_NOW"},
    "FAILED": {"RETRY", "SKIP", "EDIT"},
}


def outcome_of(mutation: str, environment: Env, who: Who) -> Outcome:
    return BY_ENVIRONMENT[(mutation, environment)][ISSUE_COLUMNS.index(who)]


# --- the schema -------------------------------------------------------------------------------


def root_fields(root: GraphQLObjectType | None) -> dict[str, GraphQLField]:
    assert root is not None
    return dict(root.fields)


MUTATIONS = root_fields(schema._schema.mutation_type)
SUBSCRIPTIONS = root_fields(schema._schema.subscription_type)


def mutation_document(mutation: str) -> str:
    """`mutation` with its one argument, `input`, of the type the schema gives it."""
    input_type = MUTATIONS[mutation].args["input"].type
    return f"mutation($input: {input_type}) {{ {mutation}(input: $input) {{ __typename }} }}"


def test_the_matrix_covers_every_mutation_and_subscription_of_the_schema() -> None:
    by_environment = {mutation for mutation, _ in BY_ENVIRONMENT}
    assert set(BY_ROLE) | by_environment == set(MUTATIONS)
    assert not set(BY_ROLE) & by_environment
    assert set(BY_ENVIRONMENT) == {(mutation, env) for mutation in by_environment for env in Env}
    assert set(PREPARE) == set(MUTATIONS)
    assert set(BY_SUBSCRIBER) == set(SUBSCRIPTIONS) == set(SUBSCRIPTION_SCOPES)
    assert all(len(row) == len(ROLE_COLUMNS) for row in BY_ROLE.values())
    assert all(len(row) == len(ISSUE_COLUMNS) for row in BY_ENVIRONMENT.values())
    assert all(len(row) == len(SUBSCRIBER_COLUMNS) for row in BY_SUBSCRIBER.values())
    task_actions = schema._schema.type_map["TaskAction"]
    assert isinstance(task_actions, GraphQLEnumType)
    assert set(ACTION_OF.values()) == set(task_actions.values)


# --- the world of one cell --------------------------------------------------------------------


@pytest.fixture
def database_url(emptied_module_database_url: str) -> str:
    """The module's one database, emptied for each cell: a database of its own per cell would
    cost more than the cell itself."""
    return emptied_module_database_url


def tomorrow() -> str:
    return (datetime.now(UTC) + timedelta(days=1)).isoformat()


@dataclass
class World:
    """A catalog of the three environments, one instance with one database; at most one issue,
    of one stage in `environment`, holding one task ("change") with a notBefore time."""

    graphql: GraphQLClient
    catalog: Catalog
    environment: Env
    #: Who opens the issue.
    creator: Principal
    issue: CreatedIssue | None = None

    @property
    def opened(self) -> CreatedIssue:
        assert self.issue is not None
        return self.issue

    def stages(self) -> dict[str, list[dict[str, Any]]]:
        task = database_task(
            self.catalog,
            "SCHEMA_UPDATE",
            name="change",
            statement="CREATE TABLE t ()",
            notBefore=tomorrow(),
        )
        return {self.environment: [task]}

    async def set_policy(self, policy: ApprovalPolicy) -> None:
        await save_environment(
            SYSTEM,
            row_key(self.catalog.environments[self.environment]),
            EnvironmentChanges(approval_policy=policy),
        )

    async def open_issue(self, *, awaiting_approval: bool = False) -> CreatedIssue:
        # A task waits for approval in an AUTOMATIC environment only if the environment was
        # MANUAL when the issue was opened: approving it there follows the environment's rules.
        switched = awaiting_approval and self.environment is Env.AUTOMATIC
        if switched:
            await self.set_policy(ApprovalPolicy.MANUAL)
        self.issue = await create_issue(
            self.graphql,
            self.catalog,
            self.stages(),
            actor=self.creator.actor,
        )
        if switched:
            await self.set_policy(ApprovalPolicy.AUTOMATIC)
        return self.issue


async def build_world(graphql: GraphQLClient, environment: Env, creator: Principal) -> World:
    # Through the db layer, not the API: the cells run it hundreds of times.
    environments = {}
    for order, (env, (policy, rules)) in enumerate(ENVIRONMENTS.items()):
        row = await save_environment(
            SYSTEM,
            None,
            EnvironmentChanges(
                name=env.value,
                order=order,
                approval_policy=policy,
                developers_may_approve=rules.developers_may_approve,
                creator_may_approve=rules.creator_may_approve,
            ),
        )
        environments[env.value] = global_id("Environment", row.id)
    own_database = OwnDatabaseCheck(graphql.settings, graphql.cipher)
    instance = await save_instance(
        SYSTEM,
        None,
        InstanceChanges(
            name="alpha",
            environment_id=row_key(environments[Env.AUTOMATIC]),
            engine=Engine.POSTGRES,
            host="127.0.0.1",
            port=5432,
            username="postgres",
            password="secret",
            max_running_tasks=1,
        ),
        graphql.cipher,
        networks=InstanceNetworks.parse(graphql.settings.instance_networks),
        own_database=own_database,
    )
    database = await register_database(SYSTEM, instance.id, "db", own_database=own_database)
    return World(
        graphql,
        Catalog(
            environments=environments,
            instances={"alpha": global_id("Instance", instance.id)},
            databases={"alpha": global_id("Database", database.id)},
        ),
        environment,
        creator,
    )


# --- each mutation's state: one where it is allowed state-wise --------------------------------

Prepare = Callable[[World], Awaitable[dict[str, Any]]]


async def a_new_environment(world: World) -> dict[str, Any]:
    return {"input": {"name": "qa", "order": 10}}


async def a_renamed_environment(world: World) -> dict[str, Any]:
    return {"input": {"id": world.catalog.environments[Env.AUTOMATIC], "name": "auto"}}


async def a_new_instance(world: World) -> dict[str, Any]:
    return {
        "input": {
            "name": "beta",
            "environmentId": world.catalog.environments[Env.MANUAL],
            "host": "127.0.0.1",
            "username": "postgres",
            "password": "secret",
        }
    }


async def a_changed_instance(world: World) -> dict[str, Any]:
    return {"input": {"id": world.catalog.instances["alpha"], "maxRunningTasks": 2}}


async def a_new_database(world: World) -> dict[str, Any]:
    return {"input": {"instanceId": world.catalog.instances["alpha"], "name": "other_db"}}


async def a_new_token(world: World) -> dict[str, Any]:
    return {"input": {"actor": "newcomer", "role": "VIEWER"}}


async def a_live_token(world: World) -> dict[str, Any]:
    data = await world.graphql.ok(
        "mutation($input: CreateApiTokenInput!) {"
        " createApiToken(input: $input) { apiToken { id } } }",
        {"input": {"actor": "leaver", "role": "VIEWER"}},
    )
    return {"input": {"id": data["createApiToken"]["apiToken"]["id"]}}


async def a_new_issue(world: World) -> dict[str, Any]:
    return {"input": issue_plan(world.catalog, world.stages())}


async def an_open_issue(world: World) -> dict[str, Any]:
    issue = await world.open_issue()
    return {"input": {"issueId": issue.id}}


async def a_canceled_issue(world: World) -> dict[str, Any]:
    issue = await world.open_issue()
    await world.graphql.ok(CANCEL_ISSUE, {"id": issue.id})
    return {"input": {"issueId": issue.id}}


def a_task_at_its_gate(**fields: Any) -> Prepare:
    async def prepare(world: World) -> dict[str, Any]:
        issue = await world.open_issue()
        return {"input": {"taskId": issue.tasks["change"], **fields}}

    return prepare


async def a_task_awaiting_approval(world: World) -> dict[str, Any]:
    issue = await world.open_issue(awaiting_approval=True)
    return {"input": {"taskId": issue.tasks["change"]}}


async def a_stage_awaiting_approval(world: World) -> dict[str, Any]:
    issue = await world.open_issue(awaiting_approval=True)
    return {"input": {"stageId": issue.stages[world.environment]}}


async def a_failed_task(world: World) -> dict[str, Any]:
    issue = await world.open_issue()
    await put_task_in(issue.task_key("change"), TaskStatus.FAILED, status_reason="boom")
    return {"input": {"taskId": issue.tasks["change"]}}


async def a_review_policy(world: World) -> dict[str, Any]:
    return {
        "input": {
            "environmentId": world.catalog.environments[Env.MANUAL],
            "rules": [{"rule": "truncate", "level": "WARNING"}],
        }
    }


async def a_task_its_checks_block(world: World) -> dict[str, Any]:
    issue = await world.open_issue()
    finding = Finding("truncate", CheckLevel.ERROR, "TRUNCATE", "TRUNCATE t", 1, 1, None)
    await record_checks(
        [
            CheckOutcome(
                issue.task_key("change"), 1, [(CheckSource.STATEMENT, finding)], ("truncate",)
            )
        ]
    )
    return {"input": {"taskId": issue.tasks["change"], "reason": "t is empty everywhere"}}


PREPARE: dict[str, Prepare] = {
    "createEnvironment": a_new_environment,
    "updateEnvironment": a_renamed_environment,
    "createInstance": a_new_instance,
    "updateInstance": a_changed_instance,
    "registerDatabase": a_new_database,
    "createApiToken": a_new_token,
    "revokeApiToken": a_live_token,
    "createIssue": a_new_issue,
    "cancelIssue": an_open_issue,
    "reopenIssue": a_canceled_issue,
    "updateTaskStatement": a_task_at_its_gate(statement="CREATE TABLE u ()"),
    "approveTask": a_task_awaiting_approval,
    "approveStage": a_stage_awaiting_approval,
    "retryTask": a_failed_task,
    "cancelTask": a_task_at_its_gate(),
    "skipTask": a_task_at_its_gate(reason="done by hand"),
    "runTaskNow": a_task_at_its_gate(),
    "setReviewPolicy": a_review_policy,
    "dryRun": a_task_at_its_gate(),
    "overrideTaskChecks": a_task_its_checks_block,
}


# --- checks -----------------------------------------------------------------------------------


async def every_row() -> dict[str, str]:
    """Every row of every table, by table: what a refused request must leave as it was."""
    connection = get_connection("default")
    tables = [
        row["tablename"]
        for row in await connection.execute_query_dict(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        )
    ]
    # One statement for all the tables' rows, for speed; only functions every PostgreSQL
    # build has (a fresh machine's embedded one has no XML support).
    every_table = " UNION ALL ".join(
        f"SELECT {_literal(table)} AS table, "
        f"coalesce(json_agg(to_jsonb(t)::text ORDER BY to_jsonb(t)::text), '[]')::text AS rows "
        f'FROM "{table}" t'
        for table in tables
    )
    rows = await connection.execute_query_dict(every_table)
    return {row["table"]: row["rows"] for row in rows}


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


async def last_event() -> int:
    latest = await Event.all().order_by("-id").first()
    return 0 if latest is None else latest.id


AVAILABLE_ACTIONS = """
query($id: ID!) { node(id: $id) { ... on Task { status availableActions } } }
"""


async def assert_offers_what_the_table_allows(world: World, mutation: str, who: Who) -> None:
    """The task's availableActions, read by `who`: the actions its state allows that the
    table allows `who` in this environment; among them the one `mutation` takes."""
    principal = PRINCIPALS[who]
    data = await world.graphql.ok(
        AVAILABLE_ACTIONS,
        {"id": world.opened.tasks["change"]},
        actor=principal.actor,
        role=principal.role,
    )
    task = data["node"]
    state_allows = STATE_ALLOWS[task["status"]]
    assert ACTION_OF[mutation] in state_allows, task
    allowed = {
        action
        for task_mutation, action in ACTION_OF.items()
        if outcome_of(task_mutation, world.environment, who) is OK
    }
    assert set(task["availableActions"]) == state_allows & allowed


async def run_cell(world: World, mutation: str, who: Who, outcome: Outcome) -> list[Event]:
    """Prepare `mutation`'s state, run it as `who`, check it was allowed or refused as
    `outcome` says; the events it wrote."""
    variables = await PREPARE[mutation](world)
    if mutation in ACTION_OF:
        await assert_offers_what_the_table_allows(world, mutation, who)
    principal = PRINCIPALS[who]
    before = await every_row()
    events_before = await last_event()

    response = await world.graphql(
        mutation_document(mutation), variables, actor=principal.actor, role=principal.role
    )

    if outcome is OK:
        assert response.errors == [], response.errors
        assert response.data is not None
        assert response.data[mutation] is not None
        assert await every_row() != before
    else:
        error = the_error(response)
        assert error["extensions"]["code"] == "FORBIDDEN", error
        assert await every_row() == before
    return await Event.filter(id__gt=events_before).order_by("id")


# --- the matrix -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutation", "who", "outcome"),
    [
        pytest.param(mutation, who, outcome, id=f"{mutation}-{who.value}")
        for mutation, row in BY_ROLE.items()
        for who, outcome in zip(ROLE_COLUMNS, row, strict=True)
    ],
)
async def test_a_catalog_or_token_mutation_is_allowed_as_the_table_says(
    graphql: GraphQLClient, mutation: str, who: Who, outcome: Outcome
) -> None:
    world = await build_world(graphql, Env.AUTOMATIC, PRINCIPALS[Who.CREATOR])

    await run_cell(world, mutation, who, outcome)


@pytest.mark.parametrize(
    ("mutation", "environment", "who", "outcome"),
    [
        pytest.param(mutation, environment, who, outcome, id=f"{mutation}-{environment}-{who}")
        for (mutation, environment), row in BY_ENVIRONMENT.items()
        for who, outcome in zip(ISSUE_COLUMNS, row, strict=True)
    ],
)
async def test_an_issue_or_task_mutation_is_allowed_as_the_table_says(
    graphql: GraphQLClient, mutation: str, environment: Env, who: Who, outcome: Outcome
) -> None:
    world = await build_world(graphql, environment, issue_creator(who))

    events = await run_cell(world, mutation, who, outcome)

    if outcome is OK:
        assert {event.actor for event in events} == {PRINCIPALS[who].actor}


# --- subscriptions ----------------------------------------------------------------------------

#: Each subscription's scope argument, and the id of the world's issue it is given (None: it
#: has no scope).
SUBSCRIPTION_SCOPES: dict[str, tuple[str, Callable[[CreatedIssue], str]] | None] = {
    "taskStatusChanged": ("taskId", lambda issue: issue.tasks["change"]),
    "pipelineStatusChanged": ("issueId", lambda issue: issue.id),
    "pipelineActivity": ("issueId", lambda issue: issue.id),
    "activity": None,
}


async def first_message(
    graphql: GraphQLClient,
    hub: EventHub,
    document: str,
    variables: dict[str, Any],
    principal: Principal | None,
) -> ExecutionResult:
    context = Context(
        request=None,
        response=None,
        settings=graphql.settings,
        cipher=graphql.cipher,
        principal=principal,
        hub=hub,
    )
    stream = await schema.subscribe(document, variable_values=variables, context_value=context)
    async with contextlib.aclosing(stream):
        result = await asyncio.wait_for(anext(stream), 10)
    assert isinstance(result, ExecutionResult)
    return result


@pytest.mark.parametrize(
    ("subscription", "who", "outcome"),
    [
        pytest.param(subscription, who, outcome, id=f"{subscription}-{who or 'nobody'}")
        for subscription, row in BY_SUBSCRIBER.items()
        for who, outcome in zip(SUBSCRIBER_COLUMNS, row, strict=True)
    ],
)
async def test_a_subscription_is_open_to_whom_the_table_says(
    graphql: GraphQLClient, hub: EventHub, subscription: str, who: Who | None, outcome: Outcome
) -> None:
    world = await build_world(graphql, Env.MANUAL, PRINCIPALS[Who.CREATOR])
    issue = await world.open_issue()
    # Changes of the task's and the pipeline's status, for the subscription to replay first.
    await graphql.ok(CANCEL_ISSUE, {"id": issue.id})
    scope = SUBSCRIPTION_SCOPES[subscription]
    if scope is None:
        document = f"subscription {{ {subscription}(after: 0) {{ __typename }} }}"
        variables = {}
    else:
        argument, scope_of = scope
        document = (
            f"subscription($id: ID!) {{ {subscription}({argument}: $id, after: 0)"
            " { __typename } }"
        )
        variables = {"id": scope_of(issue)}

    result = await first_message(
        graphql, hub, document, variables, None if who is None else PRINCIPALS[who]
    )

    if outcome is OK:
        assert result.errors is None, result.errors
        assert result.data is not None
        assert result.data[subscription] is not None
    else:
        assert result.data is None
        assert [error.formatted["extensions"]["code"] for error in result.errors or []] == [
            outcome.value
        ]
