"""Port forwards from the host to a guest, in libslirp's ``hostfwd`` terms.

``tcp:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT`` (or ``udp:``): connections or
datagrams arriving on the host at HOSTADDR:HOSTPORT (default 127.0.0.1) reach
the guest at GUESTADDR:GUESTPORT; an IPv6 address goes in brackets, ``[::1]``, and
the two sides may be of different families.  Without a guest address the forward goes
to the first VM of the namespace that holds a DHCP lease, which may not exist yet, or
else to one heard from at an IPv6 address.
Ports may be ranges, ``8000-8009``: host and guest ranges match one to one, and
a single guest port with a host range means consecutive guest ports from it.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv6Address

from attrs import frozen

# An address is IPv4, IPv6 in brackets, or empty (libslirp's syntax, RFC 3986's brackets).
_ADDRESS = r"(?:[0-9.]*|\[[0-9A-Fa-f:.]+\])"
_SPEC = re.compile(
    rf"^(?P<proto>tcp|udp):(?P<haddr>{_ADDRESS}):(?P<hport>\d+(?:-\d+)?)"
    rf"-(?P<gaddr>{_ADDRESS}):(?P<gport>\d+(?:-\d+)?)$"
)
DEFAULT_HOST_ADDRESS = IPv4Address("127.0.0.1")
MAX_RANGE = 1024  # ports in one spec: each is a listening socket


@frozen
class Forward:
    """One host port to one guest port."""

    protocol: str  # "tcp" or "udp"
    host_address: IPv4Address | IPv6Address
    host_port: int
    guest_address: IPv4Address | IPv6Address | None  # None: the first leased VM
    guest_port: int

    def __str__(self) -> str:
        host, guest = _text(self.host_address), _text(self.guest_address)
        return f"{self.protocol}:{host}:{self.host_port}-{guest}:{self.guest_port}"


def _text(address: IPv4Address | IPv6Address | None) -> str:
    if address is None:
        return ""
    return f"[{address}]" if address.version == 6 else str(address)


def parse_forwards(text: str) -> tuple[Forward, ...]:
    """Every forward a spec names, one per port of a range; ``ValueError`` says what is wrong."""
    match = _SPEC.match(text)
    if match is None:
        raise ValueError(
            f"{text!r} is not tcp|udp:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT (IPv6 in brackets)"
        )
    host_ports = _ports(match["hport"])
    guest_ports = _ports(match["gport"])
    if len(guest_ports) == 1:
        guest_ports = range(guest_ports[0], guest_ports[0] + len(host_ports))
    if len(guest_ports) != len(host_ports) or guest_ports[-1] > 65535:
        raise ValueError(f"{text!r}: the guest ports do not match the host ports one to one")
    host_address = _address(match["haddr"]) or DEFAULT_HOST_ADDRESS
    guest_address = _address(match["gaddr"])
    return tuple(
        Forward(match["proto"], host_address, host_port, guest_address, guest_port)
        for host_port, guest_port in zip(host_ports, guest_ports, strict=True)
    )


def _ports(text: str) -> range:
    first, _, last = text.partition("-")
    start, end = int(first), int(last or first)
    if not 0 < start <= end <= 65535:
        raise ValueError(f"{text!r} is not a port or a range of ports")
    if end - start >= MAX_RANGE:
        raise ValueError(f"{text!r} is more than {MAX_RANGE} ports")
    return range(start, end + 1)


def _address(text: str) -> IPv4Address | IPv6Address | None:
    if not text:
        return None
    try:
        if text.startswith("["):
            return IPv6Address(text[1:-1])
        return IPv4Address(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv4 address or [IPv6 address]") from None
