"""The identity of this installation of Conveyor: a UUID made once, by the migrations."""

import uuid

from tortoise.connection import get_connection

_INSTALLATION = 'SELECT "id" FROM "installation"'


async def installation_id() -> uuid.UUID:
    """This installation's id. Task ids restart in a new installation: the change history
    a target keeps tells one installation's task from another's by it."""
    rows = await get_connection("default").execute_query_dict(_INSTALLATION)
    value = rows[0]["id"]
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
