"""The rules of where Conveyor may connect and with which options (conveyor.domain.targets)."""

import ipaddress

import pytest

from conveyor.domain.targets import (
    ALLOWED_OPTIONS,
    REFUSED_OPTIONS,
    UNRESTRICTED,
    ConnectionOptions,
    DatabaseIdentity,
    InstanceNetworks,
    SSLMode,
    TargetSessionAttrs,
    connection_option_problems,
    is_conveyor_database,
    parse_address,
    pinned_address_problem,
    target_databases,
)
from conveyor.errors import ErrorCode, Problem

PRIVATE = InstanceNetworks.parse(["10.0.0.0/8", "192.168.1.5", "fd00::/8"])


# --- instance networks -----------------------------------------------------------------------


def test_no_networks_allow_any_address() -> None:
    assert not UNRESTRICTED.restricted
    assert InstanceNetworks.parse([]) == UNRESTRICTED
    assert UNRESTRICTED.allows(parse_address("169.254.169.254"))
    assert UNRESTRICTED.allows_all([])


def test_entries_are_networks_or_single_addresses() -> None:
    assert PRIVATE.networks == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.1.5/32"),
        ipaddress.ip_network("fd00::/8"),
    )
    assert InstanceNetworks.parse([" 10.0.0.0/8 "]).networks == (
        ipaddress.ip_network("10.0.0.0/8"),
    )


@pytest.mark.parametrize(
    "entry", ["db.internal", "10.0.0.1/8", "10.0.0.0/33", "300.1.1.1", "", "10.0.0.0/8;x"]
)
def test_an_entry_that_is_no_network_is_refused_by_name(entry: str) -> None:
    with pytest.raises(ValueError, match=f"instance network {entry!r}"):
        InstanceNetworks.parse(["127.0.0.0/8", entry])


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("10.0.0.1", True),
        ("10.255.255.255", True),
        ("11.0.0.1", False),
        ("192.168.1.5", True),
        ("192.168.1.6", False),
        ("127.0.0.1", False),
        ("0.0.0.0", False),
        ("169.254.169.254", False),
        ("fd12::1", True),
        ("fe80::1", False),
        ("::1", False),
        ("::", False),
    ],
)
def test_an_address_is_allowed_only_inside_a_listed_network(address: str, allowed: bool) -> None:
    assert PRIVATE.allows(parse_address(address)) is allowed


@pytest.mark.parametrize(
    ("address", "allowed"),
    [("::ffff:10.1.2.3", True), ("::ffff:127.0.0.1", False), ("::ffff:192.168.1.5", True)],
)
def test_an_ipv4_mapped_address_is_judged_as_the_ipv4_address_it_reaches(
    address: str, allowed: bool
) -> None:
    assert PRIVATE.allows(parse_address(address)) is allowed


def test_allowing_every_ipv6_address_lets_no_ipv4_address_through_in_disguise() -> None:
    any_ipv6 = InstanceNetworks.parse(["::/0"])

    assert any_ipv6.allows(parse_address("2001:db8::1"))
    assert not any_ipv6.allows(parse_address("::ffff:127.0.0.1"))


def test_a_network_written_ipv4_mapped_allows_its_ipv4_addresses() -> None:
    mapped = InstanceNetworks.parse(["::ffff:10.0.0.0/104"])

    assert mapped.networks == (ipaddress.ip_network("10.0.0.0/8"),)
    assert mapped.allows(parse_address("10.9.8.7"))
    assert mapped.allows(parse_address("::ffff:10.9.8.7"))
    assert not mapped.allows(parse_address("11.0.0.1"))


def test_a_link_local_address_with_its_scope_is_judged_by_its_address() -> None:
    link_local = InstanceNetworks.parse(["fe80::/10"])

    assert link_local.allows(parse_address("fe80::1%eth0"))
    assert not PRIVATE.allows(parse_address("fe80::1%eth0"))


def test_every_resolved_address_must_be_allowed() -> None:
    inside, outside = parse_address("10.0.0.1"), parse_address("127.0.0.1")

    assert PRIVATE.allows_all([inside, parse_address("fd00::5")])
    assert not PRIVATE.allows_all([inside, outside])
    assert not PRIVATE.allows_all([outside, inside])
    assert not PRIVATE.allows_all([]), "a host that resolves to nothing cannot be checked"


# --- connection options ----------------------------------------------------------------------


def test_the_allowed_options_are_sslmode_and_target_session_attrs_only() -> None:
    assert dict(ALLOWED_OPTIONS) == {"sslmode": SSLMode, "target_session_attrs": TargetSessionAttrs}
    assert [str(mode) for mode in SSLMode] == [
        "disable",
        "allow",
        "prefer",
        "require",
        "verify-ca",
        "verify-full",
    ]
    assert [str(attrs) for attrs in TargetSessionAttrs] == [
        "any",
        "primary",
        "standby",
        "read-write",
        "read-only",
        "prefer-standby",
    ]
    assert not set(ALLOWED_OPTIONS) & set(REFUSED_OPTIONS)


@pytest.mark.parametrize("mode", list(SSLMode))
def test_every_sslmode_is_accepted(mode: SSLMode) -> None:
    assert connection_option_problems([("sslmode", str(mode))], ()) == []
    assert ConnectionOptions.parse([("sslmode", str(mode))]) == ConnectionOptions(sslmode=mode)


@pytest.mark.parametrize("attrs", list(TargetSessionAttrs))
def test_every_target_session_attrs_is_accepted(attrs: TargetSessionAttrs) -> None:
    options = ConnectionOptions.parse([("target_session_attrs", str(attrs))])
    assert options == ConnectionOptions(target_session_attrs=attrs)


def test_options_are_stored_by_their_libpq_names() -> None:
    options = ConnectionOptions.parse(
        [("target_session_attrs", "read-write"), ("sslmode", "verify-ca")]
    )

    assert options.stored() == {"sslmode": "verify-ca", "target_session_attrs": "read-write"}
    assert ConnectionOptions.parse(options.stored().items()) == options
    assert ConnectionOptions.parse([]) == ConnectionOptions()
    assert ConnectionOptions().stored() == {}


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("sslkey", "names a file on the Conveyor server"),
        ("sslcert", "names a file on the Conveyor server"),
        ("sslrootcert", "names a file on the Conveyor server"),
        ("sslcrl", "names a file on the Conveyor server"),
        ("passfile", "names a file on the Conveyor server"),
        ("service", "names a file on the Conveyor server"),
        ("sslpassword", "unlocks a key file"),
        ("host", "say where to connect and as whom"),
        ("hostaddr", "say where to connect and as whom"),
        ("port", "say where to connect and as whom"),
        ("user", "say where to connect and as whom"),
        ("dbname", "say where to connect and as whom"),
        ("password", "holds it, encrypted"),
        ("options", "sets server settings"),
        ("application_name", "find them again"),
        ("connect_timeout", "CONVEYOR_CONNECT_TIMEOUT_SECONDS"),
        ("krbsrvname", "Kerberos"),
    ],
)
def test_a_dangerous_option_is_refused_with_the_reason(name: str, reason: str) -> None:
    (problem,) = connection_option_problems([("sslmode", "require"), (name, "x")], ("opts",))

    assert problem.code is ErrorCode.INVALID_INPUT
    assert problem.field == ("opts", 1, "name")
    assert problem.message.startswith(f"{name!r} is not allowed: ")
    assert reason in problem.message
    with pytest.raises(ValueError, match=f"{name!r} is not allowed"):
        ConnectionOptions.parse([(name, "x")])


@pytest.mark.parametrize("name", ["search_path", "SSLMODE", "sslmode ", "", "keepalives"])
def test_an_unknown_option_is_refused_naming_the_supported_ones(name: str) -> None:
    assert connection_option_problems([(name, "require")], ("opts",)) == [
        Problem(
            ErrorCode.INVALID_INPUT,
            f"{name!r} is not a supported connection option; "
            "supported: sslmode, target_session_attrs",
            ("opts", 0, "name"),
        )
    ]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("sslmode", "REQUIRE"),
        ("sslmode", "required"),
        ("sslmode", ""),
        ("sslmode", "require sslrootcert=/etc/passwd"),
        ("target_session_attrs", "read_write"),
        ("target_session_attrs", "master"),
    ],
)
def test_a_value_an_option_does_not_take_is_refused_on_the_value(name: str, value: str) -> None:
    (problem,) = connection_option_problems([(name, value)], ("opts",))

    assert problem.field == ("opts", 0, "value")
    assert problem.message.startswith(f"{name!r} must be one of: ")
    assert ", ".join(ALLOWED_OPTIONS[name]) in problem.message


def test_an_option_given_twice_is_refused_on_the_second() -> None:
    problems = connection_option_problems(
        [("sslmode", "require"), ("target_session_attrs", "any"), ("sslmode", "disable")], ("o",)
    )

    assert problems == [
        Problem(ErrorCode.INVALID_INPUT, "'sslmode' is given more than once", ("o", 2, "name"))
    ]


def test_every_problem_is_reported_each_at_its_place() -> None:
    problems = connection_option_problems(
        [("sslcert", "/x"), ("sslmode", "nope"), ("search_path", "public")], ("input", "opts")
    )

    assert [problem.field for problem in problems] == [
        ("input", "opts", 0, "name"),
        ("input", "opts", 1, "value"),
        ("input", "opts", 2, "name"),
    ]


# --- options against a checked address -------------------------------------------------------


@pytest.mark.parametrize("mode", [mode for mode in SSLMode if mode is not SSLMode.VERIFY_FULL])
def test_only_verify_full_needs_the_host_name(mode: SSLMode) -> None:
    assert pinned_address_problem("db.internal", ConnectionOptions(sslmode=mode)) is None


def test_verify_full_cannot_check_a_host_name_at_its_checked_address() -> None:
    verify_full = ConnectionOptions(sslmode=SSLMode.VERIFY_FULL)

    problem = pinned_address_problem("db.internal", verify_full)

    assert problem is not None
    assert "verify-ca" in problem
    assert pinned_address_problem("10.0.0.5", verify_full) is None
    assert pinned_address_problem("fd00::5", verify_full) is None
    assert pinned_address_problem("db.internal", ConnectionOptions()) is None


# --- Conveyor's own database -----------------------------------------------------------------

CONVEYOR = DatabaseIdentity(system_identifier=7_000_000_000_000_000_001, oid=16_384)


def test_conveyors_database_is_known_by_server_and_oid_together() -> None:
    assert is_conveyor_database(CONVEYOR, DatabaseIdentity(7_000_000_000_000_000_001, 16_384))
    # Another database on the same server, and the same oid on another server, are targets.
    assert not is_conveyor_database(CONVEYOR, DatabaseIdentity(7_000_000_000_000_000_001, 5))
    assert not is_conveyor_database(CONVEYOR, DatabaseIdentity(42, 16_384))


def test_a_sync_keeps_every_database_but_conveyors_own() -> None:
    found = [("app", 16_390), ("conveyor", 16_384), ("postgres", 5)]

    assert target_databases(CONVEYOR, CONVEYOR.system_identifier, found) == ["app", "postgres"]
    assert target_databases(CONVEYOR, 42, found) == ["app", "conveyor", "postgres"]
