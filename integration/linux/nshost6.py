"""Namespace hosts with IPv6: one the root namespace routes to, one it has no route to.

Each is ``nshost``'s host (its IPv4 address reached over a veth pair) with an IPv6
address of a /64 from fd53:6c69:7270::/48 (a ULA prefix, RFC 4193) in its namespace.
Routed, the root end of the veth has the /64's first address, so slirpnet's host
sockets reach the host over IPv6 too.  Unrouted, the root namespace gets an
``unreachable`` route for the /64 instead: what the kernel does for a prefix it has no
route to (ENETUNREACH), made explicit because a machine with a default IPv6 route would
otherwise send the packets out of it.  Where a host has IPv4 only, a guest's IPv6
connection must fail at once, so that its software (Happy Eyeballs, RFC 8305;
getaddrinfo's next address) falls back to IPv4 instead of waiting out SYN retries.
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
class NamespaceHost6:
    host: NamespaceHost  # address: its IPv4 one, which the root namespace reaches
    address6: IPv6Address  # in its namespace
    prefix6: IPv6Network


@contextmanager
def ipv6_namespace_host(*, routed: bool) -> Iterator[NamespaceHost6]:
    """A namespace host with an IPv6 address that the root namespace reaches, or not."""
    with namespace_host() as host:
        prefix = _free_prefix()
        address = prefix.network_address + 2
        (inner,) = _veths(host.netns)
        system.ip("-6", "addr", "add", f"{address}/64", "dev", inner, "nodad", netns=host.netns)
        if routed:
            (outer,) = _links_with(host.root_address)
            root = prefix.network_address + 1
            system.ip("-6", "addr", "add", f"{root}/64", "dev", outer, "nodad")
            yield NamespaceHost6(host, address, prefix)
            return  # deleting the namespace deletes the veth pair, its address and route
        system.ip("-6", "route", "add", "unreachable", str(prefix))
        try:
            yield NamespaceHost6(host, address, prefix)
        finally:
            system.ip("-6", "route", "del", "unreachable", str(prefix), check=False)


def _veths(netns: str) -> list[str]:
    links = json.loads(system.ip("-j", "link", "show", "type", "veth", netns=netns))
    return [link["ifname"] for link in links]


def _links_with(address: str) -> list[str]:
    """The root namespace's links that have ``address``."""
    links = json.loads(system.ip("-j", "addr", "show", "to", address))
    return [link["ifname"] for link in links]


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
        index = (start + offset) % 0x10000
        prefix = IPv6Network((int(_POOL.network_address) + (index << 64), 64))
        if not any(prefix.overlaps(other) for other in taken):
            return prefix
    raise system.PlumbingError(f"no free /64 left in {_POOL}")
