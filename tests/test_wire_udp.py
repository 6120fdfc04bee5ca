"""UDP codec: round trips, scapy as an independent oracle, refusals, and fuzzing."""

from __future__ import annotations

import contextlib
import struct
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw

from slirpnet.wire import udp
from slirpnet.wire.checksum import internet_checksum, pseudo_header_sum
from slirpnet.wire.errors import IntegrityError, WireError
from slirpnet.wire.udp import UdpDatagram

SRC = IPv4Address("10.0.2.15")
DST = IPv4Address("10.0.2.3")

PAYLOAD_SIZES = [0, 1, 1460, 65495, 65507]


def scapy_datagram(payload: bytes = b"", **fields: Any) -> bytes:
    return bytes(IP(src=str(SRC), dst=str(DST)) / UDP(**fields) / Raw(payload))[20:]


def payload_of(size: int) -> bytes:
    return bytes(i * 31 & 0xFF for i in range(size))


def reason(error: pytest.ExceptionInfo[WireError]) -> str:
    return error.value.reason


def test_parse_scapy_datagram() -> None:
    data = scapy_datagram(b"\x12\x34query", sport=5353, dport=53)
    dgram = UdpDatagram.parse(data, SRC, DST)
    assert (dgram.src_port, dgram.dst_port) == (5353, 53)
    assert bytes(dgram.payload) == b"\x12\x34query"
    assert dgram.encode(SRC, DST) == data


def test_parse_keeps_payload_as_view_of_input() -> None:
    data = bytearray(scapy_datagram(b"abc", sport=1, dport=2))
    dgram = UdpDatagram.parse(data, SRC, DST)
    assert isinstance(dgram.payload, memoryview)
    assert dgram.payload.obj is data


@pytest.mark.parametrize("size", PAYLOAD_SIZES)
def test_round_trip(size: int) -> None:
    dgram = UdpDatagram(68, 67, payload_of(size))
    encoded = dgram.encode(SRC, DST)
    assert len(encoded) == 8 + size
    parsed = UdpDatagram.parse(encoded, SRC, DST)
    assert parsed == dgram
    assert parsed.encode(SRC, DST) == encoded


@pytest.mark.parametrize("size", PAYLOAD_SIZES)
def test_scapy_dissects_what_we_encode(size: int) -> None:
    payload = payload_of(size)
    encoded = UdpDatagram(40000, 53, memoryview(payload)).encode(SRC, DST)
    packet = IP(bytes(IP(src=str(SRC), dst=str(DST), proto=17) / Raw(encoded)))
    dissected = packet[UDP]
    assert (dissected.sport, dissected.dport, dissected.len) == (40000, 53, 8 + size)
    assert bytes(dissected.payload) == payload
    ours = int.from_bytes(encoded[6:8], "big")
    assert dissected.chksum == ours
    del dissected.chksum
    assert IP(bytes(packet))[UDP].chksum == ours


def test_computed_zero_checksum_is_sent_as_all_ones() -> None:
    # Choose two payload bytes that make the true checksum 0, as RFC 768 anticipates.
    start = pseudo_header_sum(SRC, DST, udp.PROTOCOL, 10) + 1 + 2 + 10
    filler = internet_checksum(b"", start)
    encoded = UdpDatagram(1, 2, filler.to_bytes(2, "big")).encode(SRC, DST)
    assert encoded[6:8] == b"\xff\xff"
    assert bytes(UdpDatagram.parse(encoded, SRC, DST).payload) == filler.to_bytes(2, "big")
    assert IP(bytes(IP(src=str(SRC), dst=str(DST)) / UDP(encoded)))[UDP].chksum == 0xFFFF


def test_zero_checksum_means_none() -> None:
    data = bytearray(UdpDatagram(1, 2, b"payload").encode(SRC, DST))
    data[6:8] = b"\0\0"
    data[-1] ^= 0xFF  # nothing verifies this any more
    assert bytes(UdpDatagram.parse(data, SRC, DST).payload) == b"payloa\x9b"


@pytest.mark.parametrize("position", [0, 3, 6, 7, 8, 14])
def test_bad_checksum(position: int) -> None:
    data = bytearray(UdpDatagram(1, 2, b"payload").encode(SRC, DST))
    data[position] ^= 0x01
    with pytest.raises(IntegrityError) as error:
        UdpDatagram.parse(data, SRC, DST)
    assert reason(error) == "udp_bad_checksum"
    UdpDatagram.parse(data, SRC, DST, verify_checksum=False)


def test_checksum_covers_pseudo_header() -> None:
    data = UdpDatagram(1, 2, b"x").encode(SRC, DST)
    with pytest.raises(IntegrityError) as error:
        UdpDatagram.parse(data, SRC, IPv4Address("10.0.2.2"))
    assert reason(error) == "udp_bad_checksum"


@pytest.mark.parametrize("length", [0, 1, 7])
def test_truncated(length: int) -> None:
    with pytest.raises(IntegrityError) as error:
        UdpDatagram.parse(bytes(length), SRC, DST)
    assert reason(error) == "udp_truncated"


@pytest.mark.parametrize("length", [0, 7, 16, 0xFFFF])
def test_length_field_lies(length: int) -> None:
    data = bytearray(UdpDatagram(1, 2, b"payload").encode(SRC, DST))  # 15 bytes
    data[4:6] = length.to_bytes(2, "big")
    with pytest.raises(IntegrityError) as error:
        UdpDatagram.parse(data, SRC, DST, verify_checksum=False)
    assert reason(error) == "udp_bad_length"


def test_data_beyond_length_is_ignored() -> None:
    # Ethernet padding of a short frame, say, left after the datagram.
    data = UdpDatagram(1, 2, b"payload").encode(SRC, DST) + b"\xaa" * 10
    dgram = UdpDatagram.parse(data, SRC, DST)
    assert bytes(dgram.payload) == b"payload"


def test_shorter_length_field_is_honoured() -> None:
    header = struct.pack("!HHHH", 1, 2, 10, 0)
    dgram = UdpDatagram.parse(header + b"abcdef", SRC, DST)
    assert bytes(dgram.payload) == b"ab"


def test_encode_refuses_oversized_payload() -> None:
    with pytest.raises(ValueError):
        UdpDatagram(1, 2, bytes(0xFFFF - 7)).encode(SRC, DST)


def test_encode_accepts_every_bytes_like_payload() -> None:
    expected = UdpDatagram(1, 2, b"xyz").encode(SRC, DST)
    for payload in (bytearray(b"xyz"), memoryview(b"xyz")):
        assert UdpDatagram(1, 2, payload).encode(SRC, DST) == expected


# --- fuzzing: whatever the bytes, only WireError subclasses escape -------------------------

datagrams = st.builds(
    UdpDatagram,
    src_port=st.integers(0, 0xFFFF),
    dst_port=st.integers(0, 0xFFFF),
    payload=st.binary(max_size=64),
)


def parse_quietly(data: bytes, verify_checksum: bool) -> None:
    with contextlib.suppress(WireError):
        UdpDatagram.parse(data, SRC, DST, verify_checksum=verify_checksum)


@given(datagrams)
def test_hypothesis_round_trip(dgram: UdpDatagram) -> None:
    assert UdpDatagram.parse(dgram.encode(SRC, DST), SRC, DST) == dgram


@given(st.binary(max_size=80), st.booleans())
def test_hypothesis_random_bytes(data: bytes, verify_checksum: bool) -> None:
    parse_quietly(data, verify_checksum)


@given(datagrams, st.data())
def test_hypothesis_mutations(dgram: UdpDatagram, data: st.DataObject) -> None:
    encoded = bytearray(dgram.encode(SRC, DST))
    for _ in range(data.draw(st.integers(1, 8))):
        bit = data.draw(st.integers(0, len(encoded) * 8 - 1))
        encoded[bit // 8] ^= 1 << (bit % 8)
    truncated = bytes(encoded[: data.draw(st.integers(0, len(encoded)))])
    for mutant in (bytes(encoded), truncated):
        parse_quietly(mutant, verify_checksum=True)
        parse_quietly(mutant, verify_checksum=False)


# --- over IPv6 (RFC 8200 §8.1) ------------------------------------------------------------

SRC6 = IPv6Address("fec0::5054:ff:fe12:3456")
DST6 = IPv6Address("fec0::3")


def scapy_datagram6(payload: bytes = b"", **fields: Any) -> bytes:
    return bytes(IPv6(src=str(SRC6), dst=str(DST6)) / UDP(**fields) / Raw(payload))[40:]


def test_parse_scapy_datagram_over_ipv6() -> None:
    data = scapy_datagram6(b"\x12\x34query", sport=5353, dport=53)
    dgram = UdpDatagram.parse(data, SRC6, DST6)
    assert (dgram.src_port, dgram.dst_port, bytes(dgram.payload)) == (5353, 53, b"\x12\x34query")
    assert dgram.encode(SRC6, DST6) == data


@pytest.mark.parametrize("size", PAYLOAD_SIZES)
def test_scapy_dissects_what_we_encode_over_ipv6(size: int) -> None:
    encoded = UdpDatagram(40000, 53, payload_of(size)).encode(SRC6, DST6)
    packet = IPv6(bytes(IPv6(src=str(SRC6), dst=str(DST6), nh=17) / Raw(encoded)))
    dissected = packet[UDP]
    assert (dissected.sport, dissected.dport, dissected.len) == (40000, 53, 8 + size)
    ours = int.from_bytes(encoded[6:8], "big")
    del dissected.chksum
    assert IPv6(bytes(packet))[UDP].chksum == ours


def test_checksum_covers_the_ipv6_pseudo_header() -> None:
    data = UdpDatagram(1, 2, b"x").encode(SRC6, DST6)
    with pytest.raises(IntegrityError) as error:
        UdpDatagram.parse(data, SRC6, IPv6Address("fec0::2"))
    assert reason(error) == "udp_bad_checksum"


def test_zero_checksum_is_refused_over_ipv6() -> None:
    data = bytearray(UdpDatagram(1, 2, b"payload").encode(SRC6, DST6))
    data[6:8] = b"\0\0"
    with pytest.raises(IntegrityError) as error:
        UdpDatagram.parse(data, SRC6, DST6)
    assert reason(error) == "udp_zero_checksum"
    # The same bytes over IPv4 mean "no checksum" (test_zero_checksum_means_none).
    assert bytes(UdpDatagram.parse(data, SRC, DST).payload) == b"payload"


def test_computed_zero_checksum_is_sent_as_all_ones_over_ipv6() -> None:
    start = pseudo_header_sum(SRC6, DST6, udp.PROTOCOL, 10) + 1 + 2 + 10
    filler = internet_checksum(b"", start).to_bytes(2, "big")
    encoded = UdpDatagram(1, 2, filler).encode(SRC6, DST6)
    assert encoded[6:8] == b"\xff\xff"
    assert bytes(UdpDatagram.parse(encoded, SRC6, DST6).payload) == filler
