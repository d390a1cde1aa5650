"""Relay cursor connections with keyset cursors."""

import base64
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import strawberry

from conveyor.db.reads import Page
from conveyor.errors import invalid_input
from conveyor.settings import Settings

NodeType = TypeVar("NodeType")
T = TypeVar("T")

_CURSOR_PREFIX = "cursor:"


def encode_cursor(key: int) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{key}".encode()).decode()


def decode_cursor(cursor: str | None) -> int | None:
    """The key a cursor stands for; a cursor this server did not make is refused."""
    if cursor is None:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
        if not text.startswith(_CURSOR_PREFIX):
            raise ValueError(cursor)
        return int(text.removeprefix(_CURSOR_PREFIX))
    except ValueError:
        raise invalid_input("not a cursor from this API", ("after",)) from None


def page_size(first: int | None, settings: Settings) -> int:
    """`first`, or the default page size, refused past the maximum."""
    if first is None:
        return settings.default_page_size
    if not 0 <= first <= settings.max_page_size:
        raise invalid_input(f"first must be between 0 and {settings.max_page_size}", ("first",))
    return first


def bounded(rows: Sequence[T], first: int | None, start: int, settings: Settings) -> list[T]:
    """The items of a bounded list (`Stage.tasks`, `Issue.events`) from index `start`: `first`
    of them, or the default page size, refused past the maximum as connections are."""
    return list(rows[start : start + page_size(first, settings)])


@strawberry.type(description="Where a page sits in the whole list.")
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type(description="One item of a page and the cursor that points at it.")
class Edge(Generic[NodeType]):
    cursor: str
    node: NodeType


@strawberry.type(description="A page of a list, with cursors to move through it.")
class Connection(Generic[NodeType]):
    edges: list[Edge[NodeType]]
    page_info: PageInfo
    count_total: strawberry.Private[Callable[[], Awaitable[int]]]

    @strawberry.field(description="How many items the whole list holds, across all pages.")
    async def total_count(self) -> int:
        return await self.count_total()

    @classmethod
    def from_page(
        cls,
        page: Page[Any],
        to_node: Callable[[Any], NodeType],
        count_total: Callable[[], Awaitable[int]],
        cursor_key: Callable[[Any], int] = lambda row: int(row.pk),
    ) -> "Connection[NodeType]":
        edges: Sequence[Edge[NodeType]] = [
            Edge(cursor=encode_cursor(cursor_key(row)), node=to_node(row)) for row in page.rows
        ]
        return cls(
            edges=list(edges),
            page_info=PageInfo(
                has_next_page=page.has_next_page,
                has_previous_page=page.has_previous_page,
                start_cursor=edges[0].cursor if edges else None,
                end_cursor=edges[-1].cursor if edges else None,
            ),
            count_total=count_total,
        )
