"""The GraphQL schema Conveyor serves."""

from typing import Any

import strawberry
from graphql.error import GraphQLError
from strawberry.types import ExecutionContext

from conveyor.graphql.errors import ConveyorErrors
from conveyor.graphql.mutations import Mutation
from conveyor.graphql.queries import Query
from conveyor.graphql.subscriptions import Subscription
from conveyor.graphql.types.task_status_update import TaskStatusChange, TaskStatusSnapshot


class ConveyorSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # ConveyorErrors already logged each internal failure under its correlation id;
        # the default would log every client mistake with a stack trace.
        return None


def build_schema(**options: Any) -> strawberry.Schema:
    return ConveyorSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        # The implementations of interfaces that only subscriptions return.
        types=[TaskStatusSnapshot, TaskStatusChange],
        extensions=[ConveyorErrors],
        **options,
    )


schema = build_schema()
