"""Where Conveyor may connect to an instance, and which connection options an instance may
set: the rules, without IO. Resolving a host name and applying the rules is `conveyor.hosts`.
"""

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Self

from conveyor.errors import ErrorCode, FieldPath, Problem

#: The most characters an instance's host may have.
HOST_MAX_LENGTH = 255

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def parse_address(text: str) -> Address:
    """An IP address as the resolver writes it (an IPv6 scope such as `%eth0` included)."""
    return ipaddress.ip_address(text)


def _unmapped(address: Address) -> Address:
    # ::ffff:127.0.0.1 is a socket to 127.0.0.1: it is judged as the IPv4 address it reaches,
    # so that allowing an IPv6 range never lets an IPv4 address through in disguise.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _unmapped_network(network: Network) -> Network:
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_IPV4_MAPPED):
        return ipaddress.IPv4Network(
            (int(network.network_address) & 0xFFFF_FFFF, network.prefixlen - 96)
        )
    return network


@dataclass(frozen=True)
class InstanceNetworks:
    """The networks instances may be on; none at all allows any host."""

    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Self:
        """The networks of the `instance_networks` setting: `10.0.0.0/8`, `192.168.1.5`, `::1`.

        Raises ValueError naming the first entry that is neither a network nor an address.
        """
        networks: list[Network] = []
        for entry in entries:
            try:
                network = ipaddress.ip_network(entry.strip())
            except ValueError as error:
                raise ValueError(f"instance network {entry!r}: {error}") from None
            networks.append(_unmapped_network(network))
        return cls(tuple(networks))

    @property
    def restricted(self) -> bool:
        return bool(self.networks)

    def allows(self, address: Address) -> bool:
        reached = _unmapped(address)
        return not self.restricted or any(reached in network for network in self.networks)

    def allows_all(self, addresses: Iterable[Address]) -> bool:
        """Whether every address is allowed; when restricted, an empty list is not."""
        listed = list(addresses)
        if not self.restricted:
            return True
        return bool(listed) and all(self.allows(address) for address in listed)


#: No networks listed: an instance may be on any host.
UNRESTRICTED = InstanceNetworks()


class SSLMode(StrEnum):
    """libpq's `sslmode`, from no TLS at all to a verified certificate naming the host."""

    DISABLE = "disable"
    ALLOW = "allow"
    PREFER = "prefer"
    REQUIRE = "require"
    VERIFY_CA = "verify-ca"
    VERIFY_FULL = "verify-full"


class TargetSessionAttrs(StrEnum):
    """libpq's `target_session_attrs`: which of the host's addresses to settle on."""

    ANY = "any"
    PRIMARY = "primary"
    STANDBY = "standby"
    READ_WRITE = "read-write"
    READ_ONLY = "read-only"
    PREFER_STANDBY = "prefer-standby"


#: The connection options an instance may set, with the values each takes. Both only choose
#: among behaviours of the connection Conveyor itself opens: TLS or not and how strictly the
#: certificate is checked, and (for a host with several addresses, such as a cluster's DNS
#: name) which server to settle on; `read-write` keeps a change off a standby.
ALLOWED_OPTIONS: Mapping[str, type[StrEnum]] = {
    "sslmode": SSLMode,
    "target_session_attrs": TargetSessionAttrs,
}

_FILE = "it names a file on the Conveyor server"
#: libpq options an instance may not set, and why; any other name is simply not supported.
REFUSED_OPTIONS: Mapping[str, str] = {
    **dict.fromkeys(
        ("host", "hostaddr", "port", "user", "dbname"),
        "the instance's own fields say where to connect and as whom",
    ),
    "password": "the instance's password field holds it, encrypted",
    **dict.fromkeys(
        ("passfile", "sslcert", "sslkey", "sslrootcert", "sslcrl", "sslcrldir", "service"),
        _FILE,
    ),
    "servicefile": _FILE,
    "sslpassword": "it unlocks a key file on the Conveyor server",
    "options": "it sets server settings at connection; Conveyor sets the session's own",
    **dict.fromkeys(
        ("application_name", "fallback_application_name"),
        "Conveyor names its sessions to find them again (a cancel only stops its own)",
    ),
    "connect_timeout": "the operator sets it for every instance "
    "(CONVEYOR_CONNECT_TIMEOUT_SECONDS): a worker waits that long",
    **dict.fromkeys(
        ("krbsrvname", "gsslib", "gssencmode", "gssdelegation"),
        "it would use the Conveyor server's own Kerberos credentials",
    ),
}


@dataclass(frozen=True)
class ConnectionOptions:
    """The connection options an instance sets; None leaves the client's default."""

    sslmode: SSLMode | None = None
    target_session_attrs: TargetSessionAttrs | None = None

    @classmethod
    def parse(cls, options: Iterable[tuple[str, str]]) -> Self:
        """Options as stored or given; raises ValueError with the first problem's message."""
        pairs = list(options)
        problems = connection_option_problems(pairs, ())
        if problems:
            raise ValueError(problems[0].message)
        values = dict(pairs)
        sslmode = values.get("sslmode")
        attrs = values.get("target_session_attrs")
        return cls(
            sslmode=None if sslmode is None else SSLMode(sslmode),
            target_session_attrs=None if attrs is None else TargetSessionAttrs(attrs),
        )

    def stored(self) -> dict[str, str]:
        """The options set, by libpq name, as the instance row keeps them."""
        values = {"sslmode": self.sslmode, "target_session_attrs": self.target_session_attrs}
        return {name: str(value) for name, value in values.items() if value is not None}


def connection_option_problems(
    options: Iterable[tuple[str, str]], path: FieldPath
) -> list[Problem]:
    """Every option that is not allowed, has a value it does not take, or comes twice; each
    problem's field is `path` + (index, "name" or "value")."""
    problems: list[Problem] = []
    seen: set[str] = set()
    for index, (name, value) in enumerate(options):
        found = _option_problem(name, value, seen)
        seen.add(name)
        if found is not None:
            message, part = found
            problems.append(Problem(ErrorCode.INVALID_INPUT, message, (*path, index, part)))
    return problems


def _option_problem(name: str, value: str, seen: set[str]) -> tuple[str, str] | None:
    """The problem with one option, and whether it is in its name or its value."""
    values = ALLOWED_OPTIONS.get(name)
    if values is None:
        reason = REFUSED_OPTIONS.get(name)
        if reason is not None:
            return f"{name!r} is not allowed: {reason}", "name"
        supported = ", ".join(sorted(ALLOWED_OPTIONS))
        return f"{name!r} is not a supported connection option; supported: {supported}", "name"
    if name in seen:
        return f"{name!r} is given more than once", "name"
    if value not in set(values):
        return f"{name!r} must be one of: " + ", ".join(values), "value"
    return None


def pinned_address_problem(host: str, options: ConnectionOptions) -> str | None:
    """Why `options` cannot work for `host` when Conveyor connects to the checked address of
    a host name, as it does while instance networks are set; None when they can."""
    # TLS would check the certificate against the address connected to, not the name; libpq
    # separates the two (host + hostaddr), asyncpg cannot.
    if options.sslmode is not SSLMode.VERIFY_FULL:
        return None
    try:
        parse_address(host)
    except ValueError:
        return (
            "sslmode verify-full checks the certificate against the host name, but while "
            "instance networks are set Conveyor connects to the address the name resolved "
            "to; give the host as an IP address, or use verify-ca"
        )
    return None


@dataclass(frozen=True)
class DatabaseIdentity:
    """A database as PostgreSQL itself tells it apart: its server's system identifier (made
    by initdb, shared only by that server's physical replicas) and its oid there. Names are
    no identity: the same name exists on many servers, and a database can be renamed."""

    system_identifier: int
    oid: int


#: Conveyor's own tables decide who may do what (tokens, roles, approvals): a change run
#: there would let anyone who may open an issue rewrite them.
CONVEYOR_DATABASE_REFUSAL = (
    "this is Conveyor's own database: Conveyor never runs a task against it, since a change "
    "there could rewrite its tokens, roles and approvals"
)


def is_conveyor_database(conveyor: DatabaseIdentity, database: DatabaseIdentity) -> bool:
    """Whether `database` is Conveyor's own (or a physical replica of it)."""
    return database == conveyor


def target_databases(
    conveyor: DatabaseIdentity, system_identifier: int, databases: Iterable[tuple[str, int]]
) -> list[str]:
    """The names, among (name, oid) of a server's databases, that may be targets: all but
    Conveyor's own."""
    return [
        name
        for name, oid in databases
        if not is_conveyor_database(conveyor, DatabaseIdentity(system_identifier, oid))
    ]
