"""The host's resolvers as default upstreams: resolv.conf(5) read as libslirp and passt do."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

from slirpnet.core.settings import Upstream
from slirpnet.shell.resolvconf import system_upstreams


def test_nameservers_of_both_families_in_order(tmp_path: Path) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text(
        "# written by hand\n"
        "search example.test\n"
        "nameserver 127.0.0.53\n"
        "nameserver ::1\n"
        "nameserver fe80::1%eth0\n"
        "nameserver resolver.example.test\n"  # not an address: passed over
        "nameserver\n"
        "options edns0 trust-ad\n"
    )
    assert system_upstreams(path) == (
        Upstream(IPv4Address("127.0.0.53")),
        Upstream(IPv6Address("::1")),
        Upstream(IPv6Address("fe80::1%eth0")),
    )


def test_no_file_no_upstreams(tmp_path: Path) -> None:
    assert system_upstreams(tmp_path / "missing") == ()
