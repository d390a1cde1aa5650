"""A worker's running tasks' log lines, streamed live as TASK_LOG events.

Lines are batched: every `interval_seconds` the lines of all the worker's running tasks are
written in one transaction, with one NOTIFY; a task's last lines go with its outcome's report.
NOTIFY serializes commits cluster-wide, so a line each would cap the whole cluster's
throughput.
The stream is best effort: the TaskRun's own log keeps every line whatever happens here.
"""

import asyncio
import logging
from collections import defaultdict
from typing import Any

from conveyor.db import events as event_log
from conveyor.db.outages import Outage
from conveyor.runner.targets import LogListener

logger = logging.getLogger(__name__)

#: How long a line may wait for the others of its batch.
FLUSH_SECONDS = 0.2


class TaskLogStream:
    """Collects log entries per task and writes them as TASK_LOG events, a batch at a time."""

    def __init__(self, actor: str, interval_seconds: float = FLUSH_SECONDS) -> None:
        self._actor = actor
        self._interval_seconds = interval_seconds
        self._pending: dict[int, list[dict[str, Any]]] = defaultdict(list)
        self._due = asyncio.Event()
        # One batch at a time, so that a task's lines are written in the order they happened.
        self._writing = asyncio.Lock()
        self._outage = Outage(logger, "task log stream")

    def listener(self, task_id: int) -> LogListener:
        """What `targets.execute` calls with each entry of `task_id`'s run."""

        def hear(entry: dict[str, Any]) -> None:
            self._pending[task_id].append(entry)
            self._due.set()

        return hear

    async def flush(self) -> None:
        """Write every entry heard so far."""
        async with self._writing:
            batch, self._pending = dict(self._pending), defaultdict(list)
            self._due.clear()
            try:
                await event_log.record_task_logs(self._actor, batch)
            except Exception as error:
                # Dropped, not retried: the run's own log keeps every line, and an outage is
                # logged once however many batches it costs.
                self._outage.failed(error)
            else:
                self._outage.succeeded()

    async def take(self, task_id: int) -> list[dict[str, Any]]:
        """The entries of `task_id` not written yet, for its report to write: it writes them
        in its own transaction, before the status change, with the same NOTIFY. Waits for a
        batch being written, which may hold the task's earlier entries."""
        async with self._writing:
            return self._pending.pop(task_id, [])

    async def run(self) -> None:
        """Flush whenever entries are waiting, at most once per interval, until cancelled."""
        while True:
            await self._due.wait()
            await asyncio.sleep(self._interval_seconds)
            await self.flush()
