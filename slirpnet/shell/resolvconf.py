"""The host's DNS resolvers, the default upstreams, as libslirp and passt use them."""

from __future__ import annotations

from ipaddress import ip_address
from pathlib import Path

from slirpnet.core.settings import Upstream

RESOLV_CONF = Path("/etc/resolv.conf")


def system_upstreams(path: Path = RESOLV_CONF) -> tuple[Upstream, ...]:
    """The ``nameserver`` lines of resolv.conf(5), IPv4 and IPv6, in order; none if
    unreadable."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return ()
    upstreams = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            try:
                upstreams.append(Upstream(ip_address(fields[1])))
            except ValueError:
                continue  # not an address: resolv.conf(5) allows nothing else there
    return tuple(upstreams)
