"""The tortoise client Conveyor uses for asyncpg: it rides out pooled connections that the
server dropped.

A pooled connection that PostgreSQL terminated (pg_terminate_backend, a restart, a failover)
goes unnoticed until the next query on it fails ("another operation is in progress",
ConnectionDoesNotExistError). That query is a victim, not a fault: a read outside a
transaction is retried once, after every pooled connection is replaced, since a server that
dropped one has usually dropped them all. Writes are not retried (one whose commit was lost on
the wire would be applied twice), nor is anything inside a transaction (its client is
tortoise's TransactionWrapper, not this class).
"""

from typing import Any

from tortoise.backends.asyncpg.client import AsyncpgDBClient

from conveyor.db.outages import database_unavailable


def _dropped_under_a_read(query: str, error: Exception) -> bool:
    return query.lstrip()[:6].upper() == "SELECT" and database_unavailable(error)


class RetryingAsyncpgClient(AsyncpgDBClient):
    async def execute_query(
        self, query: str, values: list[Any] | None = None
    ) -> tuple[int, list[dict[str, Any]]]:
        try:
            result: tuple[int, list[dict[str, Any]]] = await super().execute_query(query, values)
        except Exception as error:
            if not _dropped_under_a_read(query, error):
                raise
            await self._expire_connections()
            result = await super().execute_query(query, values)
        return result

    async def execute_query_dict(
        self, query: str, values: list[Any] | None = None
    ) -> list[dict[str, Any]]:
        try:
            result: list[dict[str, Any]] = await super().execute_query_dict(query, values)
        except Exception as error:
            if not _dropped_under_a_read(query, error):
                raise
            await self._expire_connections()
            result = await super().execute_query_dict(query, values)
        return result


#: What tortoise looks up in the module named as a connection's engine.
client_class = RetryingAsyncpgClient
