from datetime import datetime
from typing import Self

import strawberry
from strawberry import relay

from conveyor.db import models
from conveyor.graphql.context import Info
from conveyor.graphql.types.instance import Instance
from conveyor.graphql.types.node import LoadedNode


@strawberry.type(description="One database on an instance.")
class Database(LoadedNode):
    loader_name = "database"

    id: relay.NodeID[int]
    name: str
    created_at: datetime
    updated_at: datetime
    instance_id: strawberry.Private[int]

    @strawberry.field
    async def instance(self, info: Info) -> Instance:
        return await Instance.load(info, self.instance_id)

    @classmethod
    def from_row(cls, row: models.Database) -> Self:
        return cls(
            id=row.id,
            name=row.name,
            created_at=row.created_at,
            updated_at=row.updated_at,
            instance_id=row.instance_id,
        )
