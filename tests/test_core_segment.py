"""The core ``Segment``: ARP, the L2 switch, drop reasons, ICMP echo, robustness.

Driven with a fake clock (float ``now`` values) and no sockets: the shell is
simulated by reading ``take_actions()`` and calling ``flow_received``,
``flow_error`` and ``handle_timer``.  scapy builds the guests' frames and
dissects what the core sends, as an independent oracle.  UDP NAT and DNS live in
``test_core_udp.py`` and ``test_core_dns.py``, which import the helpers below.

192.0.2.0/24 (TEST-NET-1) only ever appears as a value inside frames: nothing is
sent anywhere.
"""

from __future__ import annotations

import struct
from collections import Counter
from ipaddress import IPv4Address

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import ICMP, IP, TCP, UDP, in4_chksum
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, in6_chksum
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.packet import Packet
from scapy.utils import checksum

from slirpnet.core.flows import (
    FLOW_FAILED,
    FLOW_REFUSED,
    FLOW_UNREACHABLE,
    Action,
    CloseFlow,
    EchoFlow,
    Flow,
    OpenFlow,
    SendFlow,
)
from slirpnet.core.nat_echo import ECHO_FLOW_IDLE
from slirpnet.core.segment import Segment
from slirpnet.core.settings import NetworkSettings, Upstream
from slirpnet.core.switch import MAX_MACS_PER_VM
from slirpnet.core.vm import Vm

GATEWAY_MAC = "52:55:0a:00:02:02"
GUEST_MAC = "52:54:00:12:34:56"
OTHER_MAC = "52:54:00:65:43:21"
THIRD_MAC = "52:54:00:ab:cd:ef"
GATEWAY_IP = "10.0.2.2"
DNS_IP = "10.0.2.3"
GUEST_IP = "10.0.2.15"
OTHER_IP = "10.0.2.16"
REMOTE_IP = "192.0.2.1"  # TEST-NET-1, a value inside frames only
BROADCAST = "ff:ff:ff:ff:ff:ff"
UPSTREAM_1 = Upstream(IPv4Address("192.0.2.53"))
UPSTREAM_2 = Upstream(IPv4Address("192.0.2.54"), 5353)


# -- helpers shared with test_core_udp.py and test_core_dns.py -----------------------


def new_segment(**settings: object) -> Segment:
    return Segment(NetworkSettings(**settings))  # type: ignore[arg-type]


def framed(layers: Packet, *, src: str = GUEST_MAC, dst: str = GATEWAY_MAC) -> bytes:
    return bytes(Ether(src=src, dst=dst) / layers)


def udp_frame(
    dst_ip: str,
    dport: int,
    payload: bytes | Packet = b"data",
    *,
    sport: int = 40000,
    src_ip: str = GUEST_IP,
    src: str = GUEST_MAC,
    dst: str = GATEWAY_MAC,
) -> bytes:
    return framed(
        IP(src=src_ip, dst=dst_ip) / UDP(sport=sport, dport=dport) / payload, src=src, dst=dst
    )


def echo_frame(
    dst_ip: str,
    ident: int = 0x1234,
    seq: int = 1,
    data: bytes = b"ping!",
    *,
    src_ip: str = GUEST_IP,
) -> bytes:
    return framed(IP(src=src_ip, dst=dst_ip) / ICMP(type=8, id=ident, seq=seq) / data)


def checked(frame: bytes) -> Ether:
    """Dissect a frame the core sent, after checking its IP, UDP, TCP and ICMP checksums
    (a fragment's IPv4 checksum only: the others cover the whole datagram)."""
    pkt = Ether(frame)
    assert pkt.src == GATEWAY_MAC
    if pkt.type == 0x0800:
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        assert checksum(ip[:ihl]) == 0, "IPv4 header checksum"
        assert struct.unpack_from("!H", ip, 2)[0] == len(ip), "IPv4 total length"
        body = ip[ihl:]
        if pkt[IP].flags.MF or pkt[IP].frag:
            pass
        elif ip[9] == 17:
            assert body[6:8] != b"\x00\x00", "the core always computes UDP checksums"
            assert in4_chksum(17, pkt[IP], body) == 0, "UDP checksum"
        elif ip[9] == 1:
            assert checksum(body) == 0, "ICMP checksum"
    elif pkt.type == 0x86DD:
        ip6 = frame[14:]
        assert struct.unpack_from("!H", ip6, 4)[0] == len(ip6) - 40, "IPv6 payload length"
        if ip6[6] in (6, 17, 58):  # TCP, UDP, ICMPv6: never a zero checksum over IPv6
            assert in6_chksum(ip6[6], pkt[IPv6], ip6[40:]) == 0, "IPv6 upper-layer checksum"
    return pkt


def one_frame(vm: Vm) -> Ether:
    frames = vm.take_frames()
    assert len(frames) == 1, frames
    return checked(frames[0])


def from_gateway(frame: bytes, layers: Packet, *, dst: str = GUEST_MAC) -> None:
    """``frame`` is exactly what scapy builds for ``layers`` (IP ident taken from the frame)."""
    got = checked(frame)
    expected = Ether(dst=dst, src=GATEWAY_MAC) / layers
    expected[IP].id = got[IP].id
    assert frame == bytes(expected), (got.show(dump=True), expected.show(dump=True))


class Shell:
    """The shell's bookkeeping of host sockets, checking the action protocol as it goes."""

    def __init__(self, segment: Segment) -> None:
        self.segment = segment
        self.open: set[Flow] = set()
        self.opened = 0
        self.closed = 0

    def actions(self) -> list[Action]:
        actions = self.segment.take_actions()
        for action in actions:
            if isinstance(action, OpenFlow):
                assert action.flow not in self.open
                self.open.add(action.flow)
                self.opened += 1
            elif isinstance(action, SendFlow):
                assert action.flow in self.open, "SendFlow before OpenFlow"
            else:
                assert action.flow in self.open, "CloseFlow of a flow never opened"
                assert action.flow.closed
                self.open.remove(action.flow)
                self.closed += 1
        return actions

    def opened_one(self, kind: type[Flow]) -> tuple[Flow, bytes]:
        """The actions are exactly: open a ``kind`` flow and send once on it."""
        actions = self.actions()
        assert [type(a) for a in actions] == [OpenFlow, SendFlow], actions
        opened, sent = actions
        assert isinstance(opened, OpenFlow) and isinstance(sent, SendFlow)
        assert isinstance(opened.flow, kind)
        assert sent.flow is opened.flow
        return opened.flow, sent.payload


def closes(actions: list[Action]) -> list[Flow]:
    assert all(isinstance(a, CloseFlow) for a in actions), actions
    return [a.flow for a in actions]


@pytest.fixture
def segment() -> Segment:
    return new_segment()


@pytest.fixture
def vm(segment: Segment) -> Vm:
    return segment.attach("guest")


@pytest.fixture
def shell(segment: Segment) -> Shell:
    return Shell(segment)


# -- ARP ---------------------------------------------------------------------------


def arp_request(target: str, sender_ip: str = GUEST_IP, *, dst: str = BROADCAST) -> bytes:
    return framed(ARP(op=1, hwsrc=GUEST_MAC, psrc=sender_ip, pdst=target), dst=dst)


def arp_reply(address: str, target_ip: str = GUEST_IP) -> bytes:
    return bytes(
        Ether(dst=GUEST_MAC, src=GATEWAY_MAC)
        / ARP(op=2, hwsrc=GATEWAY_MAC, psrc=address, hwdst=GUEST_MAC, pdst=target_ip)
    )


def test_gateway_mac_is_libslirp_convention(segment: Segment) -> None:
    assert segment.gateway_mac == bytes.fromhex("52550a000202")


@pytest.mark.parametrize("address", [GATEWAY_IP, DNS_IP])
@pytest.mark.parametrize("dst", [BROADCAST, GATEWAY_MAC])
def test_arp_answered_for_gateway_and_dns(
    segment: Segment, vm: Vm, shell: Shell, address: str, dst: str
) -> None:
    segment.receive(vm, arp_request(address, dst=dst), 0.0)
    assert vm.take_frames() == [arp_reply(address)]
    assert shell.actions() == []
    assert vm.stats.drops == Counter()
    assert (vm.stats.frames_in, vm.stats.frames_out) == (1, 1)


def test_arp_padded_to_minimum_frame_is_answered(segment: Segment, vm: Vm) -> None:
    frame = arp_request(GATEWAY_IP)
    segment.receive(vm, frame + bytes(60 - len(frame)), 0.0)
    assert vm.take_frames() == [arp_reply(GATEWAY_IP)]


@pytest.mark.parametrize("target", [GUEST_IP, OTHER_IP, "10.0.2.1", "10.0.2.255", REMOTE_IP])
def test_arp_for_other_addresses_unanswered(segment: Segment, vm: Vm, target: str) -> None:
    segment.receive(vm, arp_request(target), 0.0)
    assert vm.take_frames() == []
    assert vm.stats.drops == Counter()


def test_rfc5227_probe_for_gateway_is_answered(segment: Segment, vm: Vm) -> None:
    segment.receive(vm, arp_request(GATEWAY_IP, sender_ip="0.0.0.0"), 0.0)
    assert vm.take_frames() == [arp_reply(GATEWAY_IP, target_ip="0.0.0.0")]
    assert vm.stats.drops == Counter()


def test_rfc5227_probe_for_guest_address_is_unanswered(segment: Segment, vm: Vm) -> None:
    segment.receive(vm, arp_request(GUEST_IP, sender_ip="0.0.0.0"), 0.0)
    assert vm.take_frames() == []
    assert vm.stats.drops == Counter()


def test_arp_announcement_of_gateway_address_dropped(segment: Segment, vm: Vm) -> None:
    segment.receive(vm, arp_request(GATEWAY_IP, sender_ip=GATEWAY_IP), 0.0)
    assert vm.take_frames() == []
    assert vm.stats.drops == Counter({"arp_claims_gateway": 1})


def test_arp_reply_to_gateway_ignored(segment: Segment, vm: Vm) -> None:
    frame = framed(ARP(op=2, hwsrc=GUEST_MAC, psrc=GUEST_IP, hwdst=GATEWAY_MAC, pdst=GATEWAY_IP))
    segment.receive(vm, frame, 0.0)
    assert vm.take_frames() == []
    assert vm.stats.drops == Counter()


def _arp_patched(offset: int, value: bytes) -> bytes:
    """A valid ARP request for the gateway with the bytes at ``offset`` replaced."""
    packet = bytearray(bytes(ARP(op=1, hwsrc=GUEST_MAC, psrc=GUEST_IP, pdst=GATEWAY_IP)))
    packet[offset : offset + len(value)] = value
    return bytes(packet)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (_arp_patched(0, b"")[:27], "arp_truncated"),
        (_arp_patched(0, b"\x00\x06"), "arp_not_ipv4_ethernet"),
        (_arp_patched(2, b"\x86\xdd"), "arp_not_ipv4_ethernet"),
        (_arp_patched(4, b"\x08"), "arp_not_ipv4_ethernet"),
        (_arp_patched(6, b"\x00\x03"), "arp_bad_op"),
    ],
    ids=["truncated", "htype", "ptype", "hlen", "op"],
)
def test_malformed_arp_dropped(segment: Segment, vm: Vm, payload: bytes, reason: str) -> None:
    for dst in (BROADCAST, GATEWAY_MAC):
        segment.receive(vm, bytes(Ether(src=GUEST_MAC, dst=dst, type=0x0806) / payload), 0.0)
    assert vm.take_frames() == []
    assert vm.stats.drops == Counter({reason: 2})


# -- L2 switching ------------------------------------------------------------------


def test_broadcast_reaches_other_vm_and_gateway(segment: Segment) -> None:
    a, b = segment.attach("a"), segment.attach("b")
    frame = arp_request(GATEWAY_IP)
    segment.receive(a, frame, 0.0)
    assert b.take_frames() == [frame]
    assert a.take_frames() == [arp_reply(GATEWAY_IP)]
    assert a.stats.drops == b.stats.drops == Counter()


def test_arp_between_guests_is_switched(segment: Segment) -> None:
    a, b = segment.attach("a"), segment.attach("b")
    request = arp_request(OTHER_IP)
    segment.receive(a, request, 0.0)
    assert b.take_frames() == [request]
    assert a.take_frames() == []
    reply = bytes(
        Ether(src=OTHER_MAC, dst=GUEST_MAC)
        / ARP(op=2, hwsrc=OTHER_MAC, psrc=OTHER_IP, hwdst=GUEST_MAC, pdst=GUEST_IP)
    )
    segment.receive(b, reply, 0.0)  # the requester's MAC was learned from its request
    assert a.take_frames() == [reply]
    assert b.take_frames() == []
    assert segment.take_actions() == []
    assert a.stats.drops == b.stats.drops == Counter()


def test_unicast_to_learned_mac_reaches_only_that_vm(segment: Segment) -> None:
    a, b, c = segment.attach("a"), segment.attach("b"), segment.attach("c")
    segment.receive(
        b, framed(ARP(hwsrc=OTHER_MAC, psrc=OTHER_IP, pdst=GATEWAY_IP), src=OTHER_MAC), 0.0
    )
    b.take_frames()
    frame = udp_frame(OTHER_IP, 7, b"hello", dst=OTHER_MAC)
    segment.receive(a, frame, 1.0)
    assert b.take_frames() == [frame]
    assert a.take_frames() == c.take_frames() == []
    assert segment.take_actions() == []  # the gateway never saw it
    assert a.stats.drops == b.stats.drops == c.stats.drops == Counter()


def test_unknown_unicast_is_flooded(segment: Segment) -> None:
    a, b, c = segment.attach("a"), segment.attach("b"), segment.attach("c")
    frame = udp_frame(OTHER_IP, 7, dst=OTHER_MAC)
    segment.receive(a, frame, 0.0)
    assert b.take_frames() == c.take_frames() == [frame]
    assert a.take_frames() == []
    assert segment.take_actions() == []
    assert a.stats.drops == Counter()


def test_unknown_unicast_with_nobody_to_flood_to_dropped(segment: Segment, vm: Vm) -> None:
    segment.receive(vm, udp_frame(OTHER_IP, 7, dst=OTHER_MAC), 0.0)
    assert vm.stats.drops == Counter({"eth_unknown_destination": 1})


def test_multicast_is_flooded_not_given_to_gateway(segment: Segment) -> None:
    a, b = segment.attach("a"), segment.attach("b")
    frame = udp_frame("224.0.0.251", 5353, dst="01:00:5e:00:00:fb")
    segment.receive(a, frame, 0.0)
    assert b.take_frames() == [frame]
    assert a.stats.drops == Counter()
    assert segment.take_actions() == []


def test_multicast_with_nobody_to_flood_to_dropped(segment: Segment, vm: Vm) -> None:
    segment.receive(vm, udp_frame("224.0.0.251", 5353, dst="01:00:5e:00:00:fb"), 0.0)
    assert vm.stats.drops == Counter({"eth_multicast": 1})


def test_frame_to_oneself_dropped(segment: Segment) -> None:
    a, b = segment.attach("a"), segment.attach("b")
    segment.receive(a, udp_frame(GUEST_IP, 7, dst=GUEST_MAC), 0.0)
    assert a.take_frames() == b.take_frames() == []
    assert a.stats.drops == Counter({"eth_to_self": 1})


@pytest.mark.parametrize("source", ["01:00:5e:00:00:01", BROADCAST, GATEWAY_MAC])
def test_group_or_gateway_source_mac_dropped(segment: Segment, source: str) -> None:
    a, b = segment.attach("a"), segment.attach("b")
    segment.receive(a, framed(ARP(pdst=GATEWAY_IP), src=source, dst=BROADCAST), 0.0)
    assert a.take_frames() == b.take_frames() == []
    assert a.stats.drops == Counter({"eth_bad_source": 1})
    assert a.macs == set()


def test_segments_never_see_each_others_frames() -> None:
    one, two = new_segment(), new_segment()
    a1, b1 = one.attach("a"), one.attach("b")
    a2, b2 = two.attach("a"), two.attach("b")
    # Same MACs, same addresses: B in each segment announces itself, A broadcasts.
    hello = framed(
        ARP(hwsrc=OTHER_MAC, psrc=OTHER_IP, pdst=GATEWAY_IP), src=OTHER_MAC, dst=BROADCAST
    )
    one.receive(b1, hello, 0.0)
    assert a1.take_frames() == [hello]
    assert [b.take_frames() for b in (a2, b2)] == [[], []]
    b1.take_frames()
    frame = udp_frame(OTHER_IP, 7, dst=OTHER_MAC)
    two.receive(a2, frame, 0.0)  # unknown in segment two: flooded there only
    assert b2.take_frames() == [frame]
    assert a1.take_frames() == b1.take_frames() == []
    one.receive(a1, udp_frame(REMOTE_IP, 9), 0.0)
    assert len(one.take_actions()) == 2
    assert two.take_actions() == []
    assert a1.stats.drops == a2.stats.drops == b1.stats.drops == b2.stats.drops == Counter()


def test_detach_forgets_macs(segment: Segment) -> None:
    a, b = segment.attach("a"), segment.attach("b")
    segment.receive(
        b, framed(ARP(hwsrc=OTHER_MAC, psrc=OTHER_IP, pdst=GATEWAY_IP), src=OTHER_MAC), 0.0
    )
    segment.detach(b)
    assert segment.vms == [a]
    assert b.take_frames() == []  # its outbox is cleared
    segment.receive(a, udp_frame(OTHER_IP, 7, dst=OTHER_MAC), 1.0)
    assert a.stats.drops == Counter({"eth_unknown_destination": 1})
    assert b.take_frames() == []
    # A detached VM's frames are ignored, not even counted.
    segment.receive(b, arp_request(GATEWAY_IP), 2.0)
    assert b.stats.frames_in == 1
    assert b.take_frames() == []
    segment.detach(b)  # twice is harmless


def test_mac_in_use_is_refused_until_its_port_detaches(segment: Segment) -> None:
    a, b, c = segment.attach("a"), segment.attach("b"), segment.attach("c")
    announce = framed(ARP(hwsrc=OTHER_MAC, psrc=OTHER_IP, pdst=GATEWAY_IP), src=OTHER_MAC)
    segment.receive(b, announce, 0.0)
    segment.receive(c, announce, 0.0)  # a second live VM with b's MAC
    assert c.stats.drops == Counter({"eth_mac_in_use": 1})
    frame = udp_frame(OTHER_IP, 7, dst=OTHER_MAC)
    segment.receive(a, frame, 1.0)
    assert b.take_frames()[-1:] == [frame]
    assert c.take_frames() == []
    segment.detach(b)  # b's VM is gone (or migrated): c's MAC now
    segment.receive(c, announce, 2.0)
    segment.receive(a, frame, 3.0)
    assert c.take_frames()[-1:] == [frame]
    assert a.stats.drops == Counter()


def test_mac_limit(segment: Segment) -> None:
    a, b = segment.attach("a"), segment.attach("b")
    macs = [f"52:54:00:00:00:{i:02x}" for i in range(MAX_MACS_PER_VM + 1)]
    for mac in macs[:-1]:
        segment.receive(a, framed(ARP(pdst=OTHER_IP), src=mac, dst=BROADCAST), 0.0)
    assert len(b.take_frames()) == MAX_MACS_PER_VM
    segment.receive(a, framed(ARP(pdst=OTHER_IP), src=macs[-1], dst=BROADCAST), 0.0)
    assert b.take_frames() == []
    assert a.stats.drops == Counter({"eth_mac_limit": 1})
    assert len(a.macs) == MAX_MACS_PER_VM
    segment.receive(a, framed(ARP(pdst=OTHER_IP), src=macs[0], dst=BROADCAST), 0.0)
    assert len(b.take_frames()) == 1  # known MACs still pass


# -- drop reasons ------------------------------------------------------------------


def _bad_ip_checksum() -> bytes:
    frame = bytearray(udp_frame(REMOTE_IP, 9))
    frame[14 + 10] ^= 0x01
    return bytes(frame)


def _bad_udp_checksum() -> bytes:
    frame = bytearray(udp_frame(REMOTE_IP, 9, b"payload"))
    frame[-1] ^= 0x01
    return bytes(frame)


def _bad_icmp_checksum() -> bytes:
    frame = bytearray(echo_frame(GATEWAY_IP))
    frame[-1] ^= 0x01
    return bytes(frame)


DROPS = {
    "truncated_ethernet": (bytes.fromhex("52550a000202525400123456"), "eth_truncated"),
    "vlan": (framed(Dot1Q(vlan=5) / IP(src=GUEST_IP, dst=REMOTE_IP) / UDP()), "eth_vlan_tagged"),
    "qinq": (framed(Dot1AD(vlan=5) / Dot1Q(vlan=6) / IP() / UDP()), "eth_vlan_tagged"),
    "llc": (
        bytes(Ether(src=GUEST_MAC, dst=GATEWAY_MAC, type=40) / (b"x" * 40)),
        "eth_not_ethernet_ii",
    ),
    "ipv6_link_local_source": (
        framed(IPv6(src="fe80::1", dst="2001:db8::2") / UDP()),
        "ipv6_bad_source",
    ),
    "ipv6_loopback_source": (framed(IPv6() / UDP(), dst=BROADCAST), "ipv6_bad_source"),
    "ipv6_fragment": (
        framed(IPv6(src="fec0::15", dst="2001:db8::2") / IPv6ExtHdrFragment() / UDP()),
        "ipv6_fragment",
    ),
    "ipv6_lying_length": (framed(IPv6(src="fec0::15", plen=200) / UDP()), "ipv6_truncated"),
    "unknown_ethertype": (
        bytes(Ether(src=GUEST_MAC, dst=GATEWAY_MAC, type=0x88B5) / (b"x" * 46)),
        "eth_unknown_ethertype",
    ),
    "ipv4_truncated": (udp_frame(REMOTE_IP, 9)[:30], "ipv4_truncated"),
    "ipv4_bad_checksum": (_bad_ip_checksum(), "ipv4_bad_checksum"),
    "ipv4_bad_version": (
        framed(IP(version=5, src=GUEST_IP, dst=REMOTE_IP) / UDP()),
        "ipv4_bad_version",
    ),
    "fragment_not_in_8_byte_units": (
        framed(IP(src=GUEST_IP, dst=REMOTE_IP, flags="MF") / UDP(sport=1, dport=9) / b"12345"),
        "ipv4_frag_bad_length",
    ),
    "fragment_past_65535": (
        framed(IP(src=GUEST_IP, dst=REMOTE_IP, frag=8189) / bytes(40)),
        "ipv4_frag_too_big",
    ),
    "udp_bad_checksum": (_bad_udp_checksum(), "udp_bad_checksum"),
    "udp_truncated": (framed(IP(src=GUEST_IP, dst=REMOTE_IP, proto=17) / b"1234"), "udp_truncated"),
    "udp_limited_broadcast": (udp_frame("255.255.255.255", 9, dst=BROADCAST), "udp_broadcast"),
    "udp_subnet_broadcast": (udp_frame("10.0.2.255", 9, dst=BROADCAST), "udp_broadcast"),
    "udp_multicast": (udp_frame("224.0.0.251", 5353), "udp_multicast"),
    "spoofed_gateway_udp": (udp_frame(REMOTE_IP, 9, src_ip=GATEWAY_IP), "ipv4_bad_source"),
    "spoofed_dns_udp": (udp_frame(REMOTE_IP, 9, src_ip=DNS_IP), "ipv4_bad_source"),
    "spoofed_network_address": (udp_frame(REMOTE_IP, 9, src_ip="10.0.2.0"), "ipv4_bad_source"),
    "foreign_source": (udp_frame(REMOTE_IP, 9, src_ip="192.0.2.77"), "ipv4_bad_source"),
    "spoofed_gateway_ping": (echo_frame(REMOTE_IP, src_ip=GATEWAY_IP), "ipv4_bad_source"),
    "gre": (
        framed(IP(src=GUEST_IP, dst=REMOTE_IP, proto=47) / (b"x" * 8)),
        "ipv4_unsupported_protocol",
    ),
    "icmp_timestamp": (
        framed(IP(src=GUEST_IP, dst=GATEWAY_IP) / ICMP(type=13)),
        "icmp_unsupported_type",
    ),
    "icmp_bad_checksum": (_bad_icmp_checksum(), "icmp_bad_checksum"),
    "icmp_truncated": (
        framed(IP(src=GUEST_IP, dst=GATEWAY_IP, proto=1) / b"\x08\x00\xf7"),
        "icmp_truncated",
    ),
    "udp_to_other_guest_via_gateway": (udp_frame(OTHER_IP, 9), "no_route"),
    "udp_to_loopback": (udp_frame("127.0.0.1", 9), "no_route"),
    "udp_to_link_local": (udp_frame("169.254.1.1", 9), "no_route"),
    "udp_to_reserved": (udp_frame("240.0.0.1", 9), "no_route"),
    "udp_to_unspecified": (udp_frame("0.0.0.0", 9), "no_route"),
    "ping_loopback": (echo_frame("127.0.0.1"), "no_route"),
}


@pytest.mark.parametrize(("frame", "reason"), DROPS.values(), ids=DROPS.keys())
def test_drop_reasons(segment: Segment, vm: Vm, frame: bytes, reason: str) -> None:
    segment.receive(vm, frame, 0.0)
    assert vm.stats.drops == Counter({reason: 1})
    assert (vm.stats.frames_in, vm.stats.bytes_in) == (1, len(frame))
    assert vm.take_frames() == []
    assert segment.take_actions() == []
    assert segment.get_timer() is None


def test_udp_to_dns_address_other_port_is_port_unreachable(segment: Segment, vm: Vm) -> None:
    frame = udp_frame(DNS_IP, 1234, b"not dns")
    segment.receive(vm, frame, 0.0)
    assert vm.stats.drops == Counter({"no_service": 1})
    assert segment.take_actions() == []
    from_gateway(
        vm.take_frames()[0],
        IP(src=GATEWAY_IP, dst=GUEST_IP) / ICMP(type=3, code=3) / frame[14 : 14 + 28],
    )


# -- ICMP echo ---------------------------------------------------------------------


@pytest.mark.parametrize("address", [GATEWAY_IP, DNS_IP])
def test_ping_gateway_answered_at_once(segment: Segment, vm: Vm, address: str) -> None:
    data = bytes(range(56))
    segment.receive(vm, echo_frame(address, 0xBEEF, 42, data), 0.0)
    from_gateway(
        vm.take_frames()[0], IP(src=address, dst=GUEST_IP) / ICMP(type=0, id=0xBEEF, seq=42) / data
    )
    assert segment.take_actions() == []
    assert segment.get_timer() is None
    assert vm.stats.drops == Counter()


def test_ping_gateway_allowed_when_restricted() -> None:
    segment = new_segment(restrict=True, host_loopback=False)
    vm = segment.attach("guest")
    segment.receive(vm, echo_frame(GATEWAY_IP, 1, 2, b"x"), 0.0)
    assert one_frame(vm)[ICMP].type == 0
    assert vm.stats.drops == Counter()


def test_ping_elsewhere_opens_echo_flow(segment: Segment, vm: Vm, shell: Shell) -> None:
    frame = echo_frame(REMOTE_IP, 0x1234, 1, b"abc")
    segment.receive(vm, frame, 0.0)
    flow, payload = shell.opened_one(EchoFlow)
    assert isinstance(flow, EchoFlow)
    assert payload == frame[34:]  # the ICMP message as the guest sent it
    assert flow.host_address == flow.dst_address == IPv4Address(REMOTE_IP)
    assert (flow.guest.mac, flow.guest.address, flow.guest.port) == (
        bytes.fromhex("525400123456"),
        IPv4Address(GUEST_IP),
        0x1234,
    )
    assert vm.take_frames() == []  # nothing answers until the host socket does
    assert segment.get_timer() == ECHO_FLOW_IDLE
    # The same identifier reuses the flow; another identifier gets its own.
    segment.receive(vm, echo_frame(REMOTE_IP, 0x1234, 2, b"abc"), 1.0)
    assert [type(a) for a in shell.actions()] == [SendFlow]
    segment.receive(vm, echo_frame(REMOTE_IP, 0x4321, 1, b"abc"), 1.0)
    assert shell.opened_one(EchoFlow)[0] is not flow
    assert vm.stats.drops == Counter()


def test_echo_reply_restores_guest_identifier(segment: Segment, vm: Vm, shell: Shell) -> None:
    segment.receive(vm, echo_frame(REMOTE_IP, 0x1234, 7, b"abc"), 0.0)
    flow, _ = shell.opened_one(EchoFlow)
    # A Linux ping socket rewrote the identifier to its own, 0x9999.
    segment.flow_received(flow, bytes(ICMP(type=0, id=0x9999, seq=7) / b"abc"), 0.5)
    from_gateway(
        vm.take_frames()[0],
        IP(src=REMOTE_IP, dst=GUEST_IP) / ICMP(type=0, id=0x1234, seq=7) / b"abc",
    )
    assert vm.stats.drops == Counter()


def test_echo_reply_checksum_is_not_trusted_but_recomputed(
    segment: Segment, vm: Vm, shell: Shell
) -> None:
    segment.receive(vm, echo_frame(REMOTE_IP, 5, 6), 0.0)
    flow, _ = shell.opened_one(EchoFlow)
    segment.flow_received(flow, bytes(ICMP(type=0, id=5, seq=6, chksum=0) / b"ping!"), 0.5)
    assert one_frame(vm)[ICMP].seq == 6  # checked() verified the new checksum


def test_echo_flow_ignores_non_replies(segment: Segment, vm: Vm, shell: Shell) -> None:
    segment.receive(vm, echo_frame(REMOTE_IP), 0.0)
    flow, _ = shell.opened_one(EchoFlow)
    segment.flow_received(flow, bytes(ICMP(type=8, id=0x1234, seq=1) / b"ping!"), 0.5)
    segment.flow_received(flow, bytes(ICMP(type=3, code=1) / b"x"), 0.5)
    assert vm.take_frames() == []
    assert vm.stats.drops == Counter()
    segment.flow_received(flow, b"\x00\x00\x00", 0.5)
    assert vm.take_frames() == []
    assert vm.stats.drops == Counter({"icmp_truncated": 1})


def test_echo_flow_idle_close(segment: Segment, vm: Vm, shell: Shell) -> None:
    segment.receive(vm, echo_frame(REMOTE_IP), 0.0)
    flow, _ = shell.opened_one(EchoFlow)
    segment.handle_timer(ECHO_FLOW_IDLE - 0.001)
    assert shell.actions() == []
    segment.handle_timer(ECHO_FLOW_IDLE)
    assert closes(shell.actions()) == [flow]
    assert vm.flows == {}
    segment.flow_received(flow, bytes(ICMP(type=0, id=0x1234, seq=1)), 11.0)
    assert vm.take_frames() == []  # a late reply on a closed flow goes nowhere
    segment.receive(vm, echo_frame(REMOTE_IP), 12.0)
    assert shell.opened_one(EchoFlow)[0] is not flow


def test_echo_flow_kept_alive_by_replies(segment: Segment, vm: Vm, shell: Shell) -> None:
    segment.receive(vm, echo_frame(REMOTE_IP), 0.0)
    flow, _ = shell.opened_one(EchoFlow)
    segment.flow_received(flow, bytes(ICMP(type=0, id=1, seq=1)), 5.0)
    segment.handle_timer(ECHO_FLOW_IDLE)
    assert shell.actions() == []
    assert segment.get_timer() == 5.0 + ECHO_FLOW_IDLE
    segment.handle_timer(5.0 + ECHO_FLOW_IDLE)
    assert closes(shell.actions()) == [flow]


@pytest.mark.parametrize("kind", [FLOW_REFUSED, FLOW_UNREACHABLE])
def test_echo_flow_errors_are_quiet(segment: Segment, vm: Vm, shell: Shell, kind: str) -> None:
    segment.receive(vm, echo_frame(REMOTE_IP), 0.0)
    flow, _ = shell.opened_one(EchoFlow)
    segment.flow_error(flow, kind, 0.1)
    assert vm.take_frames() == []
    assert shell.actions() == []
    assert vm.stats.drops == Counter()


def test_echo_flow_failure_closes_it(segment: Segment, vm: Vm, shell: Shell) -> None:
    segment.receive(vm, echo_frame(REMOTE_IP), 0.0)
    flow, _ = shell.opened_one(EchoFlow)
    segment.flow_error(flow, FLOW_FAILED, 0.1)
    assert closes(shell.actions()) == [flow]
    assert vm.stats.drops == Counter({"host_socket_failed": 1})


def test_ping_elsewhere_restricted_is_admin_prohibited() -> None:
    segment = new_segment(restrict=True)
    vm = segment.attach("guest")
    frame = echo_frame(REMOTE_IP)
    segment.receive(vm, frame, 0.0)
    assert segment.take_actions() == []
    assert vm.stats.drops == Counter({"restricted": 1})
    from_gateway(
        vm.take_frames()[0], IP(src=GATEWAY_IP, dst=GUEST_IP) / ICMP(type=3, code=13) / frame[14:42]
    )


# -- nothing raises, whatever the bytes --------------------------------------------


def _dhcp_discover() -> bytes:
    return udp_frame(
        "255.255.255.255",
        67,
        BOOTP(chaddr=bytes.fromhex("525400123456"), xid=1)
        / DHCP(options=[("message-type", "discover"), "end"]),
        sport=68,
        src_ip="0.0.0.0",
        dst=BROADCAST,
    )


SEEDS = [
    arp_request(GATEWAY_IP),
    arp_request(GATEWAY_IP, sender_ip="0.0.0.0"),
    echo_frame(GATEWAY_IP),
    echo_frame(REMOTE_IP),
    udp_frame(REMOTE_IP, 9, b"hello"),
    udp_frame(GATEWAY_IP, 8080, b"hello"),
    udp_frame(DNS_IP, 53, DNS(id=1, rd=1, qd=DNSQR(qname="host.slirpnet.internal"))),
    udp_frame(DNS_IP, 53, DNS(id=2, rd=1, qd=DNSQR(qname="example.com", qtype="AAAA"))),
    udp_frame(DNS_IP, 99, b"x"),
    framed(IP(src=GUEST_IP, dst=REMOTE_IP) / TCP(flags="S")),
    framed(IP(src=GUEST_IP, dst=REMOTE_IP) / UDP(sport=5, dport=53, chksum=0) / b"\x00\x01"),
    _dhcp_discover(),
]


def _fix_checksums(frame: bytearray) -> None:
    """Make a mutated IPv4 frame's checksums right again, so that it gets further in."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return
    ihl = (frame[14] & 0x0F) * 4
    if ihl < 20 or len(frame) < 14 + ihl:
        return
    frame[24:26] = b"\x00\x00"
    frame[24:26] = struct.pack("!H", checksum(bytes(frame[14 : 14 + ihl])))
    body = 14 + ihl
    if frame[23] == 17 and len(frame) >= body + 8:
        frame[body + 6 : body + 8] = b"\x00\x00"  # zero: no UDP checksum
    elif frame[23] == 1 and len(frame) >= body + 4:
        frame[body + 2 : body + 4] = b"\x00\x00"
        frame[body + 2 : body + 4] = struct.pack("!H", checksum(bytes(frame[body:])))


def _fuzz_segment() -> tuple[Segment, Vm, Vm]:
    segment = new_segment(dns_upstreams=(UPSTREAM_1, UPSTREAM_2), mtu=1500)
    return segment, segment.attach("a"), segment.attach("b")


def _drive_shell(shell: Shell, vm: Vm, now: float, junk: bytes) -> None:
    """Answer every new flow with ``junk``, then fail it, then let time pass."""
    for action in shell.actions():
        if isinstance(action, OpenFlow):
            shell.segment.flow_received(action.flow, junk, now)
            shell.segment.flow_error(action.flow, FLOW_REFUSED, now)
    for frame in vm.take_frames():
        checked(frame)
    shell.segment.handle_timer(now + 100.0)
    shell.actions()


@hsettings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=8))
def test_random_bytes_never_raise(frames: list[bytes]) -> None:
    segment, a, _ = _fuzz_segment()
    for i, frame in enumerate(frames):
        segment.receive(a, frame, float(i))
    assert a.stats.frames_in == len(frames)
    assert a.stats.bytes_in == sum(map(len, frames))
    assert sum(a.stats.drops.values()) <= len(frames)


@hsettings(max_examples=500, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=6),
    st.integers(0, 400),
    st.booleans(),
    st.binary(max_size=80),
)
def test_mutated_frames_never_raise(
    seed: bytes, edits: list[tuple[int, int]], cut: int, fix: bool, junk: bytes
) -> None:
    segment, a, b = _fuzz_segment()
    shell = Shell(segment)
    frame = bytearray(seed)
    for index, value in edits:
        if index < len(frame):
            frame[index] = value
    del frame[max(cut, 14) :]
    if fix:
        _fix_checksums(frame)
    segment.receive(a, bytes(frame), 0.0)
    segment.receive(a, seed, 1.0)  # and the pristine frame after it
    assert a.stats.frames_in == 2
    _drive_shell(shell, a, 2.0, junk)
    segment.detach(a)
    shell.actions()
    assert shell.open == set()  # every flow opened was closed
    assert b.stats.drops == Counter()


@hsettings(max_examples=200, deadline=None)
@given(st.binary(max_size=1600), st.sampled_from([FLOW_REFUSED, FLOW_UNREACHABLE, FLOW_FAILED]))
def test_shell_events_with_junk_never_raise(junk: bytes, kind: str) -> None:
    segment, a, _ = _fuzz_segment()
    shell = Shell(segment)
    for seed in SEEDS:
        segment.receive(a, seed, 0.0)
    a.take_frames()
    flows = [x.flow for x in shell.actions() if isinstance(x, OpenFlow)]
    assert len(flows) >= 4  # echo, UDP, DNS
    for flow in flows:
        segment.flow_received(flow, junk, 1.0)
    for flow in flows:
        segment.flow_error(flow, kind, 2.0)
    for now in (3.0, 20.0, 100.0):
        segment.handle_timer(now)
    for frame in a.take_frames():
        checked(frame)
    shell.actions()
    segment.detach(a)
    shell.actions()
    assert shell.open == set()
    assert not a.flows and not a.dns_flows


def test_module_constants_are_what_the_tests_assume() -> None:
    assert MAX_MACS_PER_VM == 16
    assert ECHO_FLOW_IDLE == 10.0
