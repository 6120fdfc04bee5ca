"""Each malformed or refused frame of the fuzz corpus is dropped under its own reason.

The corpus (``tests/fuzz/corpus.py``, built with scapy) has a sample of every
malformation: truncated headers, lying length fields, bad IHL and data offsets,
TCP option loops, fragments, DHCP option overload gone wrong, VLAN tags, IPv6.
Here each goes to a fresh segment of each fuzzed network and must be counted
under exactly its reason, open no socket, and draw no answer but the ICMP error
or RST the reason calls for.  The state machine checks the same in every state
it reaches.
"""

from __future__ import annotations

from collections import Counter

import pytest

from slirpnet.core.segment import Segment
from slirpnet.wire import dns, ethernet, icmp, ipv4, tcp
from tests.fuzz import corpus, emitted
from tests.fuzz.namespaces import NETWORKS, guests

# Reasons that tell the guest (RFC 1812 §5.2.7.1, RFC 9293 §3.10.7.1), and DNS queries
# we cannot read, which get FORMERR when there is no upstream to read them.
ANSWERED = {"no_service", "restricted", "host_loopback_disabled", "tcp_no_flow"}
CASES = [
    pytest.param(net, sample, id=f"net{net}-{sample.name}")
    for net in range(len(NETWORKS))
    for sample in corpus.with_reason(NETWORKS[net], *guests(net)[:1], guests(net)[-1])
]


@pytest.mark.parametrize(("net", "sample"), CASES)
def test_dropped_under_its_reason(net: int, sample: corpus.Sample) -> None:
    settings = NETWORKS[net]
    segment = Segment(settings)
    vm = segment.attach("guest")
    segment.receive(vm, sample.frame, 0.0)
    assert vm.stats.drops == Counter({sample.reason: 1})
    assert segment.take_actions() == []
    for frame in vm.take_frames():
        answer = emitted.check(frame, settings, segment.gateway_mac)
        assert answer.ip is not None
        if answer.ip.protocol == ipv4.PROTO_UDP:
            assert sample.reason.startswith("dns_") and answer.ip.src == settings.dns
            flags = int.from_bytes(answer.ip.payload[10:12], "big")  # the DNS header's
            assert flags & 0x800F == 0x8000 | dns.RCODE_FORMERR
            continue
        assert sample.reason in ANSWERED
        if answer.tcp is not None:
            assert answer.tcp.flags & tcp.RST
        else:
            message = icmp.IcmpMessage.parse(answer.ip.payload)
            assert message.type == icmp.TYPE_DEST_UNREACHABLE


def test_every_category_is_in_the_corpus() -> None:
    reasons = {sample.reason for _, sample in (case.values for case in CASES)}
    assert reasons >= {
        "eth_truncated",
        "eth_vlan_tagged",
        "ipv6_truncated",
        "ipv6_fragment",
        "ipv6_repeated_header",
        "ra_guard",
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
