"""IPv6's own parts of the core: Neighbour Discovery, router advertisements, DHCPv6,
RA guard, and IPv6 turned off; scapy is the oracle.  (What IPv6 shares with IPv4, the
NAT and policy, is tested over both families in test_core_families.py.)"""

from __future__ import annotations

from ipaddress import IPv6Address

import pytest
from scapy.layers.dhcp6 import (
    DUID_LL,
    DHCP6_Advertise,
    DHCP6_InfoRequest,
    DHCP6_Reply,
    DHCP6_Solicit,
    DHCP6OptClientId,
    DHCP6OptDNSDomains,
    DHCP6OptDNSServers,
    DHCP6OptIA_NA,
    DHCP6OptStatusCode,
)
from scapy.layers.inet import UDP
from scapy.layers.inet6 import (
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6ND_RS,
    ICMPv6NDOptDNSSL,
    ICMPv6NDOptMTU,
    ICMPv6NDOptPrefixInfo,
    ICMPv6NDOptRDNSS,
    ICMPv6NDOptSrcLLAddr,
    ICMPv6PacketTooBig,
    IPv6,
)
from scapy.layers.l2 import Ether

from slirpnet.core.forwards import parse_forwards
from slirpnet.core.ra import RA_INTERVAL
from slirpnet.core.segment import Segment
from slirpnet.core.vm import Vm
from slirpnet.wire.ipv6 import solicited_node
from tests.test_core_segment import GATEWAY_MAC, GUEST_MAC, OTHER_MAC, checked, new_segment

GUEST_LL = "fe80::5054:ff:fe12:3456"
GATEWAY_LL = "fe80::5055:aff:fe00:202"  # the gateway MAC's link-local address (RFC 4291)
SOLICITED_GATEWAY = "ff02::1:ff00:2"


@pytest.fixture
def segment() -> Segment:
    return new_segment(search=("example.test",))


@pytest.fixture
def vm(segment: Segment) -> Vm:
    return segment.attach("guest")


def multicast(layers: object, dst_mac: str = "33:33:00:00:00:02", src: str = GUEST_MAC) -> bytes:
    return bytes(Ether(src=src, dst=dst_mac) / layers)


def group_mac(group: str) -> str:
    """The last 32 bits of a multicast group, as the end of its MAC (RFC 2464 §7)."""
    return IPv6Address(group).packed[-4:].hex(":")


def only(vm: Vm) -> Ether:
    frames = vm.take_frames()
    assert len(frames) == 1, frames
    return checked(frames[0])


def test_a_router_solicitation_gets_an_advertisement_for_slaac(segment: Segment, vm: Vm) -> None:
    rs = (
        IPv6(src=GUEST_LL, dst="ff02::2", hlim=255)
        / ICMPv6ND_RS()
        / ICMPv6NDOptSrcLLAddr(lladdr=GUEST_MAC)
    )
    segment.receive(vm, multicast(rs), 0.0)
    ra = only(vm)
    assert ra.dst == GUEST_MAC and ra[IPv6].dst == GUEST_LL
    assert ra[IPv6].src == GATEWAY_LL and ra[IPv6].hlim == 255  # RFC 4861 §6.1.2
    adv = ra[ICMPv6ND_RA]
    assert adv.O == 1 and adv.M == 0 and adv.routerlifetime > 0
    prefix = ra[ICMPv6NDOptPrefixInfo]
    assert (prefix.prefix, prefix.prefixlen, prefix.L, prefix.A) == ("fec0::", 64, 1, 1)
    assert ra[ICMPv6NDOptMTU].mtu == 65520
    assert ra[ICMPv6NDOptRDNSS].dns == ["fec0::3"]
    assert ra[ICMPv6NDOptDNSSL].searchlist == ["example.test."]
    assert ra[ICMPv6NDOptSrcLLAddr].lladdr == GATEWAY_MAC


def test_a_solicitation_from_the_unspecified_address_is_answered_to_all_nodes(
    segment: Segment, vm: Vm
) -> None:
    segment.receive(vm, multicast(IPv6(src="::", dst="ff02::2", hlim=255) / ICMPv6ND_RS()), 0.0)
    assert only(vm)[IPv6].dst == "ff02::1"


@pytest.mark.parametrize("target", ["fec0::2", "fec0::3", GATEWAY_LL])
def test_neighbour_solicitations_for_our_addresses_are_answered(
    segment: Segment, vm: Vm, target: str
) -> None:
    group = str(solicited_node(IPv6Address(target)))
    ns = (
        IPv6(src="fec0::15", dst=group, hlim=255)
        / ICMPv6ND_NS(tgt=target)
        / ICMPv6NDOptSrcLLAddr(lladdr=GUEST_MAC)
    )
    segment.receive(vm, multicast(ns, "33:33:" + group_mac(group)), 0.0)
    na = only(vm)
    assert na[IPv6].dst == "fec0::15" and na[IPv6].src == target
    adv = na[ICMPv6ND_NA]
    assert (adv.tgt, adv.R, adv.S, adv.O) == (target, 1, 1, 1)
    assert bytes(adv.payload)[2:8] == bytes.fromhex(GATEWAY_MAC.replace(":", ""))


def test_a_guest_testing_our_address_is_told_it_is_taken(segment: Segment, vm: Vm) -> None:
    dad = IPv6(src="::", dst=SOLICITED_GATEWAY, hlim=255) / ICMPv6ND_NS(tgt="fec0::2")
    segment.receive(vm, multicast(dad, "33:33:ff:00:00:02"), 0.0)
    na = only(vm)
    assert na[IPv6].dst == "ff02::1" and na[ICMPv6ND_NA].S == 0  # RFC 4862 §5.4.3


def test_solicitations_for_other_guests_are_left_to_them(segment: Segment) -> None:
    a, b = segment.attach("a"), segment.attach("b")
    ns = IPv6(src="fec0::15", dst="ff02::1:ff00:16", hlim=255) / ICMPv6ND_NS(tgt="fec0::16")
    segment.receive(a, multicast(ns, "33:33:ff:00:00:16"), 0.0)
    assert a.take_frames() == []
    assert len(b.take_frames()) == 1  # switched like IPv4 broadcast


def test_nd_with_a_hop_limit_below_255_is_dropped(segment: Segment, vm: Vm) -> None:
    segment.receive(vm, multicast(IPv6(src=GUEST_LL, dst="ff02::2", hlim=64) / ICMPv6ND_RS()), 0.0)
    assert vm.take_frames() == [] and vm.stats.drops["ndp_bad_hop_limit"] == 1


def test_echo_to_the_gateway_link_local_address_is_answered(segment: Segment, vm: Vm) -> None:
    ping = IPv6(src=GUEST_LL, dst=GATEWAY_LL) / ICMPv6EchoRequest(id=5, seq=6, data=b"x")
    segment.receive(vm, bytes(Ether(src=GUEST_MAC, dst=GATEWAY_MAC) / ping), 0.0)
    reply = only(vm)
    assert (reply[ICMPv6EchoReply].id, reply[ICMPv6EchoReply].seq) == (5, 6)


def test_stateless_dhcpv6_gives_the_dns_server_and_search_list(segment: Segment, vm: Vm) -> None:
    request = (
        IPv6(src=GUEST_LL, dst="ff02::1:2")
        / UDP(sport=546, dport=547)
        / DHCP6_InfoRequest(trid=0x123456)
        / DHCP6OptClientId(duid=DUID_LL(lladdr=GUEST_MAC))
    )
    segment.receive(vm, multicast(request, "33:33:00:01:00:02"), 0.0)
    reply = only(vm)
    assert reply[IPv6].src == GATEWAY_LL and reply[UDP].dport == 546
    assert reply[DHCP6_Reply].trid == 0x123456
    assert reply[DHCP6OptDNSServers].dnsservers == ["fec0::3"]
    assert reply[DHCP6OptDNSDomains].dnsdomains == ["example.test."]
    assert reply[DHCP6OptClientId].duid.lladdr == GUEST_MAC


def test_a_solicit_for_addresses_hears_none_are_available(segment: Segment, vm: Vm) -> None:
    solicit = (
        IPv6(src=GUEST_LL, dst="ff02::1:2")
        / UDP(sport=546, dport=547)
        / DHCP6_Solicit(trid=9)
        / DHCP6OptClientId(duid=DUID_LL(lladdr=GUEST_MAC))
        / DHCP6OptIA_NA(iaid=1)
    )
    segment.receive(vm, multicast(solicit, "33:33:00:01:00:02"), 0.0)
    advertise = only(vm)
    assert advertise.haslayer(DHCP6_Advertise)
    assert advertise[DHCP6OptStatusCode].statuscode == 2  # NoAddrsAvail


def test_router_advertisements_from_a_guest_never_reach_another(segment: Segment) -> None:
    a, b = segment.attach("a"), segment.attach("b")
    rogue = IPv6(src=GUEST_LL, dst="ff02::1", hlim=255) / ICMPv6ND_RA()
    segment.receive(a, multicast(rogue, "33:33:00:00:00:01"), 0.0)
    dhcp_server = IPv6(src=GUEST_LL, dst="fe80::1") / UDP(sport=547, dport=546) / DHCP6_Reply()
    segment.receive(a, bytes(Ether(src=GUEST_MAC, dst=OTHER_MAC) / dhcp_server), 0.0)
    assert b.take_frames() == [] and a.take_frames() == []
    assert a.stats.drops["ra_guard"] == 2


def test_advertisements_go_out_periodically_once_a_port_is_up(segment: Segment, vm: Vm) -> None:
    segment.attached(vm, 0.0)
    assert vm.take_frames() == []  # the guest is booting: it will solicit
    assert segment.get_timer() == RA_INTERVAL
    segment.handle_timer(RA_INTERVAL)
    assert only(vm)[IPv6].dst == "ff02::1"


def test_with_ipv6_off_nothing_is_answered() -> None:
    segment = new_segment(ipv6=False)
    vm = segment.attach("guest")
    segment.attached(vm, 0.0)
    rs = IPv6(src=GUEST_LL, dst="ff02::2", hlim=255) / ICMPv6ND_RS()
    segment.receive(vm, multicast(rs), 0.0)
    assert vm.take_frames() == [] and vm.stats.drops["ipv6_disabled"] == 1
    assert segment.get_timer() is None


def test_a_forward_reaches_a_guest_by_its_ipv6_address(segment: Segment, vm: Vm) -> None:
    (forward,) = parse_forwards("tcp:[::1]:2222-[fec0::15]:22")
    assert str(forward) == "tcp:[::1]:2222-[fec0::15]:22"
    assert segment.forward_connection(forward, (IPv6Address("::1"), 50000), 0.0) is None
    hello = IPv6(src="fec0::15", dst="fec0::2") / UDP(sport=1, dport=7)
    segment.receive(vm, bytes(Ether(src=GUEST_MAC, dst=GATEWAY_MAC) / hello), 0.0)
    segment.take_actions()
    vm.take_frames()
    flow = segment.forward_connection(forward, (IPv6Address("::1"), 50000), 1.0)
    assert flow is not None and flow.guest.address == IPv6Address("fec0::15")
    syn = only(vm)
    assert syn[IPv6].src == "fec0::2" and syn[IPv6].dst == "fec0::15" and syn["TCP"].dport == 22


def test_a_guest_soliciting_the_gateway_is_learned_for_forwards(segment: Segment, vm: Vm) -> None:
    """RFC 4861 §7.2.3: a solicitation's sender is a neighbour; a guest with a static
    address that only listens is then reached by a forward to that address."""
    (forward,) = parse_forwards("tcp:[::1]:2222-[fec0::16]:22")
    ns = IPv6(src="fec0::16", dst="ff02::1:ff00:2", hlim=255) / ICMPv6ND_NS(tgt="fec0::2")
    segment.receive(
        vm, multicast(ns / ICMPv6NDOptSrcLLAddr(lladdr=GUEST_MAC), "33:33:ff:00:00:02"), 0.0
    )
    vm.take_frames()
    flow = segment.forward_connection(forward, (IPv6Address("::1"), 50000), 1.0)
    assert flow is not None and flow.guest.address == IPv6Address("fec0::16")


def test_a_forward_to_an_unknown_address_asks_who_has_it(segment: Segment, vm: Vm) -> None:
    (forward,) = parse_forwards("tcp:[::1]:2222-[fec0::16]:22")
    assert segment.forward_connection(forward, (IPv6Address("::1"), 50000), 0.0) is None
    ns = only(vm)
    assert ns[IPv6].dst == "ff02::1:ff00:16" and ns[IPv6].hlim == 255
    assert ns[ICMPv6ND_NS].tgt == "fec0::16"
    answer = IPv6(src="fec0::16", dst=GATEWAY_LL, hlim=255) / ICMPv6ND_NA(tgt="fec0::16", S=1, R=0)
    segment.receive(vm, bytes(Ether(src=GUEST_MAC, dst=GATEWAY_MAC) / answer), 0.5)
    assert segment.forward_connection(forward, (IPv6Address("::1"), 50001), 1.0) is not None


def test_a_packet_over_the_mtu_is_answered_packet_too_big() -> None:
    """RFC 4443 §3.2: the guest hears the link's MTU, as from a router on its path."""
    segment = new_segment(mtu=1500)
    vm = segment.attach("guest")
    big = IPv6(src="fec0::15", dst="2001:db8::1") / UDP(sport=1, dport=9) / bytes(1600)
    segment.receive(vm, bytes(Ether(src=GUEST_MAC, dst=GATEWAY_MAC) / big), 0.0)
    answer = only(vm)
    assert answer[ICMPv6PacketTooBig].mtu == 1500 and answer[IPv6].dst == "fec0::15"
    assert len(answer) - 14 <= 1280  # the quote is cut to IPv6's minimum MTU
    assert vm.stats.drops["ipv6_packet_too_big"] == 1 and segment.take_actions() == []


def test_ipv6_needs_an_mtu_of_1280() -> None:
    with pytest.raises(ValueError, match="mtu: IPv6 needs at least 1280"):
        new_segment(mtu=1000)
    assert new_segment(mtu=1000, ipv6=False).settings.mtu == 1000
