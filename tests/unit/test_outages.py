"""What counts as an outage of Conveyor's database, and when an operation failed for it."""

import asyncpg
import pytest
from graphql.error import GraphQLError
from tortoise.exceptions import OperationalError

from conveyor.db.outages import database_unavailable
from conveyor.graphql.errors import database_unavailable_extensions, failed_for_unavailable_database


def _wrapped(error: Exception) -> Exception:
    """`error` as tortoise re-raises it."""
    try:
        raise OperationalError(error) from error
    except OperationalError as wrapped:
        return wrapped


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(),
        FileNotFoundError(),
        asyncpg.exceptions.ConnectionDoesNotExistError("closed in the middle of operation"),
        asyncpg.InternalClientError("another operation is in progress"),
        asyncpg.exceptions.AdminShutdownError("terminating connection"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        _wrapped(asyncpg.exceptions.ConnectionDoesNotExistError("closed")),
    ],
    ids=lambda error: type(error).__name__,
)
def test_lost_and_refused_connections_are_outages(error: Exception) -> None:
    assert database_unavailable(error)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"),
        asyncpg.exceptions.UniqueViolationError("duplicate key"),
        _wrapped(asyncpg.exceptions.UndefinedTableError("no such table")),
        ValueError("a bug"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_other_failures_are_not_outages(error: Exception) -> None:
    assert not database_unavailable(error)


def _unavailable() -> GraphQLError:
    return GraphQLError("down", extensions=database_unavailable_extensions())


def test_an_operation_that_got_nothing_done_for_an_outage_is_unavailable() -> None:
    assert failed_for_unavailable_database(None, [_unavailable()])
    assert failed_for_unavailable_database({"a": None, "b": None}, [_unavailable(), _unavailable()])


def test_an_operation_with_some_data_or_another_error_is_not_unavailable() -> None:
    assert not failed_for_unavailable_database({"a": 1, "b": None}, [_unavailable()])
    other = GraphQLError("no", extensions={"code": "NOT_FOUND", "field": None})
    assert not failed_for_unavailable_database(None, [_unavailable(), other])
    assert not failed_for_unavailable_database({"a": 1}, [])
