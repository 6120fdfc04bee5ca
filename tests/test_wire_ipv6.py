"""IPv6: payload length honoured, extension headers walked with bounds, scapy as oracle."""

from __future__ import annotations

import contextlib
from ipaddress import IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import UDP
from scapy.layers.inet6 import (
    HBHOptUnknown,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    Jumbo,
    PadN,
    RouterAlert,
)
from scapy.utils6 import in6_getnsma, in6_getnsmac, in6_mactoifaceid

from slirpnet.wire import ipv6
from slirpnet.wire.errors import IntegrityError, SanityError, WireError
from slirpnet.wire.ipv6 import PROTO_ICMPV6, PROTO_NONE, PROTO_UDP, IPv6Packet

GUEST = IPv6Address("fec0::5054:ff:fe12:3456")
GATEWAY = IPv6Address("fec0::2")
ADDRESSES = {"src": str(GUEST), "dst": str(GATEWAY)}


def reason_for(raw: bytes) -> str:
    with pytest.raises((IntegrityError, SanityError)) as info:
        IPv6Packet.parse(raw)
    return info.value.reason


def test_scapy_packet_parses_to_its_fields() -> None:
    raw = bytes(IPv6(**ADDRESSES, hlim=33, tc=0xB8, fl=0xABCDE) / UDP(sport=1, dport=2) / b"data")
    packet = IPv6Packet.parse(raw)
    assert (packet.src, packet.dst, packet.next_header) == (GUEST, GATEWAY, PROTO_UDP)
    assert (packet.hop_limit, packet.traffic_class, packet.flow_label) == (33, 0xB8, 0xABCDE)
    assert bytes(packet.payload) == raw[40:]


def test_payload_is_a_view_of_the_input() -> None:
    data = bytearray(bytes(IPv6(**ADDRESSES) / b"abc"))
    packet = IPv6Packet.parse(data)
    assert isinstance(packet.payload, memoryview)
    assert packet.payload.obj is data


def test_ethernet_padding_is_not_payload() -> None:
    raw = bytes(IPv6(**ADDRESSES) / UDP() / b"ab")
    assert bytes(IPv6Packet.parse(raw + b"\0" * 24).payload) == raw[40:]


def test_no_next_header_has_an_empty_payload() -> None:
    packet = IPv6Packet.parse(bytes(IPv6(**ADDRESSES, nh=PROTO_NONE)))
    assert (packet.next_header, bytes(packet.payload)) == (PROTO_NONE, b"")


def test_extension_headers_are_walked_to_the_upper_layer() -> None:
    upper = UDP(sport=5000, dport=53) / b"query"
    raw = bytes(
        IPv6(**ADDRESSES)
        / IPv6ExtHdrHopByHop(options=[RouterAlert(), PadN(optdata=b"\0" * 2)])
        / IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=0x1E, optdata=b"skip me")])
        / IPv6ExtHdrRouting(type=0, segleft=0, addresses=[str(GATEWAY)])
        / IPv6ExtHdrDestOpt()
        / upper
    )
    packet = IPv6Packet.parse(raw)
    assert packet.next_header == PROTO_UDP
    # The UDP datagram as scapy sent it (its checksum filled in: not bytes(upper)'s).
    assert bytes(packet.payload) == raw[-len(upper) :]


def test_scapy_dissects_what_we_encode() -> None:
    packet = IPv6Packet(GATEWAY, GUEST, PROTO_ICMPV6, b"x" * 99, 255, 0x12, 0xFEDCB)
    raw = packet.encode()
    dissected = IPv6(raw)
    assert (dissected.src, dissected.dst, dissected.nh) == (str(GATEWAY), str(GUEST), 58)
    assert (dissected.hlim, dissected.tc, dissected.fl, dissected.plen) == (255, 0x12, 0xFEDCB, 99)
    assert bytes(dissected.payload) == b"x" * 99
    assert raw[:40] == packet.encode_header()


def test_encode_defaults_to_hop_limit_64() -> None:
    assert IPv6(IPv6Packet(GUEST, GATEWAY, PROTO_UDP, b"").encode()).hlim == 64


def test_encode_refuses_a_jumbo_payload() -> None:
    with pytest.raises(ValueError):
        IPv6Packet(GUEST, GATEWAY, PROTO_UDP, bytes(0x10000)).encode()


@given(
    st.builds(
        IPv6Packet,
        src=st.integers(0, 2**128 - 1).map(IPv6Address),
        dst=st.integers(0, 2**128 - 1).map(IPv6Address),
        next_header=st.sampled_from([6, 17, 58, 59, 50, 51, 135, 253]),
        payload=st.binary(max_size=200),
        hop_limit=st.integers(0, 255),
        traffic_class=st.integers(0, 255),
        flow_label=st.integers(0, 0xFFFFF),
    )
)
def test_hypothesis_round_trip(packet: IPv6Packet) -> None:
    parsed = IPv6Packet.parse(packet.encode())
    assert parsed == IPv6Packet(
        packet.src,
        packet.dst,
        packet.next_header,
        memoryview(bytes(packet.payload)),
        packet.hop_limit,
        packet.traffic_class,
        packet.flow_label,
    )
    assert bytes(parsed.payload) == packet.payload


# --- refusals ----------------------------------------------------------------------------

GOOD = bytes(
    IPv6(**ADDRESSES)
    / IPv6ExtHdrHopByHop(options=[RouterAlert()])
    / IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\0" * 4)])
    / UDP()
    / b"data"
)


@pytest.mark.parametrize("length", range(len(GOOD)))
def test_every_truncation_is_refused(length: int) -> None:
    # The payload length then exceeds the bytes held; below 40 the header is short.
    assert reason_for(GOOD[:length]) == "ipv6_truncated"


def test_payload_length_beyond_the_data() -> None:
    raw = bytes(IPv6(**ADDRESSES, plen=100) / UDP() / b"data")
    assert reason_for(raw) == "ipv6_truncated"


def test_short_payload_length_cutting_the_headers_is_an_overrun() -> None:
    for plen in (1, 7, 8, 15):
        raw = GOOD[:4] + plen.to_bytes(2, "big") + GOOD[6:]
        assert reason_for(raw) == "ipv6_ext_overrun"


def test_short_payload_length_is_honoured() -> None:
    raw = GOOD[:4] + (16 + 8 + 2).to_bytes(2, "big") + GOOD[6:]
    assert bytes(IPv6Packet.parse(raw).payload) == GOOD[40 + 16 : 40 + 16 + 10]


def test_version_other_than_6() -> None:
    assert reason_for(b"\x45" + GOOD[1:]) == "ipv6_bad_version"


def test_fragments_are_refused() -> None:
    first = IPv6(**ADDRESSES) / IPv6ExtHdrFragment(m=1, id=7) / UDP() / (b"x" * 16)
    assert reason_for(bytes(first)) == "ipv6_fragment"
    behind = IPv6(**ADDRESSES) / IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment(offset=2) / (b"x" * 16)
    assert reason_for(bytes(behind)) == "ipv6_fragment"


def test_jumbograms_are_refused() -> None:
    jumbo = IPv6ExtHdrHopByHop(options=[Jumbo(jumboplen=70000)])
    assert reason_for(bytes(IPv6(**ADDRESSES, plen=0) / jumbo / UDP())) == "ipv6_jumbogram"
    # RFC 2675 §3: the option with a non-zero payload length is an error too.
    assert reason_for(bytes(IPv6(**ADDRESSES) / jumbo / UDP())) == "ipv6_jumbogram"
    # A zero payload length without the option is only a short packet.
    plain = bytes(IPv6(**ADDRESSES, plen=0) / IPv6ExtHdrHopByHop() / UDP())
    assert reason_for(plain) == "ipv6_ext_overrun"
    # ... and so is one whose Hop-by-Hop header is cut before any option.
    assert reason_for(plain[:41]) == "ipv6_ext_overrun"


def test_routing_header_with_segments_left_is_refused() -> None:
    routing = IPv6ExtHdrRouting(type=0, segleft=1, addresses=[str(GATEWAY)])
    assert reason_for(bytes(IPv6(**ADDRESSES) / routing / UDP())) == "ipv6_routing_header"


def test_headers_out_of_place_or_repeated() -> None:
    misplaced = IPv6(**ADDRESSES) / IPv6ExtHdrDestOpt() / IPv6ExtHdrHopByHop() / UDP()
    assert reason_for(bytes(misplaced)) == "ipv6_misplaced_hop_by_hop"
    two_routing = IPv6(**ADDRESSES) / IPv6ExtHdrRouting() / IPv6ExtHdrRouting() / UDP()
    assert reason_for(bytes(two_routing)) == "ipv6_repeated_header"
    three = IPv6(**ADDRESSES) / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt()
    assert reason_for(bytes(three / UDP())) == "ipv6_repeated_header"


def test_a_header_chain_that_loops_ends() -> None:
    # Destination Options whose every "next header" says Destination Options again,
    # for as many headers as the packet holds.
    loop = b"".join(bytes((60, 0, 1, 4, 0, 0, 0, 0)) for _ in range(1000))
    raw = bytes(IPv6(**ADDRESSES, nh=60, plen=len(loop))) + loop
    assert reason_for(raw) == "ipv6_repeated_header"


def test_header_length_running_past_the_payload() -> None:
    raw = bytearray(bytes(IPv6(**ADDRESSES) / IPv6ExtHdrDestOpt() / UDP()))
    raw[41] = 200  # header extension length: 1608 bytes
    assert reason_for(bytes(raw)) == "ipv6_ext_overrun"


def test_options_are_walked() -> None:
    unknown_skip = HBHOptUnknown(otype=0x3E, optdata=b"ab")  # action 00: skip it
    ok = IPv6(**ADDRESSES) / IPv6ExtHdrDestOpt(options=[unknown_skip]) / UDP()
    assert IPv6Packet.parse(bytes(ok)).next_header == PROTO_UDP
    for otype in (0x7E, 0x9E, 0xDE):  # actions 01, 10, 11: discard
        refused = IPv6(**ADDRESSES) / IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=otype)])
        assert reason_for(bytes(refused / UDP())) == "ipv6_unknown_option"
    # An option whose length runs past its header.
    raw = bytearray(bytes(IPv6(**ADDRESSES) / IPv6ExtHdrDestOpt(options=[PadN(optdata=b"")])))
    raw[43] = 5  # PadN with 5 bytes of data in a 6-byte option area that holds 4
    assert reason_for(bytes(raw)) == "ipv6_option_overrun"


# --- addresses --------------------------------------------------------------------------

MACS = [bytes.fromhex(mac) for mac in ("525400123456", "020000000001", "fe5400abcdef")]


@pytest.mark.parametrize("mac", MACS)
def test_link_local_address_matches_scapy(mac: bytes) -> None:
    identifier = in6_mactoifaceid(mac.hex(":"))
    assert ipv6.link_local(mac) == IPv6Address(f"fe80::{identifier}")


@pytest.mark.parametrize("address", [GUEST, GATEWAY, IPv6Address("fe80::1:2:3:4")])
def test_solicited_node_group_and_its_mac_match_scapy(address: IPv6Address) -> None:
    group = ipv6.solicited_node(address)
    assert group.packed == in6_getnsma(address.packed)
    assert ipv6.multicast_mac(group).hex(":") == in6_getnsmac(group.packed)
    assert ipv6.multicast_mac(ipv6.ALL_NODES) == bytes.fromhex("333300000001")


def test_every_byte_value_anywhere_raises_only_wire_errors() -> None:
    for position in range(len(GOOD)):
        for value in range(256):
            mutant = bytearray(GOOD)
            mutant[position] = value
            with contextlib.suppress(WireError):
                IPv6Packet.parse(bytes(mutant))
