"""What a guest may reach and who may plug one in: the deny list, and the sockets' modes.

The deny list names host destinations (the gateway stands for 127.0.0.1); a guest's
flow there is refused with ICMP admin-prohibited, as under ``--restrict``, and counted
as ``denied``.  The built-in services and forwards are not the guest's flows and are
never denied.  192.0.2.0/24 and 198.51.100.0/24 are only ever values inside frames.
"""

from __future__ import annotations

import socket
from collections import Counter
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
import trio
from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import ICMP, IP

from slirpnet.config import Address, ConfigError, NamespaceConfig, ServerConfig, load_file
from slirpnet.core.flows import DnsFlow, EchoFlow, TcpFlow, UdpFlow
from slirpnet.core.settings import NetworkSettings
from slirpnet.server import bind_unix, run_server
from tests.test_config import from_flags
from tests.test_core_forwards import PEER, SSH, leased
from tests.test_core_segment import (
    DNS_IP,
    GATEWAY_IP,
    GUEST_IP,
    UPSTREAM_1,
    Shell,
    echo_frame,
    from_gateway,
    new_segment,
    udp_frame,
)
from tests.test_core_tcp import TcpShell, syn_frame

DENIED = "192.0.2.77"
ALLOWED = "198.51.100.1"
DENY = (IPv4Network("192.0.2.0/24"),)


def prohibited(frame: bytes) -> IP:
    return IP(src=GATEWAY_IP, dst=GUEST_IP) / ICMP(type=3, code=13) / frame[14:42]


def test_the_deny_list_is_empty_by_default() -> None:
    assert NetworkSettings().deny == ()
    assert not NetworkSettings().denied(IPv4Address("127.0.0.1"))


@pytest.mark.parametrize(
    "frame",
    [
        syn_frame(dst=DENIED),
        udp_frame(DENIED, 123),
        echo_frame(DENIED),
    ],
    ids=["tcp", "udp", "echo"],
)
def test_a_denied_destination_is_admin_prohibited(frame: bytes) -> None:
    segment = new_segment(deny=DENY)
    vm = segment.attach("guest")
    shell = Shell(segment)
    segment.receive(vm, frame, 0.0)
    assert shell.actions() == []
    from_gateway(vm.take_frames()[0], prohibited(frame))
    assert vm.stats.drops == Counter({"denied": 1})


def test_other_destinations_are_not_denied() -> None:
    segment = new_segment(deny=DENY)
    vm = segment.attach("guest")
    shell = Shell(segment)
    segment.receive(vm, udp_frame(ALLOWED, 123), 0.0)
    shell.opened_one(UdpFlow)
    segment.receive(vm, echo_frame(ALLOWED), 0.0)
    shell.opened_one(EchoFlow)
    assert vm.stats.drops == Counter()


def test_denying_loopback_closes_the_gateway_but_not_the_services() -> None:
    """DNS is relayed to its upstream and forwards reach the guest, whatever is denied."""
    upstream = IPv4Network(UPSTREAM_1.address)
    segment = new_segment(deny=(IPv4Network("127.0.0.0/8"), upstream), dns_upstreams=(UPSTREAM_1,))
    shell = TcpShell(segment)
    client, _ = leased(segment)
    vm = client.vm
    frame = syn_frame(dst=GATEWAY_IP, dport=8080)
    segment.receive(vm, frame, 0.0)
    from_gateway(vm.take_frames()[0], prohibited(frame))
    assert vm.stats.drops == Counter({"denied": 1})
    segment.receive(vm, udp_frame(DNS_IP, 53, DNS(id=1, qd=DNSQR(qname="a.test"))), 1.0)
    query, _ = shell.actions()
    assert isinstance(query.flow, DnsFlow) and query.flow.host_address == UPSTREAM_1.address
    segment.receive(vm, syn_frame(dst=DNS_IP, dport=53, sport=40001), 1.0)
    relay = shell.opened()
    assert relay.host_address == UPSTREAM_1.address
    forwarded = segment.forward_connection(SSH, PEER, 2.0)
    assert isinstance(forwarded, TcpFlow) and forwarded.host_address == PEER[0]
    assert vm.stats.drops == Counter({"denied": 1})


def test_deny_applies_to_the_host_socket_s_destination() -> None:
    """The guest's 10.0.2.2 is the host's 127.0.0.1: denying 10.0.2.2 itself means nothing."""
    segment = new_segment(deny=(IPv4Network("10.0.2.2/32"),))
    vm = segment.attach("guest")
    shell = TcpShell(segment)
    segment.receive(vm, syn_frame(dst=GATEWAY_IP, dport=8080), 0.0)
    assert shell.opened().host_address == IPv4Address("127.0.0.1")


# -- configuration ---------------------------------------------------------------------


def test_limits_and_policy_from_flags() -> None:
    (namespace,) = from_flags(
        *("--deny", "192.0.2.0/24", "--deny", "127.0.0.1"),
        *("--max-connecting", "16", "--max-leases", "2", "--socket-mode", "0660"),
    ).namespaces
    settings = namespace.settings
    assert settings.deny == (IPv4Network("192.0.2.0/24"), IPv4Network("127.0.0.1/32"))
    assert (settings.max_connecting, settings.max_leases) == (16, 2)
    assert namespace.socket_mode == 0o660


def test_limits_and_policy_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "slirpnet.toml"
    path.write_text(
        'deny = ["192.0.2.0/24"]\nsocket-mode = "0660"\n'
        '[namespace.lab]\nlisten = "unix:/run/lab.sock"\nmax-connecting = 8\nmax-leases = 1\n'
        '[namespace.web]\nlisten = "unix:/run/web.sock"\ndeny = []\n'
    )
    lab, web = load_file(path).namespaces
    assert lab.settings.deny == (IPv4Network("192.0.2.0/24"),) and lab.socket_mode == 0o660
    assert (lab.settings.max_connecting, lab.settings.max_leases) == (8, 1)
    assert web.settings.deny == ()


@pytest.mark.parametrize(
    ("argv", "key"),
    [
        (["--deny", "192.0.2.0/40"], "deny"),
        (["--deny", "example.com"], "deny"),
        (["--max-connecting", "0"], "max-connecting"),
        (["--max-leases", "0"], "max-leases"),
        (["--socket-mode", "rw"], "socket-mode"),
        (["--socket-mode", "01777"], "socket-mode"),
        (["--socket-mode", "0066"], "socket-mode"),
    ],
)
def test_bad_limits_and_policy_name_their_key(argv: list[str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_flags(*argv)
    assert info.value.key == key


# -- the sockets' modes ----------------------------------------------------------------


def test_a_socket_mode_is_set_after_an_owner_only_bind(tmp_path: Path) -> None:
    sock = bind_unix(tmp_path / "vm.sock", socket.SOCK_STREAM, mode=0o660)
    assert (tmp_path / "vm.sock").stat().st_mode & 0o777 == 0o660
    sock.close()


async def test_the_server_s_sockets_are_owner_only_unless_told(tmp_path: Path) -> None:
    def namespace(name: str, mode: int) -> NamespaceConfig:
        listen = (
            Address("unix", path=str(tmp_path / f"{name}.sock")),
            Address("unixgram", path=str(tmp_path / f"{name}.dgram")),
        )
        return NamespaceConfig(
            name, NetworkSettings(dns_upstreams=(UPSTREAM_1,)), listen=listen, socket_mode=mode
        )

    config = ServerConfig(
        (namespace("private", 0o600), namespace("shared", 0o660)),
        control=Address("unix", path=str(tmp_path / "control.sock")),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(run_server, config)
        modes = {path.name: path.stat().st_mode & 0o777 for path in tmp_path.iterdir()}
        nursery.cancel_scope.cancel()
    assert modes == {
        "private.sock": 0o600,
        "private.dgram": 0o600,
        "shared.sock": 0o660,
        "shared.dgram": 0o660,
        "control.sock": 0o600,  # the control API changes the server: the owner's alone
    }
