"""How Conveyor's sessions on its own database start: a worker's keep one plan a statement."""

import pytest
from tortoise import connections
from tortoise.context import TortoiseContext

from conveyor.db.config import WORKER_SESSION_SETTINGS, tortoise_config


@pytest.mark.parametrize(
    ("session_settings", "mode"),
    [(None, "auto"), (WORKER_SESSION_SETTINGS, "force_generic_plan")],
)
async def test_sessions_plan_statements_as_their_process_asks(
    database_url: str, session_settings: dict[str, str] | None, mode: str
) -> None:
    config = tortoise_config(database_url, pool_max_size=1, session_settings=session_settings)
    async with TortoiseContext() as context:
        await context.init(config=config)
        rows = await connections.get("default").execute_query_dict("SHOW plan_cache_mode")
    assert rows == [{"plan_cache_mode": mode}]
