from datetime import datetime
from typing import Self

import strawberry
from strawberry import relay

from conveyor.db import models
from conveyor.graphql.context import Info
from conveyor.graphql.types.enums import Engine
from conveyor.graphql.types.environment import Environment
from conveyor.graphql.types.node import LoadedNode


@strawberry.type(description="A libpq connection option an instance sets.")
class ConnectionOption:
    name: str
    value: str


@strawberry.type(description="A database server Conveyor connects to. Its password is write-only.")
class Instance(LoadedNode):
    loader_name = "instance"

    id: relay.NodeID[int]
    name: str
    engine: Engine
    host: str
    port: int
    username: str
    max_running_tasks: int = strawberry.field(
        description="How many tasks may run against this instance at once."
    )
    connection_options: list[ConnectionOption] = strawberry.field(
        description="The libpq options Conveyor connects with, by name."
    )
    created_at: datetime
    updated_at: datetime
    environment_id: strawberry.Private[int]

    @strawberry.field(description="The environment the instance belongs to.")
    async def environment(self, info: Info) -> Environment:
        return await Environment.load(info, self.environment_id)

    @classmethod
    def from_row(cls, row: models.Instance) -> Self:
        return cls(
            id=row.id,
            name=row.name,
            engine=row.engine,
            host=row.host,
            port=row.port,
            username=row.username,
            max_running_tasks=row.max_running_tasks,
            connection_options=[
                ConnectionOption(name=name, value=value)
                for name, value in sorted(row.connection_options.items())
            ],
            created_at=row.created_at,
            updated_at=row.updated_at,
            environment_id=row.environment_id,
        )
