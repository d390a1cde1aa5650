"""Outages of Conveyor's own database: how to recognise one, and how a loop rides one out.

A worker, the event listener and the event hub keep running through an outage: each failure
is retried after a growing delay, and the outage is logged once, when it starts and when it
ends, however many retries it takes.
"""

import logging
import time
from typing import Final

import asyncpg
from asyncpg.exceptions import (
    AdminShutdownError,
    CannotConnectNowError,
    CrashShutdownError,
    TooManyConnectionsError,
)
from tortoise.exceptions import DBConnectionError

#: Seconds between retries: growing, then steady at the last.
RETRY_DELAYS_SECONDS: Final = (0.1, 0.25, 0.5, 1.0, 2.0)

_UNAVAILABLE = (
    # Refused, reset or timed out while connecting, or a socket that vanished mid-query.
    OSError,
    # "connection was closed in the middle of operation" and other broken-connection states.
    asyncpg.InterfaceError,
    # "another operation is in progress": what a query gets from a pooled connection the
    # server terminated between two queries (seen after pg_terminate_backend).
    asyncpg.InternalClientError,
    # SQLSTATE class 08, and the server shutting down, starting up or out of connections.
    asyncpg.PostgresConnectionError,
    AdminShutdownError,
    CrashShutdownError,
    CannotConnectNowError,
    TooManyConnectionsError,
    DBConnectionError,
)


def database_unavailable(error: BaseException) -> bool:
    """Whether `error` (or an error it was raised from) says the database cannot be reached
    or dropped the connection: a failure worth retrying, not a fault of the request."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, _UNAVAILABLE):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


class Outage:
    """One loop's (or component's) view of the database: it logs a warning when failures
    start and an info line when an operation succeeds again, and spaces out the retries."""

    def __init__(self, logger: logging.Logger, who: str) -> None:
        self._logger = logger
        self._who = who
        self._failures = 0
        self._since = 0.0

    @property
    def ongoing(self) -> bool:
        return self._failures > 0

    def failed(self, error: BaseException) -> float:
        """Note a failure; the seconds to wait before the next try."""
        if self._failures == 0:
            self._since = time.monotonic()
            # The type only: the message may hold SQL, host names or secrets.
            self._logger.warning(
                "%s: %s (%s); retrying until it is back",
                self._who,
                "Conveyor's database is unavailable"
                if database_unavailable(error)
                else "an operation on Conveyor's database failed",
                type(error).__name__,
            )
        delay = RETRY_DELAYS_SECONDS[min(self._failures, len(RETRY_DELAYS_SECONDS) - 1)]
        self._failures += 1
        return delay

    def succeeded(self) -> None:
        if self._failures == 0:
            return
        self._logger.info(
            "%s: Conveyor's database is back after %.1f s (%d failed tries)",
            self._who,
            time.monotonic() - self._since,
            self._failures,
        )
        self._failures = 0
