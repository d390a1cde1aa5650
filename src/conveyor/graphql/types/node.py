"""The shared shape of Conveyor's Relay nodes: fetched by id through the request's loaders."""

from collections.abc import Iterable
from typing import Any, ClassVar, Self

from strawberry import relay
from strawberry.dataloader import DataLoader

from conveyor.errors import not_found
from conveyor.graphql.context import Info


def parse_node_id(node_id: str) -> int | None:
    """The integer behind a global id's node part, or None when it is not one."""
    try:
        value = int(node_id)
    except ValueError:
        return None
    return value if 0 < value < 2**31 else None


class LoadedNode(relay.Node):
    """A node whose rows come from one of the request's by-id loaders."""

    loader_name: ClassVar[str]

    @classmethod
    def from_row(cls, row: Any) -> Self:
        raise NotImplementedError

    @classmethod
    def _loader(cls, info: Info) -> DataLoader[int, Any]:
        loader: DataLoader[int, Any] = getattr(info.context.loaders, cls.loader_name)
        return loader

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        keys = [parse_node_id(node_id) for node_id in node_ids]
        rows = await cls._loader(info).load_many([key for key in keys if key is not None])
        by_key = {
            key: row for key, row in zip([k for k in keys if k is not None], rows, strict=True)
        }
        nodes = [
            cls.from_row(by_key[key]) if key is not None and by_key.get(key) is not None else None
            for key in keys
        ]
        if required and any(node is None for node in nodes):
            raise not_found(cls.__name__.lower())
        return nodes

    @classmethod
    async def load(cls, info: Info, key: int) -> Self:
        """The node for a key the database guarantees exists (a foreign key)."""
        row = await cls._loader(info).load(key)
        return cls.from_row(row)

    @classmethod
    async def load_optional(cls, info: Info, key: int | None) -> Self | None:
        if key is None:
            return None
        row = await cls._loader(info).load(key)
        return None if row is None else cls.from_row(row)
