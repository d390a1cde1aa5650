"""How tortoise reaches Conveyor's own PostgreSQL database."""

from collections.abc import Mapping
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


#: A worker's sessions plan each statement once, on its first run, and keep that plan. Its
#: statements are look-ups by key, whose plan does not depend on the values, and planning
#: the claim's and the finish's statements (common table expressions of a dozen tables) costs
#: about as much as running them, where PostgreSQL's default plans a statement anew for its
#: first five runs on each session (and for good if its generic plan looks dearer).
WORKER_SESSION_SETTINGS = {"plan_cache_mode": "force_generic_plan"}


def tortoise_config(
    database_url: str,
    *,
    pool_max_size: int = 10,
    session_settings: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The tortoise config for `database_url` (any postgres:// or postgresql:// URL), its
    sessions started with `session_settings`."""
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
    if session_settings:
        connection["credentials"]["server_settings"] = dict(session_settings)
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
