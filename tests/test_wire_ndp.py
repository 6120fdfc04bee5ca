"""Neighbor Discovery: messages and options against scapy, RFC 4861 validity checks, fuzzing."""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet6 import (
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6ND_RS,
    ICMPv6NDOptDNSSL,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptMTU,
    ICMPv6NDOptPrefixInfo,
    ICMPv6NDOptRDNSS,
    ICMPv6NDOptSrcLLAddr,
    ICMPv6NDOptUnknown,
    IPv6,
)
from scapy.packet import Packet

from slirpnet.wire import icmpv6, ipv6, ndp
from slirpnet.wire.errors import IntegrityError, SanityError, WireError
from slirpnet.wire.icmpv6 import Icmpv6Message
from slirpnet.wire.ipv6 import IPv6Packet
from slirpnet.wire.ndp import (
    DnsSearchList,
    Mtu,
    NeighborAdvertisement,
    NeighborSolicitation,
    PrefixInformation,
    RecursiveDnsServers,
    RouterAdvertisement,
    RouterSolicitation,
    SourceLinkLayerAddress,
    TargetLinkLayerAddress,
)

GUEST_MAC = bytes.fromhex("525400123456")
GATEWAY_MAC = bytes.fromhex("525400000002")
GUEST = IPv6Address("fec0::5054:ff:fe12:3456")
GUEST_LL = ipv6.link_local(GUEST_MAC)
GATEWAY = IPv6Address("fec0::2")
GATEWAY_LL = ipv6.link_local(GATEWAY_MAC)
DNS = IPv6Address("fec0::3")
PREFIX = IPv6Network("fec0::/64")


def received(layer: Packet, src: IPv6Address = GUEST_LL, dst: IPv6Address = GATEWAY_LL) -> object:
    """What scapy sends from ``src`` to ``dst``, read as IPv6, ICMPv6 and then NDP."""
    packet = IPv6Packet.parse(bytes(IPv6(src=str(src), dst=str(dst), hlim=255) / layer))
    return ndp.parse(Icmpv6Message.parse(packet.payload, packet.src, packet.dst))


def sent(message: ndp.NdpMessage, src: IPv6Address, dst: IPv6Address) -> Packet:
    """``message`` in the IPv6 packet the core would send, as scapy dissects it."""
    body = message.to_icmpv6().encode(src, dst)
    packet = IPv6(IPv6Packet(src, dst, ipv6.PROTO_ICMPV6, body, ndp.HOP_LIMIT).encode())
    checksum = packet.payload.cksum
    del packet.payload.cksum
    assert IPv6(bytes(packet)).payload.cksum == checksum  # scapy's checksum is ours
    return IPv6(bytes(packet))


def reason_for(message: Icmpv6Message) -> str:
    with pytest.raises((IntegrityError, SanityError)) as info:
        ndp.parse(message)
    return info.value.reason


# --- scapy's messages, read --------------------------------------------------------------


def test_router_solicitation() -> None:
    message = received(ICMPv6ND_RS() / ICMPv6NDOptSrcLLAddr(lladdr=GUEST_MAC.hex(":")))
    assert message == RouterSolicitation((SourceLinkLayerAddress(GUEST_MAC),))
    assert isinstance(message, RouterSolicitation)
    assert message.source_mac == GUEST_MAC


def test_router_advertisement_with_every_option() -> None:
    layer = (
        ICMPv6ND_RA(M=1, O=0, chlim=64, routerlifetime=1800, reachabletime=30000, retranstimer=7)
        / ICMPv6NDOptSrcLLAddr(lladdr=GATEWAY_MAC.hex(":"))
        / ICMPv6NDOptMTU(mtu=65520)
        / ICMPv6NDOptPrefixInfo(prefix="fec0::", prefixlen=64, L=1, A=0, validlifetime=86400)
        / ICMPv6NDOptRDNSS(dns=[str(DNS), str(GATEWAY)], lifetime=600)
        / ICMPv6NDOptDNSSL(searchlist=["example.test", "lab.example.test"], lifetime=300)
    )
    message = received(layer, GATEWAY_LL, ipv6.ALL_NODES)
    assert isinstance(message, RouterAdvertisement)
    assert (message.cur_hop_limit, message.managed, message.other) == (64, True, False)
    assert (message.router_lifetime, message.reachable_time, message.retrans_timer) == (
        1800,
        30000,
        7,
    )
    assert message.source_mac == GATEWAY_MAC
    assert message.mtu == 65520
    assert message.prefixes == (
        PrefixInformation(PREFIX, True, False, 86400, ndp.INFINITE_LIFETIME),
    )
    assert message.dns_servers == (RecursiveDnsServers((DNS, GATEWAY), 600),)
    assert message.search_lists == (DnsSearchList(("example.test.", "lab.example.test."), 300),)


def test_neighbor_solicitation_and_advertisement() -> None:
    solicitation = received(
        ICMPv6ND_NS(tgt=str(GATEWAY)) / ICMPv6NDOptSrcLLAddr(lladdr=GUEST_MAC.hex(":")),
        GUEST,
        ipv6.solicited_node(GATEWAY),
    )
    assert solicitation == NeighborSolicitation(GATEWAY, (SourceLinkLayerAddress(GUEST_MAC),))
    advertisement = received(
        ICMPv6ND_NA(tgt=str(GUEST), R=0, S=1, O=1)
        / ICMPv6NDOptDstLLAddr(lladdr=GUEST_MAC.hex(":")),
        GUEST,
        GATEWAY,
    )
    assert advertisement == NeighborAdvertisement(
        GUEST, False, True, True, (TargetLinkLayerAddress(GUEST_MAC),)
    )
    assert isinstance(advertisement, NeighborAdvertisement)
    assert advertisement.target_mac == GUEST_MAC


def test_unknown_options_are_skipped() -> None:
    unknown = ICMPv6NDOptUnknown(type=200, len=2, data=b"\xaa" * 14)
    message = received(
        ICMPv6ND_RS() / unknown / ICMPv6NDOptSrcLLAddr(lladdr=GUEST_MAC.hex(":")) / unknown
    )
    assert message == RouterSolicitation((SourceLinkLayerAddress(GUEST_MAC),))


def test_prefix_bits_past_the_length_are_ignored() -> None:
    layer = ICMPv6ND_RA() / ICMPv6NDOptPrefixInfo(prefix="fec0::1:2:3:4", prefixlen=64)
    message = received(layer, GATEWAY_LL, ipv6.ALL_NODES)
    assert isinstance(message, RouterAdvertisement)
    assert message.prefixes[0].prefix == PREFIX


# --- ours, dissected by scapy ------------------------------------------------------------


def test_router_advertisement_is_dissected_by_scapy() -> None:
    advertisement = RouterAdvertisement(
        cur_hop_limit=64,
        managed=False,
        other=True,
        router_lifetime=1800,
        reachable_time=0,
        retrans_timer=0,
        options=(
            SourceLinkLayerAddress(GATEWAY_MAC),
            Mtu(1500),
            PrefixInformation(PREFIX, valid_lifetime=86400, preferred_lifetime=14400),
            RecursiveDnsServers((DNS,), 3600),
            DnsSearchList(("example.test", "a.b.c.lab."), 3600),
        ),
    )
    packet = sent(advertisement, GATEWAY_LL, ipv6.ALL_NODES)
    assert packet.hlim == 255
    ra = packet[ICMPv6ND_RA]
    assert (ra.chlim, ra.M, ra.O, ra.routerlifetime) == (64, 0, 1, 1800)
    assert packet[ICMPv6NDOptSrcLLAddr].lladdr == GATEWAY_MAC.hex(":")
    assert packet[ICMPv6NDOptMTU].mtu == 1500
    info = packet[ICMPv6NDOptPrefixInfo]
    assert (info.prefix, info.prefixlen, info.L, info.A) == ("fec0::", 64, 1, 1)
    assert (info.validlifetime, info.preferredlifetime) == (86400, 14400)
    rdnss = packet[ICMPv6NDOptRDNSS]
    assert (rdnss.dns, rdnss.lifetime, rdnss.len) == ([str(DNS)], 3600, 3)
    dnssl = packet[ICMPv6NDOptDNSSL]
    assert dnssl.searchlist == ["example.test.", "a.b.c.lab."]
    assert dnssl.len * 8 == len(bytes(dnssl))
    assert len(bytes(packet[ICMPv6ND_RA])) % 8 == 0


def test_answer_to_a_neighbor_solicitation() -> None:
    solicitation = received(
        ICMPv6ND_NS(tgt=str(GATEWAY)) / ICMPv6NDOptSrcLLAddr(lladdr=GUEST_MAC.hex(":")),
        GUEST,
        ipv6.solicited_node(GATEWAY),
    )
    assert isinstance(solicitation, NeighborSolicitation)
    answer = solicitation.advertise(GATEWAY_MAC, router=True)
    packet = sent(answer, GATEWAY, GUEST)
    na = packet[ICMPv6ND_NA]
    assert (na.tgt, na.R, na.S, na.O) == (str(GATEWAY), 1, 1, 1)
    assert packet[ICMPv6NDOptDstLLAddr].lladdr == GATEWAY_MAC.hex(":")
    dad = solicitation.advertise(GATEWAY_MAC, router=False, solicited=False, override=False)
    na = sent(dad, GATEWAY, ipv6.ALL_NODES)[ICMPv6ND_NA]
    assert (na.R, na.S, na.O) == (0, 0, 0)


def test_solicitations_are_dissected_by_scapy() -> None:
    rs = sent(RouterSolicitation((SourceLinkLayerAddress(GUEST_MAC),)), GUEST_LL, ipv6.ALL_ROUTERS)
    assert rs[ICMPv6NDOptSrcLLAddr].lladdr == GUEST_MAC.hex(":")
    ns = sent(
        NeighborSolicitation(GUEST, (SourceLinkLayerAddress(GATEWAY_MAC),)),
        GATEWAY,
        ipv6.solicited_node(GUEST),
    )
    assert ns[ICMPv6ND_NS].tgt == str(GUEST)


# --- round trips -------------------------------------------------------------------------

macs = st.binary(min_size=6, max_size=6)
addresses = st.integers(0, 2**128 - 1).map(IPv6Address)
unicast = addresses.filter(lambda address: not address.is_multicast)
lifetimes = st.integers(0, 0xFFFFFFFF)
labels = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)
domains = st.lists(labels, min_size=1, max_size=4).map(lambda parts: ".".join(parts) + ".")
options = st.lists(
    st.one_of(
        st.builds(SourceLinkLayerAddress, macs),
        st.builds(TargetLinkLayerAddress, macs),
        st.builds(Mtu, st.integers(0, 0xFFFFFFFF)),
        st.builds(
            PrefixInformation,
            st.builds(
                lambda address, length: IPv6Network((address, length), strict=False),
                addresses,
                st.integers(0, 128),
            ),
            st.booleans(),
            st.booleans(),
            lifetimes,
            lifetimes,
        ),
        st.builds(
            RecursiveDnsServers, st.lists(addresses, min_size=1, max_size=4).map(tuple), lifetimes
        ),
        st.builds(DnsSearchList, st.lists(domains, min_size=1, max_size=4).map(tuple), lifetimes),
    ),
    max_size=6,
)
messages = st.one_of(
    st.builds(RouterSolicitation, options),
    st.builds(
        RouterAdvertisement,
        st.integers(0, 255),
        st.booleans(),
        st.booleans(),
        st.integers(0, 0xFFFF),
        lifetimes,
        lifetimes,
        options,
    ),
    st.builds(NeighborSolicitation, unicast, options),
    st.builds(NeighborAdvertisement, unicast, st.booleans(), st.booleans(), st.booleans(), options),
)


@given(messages)
def test_hypothesis_round_trip(message: ndp.NdpMessage) -> None:
    raw = message.to_icmpv6().encode(GATEWAY_LL, GUEST_LL)
    assert ndp.parse(Icmpv6Message.parse(raw, GATEWAY_LL, GUEST_LL)) == message


@given(messages)
def test_hypothesis_every_truncation(message: ndp.NdpMessage) -> None:
    whole = message.to_icmpv6()
    body = bytes(whole.payload)
    for cut in range(len(body)):
        truncated = Icmpv6Message(whole.type, 0, whole.rest, body[:cut])
        try:
            shorter = ndp.parse(truncated)
        except WireError as error:
            assert error.reason in ("ndp_truncated", "ndp_option_overrun")
        else:
            # Cut between two options: a well-formed message with the first ones.
            assert len(shorter.options) < len(message.options)
            assert shorter.options == message.options[: len(shorter.options)]


# --- refusals ----------------------------------------------------------------------------


def icmp(type_: int, body: bytes, *, code: int = 0, rest: int = 0) -> Icmpv6Message:
    return Icmpv6Message(type_, code, rest, body)


def test_zero_option_length_drops_the_message() -> None:
    zero = bytes((200, 0)) + bytes(6)
    lladdr = SourceLinkLayerAddress(GUEST_MAC).encode()
    assert reason_for(icmp(133, lladdr + zero)) == "ndp_zero_option_length"
    assert reason_for(icmp(135, GATEWAY.packed + zero)) == "ndp_zero_option_length"
    assert reason_for(icmp(134, bytes(8) + zero + lladdr)) == "ndp_zero_option_length"


def test_options_overrunning_the_message() -> None:
    lladdr = SourceLinkLayerAddress(GUEST_MAC).encode()
    assert reason_for(icmp(133, lladdr[:7])) == "ndp_option_overrun"
    assert reason_for(icmp(133, lladdr + b"\x01")) == "ndp_option_overrun"
    assert reason_for(icmp(133, bytes((1, 2)) + GUEST_MAC)) == "ndp_option_overrun"


@pytest.mark.parametrize(("type_", "fixed"), [(134, 8), (135, 16), (136, 16)])
def test_fixed_part_truncated(type_: int, fixed: int) -> None:
    for length in range(fixed):
        assert reason_for(icmp(type_, bytes(length))) == "ndp_truncated"


def test_code_must_be_zero() -> None:
    for type_ in (133, 134, 135, 136):
        assert reason_for(icmp(type_, bytes(16), code=1)) == "ndp_bad_code"


def test_multicast_target_is_refused() -> None:
    for type_ in (135, 136):
        assert reason_for(icmp(type_, ipv6.ALL_NODES.packed)) == "ndp_multicast_target"


def test_known_options_of_the_wrong_size() -> None:
    def option(kind: int, units: int) -> bytes:
        return bytes((kind, units)) + bytes(units * 8 - 2)

    for kind, units in [(1, 2), (2, 2), (3, 3), (3, 5), (5, 2), (25, 1), (25, 2), (25, 4), (31, 1)]:
        assert reason_for(icmp(133, option(kind, units))) == "ndp_bad_option_length", (kind, units)


def test_prefix_length_over_128() -> None:
    option = bytearray(PrefixInformation(PREFIX).encode())
    option[2] = 129
    assert reason_for(icmp(134, bytes(8) + option)) == "ndp_bad_prefix_length"


def test_dnssl_names() -> None:
    head = bytes((31, 2, 0, 0, 0, 0, 0, 60))
    assert reason_for(icmp(134, bytes(8) + head + b"\x01a\x00\x00\x00\x00\x00\x01")) == (
        "ndp_bad_padding"
    )
    assert reason_for(icmp(134, bytes(8) + head + b"\x07example")) == "ndp_name_truncated"
    assert reason_for(icmp(134, bytes(8) + head + b"\xc0\x00" + bytes(6))) == "ndp_bad_label"
    assert reason_for(icmp(134, bytes(8) + head + b"\x01.\x00" + bytes(5))) == "ndp_bad_label"
    long = (b"\x3f" + b"a" * 63) * 4 + b"\x00"  # 257 bytes on the wire
    padded = long.ljust(-(-len(long) // 8) * 8, b"\0")
    head = bytes((31, 1 + len(padded) // 8)) + bytes(6)
    assert reason_for(icmp(134, bytes(8) + head + padded)) == "ndp_name_too_long"


def test_other_types_are_not_ndp() -> None:
    assert reason_for(icmp(icmpv6.TYPE_REDIRECT, bytes(32))) == "ndp_unsupported_type"
    with pytest.raises(SanityError) as info:
        RouterSolicitation.parse(icmp(134, bytes(8)))
    assert info.value.reason == "ndp_unexpected_type"


def test_encode_refuses_empty_dns_options() -> None:
    with pytest.raises(ValueError):
        RecursiveDnsServers((), 60).encode()
    with pytest.raises(ValueError):
        DnsSearchList((), 60).encode()
    with pytest.raises(ValueError):
        DnsSearchList(("bad..name",), 60).encode()


# --- checks on the IPv6 header (RFC 4861 §6.1, §7.1) --------------------------------------


def check_reason(
    message: ndp.NdpMessage, src: IPv6Address, dst: IPv6Address, hops: int = 255
) -> str | None:
    packet = IPv6Packet(src, dst, ipv6.PROTO_ICMPV6, b"", hops)
    try:
        ndp.check_ip(packet, message)
    except SanityError as error:
        return error.reason
    return None


def test_check_ip() -> None:
    lladdr = (SourceLinkLayerAddress(GUEST_MAC),)
    rs = RouterSolicitation(lladdr)
    assert check_reason(rs, GUEST_LL, ipv6.ALL_ROUTERS) is None
    assert check_reason(rs, GUEST_LL, ipv6.ALL_ROUTERS, 254) == "ndp_bad_hop_limit"
    assert check_reason(rs, ipv6.UNSPECIFIED, ipv6.ALL_ROUTERS) == "ndp_unspecified_source_lladdr"
    assert check_reason(RouterSolicitation(), ipv6.UNSPECIFIED, ipv6.ALL_ROUTERS) is None

    ns = NeighborSolicitation(GATEWAY, lladdr)
    group = ipv6.solicited_node(GATEWAY)
    assert check_reason(ns, GUEST, group) is None
    assert check_reason(ns, ipv6.UNSPECIFIED, group) == "ndp_unspecified_source_lladdr"
    dad = NeighborSolicitation(GUEST)
    assert check_reason(dad, ipv6.UNSPECIFIED, ipv6.solicited_node(GUEST)) is None
    assert check_reason(dad, ipv6.UNSPECIFIED, GATEWAY) == "ndp_dad_not_solicited_node"

    ra = RouterAdvertisement()
    assert check_reason(ra, GATEWAY_LL, ipv6.ALL_NODES) is None
    assert check_reason(ra, GATEWAY, ipv6.ALL_NODES) == "ndp_ra_not_link_local"

    na = NeighborAdvertisement(GUEST, solicited=True)
    assert check_reason(na, GUEST, GATEWAY) is None
    assert check_reason(na, GUEST, ipv6.ALL_NODES) == "ndp_solicited_to_multicast"
    assert check_reason(NeighborAdvertisement(GUEST), GUEST, ipv6.ALL_NODES) is None
