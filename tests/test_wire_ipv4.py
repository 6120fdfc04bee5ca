"""IPv4: lengths honoured, options skipped, fragments recognised, scapy as oracle."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from scapy.layers.inet import IP, UDP

from slirpnet.wire.errors import IntegrityError, SanityError
from slirpnet.wire.ipv4 import PROTO_UDP, IPv4Packet

GUEST = IPv4Address("10.0.2.15")
GATEWAY = IPv4Address("10.0.2.2")


def test_scapy_packet_parses_to_its_fields() -> None:
    raw = bytes(
        IP(src="10.0.2.15", dst="10.0.2.2", ttl=33, id=4321, tos=0x10, flags="DF")
        / UDP(sport=1, dport=2)
        / b"data"
    )
    packet = IPv4Packet.parse(raw)
    assert (packet.src, packet.dst, packet.protocol) == (GUEST, GATEWAY, PROTO_UDP)
    assert (packet.ttl, packet.ident, packet.tos) == (33, 4321, 0x10)
    assert packet.dont_fragment and not packet.is_fragment
    assert bytes(packet.payload) == raw[20:]


def test_options_are_skipped_by_ihl() -> None:
    options = b"\x07\x07\x04\x00\x00\x00\x00\x00"  # record route, then padding
    raw = bytes(IP(src="10.0.2.15", dst="10.0.2.2", options=options) / b"payload")
    packet = IPv4Packet.parse(raw)
    assert packet.options == options
    assert packet.header_len == 28
    assert bytes(packet.payload) == b"payload"


def test_ethernet_padding_is_not_payload() -> None:
    raw = bytes(IP(src="10.0.2.15", dst="10.0.2.2") / b"ab")
    packet = IPv4Packet.parse(raw + b"\0" * 24)
    assert bytes(packet.payload) == b"ab"


def test_fragments_are_recognised() -> None:
    first = IPv4Packet.parse(bytes(IP(flags="MF", frag=0) / (b"x" * 16)))
    later = IPv4Packet.parse(bytes(IP(frag=2) / (b"x" * 16)))
    assert first.is_fragment and first.more_fragments
    assert later.is_fragment and later.fragment_offset == 16


def test_encode_is_dissected_by_scapy_with_a_valid_checksum() -> None:
    packet = IPv4Packet(
        GATEWAY,
        GUEST,
        PROTO_UDP,
        b"hello",
        ttl=3,
        ident=77,
        dont_fragment=True,
        tos=4,
        options=b"\x01\x01\x01\x00",
    )
    raw = packet.encode()
    dissected = IP(raw)
    assert (dissected.src, dissected.dst, dissected.proto) == ("10.0.2.2", "10.0.2.15", 17)
    assert (dissected.ttl, dissected.id, dissected.tos, dissected.ihl) == (3, 77, 4, 6)
    assert dissected.flags == "DF"
    assert dissected.len == len(raw)
    del dissected.chksum
    assert IP(bytes(dissected)).chksum == IP(raw).chksum


def test_round_trip() -> None:
    packet = IPv4Packet(
        GUEST, GATEWAY, 6, b"x" * 1481, ident=65535, more_fragments=True, fragment_offset=8
    )
    assert IPv4Packet.parse(packet.encode()) == packet


def reason_for(raw: bytes) -> str:
    with pytest.raises((IntegrityError, SanityError)) as info:
        IPv4Packet.parse(raw)
    return info.value.reason


def test_refusals() -> None:
    good = bytes(IP(src="10.0.2.15", dst="10.0.2.2") / b"abcd")
    assert reason_for(good[:19]) == "ipv4_truncated"
    assert reason_for(b"\x65" + good[1:]) == "ipv4_bad_version"
    assert reason_for(bytes(IP(ihl=4) / b"abcd")) == "ipv4_bad_ihl"
    assert reason_for(bytes(IP(len=19) / b"abcd")) == "ipv4_bad_length"
    assert reason_for(bytes(IP(len=100) / b"abcd")) == "ipv4_truncated"
    assert reason_for(bytes(IP(ihl=15) / b"abcd")) == "ipv4_bad_length"
    assert reason_for(bytes(IP(chksum=0x1234) / b"abcd")) == "ipv4_bad_checksum"
    assert reason_for(bytes(IP(flags="evil") / b"abcd")) == "ipv4_reserved_flag"


def test_checksum_check_can_be_skipped() -> None:
    raw = bytes(IP(chksum=0x1234) / b"abcd")
    assert bytes(IPv4Packet.parse(raw, verify_checksum=False).payload) == b"abcd"


def test_encode_refuses_unpadded_options() -> None:
    with pytest.raises(ValueError):
        IPv4Packet(GUEST, GATEWAY, 6, b"", options=b"\x01").encode()
