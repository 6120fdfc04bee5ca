"""The NAT, policy and services that both address families share, tested over both.

Every test takes the ``family`` fixture (4 and 6): the same guest behaviour, in frames
of that family, must give the same flows, host destinations and answers.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_address

import pytest
from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import ICMP, TCP, UDP
from scapy.layers.inet6 import ICMPv6DestUnreach, ICMPv6EchoReply

from slirpnet.core import fastpath
from slirpnet.core.flows import (
    FLOW_REFUSED,
    FLOW_UNREACHABLE,
    EchoFlow,
    SendFlow,
    TcpFlow,
    UdpFlow,
)
from slirpnet.core.segment import Segment
from slirpnet.core.vm import Vm
from tests.families import DNS as DNS_ADDRESS
from tests.families import GATEWAY, GUEST, LOOPBACK, REMOTE, Guest, checked
from tests.test_core_segment import Shell, new_segment, one_frame


@pytest.fixture(params=[4, 6], ids=["ipv4", "ipv6"])
def family(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture
def guest(family: int) -> Guest:
    return Guest(family)


@pytest.fixture
def segment() -> Segment:
    return new_segment()


@pytest.fixture
def vm(segment: Segment) -> Vm:
    return segment.attach("guest")


@pytest.fixture
def shell(segment: Segment) -> Shell:
    return Shell(segment)


def unreachable_code(frame: bytes, family: int) -> int:
    pkt = checked(frame)
    if family == 4:
        assert pkt[ICMP].type == 3
        return int(pkt[ICMP].code)
    return int(pkt[ICMPv6DestUnreach].code)


# -- where flows go ----------------------------------------------------------------


def test_udp_to_a_remote_address_is_a_flow_to_it(
    segment: Segment, vm: Vm, shell: Shell, guest: Guest, family: int
) -> None:
    segment.receive(vm, guest.udp(REMOTE[family], 9999, b"hello"), 0.0)
    flow, payload = shell.opened_one(UdpFlow)
    assert payload == b"hello"
    assert (flow.host_address, flow.host_port) == (ip_address(REMOTE[family]), 9999)
    segment.flow_received(flow, b"reply", 1.0)
    answer = one_frame(vm)
    assert answer.src == "52:55:0a:00:02:02"
    assert bytes(answer[UDP].payload) == b"reply"
    assert (answer[UDP].sport, answer[UDP].dport) == (9999, 40000)
    assert answer[guest.ip_layer()].src == REMOTE[family]


def test_the_gateway_stands_for_the_host_loopback(
    segment: Segment, vm: Vm, shell: Shell, guest: Guest, family: int
) -> None:
    segment.receive(vm, guest.tcp(GATEWAY[family], 8080), 0.0)
    (action,) = shell.actions()
    assert isinstance(action.flow, TcpFlow)
    assert action.flow.host_address == ip_address(LOOPBACK[family])
    segment.flow_connected(action.flow, 0.1)
    syn_ack = one_frame(vm)
    assert syn_ack[TCP].flags == "SA" and syn_ack[TCP].ack == 1001
    mss = dict(syn_ack[TCP].options)["MSS"]
    assert mss == 65520 - (20 if family == 4 else 40) - 20  # Family.mss


def test_tcp_data_moves_both_ways(
    segment: Segment, vm: Vm, shell: Shell, guest: Guest, family: int
) -> None:
    segment.receive(vm, guest.tcp(REMOTE[family], 80), 0.0)
    (opened,) = shell.actions()
    flow = opened.flow
    assert isinstance(flow, TcpFlow)
    segment.flow_connected(flow, 0.0)
    ours = one_frame(vm)[TCP].seq
    segment.receive(vm, guest.tcp(REMOTE[family], 80, "A", 1001, ack=ours + 1), 0.0)
    request = guest.frame(
        guest.ip(REMOTE[family])
        / TCP(sport=41000, dport=80, flags="PA", seq=1001, ack=ours + 1)
        / b"GET /"
    )
    segment.receive(vm, request, 0.1)
    sent = [a for a in shell.actions() if getattr(a, "payload", None)]
    assert [bytes(a.payload) for a in sent] == [b"GET /"]  # type: ignore[attr-defined]
    segment.flow_received(flow, b"200 OK", 0.2)
    frames = [checked(f) for f in vm.take_frames()]
    assert any(bytes(f[TCP].payload) == b"200 OK" for f in frames)


def test_echo_to_a_remote_address_is_a_flow_and_the_reply_comes_back(
    segment: Segment, vm: Vm, shell: Shell, guest: Guest, family: int
) -> None:
    segment.receive(vm, guest.echo(REMOTE[family], ident=0x4242, seq=7), 0.0)
    flow, _ = shell.opened_one(EchoFlow)
    assert flow.host_address == ip_address(REMOTE[family])
    # A ping socket's reply carries its own identifier; the guest gets its own back.
    if family == 4:
        reply = bytes(ICMP(type=0, id=0x9999, seq=7) / b"ping!")
    else:
        reply = bytes(ICMPv6EchoReply(id=0x9999, seq=7, data=b"ping!"))
    segment.flow_received(flow, reply, 0.5)
    got = one_frame(vm)
    echoed = got[ICMP] if family == 4 else got[ICMPv6EchoReply]
    assert (echoed.id, echoed.seq) == (0x4242, 7)


def test_echo_to_the_gateway_and_dns_addresses_is_answered_here(
    segment: Segment, vm: Vm, shell: Shell, guest: Guest, family: int
) -> None:
    for address in (GATEWAY[family], DNS_ADDRESS[family]):
        segment.receive(vm, guest.echo(address), 0.0)
        got = one_frame(vm)
        assert got[guest.ip_layer()].src == address
    assert shell.actions() == []


def test_flows_of_both_families_count_against_one_limit(guest: Guest, family: int) -> None:
    segment = new_segment(max_flows=2)
    vm = segment.attach("guest")
    segment.receive(vm, Guest(4).udp(REMOTE[4], 1), 0.0)
    segment.receive(vm, Guest(6).udp(REMOTE[6], 1), 0.0)
    assert vm.flow_count == 2
    segment.receive(vm, guest.udp(REMOTE[family], 2), 0.0)
    assert vm.flow_count == 2 and vm.stats.drops["flow_limit"] == 1
    assert unreachable_code(vm.take_frames()[-1], family) == (13 if family == 4 else 1)


def test_the_same_ports_in_both_families_are_two_flows(segment: Segment, vm: Vm) -> None:
    segment.receive(vm, Guest(4).udp("10.0.2.2", 7), 0.0)
    segment.receive(vm, Guest(6).udp("fec0::2", 7), 0.0)
    assert len(vm.flows) == 2


# -- policy ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        ({"restrict": True}, "restricted"),
        ({"deny": (IPv4Network("192.0.2.0/24"), IPv6Network("2001:db8::/32"))}, "denied"),
    ],
)
def test_policy_refusals_are_answered_admin_prohibited(
    guest: Guest, family: int, settings: dict[str, object], reason: str
) -> None:
    segment = new_segment(**settings)
    vm = segment.attach("guest")
    segment.receive(vm, guest.udp(REMOTE[family], 53), 0.0)
    assert vm.stats.drops[reason] == 1 and segment.take_actions() == []
    (frame,) = vm.take_frames()
    assert unreachable_code(frame, family) == (13 if family == 4 else 1)


def test_no_host_loopback_refuses_the_gateway(guest: Guest, family: int) -> None:
    segment = new_segment(host_loopback=False)
    vm = segment.attach("guest")
    segment.receive(vm, guest.tcp(GATEWAY[family], 22), 0.0)
    assert vm.stats.drops["host_loopback_disabled"] == 1
    assert segment.take_actions() == []


@pytest.mark.parametrize(
    ("address4", "address6"),
    [
        ("224.0.0.1", "ff05::1"),  # multicast
        ("169.254.1.1", "fe80::1"),  # link-local
        ("127.0.0.1", "::1"),  # loopback
        ("0.0.0.0", "::"),  # unspecified
        ("240.0.0.1", "::ffff:192.0.2.1"),  # reserved; IPv4-mapped
    ],
)
def test_martians_are_never_nat_destinations(
    segment: Segment, vm: Vm, guest: Guest, family: int, address4: str, address6: str
) -> None:
    segment.receive(vm, guest.tcp(address4 if family == 4 else address6, 80), 0.0)
    assert segment.take_actions() == []
    assert vm.stats.drops["no_route"] + vm.stats.drops["udp_multicast"] == 1


def test_a_host_connect_failing_unreachable_is_told_at_once(
    segment: Segment, vm: Vm, shell: Shell, guest: Guest, family: int
) -> None:
    segment.receive(vm, guest.tcp(REMOTE[family], 443), 0.0)
    (opened,) = shell.actions()
    segment.flow_error(opened.flow, FLOW_UNREACHABLE, 0.01)
    code = unreachable_code(vm.take_frames()[-1], family)
    assert code == (1 if family == 4 else 3)  # host / address unreachable


def test_a_refused_udp_port_is_port_unreachable(
    segment: Segment, vm: Vm, shell: Shell, guest: Guest, family: int
) -> None:
    segment.receive(vm, guest.udp(REMOTE[family], 9), 0.0)
    flow, _ = shell.opened_one(UdpFlow)
    segment.flow_error(flow, FLOW_REFUSED, 0.1)
    (frame,) = vm.take_frames()
    assert unreachable_code(frame, family) == (3 if family == 4 else 4)


# -- DNS -----------------------------------------------------------------------------


def test_dns_on_the_dns_address_answers_the_host_name(
    segment: Segment, vm: Vm, shell: Shell, guest: Guest, family: int
) -> None:
    query = bytes(DNS(id=7, rd=1, qd=DNSQR(qname="host.slirpnet.internal", qtype="A")))
    segment.receive(vm, guest.udp(DNS_ADDRESS[family], 53, query), 0.0)
    answer = one_frame(vm)
    assert answer[guest.ip_layer()].src == DNS_ADDRESS[family]
    assert answer[DNS].an.rdata == "10.0.2.2"
    assert shell.actions() == []


def test_established_segments_take_the_fast_path_in_both_families(
    segment: Segment, vm: Vm, shell: Shell, guest: Guest, family: int
) -> None:
    """Data of an open flow goes through fastpath.established_segment (no parse of the
    general path), with the same result: the bytes reach the host in order."""
    segment.receive(vm, guest.tcp(REMOTE[family], 80), 0.0)
    (opened,) = shell.actions()
    segment.flow_connected(opened.flow, 0.0)
    ours = one_frame(vm)[TCP].seq
    data = guest.frame(
        guest.ip(REMOTE[family])
        / TCP(sport=41000, dport=80, flags="PA", seq=1001, ack=ours + 1)
        / b"fast"
    )
    assert fastpath.established_segment(data, segment.gateway_mac) is not None
    segment.receive(vm, data, 0.1)
    sent = [bytes(a.payload) for a in shell.actions() if isinstance(a, SendFlow)]
    assert sent == [b"fast"]


def test_an_ipv4_mapped_source_never_reaches_an_ipv4_flow(
    segment: Segment, vm: Vm, shell: Shell
) -> None:
    v4 = Guest(4)
    segment.receive(vm, v4.tcp(REMOTE[4], 80), 0.0)
    (opened,) = shell.actions()
    segment.flow_connected(opened.flow, 0.0)
    ours = one_frame(vm)[TCP].seq
    mapped = Guest(6).frame(
        Guest(6).ip("::ffff:" + REMOTE[4], src="::ffff:" + GUEST[4])
        / TCP(sport=41000, dport=80, flags="PA", seq=1001, ack=ours + 1)
        / b"sneaky"
    )
    assert fastpath.established_segment(mapped, segment.gateway_mac) is None
    segment.receive(vm, mapped, 0.1)
    assert not [a for a in shell.actions() if isinstance(a, SendFlow)]
    assert vm.stats.drops["ipv6_bad_source"] == 1
