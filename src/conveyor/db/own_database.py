"""Which database Conveyor keeps its own tables in, as PostgreSQL identifies it."""

from tortoise.connection import get_connection

from conveyor.domain.targets import DatabaseIdentity

# pg_control_system() exists since PostgreSQL 9.6 and anyone may call it.
_IDENTITY = """
SELECT s.system_identifier, d.oid
FROM pg_control_system() s, pg_database d
WHERE d.datname = current_database()
"""


async def conveyor_database() -> DatabaseIdentity:
    """The identity of Conveyor's own database, which no task may target."""
    rows = await get_connection("default").execute_query_dict(_IDENTITY)
    return DatabaseIdentity(system_identifier=rows[0]["system_identifier"], oid=rows[0]["oid"])
