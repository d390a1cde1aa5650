"""Before each connection the runner checks the instance's host against the instance networks,
after DNS resolution, and connects to the address it checked; it applies the allowed
connection options, and nothing else, to the connection it opens."""

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import pytest

from conveyor.domain.attempts import Outcome
from conveyor.domain.statuses import TaskType
from conveyor.domain.targets import InstanceNetworks
from conveyor.runner.targets import (
    Change,
    Target,
    TargetUnreachable,
    cancel_backend,
    change_was_applied,
    execute,
)
from tests.integration.conftest import NOT_CONVEYOR, address_of
from tests.integration.test_targets import INSTALLATION

LOOPBACK = InstanceNetworks.parse(["127.0.0.0/8"])
ELSEWHERE = InstanceNetworks.parse(["10.0.0.0/8"])
#: A name only the fake resolver below knows.
REBINDING_HOST = "rebinding.conveyor.test"


def change(type: TaskType = TaskType.INSTANCE_SYNC, statement: str | None = None) -> Change:
    return Change(
        installation=INSTALLATION,
        task_id=1,
        attempt=1,
        type=type,
        statement=statement,
        database_name=None,
        lock_timeout_ms=5_000,
        statement_timeout_ms=30_000,
    )


def sync() -> Change:
    return change()


@pytest.fixture
def tcp_target(server_url: str) -> Callable[..., Target]:
    """A Target for the test server over TCP at 127.0.0.1, with `changes`."""
    address = address_of(server_url)
    assert not address.host.startswith("/"), "an instance needs the test server on TCP"

    def make(**changes: Any) -> Target:
        fields: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": address.port,
            "user": address.user,
            "password": address.password,
            "database": None,
            "conveyor_database": NOT_CONVEYOR,
            "connect_timeout": 5,
            **changes,
        }
        return Target(**fields)

    return make


def refused(outcome: Outcome, code: str) -> str:
    assert not outcome.succeeded
    assert outcome.error_code == code, outcome
    assert [entry["kind"] for entry in outcome.log] == ["error"], "nothing ran on the target"
    assert outcome.error_message is not None
    return outcome.error_message


async def test_an_address_outside_the_networks_is_refused_before_connecting(
    tcp_target: Callable[..., Target],
) -> None:
    target = tcp_target(networks=ELSEWHERE)

    message = refused(await execute(target, sync()), "HOST_NOT_ALLOWED")

    assert message.startswith("could not connect to the instance at 127.0.0.1:")
    assert message.endswith(": the host resolves to an address outside the instance networks")
    with pytest.raises(TargetUnreachable, match="outside the instance networks"):
        await change_was_applied(target, change(TaskType.SCHEMA_UPDATE, "SELECT 1"))
    assert not await cancel_backend(target, 12345)


async def test_a_name_resolving_outside_the_networks_is_refused_without_its_addresses(
    tcp_target: Callable[..., Target],
) -> None:
    message = refused(
        await execute(tcp_target(host="localhost", networks=ELSEWHERE), sync()), "HOST_NOT_ALLOWED"
    )

    assert message.startswith("could not connect to the instance at localhost:")
    assert "127.0.0.1" not in message
    assert "::1" not in message


async def test_an_address_inside_the_networks_is_connected_to(
    tcp_target: Callable[..., Target],
) -> None:
    outcome = await execute(tcp_target(networks=LOOPBACK), sync())

    assert outcome.succeeded, outcome


async def test_a_unix_socket_is_refused_while_networks_are_set(
    tcp_target: Callable[..., Target],
) -> None:
    message = refused(
        await execute(tcp_target(host="/var/run/postgresql", networks=LOOPBACK), sync()),
        "HOST_NOT_ALLOWED",
    )

    assert message.endswith("a Unix-socket directory is on no network the instances may use")


async def test_a_name_that_does_not_resolve_fails_as_an_unknown_host(
    tcp_target: Callable[..., Target],
) -> None:
    message = refused(
        await execute(tcp_target(host="no-such-host.invalid", networks=LOOPBACK), sync()),
        "CONNECTION_FAILED",
    )

    assert ": unknown host (" in message


@pytest.fixture
async def rebinding_resolver(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Makes REBINDING_HOST resolve to 127.0.0.1 once, then to an address outside the
    networks, as a DNS rebinding attack would; returns the answers given."""
    loop = asyncio.get_running_loop()
    real_getaddrinfo = loop.getaddrinfo
    answers: list[str] = []

    async def getaddrinfo(host: Any, port: Any, **kwargs: Any) -> Any:
        if host != REBINDING_HOST:
            return await real_getaddrinfo(host, port, **kwargs)
        answers.append("127.0.0.1" if not answers else "10.255.255.1")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[-1], port or 0))]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    return answers


async def test_the_connection_goes_to_the_checked_address_not_to_the_name_again(
    tcp_target: Callable[..., Target], rebinding_resolver: list[str]
) -> None:
    outcome = await execute(tcp_target(host=REBINDING_HOST, networks=LOOPBACK), sync())

    # Resolved again, the name would have led to 10.255.255.1, outside the networks.
    assert outcome.succeeded, outcome
    assert rebinding_resolver == ["127.0.0.1"], "the name was resolved once, and checked"


# --- connection options ----------------------------------------------------------------------


async def test_sslmode_is_applied_to_the_connection(tcp_target: Callable[..., Target]) -> None:
    # The test server has no TLS: `disable` and `prefer` connect, `require` cannot.
    disabled = await execute(tcp_target(options={"sslmode": "disable"}), sync())
    required = await execute(tcp_target(options={"sslmode": "require"}), sync())

    assert disabled.succeeded, disabled
    assert "rejected SSL upgrade" in refused(required, "CONNECTION_FAILED")


async def test_target_session_attrs_is_applied_to_the_connection(
    tcp_target: Callable[..., Target],
) -> None:
    primary = await execute(tcp_target(options={"target_session_attrs": "read-write"}), sync())
    standby = await execute(tcp_target(options={"target_session_attrs": "standby"}), sync())

    assert primary.succeeded, primary
    message = refused(standby, "CONNECTION_FAILED")
    assert message.endswith(": no server there is one target_session_attrs accepts")


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"sslrootcert": "/etc/passwd"}, "'sslrootcert' is not allowed"),
        ({"options": "-c search_path=evil"}, "'options' is not allowed"),
        ({"application_name": "psql"}, "'application_name' is not allowed"),
        ({"sslmode": "bogus"}, "'sslmode' must be one of"),
    ],
)
async def test_a_stored_option_that_is_not_allowed_keeps_the_runner_from_connecting(
    tcp_target: Callable[..., Target], options: dict[str, str], problem: str
) -> None:
    # Saving refuses these; a row changed behind Conveyor's back meets the same rules.
    message = refused(
        await execute(tcp_target(options=options), sync()), "INVALID_CONNECTION_OPTION"
    )

    assert f": connection option {problem}" in message


async def test_verify_full_for_a_host_name_is_refused_while_networks_are_set(
    tcp_target: Callable[..., Target],
) -> None:
    message = refused(
        await execute(
            tcp_target(host="localhost", networks=LOOPBACK, options={"sslmode": "verify-full"}),
            sync(),
        ),
        "INVALID_CONNECTION_OPTION",
    )

    assert "give the host as an IP address, or use verify-ca" in message
