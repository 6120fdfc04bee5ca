"""Hosts of the test's own: a network namespace on a veth pair from the root namespace.

slirpnet's host sockets live in the root namespace, so a guest's connection to such a
host's address goes through slirpnet to a machine that exists only for the test.  The
addresses come from 10.199.0.0/16, a /30 per host, chosen free of the root namespace's
routes so that parallel runs do not collide.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import IPv4Network

from integration.linux import system

_POOL = IPv4Network("10.199.0.0/16")
# Only SYNs are dropped: a connect there hangs, and nothing else is ever sent.
_DROP_SYNS = """
table inet blackhole {
    chain input {
        type filter hook input priority 0; policy accept;
        tcp flags & (syn | ack) == syn counter drop
    }
}
"""


@dataclass(frozen=True)
class NamespaceHost:
    netns: str
    address: str  # the host's, in its namespace
    root_address: str  # the root namespace's end of the veth pair

    def dropped_syns(self) -> int:
        """How many SYNs the blackhole rule has dropped so far."""
        listing = system.run(
            "ip", "netns", "exec", self.netns, "nft", "list", "table", "inet", "blackhole"
        )
        for line in listing.splitlines():
            if "counter packets" in line:
                return int(line.split("counter packets")[1].split()[0])
        raise system.PlumbingError(f"no counter in {listing!r}")


@contextmanager
def namespace_host(*, drop_syns: bool = False) -> Iterator[NamespaceHost]:
    """A namespace host reachable from the root namespace; with ``drop_syns``, a blackhole."""
    netns = system.unique_name("ns")
    outer, inner = system.unique_name("v"), system.unique_name("v")
    subnet = _free_subnet()
    root_address, address = (str(host) for host in subnet.hosts())
    try:
        system.ip("netns", "add", netns)
        system.ip("link", "add", outer, "type", "veth", "peer", "name", inner, "netns", netns)
        system.ip("addr", "add", f"{root_address}/30", "dev", outer)
        system.ip("link", "set", outer, "up")
        system.ip("addr", "add", f"{address}/30", "dev", inner, netns=netns)
        system.ip("link", "set", inner, "up", netns=netns)
        system.ip("link", "set", "lo", "up", netns=netns)
        if drop_syns:
            system.run("ip", "netns", "exec", netns, "nft", "-f", "-", input=_DROP_SYNS)
        yield NamespaceHost(netns, address, root_address)
    finally:
        system.ip("netns", "delete", netns, check=False)  # takes the veth pair with it
        system.ip("link", "delete", outer, check=False)


def _free_subnet() -> IPv4Network:
    routes = system.ip("-4", "route", "show", "table", "all")
    taken = [
        IPv4Network(word, strict=False) for word in routes.split() if word.startswith("10.199.")
    ]
    subnets = list(_POOL.subnets(new_prefix=30))
    start = os.getpid() % len(subnets)
    for subnet in subnets[start:] + subnets[:start]:
        if not any(subnet.overlaps(other) for other in taken):
            return subnet
    raise system.PlumbingError(f"no free /30 left in {_POOL}")
