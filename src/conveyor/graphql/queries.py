"""The root Query: Relay node lookup and the paginated lists a frontend starts from."""

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import strawberry
from strawberry import relay
from tortoise.queryset import QuerySet

from conveyor.db import reads, tokens
from conveyor.graphql.context import Info
from conveyor.graphql.inputs import CreateIssueInput, node_key
from conveyor.graphql.types.api_token import ApiToken, Viewer
from conveyor.graphql.types.check import CheckFinding, PlanCheck, PlannedTaskCheck
from conveyor.graphql.types.database import Database
from conveyor.graphql.types.enums import CheckSource, PipelineStatus
from conveyor.graphql.types.environment import Environment
from conveyor.graphql.types.instance import Instance
from conveyor.graphql.types.issue import Issue
from conveyor.graphql.types.pagination import Connection, NodeType, decode_cursor, page_size
from conveyor.graphql.types.pipeline import Pipeline
from conveyor.runner.checking import check_plan


def _counter(queryset: QuerySet[Any]) -> Callable[[], Awaitable[int]]:
    async def count() -> int:
        return int(await queryset.count())

    return count


async def _connection(
    info: Info,
    queryset: QuerySet[Any],
    to_node: Callable[[Any], NodeType],
    first: int | None,
    after: str | None,
    *,
    newest_first: bool = False,
) -> Connection[NodeType]:
    """A page of `queryset`'s rows by id, as a connection of nodes."""
    paginate = reads.page_newest_first if newest_first else reads.page_oldest_first
    page = await paginate(queryset, page_size(first, info.context.settings), decode_cursor(after))
    return Connection[NodeType].from_page(page, to_node, _counter(queryset))


@strawberry.type
class Query:
    node: relay.Node | None = relay.node(description="Any object, by its global id.")
    nodes: list[relay.Node | None] = relay.node(description="Several objects by global ids.")

    @strawberry.field(description="Who the request's token acts as, and with which role.")
    def viewer(self, info: Info) -> Viewer:
        return Viewer.from_principal(info.context.acting)

    @strawberry.field(
        description="Validate and check a whole plan as createIssue would take it, and create "
        "nothing: what the statement checks (syntax, kinds, SQL review rules) would tell each "
        "task under its environment's review policy. A plan createIssue would refuse is "
        "refused with the same errors."
    )
    async def check_plan(self, info: Info, input: CreateIssueInput) -> PlanCheck:
        checked = await check_plan(info.context.acting, input.to_plan())
        now = datetime.now(UTC)
        return PlanCheck(
            tasks=[
                PlannedTaskCheck(
                    stage_position=task.stage_position,
                    task_position=task.task_position,
                    ref=task.ref,
                    findings=[
                        CheckFinding.from_finding(finding, CheckSource.STATEMENT, now)
                        for finding in task.findings
                    ],
                    blocking_rules=list(task.blocking_rules),
                )
                for task in checked
            ],
            blocked=any(task.blocking_rules for task in checked),
        )

    @strawberry.field(description="API tokens, oldest first (ADMIN only).")
    async def api_tokens(self, info: Info, include_revoked: bool = False) -> list[ApiToken]:
        rows = await tokens.list_tokens(info.context.acting, include_revoked=include_revoked)
        return [ApiToken.from_row(row) for row in rows]

    @strawberry.field(description="Issues, newest first.")
    async def issues(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        status: PipelineStatus | None = None,
        environment_id: Annotated[
            strawberry.ID | None,
            strawberry.argument(description="Only issues with a stage in this environment."),
        ] = None,
    ) -> Connection[Issue]:
        queryset = reads.issues_matching(
            status, node_key(environment_id, "Environment", ("environmentId",))
        )
        return await _connection(info, queryset, Issue.from_row, first, after, newest_first=True)

    @strawberry.field(description="Pipelines, newest first.")
    async def pipelines(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        status: PipelineStatus | None = None,
        environment_id: Annotated[
            strawberry.ID | None,
            strawberry.argument(description="Only pipelines with a stage in this environment."),
        ] = None,
    ) -> Connection[Pipeline]:
        queryset = reads.pipelines_matching(
            status, node_key(environment_id, "Environment", ("environmentId",))
        )
        return await _connection(info, queryset, Pipeline.from_row, first, after, newest_first=True)

    @strawberry.field(description="Environments along the promotion path, first to last.")
    async def environments(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Connection[Environment]:
        page = await reads.page_environments(
            page_size(first, info.context.settings), decode_cursor(after)
        )
        return Connection[Environment].from_page(
            page,
            Environment.from_row,
            _counter(reads.environments_matching()),
            cursor_key=lambda row: int(row.order),
        )

    @strawberry.field(description="Instances, oldest first.")
    async def instances(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        environment_id: strawberry.ID | None = None,
    ) -> Connection[Instance]:
        queryset = reads.instances_matching(
            node_key(environment_id, "Environment", ("environmentId",))
        )
        return await _connection(info, queryset, Instance.from_row, first, after)

    @strawberry.field(description="Databases, oldest first.")
    async def databases(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        instance_id: strawberry.ID | None = None,
        environment_id: strawberry.ID | None = None,
    ) -> Connection[Database]:
        queryset = reads.databases_matching(
            node_key(instance_id, "Instance", ("instanceId",)),
            node_key(environment_id, "Environment", ("environmentId",)),
        )
        return await _connection(info, queryset, Database.from_row, first, after)
