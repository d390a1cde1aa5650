"""What operators watch, read from Conveyor's database: readiness, and task counts."""

import pkgutil
from collections import Counter
from datetime import UTC, datetime

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.connection import get_connection

from conveyor.db import migrations, scheduling
from conveyor.db.config import APP_LABEL
from conveyor.domain.statuses import PipelineStatus

#: The migrations this code was built with; a database without one of them is not current.
KNOWN_MIGRATIONS = frozenset(module.name for module in pkgutil.iter_modules(migrations.__path__))

_APPLIED_MIGRATIONS = "SELECT name FROM tortoise_migrations WHERE app = $1"
_TASKS_BY_STATUS = "SELECT status, count(*) AS tasks FROM task GROUP BY status"
# Pipelines with a task that is not finished: the only ones whose tasks wait for something.
_OPEN_PIPELINES = """
SELECT DISTINCT t.pipeline_id FROM task t JOIN pipeline p ON p.id = t.pipeline_id
WHERE p.status = $1 AND t.status NOT IN ('DONE', 'SKIPPED', 'RUNNING')
"""


def _connection() -> BaseDBAsyncClient:
    return get_connection("default")


async def missing_migrations() -> set[str]:
    """The migrations of this code not applied to the database (one round trip: it also
    shows that the database answers)."""
    rows = await _connection().execute_query_dict(_APPLIED_MIGRATIONS, [APP_LABEL])
    return set(KNOWN_MIGRATIONS) - {row["name"] for row in rows}


async def tasks_by_status() -> dict[str, int]:
    """How many tasks are in each status."""
    rows = await _connection().execute_query_dict(_TASKS_BY_STATUS)
    return {row["status"]: row["tasks"] for row in rows}


async def tasks_by_waiting_reason() -> dict[str, int]:
    """How many tasks wait for each kind of reason, as the worker and the API decide it."""
    rows = await _connection().execute_query_dict(_OPEN_PIPELINES, [PipelineStatus.OPEN.value])
    decisions = await scheduling.decisions((row["pipeline_id"] for row in rows), datetime.now(UTC))
    return dict(
        Counter(
            reason.kind.value
            for decision in decisions.values()
            for reason in decision.waiting.values()
        )
    )


def pool_connections() -> tuple[int, int]:
    """Connections of the process's pool to Conveyor's database: (in use, open)."""
    pool = getattr(_connection(), "_pool", None)
    if pool is None:
        return 0, 0
    size: int = pool.get_size()
    return size - pool.get_idle_size(), size
