"""A Redis server run by the tests themselves, on a free loopback port, saving nothing."""

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.conftest import free_port

#: Set in CI (.ci/run installs redis-server): a missing server fails the tests, not skips them.
REQUIRE_REDIS = os.environ.get("CONVEYOR_REQUIRE_REDIS") == "1"


@contextmanager
def redis_server() -> Iterator[str]:
    """The URL of a private Redis, stopped when the block ends; skips without `redis-server`."""
    program = shutil.which("redis-server")
    if program is None:
        if REQUIRE_REDIS:
            pytest.fail("redis-server is not installed (apt-get install redis-server)")
        pytest.skip("redis-server is not installed")
    port = free_port()
    process = subprocess.Popen(
        [program, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_until_it_answers(port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


def _wait_until_it_answers(port: int, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
                connection.sendall(b"PING\r\n")
                if connection.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"redis-server did not answer on port {port}")
        time.sleep(0.05)
