"""A namespace host the root namespace reaches over IPv4 but has no IPv6 route to.

Where the host has IPv4 only, a guest's IPv6 connection must fail at once, so that its
software (a browser's Happy Eyeballs, RFC 8305; getaddrinfo's next address) falls back
to IPv4 instead of waiting out SYN retries.  The host here is ``nshost``'s, with an IPv6
address of a /64 from fd53:6c69:7270::/48 (a ULA prefix, RFC 4193) inside its
namespace.  The root namespace gets an ``unreachable`` route for that /64: what the
kernel does for a prefix it has no route to (ENETUNREACH), made explicit because a
machine with a default IPv6 route would otherwise send the packets out of it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network

from integration.linux import system
from integration.linux.nshost import NamespaceHost, namespace_host

_POOL = IPv6Network("fd53:6c69:7270::/48")


@dataclass(frozen=True)
class UnroutedHost:
    host: NamespaceHost  # address: its IPv4 one, which the root namespace reaches
    address6: IPv6Address  # in its namespace, unreachable from the root namespace
    prefix6: IPv6Network


@contextmanager
def unrouted_ipv6_host() -> Iterator[UnroutedHost]:
    with namespace_host() as host:
        prefix = _free_prefix()
        address = prefix.network_address + 2
        (link,) = (
            link["ifname"]
            for link in json.loads(
                system.ip("-j", "link", "show", "type", "veth", netns=host.netns)
            )
        )
        system.ip("-6", "addr", "add", f"{address}/64", "dev", link, "nodad", netns=host.netns)
        system.ip("-6", "route", "add", "unreachable", str(prefix))
        try:
            yield UnroutedHost(host, address, prefix)
        finally:
            system.ip("-6", "route", "del", "unreachable", str(prefix), check=False)


def _free_prefix() -> IPv6Network:
    """A /64 of the pool that no route of the root namespace touches, one per process."""
    routes = system.ip("-6", "route", "show", "table", "all")
    taken = {
        IPv6Network(word, strict=False)
        for word in routes.split()
        if word.startswith("fd53:6c69:7270:")
    }
    start = os.getpid() % 0x10000
    for offset in range(0x10000):
        prefix = IPv6Network(
            (int(_POOL.network_address) + (((start + offset) % 0x10000) << 64), 64)
        )
        if not any(prefix.overlaps(other) for other in taken):
            return prefix
    raise system.PlumbingError(f"no free /64 left in {_POOL}")
