"""Each malformed or refused frame of the fuzz corpus is dropped under its own reason.

The corpus (``tests/fuzz/corpus.py``, built with scapy) has a sample of every
malformation: truncated headers, lying length fields, bad IHL and data offsets,
TCP option loops, fragments, DHCP option overload gone wrong, VLAN tags; for IPv6
lying payload lengths, header chains that repeat or overrun, jumbograms, routing
headers, NDP and DHCPv6 options of the wrong length, router advertisements from
guests (``tests/fuzz/corpus6.py``).  Here each goes to a fresh segment of each
fuzzed network and must be counted under exactly its reason, open no socket, and
draw no answer but the ICMP error or RST the reason calls for.  The state machine
checks the same in every state it reaches.
"""

from __future__ import annotations

from collections import Counter

import pytest

from slirpnet.core.segment import Segment
from slirpnet.wire import dns, ethernet, icmp, icmpv6, ipv4, ipv6, tcp, udp
from tests.fuzz import corpus, emitted
from tests.fuzz.namespaces import NETWORKS, guests
from tests.fuzz.sample import Sample

# Reasons that tell the guest (RFC 1812 §5.2.7.1, RFC 9293 §3.10.7.1), and DNS queries
# we cannot read, which get FORMERR when there is no upstream to read them.
ANSWERED = {"no_service", "restricted", "host_loopback_disabled", "tcp_no_flow", "denied"}
CASES = [
    pytest.param(net, sample, id=f"net{net}-{sample.name}")
    for net in range(len(NETWORKS))
    for sample in corpus.with_reason(NETWORKS[net], *guests(net)[:1], guests(net)[-1])
]


@pytest.mark.parametrize(("net", "sample"), CASES)
def test_dropped_under_its_reason(net: int, sample: Sample) -> None:
    settings = NETWORKS[net]
    segment = Segment(settings)
    vm = segment.attach("guest")
    segment.receive(vm, sample.frame, 0.0)
    assert vm.stats.drops == Counter({sample.reason: 1})
    assert segment.take_actions() == []
    for frame in vm.take_frames():
        answer = emitted.check(frame, settings, segment.gateway_mac)
        ip = answer.ip
        assert ip is not None
        if isinstance(ip, ipv6.IPv6Packet):
            assert sample.reason in ANSWERED
            if answer.tcp is not None:
                assert answer.tcp.flags & tcp.RST
            else:
                message6 = icmpv6.Icmpv6Message.parse(ip.payload, ip.src, ip.dst)
                assert message6.type == icmpv6.TYPE_DEST_UNREACHABLE
            continue
        if ip.protocol == ipv4.PROTO_UDP and sample.reason.startswith("tftp_"):
            # A refused TFTP request is told so with a TFTP ERROR (RFC 1350 §7), from 69.
            assert ip.src == settings.gateway
            assert ip.payload[:2] == b"\x00\x45" and ip.payload[8:10] == b"\x00\x05"
            continue
        if ip.protocol == ipv4.PROTO_UDP:
            assert sample.reason.startswith("dns_") and ip.src == settings.dns
            flags = int.from_bytes(ip.payload[10:12], "big")  # the DNS header's
            assert flags & 0x800F == 0x8000 | dns.RCODE_FORMERR
            continue
        assert sample.reason in ANSWERED
        if answer.tcp is not None:
            assert answer.tcp.flags & tcp.RST
        else:
            message = icmp.IcmpMessage.parse(ip.payload)
            assert message.type == icmp.TYPE_DEST_UNREACHABLE


def test_every_category_is_in_the_corpus() -> None:
    reasons = {sample.reason for _, sample in (case.values for case in CASES)}
    assert reasons >= {
        "eth_truncated",
        "eth_vlan_tagged",
        "ipv6_truncated",  # a lying payload length among them
        "ipv6_fragment",
        "ipv6_repeated_header",  # extension header loops
        "ipv6_misplaced_hop_by_hop",
        "ipv6_ext_overrun",
        "ipv6_option_overrun",
        "ipv6_unknown_option",
        "ipv6_jumbogram",
        "ipv6_routing_header",
        "ra_guard",
        "icmpv6_bad_checksum",
        "ndp_zero_option_length",
        "ndp_bad_hop_limit",
        "ndp_option_overrun",
        "dhcpv6_bad_option_length",
        "dhcpv6_option_overrun",
        "udp_zero_checksum",
        "arp_truncated",
        "ipv4_truncated",  # a lying total length among them
        "ipv4_bad_ihl",
        "ipv4_bad_length",
        "ipv4_frag_bad_length",
        "ipv4_frag_too_big",
        "udp_bad_length",
        "tcp_bad_data_offset",
        "tcp_option_loop",
        "tcp_option_overrun",
        "icmp_truncated",
        "dhcp_truncated",
        "dhcp_option_overrun",
        "dhcp_bad_overload",
        "dns_bad_pointer",
        "dns_truncated",
        "tftp_truncated",
        "tftp_bad_option",
        "tftp_path_refused",
        "tftp_write_refused",
    }


def test_a_frame_to_the_gateway_with_nothing_wrong_is_not_dropped() -> None:
    """The samples' reasons are the frames' doing: the same guest's ping is answered."""
    settings = NETWORKS[0]
    segment = Segment(settings)
    vm = segment.attach("guest")
    ping = next(s for s in corpus.samples(settings, *guests(0)[:2]) if s.name == "ping_gateway")
    segment.receive(vm, ping.frame, 0.0)
    assert vm.stats.drops == Counter()
    (reply,) = vm.take_frames()
    answer = emitted.check(reply, settings, segment.gateway_mac)
    assert answer.eth.ethertype == ethernet.ETHERTYPE_IPV4
    assert answer.ip is not None and answer.ip.protocol == ipv4.PROTO_ICMP


# IPv6 samples the gateway answers itself, and what it answers: an ICMPv6 type, or the
# port a UDP answer comes from (DHCPv6, DNS).
ANSWERED6: dict[str, int] = {
    "rs": icmpv6.TYPE_ROUTER_ADVERTISEMENT,
    "rs_unspecified": icmpv6.TYPE_ROUTER_ADVERTISEMENT,
    "ns_gateway": icmpv6.TYPE_NEIGHBOR_ADVERTISEMENT,
    "ns_dns": icmpv6.TYPE_NEIGHBOR_ADVERTISEMENT,
    "ns_gateway_link_local": icmpv6.TYPE_NEIGHBOR_ADVERTISEMENT,
    "ns_unicast": icmpv6.TYPE_NEIGHBOR_ADVERTISEMENT,
    "ns_dad_gateway": icmpv6.TYPE_NEIGHBOR_ADVERTISEMENT,
    "ns_unknown_option": icmpv6.TYPE_NEIGHBOR_ADVERTISEMENT,
    "ping6_gateway": icmpv6.TYPE_ECHO_REPLY,
    "ping6_dns": icmpv6.TYPE_ECHO_REPLY,
    "ping6_link_local": icmpv6.TYPE_ECHO_REPLY,
    "dhcp6_information_request": 547,
    "dhcp6_information_request_bare": 547,
    "dhcp6_information_request_unicast": 547,
    "dhcp6_solicit": 547,
    "dhcp6_solicit_rapid_commit": 547,
    "dhcp6_request": 547,
    "dns6_local": 53,
    "dns6_local_aaaa": 53,
}


@pytest.mark.parametrize("net", range(len(NETWORKS)))
def test_valid_ipv6_to_the_gateway_is_answered(net: int) -> None:
    """Each IPv6 sample for the gateway's own services, on a fresh segment: not dropped,
    one answer of its kind, which parses with every checksum (restricted or not)."""
    settings = NETWORKS[net]
    samples = {s.name: s for s in corpus.samples(settings, *guests(net)[:1], guests(net)[-1])}
    for name, expected in ANSWERED6.items():
        segment = Segment(settings)
        vm = segment.attach("guest")
        segment.receive(vm, samples[name].frame, 0.0)
        assert vm.stats.drops == Counter(), name
        (frame,) = vm.take_frames()
        answer = emitted.check(frame, settings, segment.gateway_mac)
        ip = answer.ip
        assert isinstance(ip, ipv6.IPv6Packet), name
        if ip.next_header == icmpv6.PROTOCOL:
            assert icmpv6.Icmpv6Message.parse(ip.payload, ip.src, ip.dst).type == expected, name
        else:
            assert udp.UdpDatagram.parse(ip.payload, ip.src, ip.dst).src_port == expected, name
