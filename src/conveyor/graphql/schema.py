"""The GraphQL schema Conveyor serves."""

from typing import Any

import strawberry
from graphql.error import GraphQLError
from strawberry.types import ExecutionContext

from conveyor.graphql.errors import ConveyorErrors
from conveyor.graphql.mutations import Mutation
from conveyor.graphql.queries import Query


class ConveyorSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # ConveyorErrors already logged each internal failure under its correlation id;
        # the default would log every client mistake with a stack trace.
        return None


def build_schema(**options: Any) -> strawberry.Schema:
    return ConveyorSchema(query=Query, mutation=Mutation, extensions=[ConveyorErrors], **options)


schema = build_schema()
