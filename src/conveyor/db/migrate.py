"""Bringing Conveyor's database schema up to date."""

import logging

import asyncpg
from tortoise.context import TortoiseContext
from tortoise.migrations.api import migrate

from conveyor.db.config import tortoise_config

logger = logging.getLogger(__name__)

#: Any constant unique to Conveyor; held while migrating so replicas that start together
#: migrate one after another.
_MIGRATION_LOCK_KEY = 7_437_812_000


async def migrate_database(database_url: str) -> None:
    """Apply every pending migration, once, whatever the number of processes starting."""
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_KEY)
        # A context of its own: the migration API initialises tortoise globally otherwise.
        async with TortoiseContext():
            await migrate(config=tortoise_config(database_url, pool_max_size=2))
        logger.info("database schema is up to date")
    finally:
        await connection.close()
