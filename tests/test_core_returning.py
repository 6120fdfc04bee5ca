"""A VM that comes back, and a VM that takes another's MAC: what the segment does.

A VM that reconnects (its link, or the server, restarted) holds its lease and may
say nothing for hours; the gateway asks for its address with ARP so that forwards
find it at once.  Leases saved by an earlier server come back with ``restore``.
A second live VM sending from a MAC in use is refused, not merged.
"""

from __future__ import annotations

import logging
from collections import Counter
from ipaddress import IPv4Address

import pytest
from scapy.layers.l2 import ARP, Ether

from slirpnet.core.flows import TcpFlow
from slirpnet.core.leases import Lease
from slirpnet.core.probes import MAX_PROBED, PROBE_RETRIES
from slirpnet.core.segment import Segment
from slirpnet.core.settings import NetworkSettings, StaticLease
from slirpnet.core.vm import Vm
from slirpnet.wire.ethernet import parse_mac
from tests.test_core_dhcp import Client
from tests.test_core_forwards import PEER, SSH
from tests.test_core_segment import (
    GATEWAY_IP,
    GATEWAY_MAC,
    GUEST_IP,
    GUEST_MAC,
    OTHER_IP,
    OTHER_MAC,
    checked,
    framed,
    new_segment,
    udp_frame,
)

HOUR = 3600.0


def returned(segment: Segment, mac: str = GUEST_MAC) -> tuple[str, Vm]:
    """A guest leased an address on a port that went; a new port has just attached."""
    client = Client(segment, mac)
    address = client.lease()
    segment.detach(client.vm)
    return address, segment.attach("back")


def probes(vm: Vm) -> list[Ether]:
    """The gateway's ARP requests for the VM, checked field by field."""
    found = []
    for frame in vm.take_frames():
        pkt = checked(frame)
        assert pkt[ARP].op == 1 and pkt[ARP].hwsrc == GATEWAY_MAC and pkt[ARP].psrc == GATEWAY_IP
        assert pkt[ARP].hwdst == "00:00:00:00:00:00"
        found.append(pkt)
    return found


def arp_answer(address: str, mac: str = GUEST_MAC) -> bytes:
    return framed(ARP(op=2, hwsrc=mac, psrc=address, hwdst=GATEWAY_MAC, pdst=GATEWAY_IP), src=mac)


# -- asking for a leased address ---------------------------------------------------------


def test_a_returning_vm_is_asked_for_its_leased_address_and_forwards_find_it() -> None:
    segment = new_segment()
    address, vm = returned(segment)
    assert segment.forward_connection(SSH, PEER, 10.0) is None  # not heard from yet
    vm.take_frames()
    segment.probe_leases(vm, 10.0)
    (probe,) = probes(vm)
    # Unicast to the lease's MAC: only that NIC takes it.
    assert (probe[Ether].dst, probe[ARP].pdst) == (GUEST_MAC, address)
    segment.receive(vm, arp_answer(address), 10.1)
    assert vm.stats.drops == Counter()
    flow = segment.forward_connection(SSH, PEER, 10.2)
    assert isinstance(flow, TcpFlow) and flow.vm is vm and str(flow.guest.address) == address
    vm.take_frames()  # the SYN
    segment.handle_timer(10.0 + PROBE_RETRIES[0])
    assert probes(vm) == []  # answered: no more asking
    assert segment.get_timer() == flow.deadline


def test_unanswered_requests_are_repeated_a_few_times_then_given_up() -> None:
    segment = new_segment()
    address, vm = returned(segment)
    segment.probe_leases(vm, 0.0)
    sent = [(0.0, p[ARP].pdst) for p in probes(vm)]
    while (due := segment.get_timer()) is not None:
        segment.handle_timer(due)
        sent += [(due, p[ARP].pdst) for p in probes(vm)]
    retries = [sum(PROBE_RETRIES[:n]) for n in range(1, len(PROBE_RETRIES) + 1)]
    assert sent == [(at, address) for at in (0.0, *retries)]


def test_a_vm_heard_from_already_is_not_asked() -> None:
    segment = new_segment()
    client = Client(segment, GUEST_MAC)
    client.lease()
    other = segment.attach("other")
    segment.probe_leases(other, 1.0)
    assert other.take_frames() == []  # the lease's MAC is on a live port
    assert segment.get_timer() is None


def test_a_forward_that_finds_no_vm_asks_every_port() -> None:
    segment = new_segment()
    address, vm = returned(segment)
    third = segment.attach("third")
    assert segment.forward_connection(SSH, PEER, 5.0) is None
    assert [p[ARP].pdst for p in probes(vm)] == [address]
    assert [p[ARP].pdst for p in probes(third)] == [address]
    segment.receive(third, arp_answer(address), 5.1)
    flow = segment.forward_connection(SSH, PEER, 5.2)
    assert flow is not None and flow.vm is third


def test_expired_and_static_less_leases_are_not_asked_for() -> None:
    segment = new_segment(lease_time=60)
    _, vm = returned(segment)
    segment.probe_leases(vm, 61.0)
    assert vm.take_frames() == []


def test_at_most_max_probed_addresses_are_asked_for_the_latest_first() -> None:
    segment = new_segment(max_leases=64)
    macs = [f"52:54:00:00:01:{n:02x}" for n in range(MAX_PROBED + 4)]
    for n, mac in enumerate(macs):
        client = Client(segment, mac)
        client.lease(float(n))
        segment.detach(client.vm)
    vm = segment.attach("back")
    segment.probe_leases(vm, 100.0)
    asked = [p[Ether].dst for p in probes(vm)]
    assert asked == macs[::-1][:MAX_PROBED]


def test_an_arp_answer_from_a_guest_is_not_a_drop_and_teaches_its_address() -> None:
    segment = new_segment()
    vm = segment.attach("vm")
    segment.receive(vm, arp_answer("10.0.2.77"), 0.0)
    assert vm.stats.drops == Counter() and vm.take_frames() == []
    forward = SSH.__class__("tcp", SSH.host_address, 2222, IPv4Address("10.0.2.77"), 22)
    flow = segment.forward_connection(forward, PEER, 0.1)
    assert flow is not None and flow.vm is vm


# -- restored leases -----------------------------------------------------------------------


def saved(segment: Segment) -> list[Lease]:
    return [
        Lease(
            lease.address,
            lease.mac,
            lease.hostname,
            lease.expires,
            lease.bound,
            client=lease.client,
        )
        for lease in segment.dhcp.leases()
    ]


def test_restored_leases_give_the_same_addresses_and_forwards_find_the_vm() -> None:
    before = new_segment()
    Client(before, OTHER_MAC).lease()
    first = Client(before, GUEST_MAC, hostname="web")
    address = first.lease(1.0)
    assert address == OTHER_IP  # the second in the pool
    records = saved(before)

    after = new_segment()
    changes = after.dhcp.changes
    assert after.dhcp.restore(records, 2.0) == []
    assert after.dhcp.changes > changes
    vm = after.attach("back")
    after.probe_leases(vm, 2.0)
    assert sorted(p[ARP].pdst for p in probes(vm)) == sorted(str(r.address) for r in records)
    after.receive(vm, arp_answer(address), 2.1)
    flow = after.forward_connection(SSH, PEER, 2.2)
    assert flow is not None and str(flow.guest.address) == address
    vm.take_frames()  # the SYN
    # The same client asks again (a renewal, or a reboot): the same address.
    again = Client(after, GUEST_MAC, vm=vm, hostname="web")
    assert again.lease(3.0) == address
    newcomer = Client(after, "52:54:00:00:00:99")
    assert newcomer.lease(4.0) == "10.0.2.17"  # .15 and .16 are held by their old clients


def test_restore_refuses_what_does_not_fit_the_network_now() -> None:
    mac = parse_mac(GUEST_MAC)
    outside = Lease(IPv4Address("10.9.0.15"), mac, None, 100.0, True, client=b"mac:" + mac)
    static_taken = Lease(
        IPv4Address("10.0.2.50"), parse_mac(OTHER_MAC), None, 100.0, True, client=b"mac:x"
    )
    good = Lease(IPv4Address("10.0.2.20"), mac, None, 100.0, True, client=b"mac:" + mac)
    twice = Lease(IPv4Address("10.0.2.21"), mac, None, 100.0, True, client=b"mac:" + mac)
    bad_key = Lease(IPv4Address("10.0.2.22"), mac, None, 100.0, True, client=b"junk")
    static = StaticLease(parse_mac("52:54:00:00:00:50"), IPv4Address("10.0.2.50"))
    segment = Segment(NetworkSettings(static_leases=(static,)))
    refused = segment.dhcp.restore([outside, static_taken, good, twice, bad_key], 0.0)
    assert refused == [outside, static_taken, twice, bad_key]
    assert [(str(r.address), r.bound) for r in segment.dhcp.leases()] == [("10.0.2.20", True)]


def test_a_restored_lease_already_expired_is_kept_unbound_for_its_client() -> None:
    mac = parse_mac(GUEST_MAC)
    old = Lease(IPv4Address("10.0.2.30"), mac, None, 5.0, True, client=b"mac:" + mac)
    segment = new_segment()
    segment.dhcp.restore([old], 10.0)
    (lease,) = segment.dhcp.leases()
    assert not lease.bound
    assert Client(segment, GUEST_MAC).lease(11.0) == "10.0.2.30"


# -- one MAC, two live VMs -----------------------------------------------------------------


def test_a_second_live_vm_with_a_mac_in_use_is_refused_and_told_how_to_fix_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    segment = new_segment()
    first = Client(segment, GUEST_MAC)
    assert first.lease() == GUEST_IP
    second = Client(segment, GUEST_MAC)
    with caplog.at_level(logging.WARNING):
        assert second.discover(1.0) is None
        assert second.discover(2.0) is None
    assert second.vm.stats.drops == Counter({"eth_mac_in_use": 2})
    assert second.vm.macs == set()
    (line,) = [r.getMessage() for r in caplog.records if "eth_mac_in_use" in r.getMessage()]
    assert GUEST_MAC in line and "mac=" in line
    # Frames to that MAC still go to the first VM only.
    third = segment.attach("third")
    frame = udp_frame(GUEST_IP, 7, dst=GUEST_MAC, src=OTHER_MAC)
    segment.receive(third, frame, 3.0)
    assert first.vm.take_frames()[-1:] == [frame]
    assert second.vm.take_frames() == []


def test_the_mac_is_free_again_once_its_vm_has_gone() -> None:
    segment = new_segment()
    first = Client(segment, GUEST_MAC)
    address = first.lease()
    second = Client(segment, GUEST_MAC)
    assert second.discover(1.0) is None
    segment.detach(first.vm)
    assert second.lease(2.0) == address  # a VM restarted on another connection
    assert second.vm.stats.drops == Counter({"eth_mac_in_use": 1})
