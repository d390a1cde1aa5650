"""How tortoise reaches Conveyor's own PostgreSQL database."""

from typing import Any

from tortoise.backends.base.config_generator import expand_db_url

APP_LABEL = "models"
MODELS_MODULE = "conveyor.db.models"
MIGRATIONS_MODULE = "conveyor.db.migrations"


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
