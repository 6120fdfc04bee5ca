"""The core ``Segment``'s UDP NAT, on a fake clock, with scapy as the oracle.

See ``test_core_segment.py`` for the harness.  192.0.2.0/24 is only ever a value
inside frames: nothing is sent anywhere.
"""

from __future__ import annotations

from collections import Counter
from ipaddress import IPv4Address

import pytest
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import ICMP, IP, UDP, IPerror, UDPerror
from scapy.layers.l2 import Ether

from slirpnet.core.addr import V4_LOOPBACK
from slirpnet.core.flows import (
    FLOW_FAILED,
    FLOW_REFUSED,
    FLOW_UNREACHABLE,
    DnsFlow,
    EchoFlow,
    SendFlow,
    UdpFlow,
)
from slirpnet.core.nat_udp import DNS_FLOW_IDLE
from slirpnet.core.segment import Segment
from slirpnet.core.settings import DEFAULT_MAX_FLOWS, NetworkSettings
from slirpnet.core.vm import Vm
from tests.test_core_segment import (
    BROADCAST,
    DNS_IP,
    GATEWAY_IP,
    GUEST_IP,
    OTHER_IP,
    OTHER_MAC,
    REMOTE_IP,
    UPSTREAM_1,
    Shell,
    checked,
    closes,
    echo_frame,
    from_gateway,
    new_segment,
    one_frame,
    udp_frame,
)


def open_udp(segment: Segment, vm: Vm, shell: Shell, frame: bytes, now: float = 0.0) -> UdpFlow:
    segment.receive(vm, frame, now)
    flow, payload = shell.opened_one(UdpFlow)
    assert isinstance(flow, UdpFlow)
    assert payload == bytes(Ether(frame)[UDP].payload)
    return flow


@pytest.fixture
def segment() -> Segment:
    return new_segment()


@pytest.fixture
def vm(segment: Segment) -> Vm:
    return segment.attach("guest")


@pytest.fixture
def shell(segment: Segment) -> Shell:
    return Shell(segment)


# -- where datagrams go ------------------------------------------------------------


def test_udp_to_remote_opens_flow(segment: Segment, vm: Vm, shell: Shell) -> None:
    flow = open_udp(segment, vm, shell, udp_frame(REMOTE_IP, 9999, b"hello", sport=41000))
    assert (flow.host_address, flow.host_port) == (IPv4Address(REMOTE_IP), 9999)
    assert (flow.dst_address, flow.dst_port) == (IPv4Address(REMOTE_IP), 9999)
    assert flow.guest.mac == bytes.fromhex("525400123456")
    assert (flow.guest.address, flow.guest.port) == (IPv4Address(GUEST_IP), 41000)
    assert vm.take_frames() == []
    assert vm.stats.drops == Counter()
    assert vm.flows == {flow.key: flow}


def test_udp_to_gateway_goes_to_host_loopback(segment: Segment, vm: Vm, shell: Shell) -> None:
    flow = open_udp(segment, vm, shell, udp_frame(GATEWAY_IP, 8080, b"to the host"))
    assert flow.host_address == V4_LOOPBACK == IPv4Address("127.0.0.1")
    assert flow.host_port == 8080
    assert (flow.dst_address, flow.dst_port) == (IPv4Address(GATEWAY_IP), 8080)


def test_udp_to_gateway_without_host_loopback_is_admin_prohibited() -> None:
    segment = new_segment(host_loopback=False)
    vm = segment.attach("guest")
    frame = udp_frame(GATEWAY_IP, 8080, b"to the host" * 3)
    segment.receive(vm, frame, 0.0)
    assert segment.take_actions() == []
    assert vm.stats.drops == Counter({"host_loopback_disabled": 1})
    # The quote is the original IP header and the first 8 bytes after it, verbatim.
    from_gateway(
        vm.take_frames()[0],
        IP(src=GATEWAY_IP, dst=GUEST_IP) / ICMP(type=3, code=13) / frame[14 : 14 + 20 + 8],
    )
    # Remote destinations are unaffected.
    segment.receive(vm, udp_frame(REMOTE_IP, 9), 0.0)
    Shell(segment).opened_one(UdpFlow)


def test_restrict_drops_nat_but_keeps_local_services() -> None:
    segment = new_segment(restrict=True, dns_upstreams=(UPSTREAM_1,))
    vm = segment.attach("guest")
    shell = Shell(segment)
    for dst in (REMOTE_IP, GATEWAY_IP):
        frame = udp_frame(dst, 9, b"x")
        segment.receive(vm, frame, 0.0)
        from_gateway(
            vm.take_frames()[0],
            IP(src=GATEWAY_IP, dst=GUEST_IP) / ICMP(type=3, code=13) / frame[14:42],
        )
    assert shell.actions() == []
    assert vm.stats.drops == Counter({"restricted": 2})
    # DNS: the local name answered, other names still forwarded to the upstream.
    local = DNS(id=1, rd=1, qd=DNSQR(qname="host.slirpnet.internal"))
    segment.receive(vm, udp_frame(DNS_IP, 53, local), 0.0)
    assert one_frame(vm)[DNS].an[0].rdata == GATEWAY_IP
    segment.receive(vm, udp_frame(DNS_IP, 53, DNS(id=2, qd=DNSQR(qname="example.com"))), 0.0)
    shell.opened_one(DnsFlow)
    # Ping the gateway.
    segment.receive(vm, echo_frame(GATEWAY_IP), 0.0)
    assert one_frame(vm)[ICMP].type == 0
    # DHCP is served (its replies are test_core_dhcp.py's business).
    discover = udp_frame(
        "255.255.255.255",
        67,
        BOOTP(chaddr=bytes.fromhex("525400123456"), xid=7)
        / DHCP(options=[("message-type", "discover"), "end"]),
        sport=68,
        src_ip="0.0.0.0",
        dst=BROADCAST,
    )
    segment.receive(vm, discover, 0.0)
    assert one_frame(vm)[UDP].sport == 67
    assert vm.stats.drops == Counter({"restricted": 2})


def test_one_flow_per_four_tuple(segment: Segment, vm: Vm, shell: Shell) -> None:
    first = open_udp(segment, vm, shell, udp_frame(REMOTE_IP, 9, b"1", sport=1000))
    segment.receive(vm, udp_frame(REMOTE_IP, 9, b"2", sport=1000), 1.0)
    assert shell.actions() == [SendFlow(first, b"2")]
    others = [
        udp_frame(REMOTE_IP, 9, b"3", sport=1001),  # another guest port
        udp_frame(REMOTE_IP, 10, b"4", sport=1000),  # another destination port
        udp_frame("192.0.2.2", 9, b"5", sport=1000),  # another destination
        udp_frame(GATEWAY_IP, 9, b"6", sport=1000),  # the host
        udp_frame(REMOTE_IP, 9, b"7", sport=1000, src_ip="10.0.2.20"),  # another guest address
    ]
    flows = {first}
    for frame in others:
        flows.add(open_udp(segment, vm, shell, frame, 1.0))
    assert len(flows) == 6
    assert set(vm.flows.values()) == flows
    assert vm.stats.drops == Counter()


# -- replies and errors from the host ------------------------------------------------


@pytest.mark.parametrize("dst", [REMOTE_IP, GATEWAY_IP])
def test_reply_comes_from_original_destination(
    segment: Segment, vm: Vm, shell: Shell, dst: str
) -> None:
    flow = open_udp(segment, vm, shell, udp_frame(dst, 5000, b"q", sport=41000))
    segment.flow_received(flow, b"the answer", 1.0)
    from_gateway(
        vm.take_frames()[0],
        IP(src=dst, dst=GUEST_IP) / UDP(sport=5000, dport=41000) / b"the answer",
    )
    segment.flow_received(flow, b"", 1.5)  # an empty datagram is a datagram
    from_gateway(vm.take_frames()[0], IP(src=dst, dst=GUEST_IP) / UDP(sport=5000, dport=41000))
    assert shell.actions() == []
    assert vm.stats.drops == Counter()
    assert vm.stats.frames_out == 2


def test_reply_goes_to_the_guest_mac_that_sent(segment: Segment, shell: Shell) -> None:
    a, b = segment.attach("a"), segment.attach("b")
    flow = open_udp(segment, b, shell, udp_frame(REMOTE_IP, 9, src=OTHER_MAC, src_ip=OTHER_IP))
    segment.flow_received(flow, b"r", 1.0)
    assert a.take_frames() == []
    assert one_frame(b).dst == OTHER_MAC


@pytest.mark.parametrize("dst", [REMOTE_IP, GATEWAY_IP])
def test_refused_is_port_unreachable_quoting_the_datagram(
    segment: Segment, vm: Vm, shell: Shell, dst: str
) -> None:
    flow = open_udp(segment, vm, shell, udp_frame(dst, 5000, b"q", sport=41000))
    segment.flow_error(flow, FLOW_REFUSED, 1.0)
    reply = one_frame(vm)
    assert (reply[IP].src, reply[IP].dst) == (dst, GUEST_IP)
    assert (reply[ICMP].type, reply[ICMP].code) == (3, 3)
    assert (reply[IPerror].src, reply[IPerror].dst, reply[IPerror].proto) == (GUEST_IP, dst, 17)
    assert (reply[UDPerror].sport, reply[UDPerror].dport) == (41000, 5000)
    assert shell.actions() == []  # the flow stays open: a connected socket outlives ICMP
    segment.flow_received(flow, b"later", 2.0)
    assert one_frame(vm)[UDP].load == b"later"
    assert vm.stats.drops == Counter()


def test_unreachable_is_host_unreachable_from_gateway(
    segment: Segment, vm: Vm, shell: Shell
) -> None:
    flow = open_udp(segment, vm, shell, udp_frame(REMOTE_IP, 5000, sport=41000))
    segment.flow_error(flow, FLOW_UNREACHABLE, 1.0)
    reply = one_frame(vm)
    assert (reply[IP].src, reply[ICMP].type, reply[ICMP].code) == (GATEWAY_IP, 3, 1)
    assert (reply[IPerror].dst, reply[UDPerror].dport) == (REMOTE_IP, 5000)


def test_failed_socket_closes_flow(segment: Segment, vm: Vm, shell: Shell) -> None:
    flow = open_udp(segment, vm, shell, udp_frame(REMOTE_IP, 5000))
    segment.flow_error(flow, FLOW_FAILED, 1.0)
    assert closes(shell.actions()) == [flow]
    assert vm.take_frames() == []
    assert vm.stats.drops == Counter({"host_socket_failed": 1})
    assert vm.flows == {}
    segment.flow_received(flow, b"late", 1.5)
    segment.flow_error(flow, FLOW_REFUSED, 1.5)
    assert vm.take_frames() == []
    assert open_udp(segment, vm, shell, udp_frame(REMOTE_IP, 5000), 2.0) is not flow


def test_reply_larger_than_mtu_is_fragmented() -> None:
    segment = new_segment(mtu=1500)
    vm = segment.attach("guest")
    shell = Shell(segment)
    flow = open_udp(segment, vm, shell, udp_frame(REMOTE_IP, 5000))
    segment.flow_received(flow, bytes(1500 - 28), 1.0)
    assert len(one_frame(vm)) == 14 + 1500
    segment.flow_received(flow, bytes(1500 - 27), 1.0)
    first, last = (checked(frame) for frame in vm.take_frames())  # test_core_fragments.py
    assert (first[IP].flags, first[IP].frag, last[IP].flags, last[IP].frag) == ("MF", 0, 0, 185)
    assert vm.stats.drops == Counter()


def test_default_mtu_carries_large_replies(segment: Segment, vm: Vm, shell: Shell) -> None:
    flow = open_udp(segment, vm, shell, udp_frame(REMOTE_IP, 5000))
    segment.flow_received(flow, bytes(65520 - 28), 1.0)
    assert len(one_frame(vm)[UDP].load) == 65492
    segment.flow_received(flow, bytes(65507), 1.0)  # the largest UDP payload there is
    # In fragments: 65496 bytes, the most in 8-byte units under 65500, then the rest.
    assert [len(frame) for frame in vm.take_frames()] == [14 + 20 + 65496, 14 + 20 + 19]
    assert vm.stats.drops == Counter()


# -- idle timeouts -----------------------------------------------------------------


def test_idle_flow_closed_at_sixty_seconds(segment: Segment, vm: Vm, shell: Shell) -> None:
    flow = open_udp(segment, vm, shell, udp_frame(REMOTE_IP, 5000), 100.0)
    assert segment.get_timer() == 160.0
    segment.handle_timer(159.999)
    assert shell.actions() == []
    segment.handle_timer(160.0)
    assert closes(shell.actions()) == [flow]
    assert segment.get_timer() is None
    assert vm.flows == {}
    segment.flow_received(flow, b"too late", 161.0)
    assert vm.take_frames() == []


def test_traffic_either_way_refreshes_idle_timer(segment: Segment, vm: Vm, shell: Shell) -> None:
    flow = open_udp(segment, vm, shell, udp_frame(REMOTE_IP, 5000), 0.0)
    segment.receive(vm, udp_frame(REMOTE_IP, 5000), 30.0)  # from the guest
    shell.actions()
    segment.handle_timer(60.0)
    assert shell.actions() == []  # not at 60: it moved to 90
    segment.flow_received(flow, b"reply", 80.0)  # from the host
    segment.handle_timer(90.0)
    segment.handle_timer(139.0)
    assert shell.actions() == []
    assert segment.get_timer() == 140.0
    segment.handle_timer(140.0)
    assert closes(shell.actions()) == [flow]


def test_idle_timeout_is_configurable() -> None:
    segment = new_segment(udp_idle_timeout=5.0)
    vm = segment.attach("guest")
    shell = Shell(segment)
    flow = open_udp(segment, vm, shell, udp_frame(REMOTE_IP, 5000), 0.0)
    segment.handle_timer(4.9)
    assert shell.actions() == []
    segment.handle_timer(5.0)
    assert closes(shell.actions()) == [flow]


def test_port_53_flows_are_short(segment: Segment, vm: Vm, shell: Shell) -> None:
    dns = open_udp(segment, vm, shell, udp_frame(REMOTE_IP, 53, b"query", sport=3000))
    other = open_udp(segment, vm, shell, udp_frame(REMOTE_IP, 5353, b"x", sport=3000))
    assert segment.get_timer() == DNS_FLOW_IDLE == 10.0
    segment.flow_received(dns, b"answer", 4.0)
    segment.handle_timer(DNS_FLOW_IDLE)
    assert shell.actions() == []
    segment.handle_timer(4.0 + DNS_FLOW_IDLE)
    assert closes(shell.actions()) == [dns]
    segment.handle_timer(60.0)
    assert closes(shell.actions()) == [other]


def test_many_flows_expire_in_deadline_order(segment: Segment, vm: Vm, shell: Shell) -> None:
    flows = [
        open_udp(segment, vm, shell, udp_frame(REMOTE_IP, 5000 + i), float(i)) for i in range(5)
    ]
    segment.receive(vm, udp_frame(REMOTE_IP, 5002), 30.0)  # flow 2 now expires at 90
    shell.actions()
    segment.handle_timer(64.0)
    assert closes(shell.actions()) == [flows[0], flows[1], flows[3], flows[4]]
    segment.handle_timer(90.0)
    assert closes(shell.actions()) == [flows[2]]


# -- limits and lifetime -----------------------------------------------------------


def test_flow_limit() -> None:
    assert DEFAULT_MAX_FLOWS == NetworkSettings().max_flows == 16384
    segment = new_segment(dns_upstreams=(UPSTREAM_1,), max_flows=3)
    vm = segment.attach("guest")
    other = segment.attach("other")
    shell = Shell(segment)
    flow = open_udp(segment, vm, shell, udp_frame(REMOTE_IP, 1), 0.0)
    segment.receive(vm, echo_frame(REMOTE_IP), 0.0)
    shell.opened_one(EchoFlow)
    segment.receive(vm, udp_frame(DNS_IP, 53, DNS(id=1, qd=DNSQR(qname="example.com"))), 0.0)
    shell.opened_one(DnsFlow)
    assert vm.flow_count == 3
    # Refused clearly: ICMP admin-prohibited for UDP and echo, SERVFAIL for a query.
    for frame in (udp_frame(REMOTE_IP, 2), echo_frame(REMOTE_IP, ident=99)):
        segment.receive(vm, frame, 1.0)
        from_gateway(
            vm.take_frames()[0],
            IP(src=GATEWAY_IP, dst=GUEST_IP) / ICMP(type=3, code=13) / frame[14:42],
        )
    segment.receive(vm, udp_frame(DNS_IP, 53, DNS(id=2, qd=DNSQR(qname="example.org"))), 1.0)
    assert one_frame(vm)[DNS].rcode == 2  # SERVFAIL
    assert shell.actions() == []
    assert vm.stats.drops == Counter({"flow_limit": 3})
    # Existing flows still carry traffic; the local DNS name needs no flow.
    segment.receive(vm, udp_frame(REMOTE_IP, 1), 2.0)
    assert shell.actions() == [SendFlow(flow, b"data")]
    local = DNS(id=3, qd=DNSQR(qname="host.slirpnet.internal"))
    segment.receive(vm, udp_frame(DNS_IP, 53, local), 2.0)
    assert one_frame(vm)[DNS].an[0].rdata == GATEWAY_IP
    # The limit is per VM.
    open_udp(segment, other, shell, udp_frame(REMOTE_IP, 1, src=OTHER_MAC, src_ip=OTHER_IP))
    # A closed flow makes room again.
    segment.handle_timer(100.0)
    assert len(closes(shell.actions())) == 4
    open_udp(segment, vm, shell, udp_frame(REMOTE_IP, 2), 101.0)
    assert vm.stats.drops == Counter({"flow_limit": 3})


def test_detach_closes_every_flow() -> None:
    segment = new_segment(dns_upstreams=(UPSTREAM_1,))
    shell = Shell(segment)
    vm = segment.attach("guest")
    stay = segment.attach("stays")
    for port in (1, 2, 3):
        open_udp(segment, vm, shell, udp_frame(REMOTE_IP, port))
    segment.receive(vm, echo_frame(REMOTE_IP), 0.0)
    segment.receive(vm, udp_frame(DNS_IP, 53, DNS(id=1, qd=DNSQR(qname="example.com"))), 0.0)
    shell.actions()
    kept = open_udp(segment, stay, shell, udp_frame(REMOTE_IP, 1, src=OTHER_MAC, src_ip=OTHER_IP))
    assert shell.opened == 6
    segment.flow_received(kept, b"x", 0.5)  # a frame waiting in the outbox of "stays"
    segment.receive(vm, echo_frame(GATEWAY_IP), 0.5)  # and one in the detached VM's
    segment.detach(vm)
    closed = closes(shell.actions())
    assert len(closed) == 5
    assert all(f.vm is vm and f.closed for f in closed)
    assert shell.open == {kept}
    assert vm.flow_count == 0
    assert vm.take_frames() == []
    assert len(stay.take_frames()) == 1
    # Late events for the dead flows are ignored; timers skip them.
    for flow in closed:
        segment.flow_received(flow, b"late", 1.0)
        segment.flow_error(flow, FLOW_REFUSED, 1.0)
    segment.handle_timer(1000.0)
    assert closes(shell.actions()) == [kept]
    assert vm.take_frames() == []
    assert vm.stats.drops == Counter()


def test_flows_are_per_vm(segment: Segment, shell: Shell) -> None:
    a, b = segment.attach("a"), segment.attach("b")
    # Same guest address and port on two VMs (two separate guests): two flows.
    one = open_udp(segment, a, shell, udp_frame(REMOTE_IP, 9))
    two = open_udp(segment, b, shell, udp_frame(REMOTE_IP, 9, src=OTHER_MAC))
    assert one is not two
    segment.flow_received(two, b"for b", 1.0)
    assert a.take_frames() == []
    assert one_frame(b)[UDP].load == b"for b"
