"""The host's DNS resolvers, the default upstreams, as libslirp and passt use them."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

from slirpnet.core.settings import Upstream

RESOLV_CONF = Path("/etc/resolv.conf")


def system_upstreams(path: Path = RESOLV_CONF) -> tuple[Upstream, ...]:
    """The IPv4 ``nameserver`` lines of resolv.conf(5), in order; none if unreadable."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return ()
    upstreams = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            try:
                upstreams.append(Upstream(IPv4Address(fields[1])))
            except ValueError:
                continue  # IPv6 resolvers: our upstream sockets are IPv4
    return tuple(upstreams)
