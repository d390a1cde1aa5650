"""Idle HTTP connections of a real `conveyor serve`: kept for CONVEYOR_KEEP_ALIVE_SECONDS, as
every response says, and closed after it."""

import select
import socket
import time
from pathlib import Path
from urllib.parse import urlparse

import h11

from conveyor.settings import Settings
from tests.conftest import conveyor_env, start_server

#: Longer than uvicorn's own default (5 s), which closed connections clients still held.
KEEP_ALIVE_SECONDS = 7


class HTTPConnection:
    """One TCP connection, spoken over with h11, that never reconnects by itself."""

    def __init__(self, url: str) -> None:
        parts = urlparse(url)
        self.host = f"{parts.hostname}:{parts.port}"
        self.socket = socket.create_connection((parts.hostname, parts.port), timeout=10)
        self.protocol = h11.Connection(h11.CLIENT)

    def get(self, path: str) -> h11.Response:
        request = h11.Request(method="GET", target=path, headers=[("Host", self.host)])
        self.socket.sendall(self.protocol.send(request) + self.protocol.send(h11.EndOfMessage()))
        response = None
        while True:
            event = self.protocol.next_event()
            if event is h11.NEED_DATA:
                self.protocol.receive_data(self.socket.recv(65536))
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.EndOfMessage):
                assert response is not None
                self.protocol.start_next_cycle()
                return response

    def closed_by_server(self) -> bool:
        readable, _, _ = select.select([self.socket], [], [], 0)
        return bool(readable) and self.socket.recv(1) == b""


def test_an_idle_connection_is_kept_for_the_keep_alive_it_announces(
    settings: Settings, tmp_path: Path
) -> None:
    env = conveyor_env(settings, CONVEYOR_KEEP_ALIVE_SECONDS=str(KEEP_ALIVE_SECONDS))
    server = start_server(env, tmp_path / "server.log")
    connection = HTTPConnection(server.url)
    try:
        first = connection.get("/healthz")
        time.sleep(KEEP_ALIVE_SECONDS - 1)
        assert not connection.closed_by_server(), "closed before the keep-alive it announced"
        second = connection.get("/graphql?query={__typename}")
        time.sleep(KEEP_ALIVE_SECONDS + 1.5)
        closed_after_the_timeout = connection.closed_by_server()
    finally:
        connection.socket.close()
        server.stop()

    assert (first.status_code, second.status_code) == (200, 401)
    for response in (first, second):
        assert (b"keep-alive", f"timeout={KEEP_ALIVE_SECONDS}".encode()) in response.headers
    assert closed_after_the_timeout
