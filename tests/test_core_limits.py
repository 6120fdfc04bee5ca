"""Per-VM limits of the core, on a fake clock: pending connects, DHCP leases, file
descriptors, and how a refusal is answered, counted and logged.

A hostile guest hits a limit thousands of times a second.  Each time it gets a clear
answer (RST, ICMP, NAK, SERVFAIL, or no offer), a count under a named reason, and
the log a line per reason at most once a minute.  192.0.2.0/24 is only ever a value
inside frames.
"""

from __future__ import annotations

import gc
import logging
from collections import Counter
from ipaddress import IPv4Address

import pytest
from scapy.layers.dhcp import BOOTP
from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import ICMP, IP, UDP, UDPerror
from scapy.layers.l2 import Ether

from slirpnet.core.dhcp import OFFER_HOLD
from slirpnet.core.flows import FLOW_EXHAUSTED, FLOW_REFUSED, CloseFlow, DnsFlow, UdpFlow
from slirpnet.core.flowtable import PRUNE_MIN
from slirpnet.core.ratelimit import TokenBucket
from slirpnet.core.segment import Segment
from slirpnet.core.settings import (
    DEFAULT_MAX_CONNECTING,
    DEFAULT_MAX_LEASES,
    NetworkSettings,
    StaticLease,
)
from slirpnet.core.tcp import CONNECT_TIMEOUT, State
from slirpnet.core.vm import FLOOD_BURST, FLOOD_FRAME, FLOOD_RATE, REFUSAL_LOG_INTERVAL, Vm
from slirpnet.wire.dhcp import MessageType
from slirpnet.wire.ethernet import parse_mac
from tests.test_core_dhcp import Client, assert_nak, kind, mac
from tests.test_core_forwards import SSH, leased
from tests.test_core_segment import (
    DNS_IP,
    GATEWAY_IP,
    OTHER_IP,
    OTHER_MAC,
    REMOTE_IP,
    UPSTREAM_1,
    Shell,
    checked,
    new_segment,
    udp_frame,
)
from tests.test_core_tcp import ISN, TcpShell, connect, frames, one_tcp, syn_frame, tcp_frame


def refused_with_rst(vm: Vm, sport: int) -> None:
    rst = one_tcp(vm)
    assert (rst.flags, rst.dport, rst.ack) == ("RA", sport, (ISN + 1) & 0xFFFFFFFF)


# -- how a refusal is logged -------------------------------------------------------


def test_a_refusal_is_logged_once_a_minute_with_the_count(caplog: pytest.LogCaptureFixture) -> None:
    vm = Vm("guest")
    with caplog.at_level(logging.WARNING, logger="slirpnet"):
        for now in range(100):  # 100 refusals in 100 s: two lines
            vm.refuse("flow_limit", float(now), "full")
        vm.refuse("connect_limit", 99.0, "busy")  # another reason has a line of its own
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        "refused (flow_limit): full; 1 so far",
        f"refused (flow_limit): full; {int(REFUSAL_LOG_INTERVAL) + 1} so far",
        "refused (connect_limit): busy; 1 so far",
    ]
    assert vm.stats.drops == Counter({"flow_limit": 100, "connect_limit": 1})


def test_a_mac_flood_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    segment = new_segment()
    vm = segment.attach("guest")
    with caplog.at_level(logging.WARNING, logger="slirpnet"):
        for n in range(200):
            segment.receive(vm, udp_frame(REMOTE_IP, 9, src=mac(n)), 0.0)
    assert len(caplog.records) == 1
    assert vm.stats.drops["eth_mac_limit"] == 200 - 16


# -- pending TCP connects ------------------------------------------------------------


def test_pending_connects_are_capped_per_vm() -> None:
    assert NetworkSettings().max_connecting == DEFAULT_MAX_CONNECTING == 256
    segment = new_segment(max_connecting=2)
    vm = segment.attach("guest")
    shell = TcpShell(segment)
    segment.receive(vm, syn_frame(sport=1), 0.0)
    first = shell.opened()
    segment.receive(vm, syn_frame(sport=2), 0.0)
    second = shell.opened()
    segment.receive(vm, syn_frame(sport=3), 0.0)
    assert shell.actions() == []
    refused_with_rst(vm, 3)
    assert vm.stats.drops == Counter({"connect_limit": 1})
    assert vm.connecting == {first, second}
    # The cap is per VM.
    other = segment.attach("other")
    segment.receive(other, syn_frame(sport=3, src=OTHER_MAC, src_ip=OTHER_IP), 0.0)
    shell.opened()
    # A connect that completes makes room; the established flow no longer counts.
    segment.flow_connected(first, 1.0)
    assert vm.connecting == {second}
    vm.take_frames()
    segment.receive(vm, syn_frame(sport=3), 1.0)
    third = shell.opened()
    segment.receive(vm, syn_frame(sport=4), 1.0)
    refused_with_rst(vm, 4)
    # So does one that fails, and one the guest gives up on with a RST.
    segment.flow_error(second, FLOW_REFUSED, 2.0)
    assert vm.connecting == {third}
    segment.receive(vm, tcp_frame("R", ISN + 1, sport=3), 2.0)
    assert vm.connecting == set()
    assert vm.stats.drops == Counter({"connect_limit": 2})


def test_a_connect_that_times_out_makes_room() -> None:
    segment = new_segment(max_connecting=1)
    vm = segment.attach("guest")
    shell = TcpShell(segment)
    segment.receive(vm, syn_frame(sport=1), 0.0)
    shell.opened()
    segment.handle_timer(CONNECT_TIMEOUT)
    shell.actions()
    assert vm.connecting == set()
    vm.take_frames()  # ICMP host unreachable
    segment.receive(vm, syn_frame(sport=2), CONNECT_TIMEOUT + 1)
    shell.opened()


def test_established_flows_and_forwards_do_not_count_as_connecting() -> None:
    segment = new_segment(max_connecting=1)
    shell = TcpShell(segment)
    client, _ = leased(segment)
    vm = client.vm
    for port in (1, 2, 3):
        connect(segment, vm, shell, sport=port)
    assert segment.forward_connection(SSH, (IPv4Address("127.0.0.1"), 5000), 1.0) is not None
    shell.actions()
    frames(vm)
    assert vm.connecting == set()
    segment.receive(vm, syn_frame(sport=4), 1.0)
    shell.opened()


def test_detach_forgets_connecting_flows() -> None:
    segment = new_segment(max_connecting=1)
    shell = TcpShell(segment)
    vm = segment.attach("guest")
    segment.receive(vm, syn_frame(sport=1), 0.0)
    flow = shell.opened()
    segment.detach(vm)
    assert vm.connecting == set() and flow.closed
    assert shell.actions() == [CloseFlow(flow, abort=True)]


# -- DHCP leases -----------------------------------------------------------------------


def test_a_vm_spraying_client_addresses_gets_max_leases_and_no_more() -> None:
    assert NetworkSettings().max_leases == DEFAULT_MAX_LEASES == 8
    segment = new_segment(max_leases=3)
    sprayer = segment.attach("sprayer")
    clients = [Client(segment, mac(n), vm=sprayer) for n in range(1, 7)]
    offered = [client.discover(now=0.0) for client in clients]
    assert [o[BOOTP].yiaddr for o in offered[:3] if o is not None] == [
        "10.0.2.15",
        "10.0.2.16",
        "10.0.2.17",
    ]
    assert offered[3:] == [None, None, None]  # no offer
    assert sprayer.stats.drops == Counter({"dhcp_lease_limit": 3})
    # An INIT-REBOOT for a free address is a NAK too.
    assert_nak(clients[4].request(now=1.0, requested="10.0.2.50"))
    assert sprayer.stats.drops["dhcp_lease_limit"] == 4
    # The held offers may still be taken up, and leases renewed.
    assert kind(clients[0].select("10.0.2.15", now=2.0)) == MessageType.ACK
    ack = clients[0].request(now=3.0, ciaddr="10.0.2.15", unicast=True, broadcast=False)
    assert kind(ack) == MessageType.ACK
    # Another VM still gets an address.
    assert Client(segment, mac(100)).lease(now=4.0) == "10.0.2.18"


def test_offers_not_taken_up_free_the_room_after_offer_hold() -> None:
    segment = new_segment(max_leases=2)
    sprayer = segment.attach("sprayer")
    a, b, c = (Client(segment, mac(n), vm=sprayer) for n in (1, 2, 3))
    a.lease(now=0.0)
    assert b.discover(now=0.0) is not None
    assert c.discover(now=1.0) is None
    assert c.discover(now=OFFER_HOLD + 1) is not None  # b's offer lapsed
    a.release("10.0.2.15", now=OFFER_HOLD + 2)
    assert b.discover(now=OFFER_HOLD + 3) is not None


def test_a_vm_that_comes_back_takes_over_its_leases() -> None:
    segment = new_segment(max_leases=1)
    first = Client(segment, mac(1))
    assert first.lease(now=0.0) == "10.0.2.15"
    segment.detach(first.vm)
    again = Client(segment, mac(1), vm=segment.attach("again"))
    assert again.lease(now=10.0) == "10.0.2.15"
    # ... and they count against it now: a second client of the new VM is refused.
    assert Client(segment, mac(2), vm=again.vm).discover(now=11.0) is None
    assert again.vm.stats.drops == Counter({"dhcp_lease_limit": 1})


def test_static_leases_do_not_count() -> None:
    settings = NetworkSettings(
        max_leases=1,
        static_leases=tuple(
            StaticLease(parse_mac(mac(n)), IPv4Address(f"10.0.2.{n + 100}")) for n in (1, 2)
        ),
    )
    segment = Segment(settings)
    vm = segment.attach("guest")
    for n in (1, 2):
        assert Client(segment, mac(n), vm=vm).lease() == f"10.0.2.{n + 100}"
    assert Client(segment, mac(3), vm=vm).lease() == "10.0.2.15"
    assert Client(segment, mac(4), vm=vm).discover() is None


# -- out of file descriptors -----------------------------------------------------------


def test_no_fd_for_a_tcp_connect_is_a_rst_and_others_go_on() -> None:
    segment = new_segment(mtu=1500)
    vm = segment.attach("guest")
    shell = TcpShell(segment)
    established = connect(segment, vm, shell, sport=1)
    segment.receive(vm, syn_frame(sport=2), 1.0)
    flow = shell.opened()
    segment.flow_error(flow, FLOW_EXHAUSTED, 1.0)
    refused_with_rst(vm, 2)
    shell.actions()
    assert shell.closed == {flow: False}
    assert vm.stats.drops == Counter({"host_out_of_fds": 1})
    segment.flow_received(established, b"still here", 1.1)
    (data,) = frames(vm)
    assert bytes(data.payload.payload.payload) == b"still here"
    assert established.endpoint.state is State.ESTABLISHED


def test_no_fd_for_a_udp_flow_is_host_unreachable_and_closes_it() -> None:
    segment = new_segment()
    vm = segment.attach("guest")
    shell = Shell(segment)
    frame = udp_frame(REMOTE_IP, 123)
    segment.receive(vm, frame, 0.0)
    flow, _ = shell.opened_one(UdpFlow)
    segment.flow_error(flow, FLOW_EXHAUSTED, 0.0)
    assert [type(a) for a in shell.actions()] == [CloseFlow]
    (icmp,) = vm.take_frames()
    error = checked(icmp)
    assert (error[IP].src, error[ICMP].type, error[ICMP].code) == (GATEWAY_IP, 3, 1)
    assert (error[UDPerror].sport, error[UDPerror].dport) == (40000, 123)
    assert vm.stats.drops == Counter({"host_out_of_fds": 1})
    # The next datagram tries again.
    segment.receive(vm, frame, 1.0)
    shell.opened_one(UdpFlow)


def test_no_fd_for_a_dns_query_is_servfail_and_no_upstream_is_blamed() -> None:
    segment = new_segment(dns_upstreams=(UPSTREAM_1,))
    vm = segment.attach("guest")
    shell = Shell(segment)
    segment.receive(vm, udp_frame(DNS_IP, 53, DNS(id=7, qd=DNSQR(qname="a.test"))), 0.0)
    flow, _ = shell.opened_one(DnsFlow)
    segment.flow_error(flow, FLOW_EXHAUSTED, 0.0)
    shell.actions()
    (answer,) = vm.take_frames()
    assert Ether(answer)[DNS].rcode == 2 and Ether(answer)[UDP].sport == 53
    assert vm.stats.events["dns_upstream_failed"] == 0
    assert vm.stats.drops == Counter({"host_out_of_fds": 1})


# -- storm control -----------------------------------------------------------------------


def test_token_bucket() -> None:
    bucket = TokenBucket(rate=10.0, burst=5.0)
    assert [bucket.take(0.0) for _ in range(6)] == [True] * 5 + [False]
    assert not bucket.take(0.05)  # half a token
    assert bucket.take(0.1)
    assert not bucket.take(100.0, amount=6.0)  # never more than the burst
    assert bucket.take(100.0, amount=5.0)
    assert not bucket.take(99.0)  # a clock that goes back adds nothing


def test_a_vm_floods_the_others_within_its_storm_control() -> None:
    segment = new_segment()
    flooding = segment.attach("flooding")
    others = [segment.attach("one"), segment.attach("two")]
    frame = udp_frame("10.0.2.255", 9, b"storm", dst="ff:ff:ff:ff:ff:ff")
    big = udp_frame("10.0.2.255", 9, b"s" * 4000, dst="ff:ff:ff:ff:ff:ff")
    for _ in range(int(FLOOD_BURST) + 10):
        segment.receive(flooding, frame, 0.0)
    assert [len(vm.take_frames()) for vm in others] == [int(FLOOD_BURST)] * 2
    assert flooding.stats.drops["flood_limit"] == 10
    segment.receive(flooding, frame, 1 / FLOOD_RATE)  # a token a millisecond
    assert [len(vm.take_frames()) for vm in others] == [1, 1]
    # A large frame costs a token per FLOOD_FRAME bytes begun.
    segment.receive(flooding, big, 1.0)
    refilled = (1.0 - 1 / FLOOD_RATE) * FLOOD_RATE
    assert flooding.floods.tokens == pytest.approx(refilled - 1 - len(big) // FLOOD_FRAME)
    # Another VM's floods have a budget of their own.
    broadcast = udp_frame("10.0.2.255", 9, src=OTHER_MAC, dst="ff:ff:ff:ff:ff:ff")
    segment.receive(others[0], broadcast, 1.0)
    assert len(flooding.take_frames()) == 1


def test_a_broadcast_past_storm_control_is_still_the_gateway_s_to_drop() -> None:
    """Found by the fuzzer: a broadcast has two receivers, so a malformed one past the
    flood limit is counted under both refusals, the other VMs' and the gateway's."""
    segment = new_segment()
    flooding = segment.attach("flooding")
    other = segment.attach("other")
    good = udp_frame("10.0.2.255", 9, b"storm", dst="ff:ff:ff:ff:ff:ff")
    bad_ihl = bytearray(good)
    bad_ihl[14] = 0x44  # IHL 4: shorter than the header itself
    for _ in range(int(FLOOD_BURST)):
        segment.receive(flooding, good, 0.0)
    other.take_frames()
    before = flooding.stats.drops.copy()
    segment.receive(flooding, bytes(bad_ihl), 0.0)
    assert not other.take_frames()
    assert flooding.stats.drops - before == Counter({"flood_limit": 1, "ipv4_bad_ihl": 1})


def test_a_forward_s_connection_reset_for_want_of_fds_is_counted_on_its_vm() -> None:
    segment = new_segment()
    assert not segment.forward_refused(SSH, 0.0)  # no VM: the shell logs it alone
    client, _ = leased(segment)
    assert segment.forward_refused(SSH, 1.0)
    assert client.vm.stats.drops == Counter({"host_out_of_fds": 1})


# -- what a VM leaves behind -------------------------------------------------------------


def test_a_departed_vm_and_its_flows_are_not_kept() -> None:
    """Not even in the timer queue, whose entries come due only minutes or hours later."""
    segment = new_segment(mtu=1500)
    vm = segment.attach("departing")
    for port in range(1, 201):
        segment.receive(vm, syn_frame(sport=port), 0.0)
        (opened,) = segment.take_actions()
        segment.flow_connected(opened.flow, 0.0)
        segment.receive(vm, tcp_frame("A", ISN + 1, opened.flow.endpoint.iss + 1, sport=port), 0.0)
        segment.flow_received(opened.flow, b"x" * 200_000, 0.1)  # held, unacknowledged
    del opened
    segment.take_actions()
    stays = segment.attach("stays")
    segment.receive(stays, syn_frame(sport=1, src=OTHER_MAC, src_ip=OTHER_IP), 1.0)
    segment.detach(vm)
    segment.take_actions()
    del vm
    gc.collect()
    # (No weakref: the compiled Vm takes none.)  Nothing keeps the departed VM alive.
    assert not [o for o in gc.get_objects() if isinstance(o, Vm) and o.name == "departing"]
    assert len(segment.flows) <= 2  # the flow of the VM that stays


def test_closed_flows_do_not_pile_up_in_the_timer_queue() -> None:
    """UDP flows come and go by the thousand; their entries would wait a minute each."""
    segment = new_segment(dns_upstreams=(UPSTREAM_1,))
    vm = segment.attach("guest")
    shell = Shell(segment)
    for n in range(5000):
        segment.receive(vm, udp_frame(REMOTE_IP, 1000 + n % 50, sport=2000 + n), float(n) / 1000)
        flow, _ = shell.opened_one(UdpFlow)
        segment.flow_error(flow, FLOW_EXHAUSTED, float(n) / 1000)  # closed at once
        shell.actions()
        vm.take_frames()
    assert len(segment.flows) <= 2 * PRUNE_MIN
