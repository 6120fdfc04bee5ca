"""Guest forwards, in libslirp's ``guestfwd`` terms: a virtual service address for guests.

``[tcp]:[ADDR]:PORT-TARGET``: a guest's TCP connection to ADDR:PORT, an address of
the guests' network that the gateway answers for (ARP, ping), becomes a connection
to TARGET on the host:

- ``tcp:HOST:PORT``: a TCP connection to an IPv4 or ``[IPv6]`` address of the host's;
- ``unix:PATH``: a connection to a unix stream socket;
- ``cmd:COMMAND``: a process run for the connection, whose stdin and stdout carry it.

The command is split as a shell would split it (``shlex``) and run without one:
``cmd:sh -c '...'`` asks for a shell.  Without ADDR the address is libslirp's
default, the network's ``x.x.2.4`` (10.0.2.4 in 10.0.2.0/24).  The address must be a
host address of the network that is not the gateway's or the DNS server's (as
libslirp requires); DHCP never leases it.  Other ports of the address are closed
(a RST; ICMP port unreachable for UDP), and libslirp's guestfwd is TCP only, so is this.

Unlike QEMU, whose ``tcp:`` and ``unix:`` targets are one character device opened
at start and shared by every connection, each guest connection here is a
connection of its own to the target, as ``cmd:`` is a process of its own.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Iterator
from ipaddress import IPv4Address, IPv4Network, IPv6Address, ip_address

from attrs import evolve, frozen

# libslirp's default guestfwd address: the network's address | 0.0.2.4 (under its mask).
_DEFAULT_HOST_PART = 0x0204
_DEFAULT_TARGET_HOST = "127.0.0.1"


@frozen
class TcpTarget:
    host: IPv4Address | IPv6Address
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if self.host.version == 6 else str(self.host)
        return f"tcp:{host}:{self.port}"


@frozen
class UnixTarget:
    path: str

    def __str__(self) -> str:
        return f"unix:{self.path}"


@frozen
class CommandTarget:
    command: str  # as written
    argv: tuple[str, ...]  # split as a shell would, for running without one

    def __str__(self) -> str:
        return f"cmd:{self.command}"


Target = TcpTarget | UnixTarget | CommandTarget


@frozen
class GuestForward:
    """One guest-visible address and port, and the host end its connections reach."""

    address: IPv4Address | None  # None: libslirp's default, the network's x.x.2.4
    port: int
    target: Target

    def __str__(self) -> str:
        return f"tcp:{self.address or ''}:{self.port}-{self.target}"

    @property
    def key(self) -> str:
        """What names it for removal: ``tcp:ADDR:PORT``."""
        return f"tcp:{self.address or ''}:{self.port}"

    def within(self, network: IPv4Network) -> GuestForward:
        """With its address said: the default one made of ``network``."""
        return self if self.address is not None else evolve(self, address=default_address(network))


def default_address(network: IPv4Network) -> IPv4Address:
    """libslirp's guestfwd address when none is given: 10.0.2.4 in 10.0.2.0/24."""
    host = _DEFAULT_HOST_PART & int(network.hostmask)
    return IPv4Address(int(network.network_address) | host)


_SYNTAX = "[tcp]:[ADDR]:PORT-tcp:HOST:PORT|unix:PATH|cmd:COMMAND"


def parse_guestfwd(text: str) -> GuestForward:
    """One spec; ``ValueError`` says what is wrong with it."""
    address, port = parse_key(text.partition("-")[0], spec=text)
    target_text = text.partition("-")[2]
    if not target_text:
        raise ValueError(f"{text!r} is not {_SYNTAX}")
    return GuestForward(address, port, _target(target_text, text))


def parse_key(text: str, *, spec: str | None = None) -> tuple[IPv4Address | None, int]:
    """``[tcp]:[ADDR]:PORT``, the part of a spec before its target: address and port."""
    spec = text if spec is None else spec
    protocol, colon, rest = text.partition(":")
    if protocol == "udp":
        raise ValueError(f"{spec!r}: guestfwd is TCP only, as libslirp's is")
    address_text, colon2, port_text = rest.partition(":")
    if not colon or not colon2 or protocol not in ("", "tcp"):
        raise ValueError(f"{spec!r} is not {_SYNTAX}")
    address = None
    if address_text:
        try:
            address = IPv4Address(address_text)
        except ValueError:
            raise ValueError(f"{spec!r}: {address_text!r} is not an IPv4 address") from None
    return address, _port(port_text, spec)


def _port(text: str, spec: str) -> int:
    if not text.isdigit() or not 0 < int(text) <= 65535:
        raise ValueError(f"{spec!r}: {text!r} is not a port number")
    return int(text)


def _target(text: str, spec: str) -> Target:
    kind, _, rest = text.partition(":")
    if kind == "cmd":
        try:
            argv = tuple(shlex.split(rest))
        except ValueError as error:  # an unclosed quote, say
            raise ValueError(f"{spec!r}: the command cannot be split: {error}") from None
        if not argv:
            raise ValueError(f"{spec!r}: the command is empty")
        return CommandTarget(rest, argv)
    if kind == "unix":
        if not rest:
            raise ValueError(f"{spec!r}: the unix socket's path is empty")
        return UnixTarget(rest)
    if kind == "tcp":
        host_text, colon, port_text = rest.rpartition(":")
        if not colon:
            raise ValueError(f"{spec!r}: the target is not tcp:HOST:PORT")
        host_text = host_text.removeprefix("[").removesuffix("]") or _DEFAULT_TARGET_HOST
        try:
            host = ip_address(host_text)
        except ValueError:
            raise ValueError(f"{spec!r}: {host_text!r} is not an IP address") from None
        return TcpTarget(host, _port(port_text, spec))
    raise ValueError(f"{spec!r}: the target is not tcp:HOST:PORT, unix:PATH or cmd:COMMAND")


def problems(
    forwards: Iterable[GuestForward], network: IPv4Network, taken: dict[IPv4Address, str]
) -> list[str]:
    """What is wrong with a network's guestfwds, each naming the field: an address that
    is not a host address of ``network``, or one ``taken`` names (address -> whose),
    or an address and port given twice."""
    found = []
    seen = set()
    for forward in forwards:
        address = forward.within(network).address
        assert address is not None
        if address not in network or address in (
            network.network_address,
            network.broadcast_address,
        ):
            found.append(f"guest_forwards: {forward}: {address} is not a host address of {network}")
        elif address in taken:
            found.append(f"guest_forwards: {forward}: {address} is {taken[address]} address")
        if (address, forward.port) in seen:
            found.append(f"guest_forwards: {forward}: {address}:{forward.port} is given twice")
        seen.add((address, forward.port))
    return found


class GuestForwards:
    """A network's guestfwds, by address and port: what the gateway answers for besides
    its own addresses.  The control API adds and removes them at run time."""

    def __init__(self, network: IPv4Network, forwards: Iterable[GuestForward] = ()) -> None:
        self._network = network
        self._forwards: dict[tuple[int, int], GuestForward] = {}
        self._addresses: dict[int, int] = {}  # address (as an integer) -> its guestfwds
        for forward in forwards:
            self.add(forward)

    def __contains__(self, address: object) -> bool:
        """Is ``address`` (an ``IPv4Address``) a guestfwd's?"""
        return isinstance(address, IPv4Address) and int(address) in self._addresses

    def __iter__(self) -> Iterator[GuestForward]:
        return iter(list(self._forwards.values()))

    def __len__(self) -> int:
        return len(self._forwards)

    def get(self, address: IPv4Address | IPv6Address, port: int) -> GuestForward | None:
        if not isinstance(address, IPv4Address):
            return None  # guestfwd is IPv4 only, as libslirp's
        return self._forwards.get((int(address), port))

    def add(self, forward: GuestForward) -> GuestForward:
        """Take ``forward`` (its address made explicit); ``KeyError`` if its address and
        port have one already."""
        forward = forward.within(self._network)
        assert forward.address is not None
        key = (int(forward.address), forward.port)
        if key in self._forwards:
            raise KeyError(f"{forward.key} has a guestfwd already: {self._forwards[key]}")
        self._forwards[key] = forward
        self._addresses[key[0]] = self._addresses.get(key[0], 0) + 1
        return forward

    def remove(self, address: IPv4Address | None, port: int) -> GuestForward:
        """Take the guestfwd of ``address`` (None: the default one) and ``port`` away;
        ``KeyError`` if there is none.  Its open connections go on."""
        address = address or default_address(self._network)
        forward = self._forwards.pop((int(address), port))
        left = self._addresses.pop(int(address)) - 1
        if left:
            self._addresses[int(address)] = left
        return forward
