"""An instance's host checked against the instance networks after DNS resolution, both when
the instance is saved and before each connection (`conveyor.domain.targets` has the rules)."""

import asyncio
import socket

from conveyor.domain.targets import Address, InstanceNetworks, parse_address


class HostNotAllowed(Exception):
    """The host is, or resolves to, somewhere outside the instance networks.

    The message names no address: what an internal name resolves to is not for the client.
    """


async def checked_hosts(host: str, networks: InstanceNetworks) -> list[str]:
    """Where to connect for `host`: the host itself when no networks are set, else every
    address it resolves to, each inside the networks. Connecting to these addresses rather
    than to the name again keeps a second, different DNS answer (rebinding) out.

    Raises HostNotAllowed, or socket.gaierror when the name does not resolve.
    """
    if not networks.restricted:
        return [host]
    if host.startswith("/"):
        raise HostNotAllowed("a Unix-socket directory is on no network the instances may use")
    addresses = await _addresses_of(host)
    if not networks.allows_all(addresses):
        raise HostNotAllowed("the host resolves to an address outside the instance networks")
    return [str(address) for address in addresses]


async def _addresses_of(host: str) -> list[Address]:
    try:
        return [parse_address(host)]
    except ValueError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    addresses: list[Address] = []
    for *_, sockaddr in infos:
        address = parse_address(str(sockaddr[0]))
        if address not in addresses:
            addresses.append(address)
    return addresses
