from collections.abc import Iterable
from datetime import datetime
from typing import Self

import strawberry
from strawberry import relay

from conveyor.db import models, tokens
from conveyor.domain.permissions import Principal
from conveyor.errors import not_found
from conveyor.graphql.context import Info
from conveyor.graphql.types.enums import Role
from conveyor.graphql.types.node import parse_node_id


@strawberry.type(description="An API token, without its secret (shown once, when created).")
class ApiToken(relay.Node):
    id: relay.NodeID[int]
    actor: str = strawberry.field(
        description="The name recorded as the actor of everything done with the token."
    )
    role: Role
    description: str
    prefix: str = strawberry.field(description="The token's first characters, to recognise it.")
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None
    last_used_at: datetime | None = strawberry.field(
        description="When the token was last accepted, to the minute."
    )

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        # Only an ADMIN sees tokens, whichever way they are asked for.
        keys = [parse_node_id(node_id) for node_id in node_ids]
        rows = await tokens.tokens_by_id(info.context.acting, {k for k in keys if k is not None})
        nodes = [cls.from_row(rows[key]) if key in rows else None for key in keys]
        if required and any(node is None for node in nodes):
            raise not_found("API token")
        return nodes

    @classmethod
    def from_row(cls, row: models.ApiToken) -> Self:
        return cls(
            id=row.id,
            actor=row.actor,
            role=row.role,
            description=row.description,
            prefix=row.prefix,
            created_by=row.created_by,
            created_at=row.created_at,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
            revoked_by=row.revoked_by,
            last_used_at=row.last_used_at,
        )


@strawberry.type(description="A token just created: the only time its secret is shown.")
class CreatedApiToken:
    token: str = strawberry.field(
        description="The secret, to send as `Authorization: Bearer <token>`. It is not stored "
        "and cannot be shown again."
    )
    api_token: ApiToken


@strawberry.type(description="Who the request's token acts as.")
class Viewer:
    actor: str
    role: Role
    token_expires_at: datetime | None

    @classmethod
    def from_principal(cls, principal: Principal) -> Self:
        return cls(
            actor=principal.actor, role=principal.role, token_expires_at=principal.expires_at
        )
