"""How tortoise reaches Conveyor's own PostgreSQL database."""

from typing import Any

import asyncpg
from tortoise.backends.base.config_generator import expand_db_url

APP_LABEL = "models"
MODELS_MODULE = "conveyor.db.models"
MIGRATIONS_MODULE = "conveyor.db.migrations"


class PooledConnection(asyncpg.Connection):
    """A pool connection released without asyncpg's reset query (advisory unlock, CLOSE ALL,
    UNLISTEN, RESET ALL), a round trip after every statement otherwise. Conveyor keeps no
    session state on pooled connections: its advisory locks and settings are transaction
    scoped, LISTEN has a connection of its own; and asyncpg still rolls back a transaction
    left open on release."""

    def get_reset_query(self) -> str:
        return ""


def tortoise_config(database_url: str, *, pool_max_size: int = 10) -> dict[str, Any]:
    """The tortoise config for `database_url` (any postgres:// or postgresql:// URL)."""
    scheme, rest = database_url.split("://", 1)
    if scheme not in ("postgres", "postgresql", "asyncpg"):
        raise ValueError("Conveyor's database must be a PostgreSQL URL")
    connection = expand_db_url(f"asyncpg://{rest}")
    # tortoise's asyncpg client, retrying a read that met a connection the server dropped.
    connection["engine"] = "conveyor.db.client"
    # No floor of open connections: asyncpg would restore it in the background throughout an
    # outage, logging a traceback at each try; a query opens the connection it needs anyway.
    connection["credentials"].setdefault("min_size", 0)
    connection["credentials"]["max_size"] = pool_max_size
    connection["credentials"]["connection_class"] = PooledConnection
    return {
        "connections": {"default": connection},
        "apps": {
            APP_LABEL: {
                "models": [MODELS_MODULE],
                "default_connection": "default",
                "migrations": MIGRATIONS_MODULE,
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }
