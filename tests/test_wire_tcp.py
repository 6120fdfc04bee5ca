"""TCP codec: round trips, scapy as an independent oracle, refusals, and fuzzing."""

from __future__ import annotations

import contextlib
import struct
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw

from slirpnet import native
from slirpnet.wire import ipv4, tcp
from slirpnet.wire.checksum import internet_checksum, pseudo_header_sum
from slirpnet.wire.errors import IntegrityError, SanityError, WireError
from slirpnet.wire.tcp import (
    ACK,
    CWR,
    ECE,
    FIN,
    NO_OPTIONS,
    PSH,
    RST,
    SYN,
    URG,
    TcpOptions,
    TcpSegment,
    flag_names,
)

SRC = IPv4Address("10.0.2.15")
DST = IPv4Address("93.184.216.34")

LINUX_SYN_OPTIONS = TcpOptions(mss=1460, window_scale=7, sack_permitted=True, timestamps=(1, 2))
EVERY_OPTION = [
    NO_OPTIONS,
    TcpOptions(mss=536),
    TcpOptions(window_scale=0),
    TcpOptions(window_scale=14),
    TcpOptions(sack_permitted=True),
    TcpOptions(timestamps=(0xFFFFFFFF, 0)),
    TcpOptions(sack_blocks=((1, 2),)),
    TcpOptions(sack_blocks=((1, 2), (3, 4), (5, 6), (0xFFFFFFF0, 0xFFFFFFFF))),
    TcpOptions(timestamps=(7, 8), sack_blocks=((10, 20), (30, 40), (50, 60))),
    LINUX_SYN_OPTIONS,
    TcpOptions(mss=1460, sack_permitted=True, window_scale=2),
]
PAYLOAD_SIZES = [0, 1, 1460, 65495]


def transport(packet: IP) -> bytes:
    """The bytes after the IP header of a scapy packet."""
    raw = bytes(packet)
    return raw[(raw[0] & 0x0F) * 4 :]


def scapy_segment(payload: bytes = b"", **fields: Any) -> bytes:
    return transport(IP(src=str(SRC), dst=str(DST)) / TCP(**fields) / Raw(payload))


def fix_checksum(segment: bytes | bytearray) -> bytes:
    """``segment`` with its checksum recomputed, whatever else is wrong with it."""
    data = bytearray(segment)
    data[16:18] = b"\0\0"
    start = pseudo_header_sum(SRC, DST, tcp.PROTOCOL, len(data))
    data[16:18] = internet_checksum(data, start).to_bytes(2, "big")
    return bytes(data)


def with_options(options: bytes, payload: bytes = b"") -> bytes:
    """A segment carrying raw ``options`` (padded to 4 bytes with EOL) and a valid checksum."""
    options += b"\0" * (-len(options) % 4)
    offset = (20 + len(options)) // 4
    header = struct.pack("!HHIIHHHH", 1234, 80, 1, 2, offset << 12 | ACK, 100, 0, 0)
    return fix_checksum(header + options + payload)


def reason(error: pytest.ExceptionInfo[WireError]) -> str:
    return error.value.reason


def test_parse_scapy_linux_syn() -> None:
    data = scapy_segment(
        sport=40000,
        dport=443,
        seq=0x12345678,
        ack=0,
        flags="S",
        window=64240,
        options=[
            ("MSS", 1460),
            ("SAckOK", b""),
            ("Timestamp", (1, 2)),
            ("NOP", None),
            ("WScale", 7),
        ],
    )
    seg = TcpSegment.parse(data, SRC, DST)
    assert (seg.src_port, seg.dst_port, seg.seq, seg.ack) == (40000, 443, 0x12345678, 0)
    assert seg.flags == SYN
    assert seg.is_syn
    assert not seg.is_ack
    assert seg.window == 64240
    assert seg.urgent == 0
    assert seg.options == LINUX_SYN_OPTIONS
    assert bytes(seg.payload) == b""
    assert seg.encode(SRC, DST) == data  # scapy lays the options out as Linux does, so do we


def test_parse_scapy_established_data_segment() -> None:
    payload = bytes(range(256)) * 5 + b"!"
    data = scapy_segment(
        payload,
        sport=80,
        dport=40000,
        seq=1,
        ack=0xFFFFFFFF,
        flags="PA",
        window=501,
        options=[("NOP", None), ("NOP", None), ("Timestamp", (123456, 654321))],
    )
    seg = TcpSegment.parse(data, DST, SRC)
    assert seg.flags == PSH | ACK
    assert seg.ack == 0xFFFFFFFF
    assert seg.options == TcpOptions(timestamps=(123456, 654321))
    assert bytes(seg.payload) == payload
    assert seg.encode(DST, SRC) == data


def test_parse_scapy_sack_urgent_and_unknown_options() -> None:
    data = scapy_segment(
        b"u",
        flags="AU",
        urgptr=1,
        options=[
            ("SAck", (100, 200, 300, 400)),
            (30, b"\x01\x02\x03"),  # unknown kind: skipped by its length
            ("WScale", 3),
        ],
    )
    seg = TcpSegment.parse(data, SRC, DST)
    assert seg.flags == ACK | URG
    assert seg.urgent == 1
    assert seg.options == TcpOptions(sack_blocks=((100, 200), (300, 400)), window_scale=3)


def test_parse_keeps_payload_as_view_of_input() -> None:
    data = bytearray(scapy_segment(b"abc", flags="A"))
    seg = TcpSegment.parse(data, SRC, DST)
    assert isinstance(seg.payload, memoryview)
    assert seg.payload.obj is data
    assert bytes(seg.payload) == b"abc"


@pytest.mark.parametrize("options", EVERY_OPTION)
@pytest.mark.parametrize("size", PAYLOAD_SIZES)
def test_round_trip(options: TcpOptions, size: int) -> None:
    payload = bytes(i * 7 & 0xFF for i in range(size))
    seg = TcpSegment(49152, 22, 0xDEADBEEF, 0x01020304, ACK | PSH, 65535, 0, options, payload)
    encoded = seg.encode(SRC, DST)
    assert len(encoded) % 2 == size % 2
    parsed = TcpSegment.parse(encoded, SRC, DST)
    assert parsed == seg
    assert parsed.encode(SRC, DST) == encoded


@pytest.mark.parametrize("options", EVERY_OPTION)
@pytest.mark.parametrize("size", PAYLOAD_SIZES)
def test_scapy_dissects_what_we_encode(options: TcpOptions, size: int) -> None:
    size = min(size, 0xFFFF - 20 - 20 - len(options.encode()))  # must fit an IPv4 packet
    payload = bytes(i * 13 & 0xFF for i in range(size))
    seg = TcpSegment(1, 65535, 7, 9, SYN | ECE | CWR, 1024, 3, options, memoryview(payload))
    encoded = seg.encode(SRC, DST)
    packet = IP(bytes(IP(src=str(SRC), dst=str(DST), proto=6) / Raw(encoded)))
    dissected = packet[TCP]
    assert (dissected.sport, dissected.dport) == (1, 65535)
    assert (dissected.seq, dissected.ack) == (7, 9)
    assert int(dissected.flags) == SYN | ECE | CWR
    assert (dissected.window, dissected.urgptr) == (1024, 3)
    assert dissected.dataofs * 4 == len(encoded) - size
    assert dict_of(dissected.options) == expected_scapy_options(options)
    assert bytes(dissected.payload) == payload
    # Scapy's own checksum of the same segment matches ours.
    assert dissected.chksum == int.from_bytes(encoded[16:18], "big")
    del dissected.chksum
    assert IP(bytes(packet))[TCP].chksum == int.from_bytes(encoded[16:18], "big")


def dict_of(options: list[tuple[str, object]]) -> dict[str, object]:
    return {name: value for name, value in options if name != "NOP"}


def expected_scapy_options(options: TcpOptions) -> dict[str, object]:
    expected: dict[str, object] = {}
    if options.mss is not None:
        expected["MSS"] = options.mss
    if options.sack_permitted:
        expected["SAckOK"] = b""
    if options.timestamps is not None:
        expected["Timestamp"] = options.timestamps
    if options.window_scale is not None:
        expected["WScale"] = options.window_scale
    if options.sack_blocks:
        expected["SAck"] = tuple(edge for block in options.sack_blocks for edge in block)
    return expected


def test_linux_option_layout() -> None:
    assert LINUX_SYN_OPTIONS.encode() == bytes.fromhex("020405b40402080a000000010000000201030307")
    assert TcpOptions(timestamps=(1, 2)).encode() == bytes.fromhex("0101080a0000000100000002")
    assert TcpOptions(sack_permitted=True).encode() == bytes.fromhex("01010402")
    assert TcpOptions(sack_blocks=((1, 2),)).encode() == bytes.fromhex("0101050a0000000100000002")
    assert NO_OPTIONS.encode() == b""


def test_encode_refuses_too_many_options() -> None:
    with pytest.raises(ValueError):
        TcpOptions(sack_blocks=((1, 2),) * 5).encode()
    with pytest.raises(ValueError):
        TcpOptions(timestamps=(1, 2), sack_blocks=((1, 2),) * 4).encode()


def test_encode_accepts_every_bytes_like_payload() -> None:
    seg = TcpSegment(1, 2, 3, 4, ACK, 5, payload=b"xyz")
    expected = seg.encode(SRC, DST)
    for payload in (bytearray(b"xyz"), memoryview(b"xyz")):
        other = TcpSegment(1, 2, 3, 4, ACK, 5, payload=payload)
        assert other.encode(SRC, DST) == expected


def test_flags() -> None:
    assert flag_names(SYN | ACK) == "SYN|ACK"
    assert flag_names(FIN | SYN | RST | PSH | ACK | URG | ECE | CWR) == (
        "FIN|SYN|RST|PSH|ACK|URG|ECE|CWR"
    )
    assert flag_names(0) == ""
    seg = TcpSegment(1, 2, 3, 4, FIN | RST | PSH | URG | ECE | CWR, 5)
    assert (seg.is_fin, seg.is_rst, seg.is_psh, seg.is_urg, seg.is_ece, seg.is_cwr) == ((True,) * 6)
    assert not seg.is_syn
    assert not seg.is_ack


def test_reserved_bits_are_ignored() -> None:
    data = bytearray(TcpSegment(1, 2, 3, 4, ACK, 5).encode(SRC, DST))
    data[12] |= 0x0F
    seg = TcpSegment.parse(fix_checksum(data), SRC, DST)
    assert seg.flags == ACK
    assert seg.options == NO_OPTIONS


def test_checksum_covers_pseudo_header() -> None:
    data = TcpSegment(1, 2, 3, 4, ACK, 5, payload=b"x").encode(SRC, DST)
    with pytest.raises(IntegrityError) as error:
        TcpSegment.parse(data, SRC, IPv4Address("10.0.2.2"))
    assert reason(error) == "tcp_bad_checksum"


@pytest.mark.parametrize("position", [0, 13, 16, 17, 19, 20])
def test_bad_checksum(position: int) -> None:
    data = bytearray(TcpSegment(1, 2, 3, 4, ACK, 5, payload=b"hi!").encode(SRC, DST))
    data[position] ^= 0x40
    with pytest.raises(IntegrityError) as error:
        TcpSegment.parse(data, SRC, DST)
    assert reason(error) == "tcp_bad_checksum"
    # Without verification the (now wrong) checksum is not looked at.
    if position in (16, 17):
        assert bytes(TcpSegment.parse(data, SRC, DST, verify_checksum=False).payload) == b"hi!"


@pytest.mark.parametrize("length", [0, 1, 19])
def test_truncated(length: int) -> None:
    data = TcpSegment(1, 2, 3, 4, ACK, 5).encode(SRC, DST)[:length]
    with pytest.raises(IntegrityError) as error:
        TcpSegment.parse(data, SRC, DST, verify_checksum=False)
    assert reason(error) == "tcp_truncated"


@pytest.mark.parametrize("offset", [0, 1, 4, 6, 15])
def test_bad_data_offset(offset: int) -> None:
    data = bytearray(TcpSegment(1, 2, 3, 4, ACK, 5, payload=b"x").encode(SRC, DST))
    data[12] = offset << 4
    with pytest.raises(IntegrityError) as error:
        TcpSegment.parse(fix_checksum(data), SRC, DST)
    assert reason(error) == "tcp_bad_data_offset"


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (b"\x02\x00", "tcp_option_loop"),
        (b"\x01\x01\x1e\x01", "tcp_option_loop"),
        (b"\x01\x01\x01\x02", "tcp_option_overrun"),
        (b"\x01\x01\x01\x08", "tcp_option_overrun"),
        (b"\x08\x0a\x00\x00\x00\x01\x00\x00", "tcp_option_overrun"),
        (b"\x1e\x28", "tcp_option_overrun"),
    ],
)
def test_malformed_options(options: bytes, expected: str) -> None:
    raw = options + b"\x01" * (-len(options) % 4)  # NOP padding keeps the option last
    with pytest.raises(IntegrityError) as error:
        TcpSegment.parse(with_options(raw), SRC, DST)
    assert reason(error) == expected


@pytest.mark.parametrize(
    "options",
    [
        b"\x02\x03\x05",  # MSS of 3 bytes
        b"\x02\x05\x05\xb4\x00",
        b"\x03\x04\x07\x00",  # window scale of 4 bytes
        b"\x04\x03\x00",  # SACK-permitted with a body
        b"\x08\x08\x00\x00\x00\x01\x00\x00",  # timestamps too short
        b"\x05\x02",  # SACK with no block
        b"\x05\x0b" + bytes(9),  # SACK with a partial block
    ],
)
def test_known_option_with_wrong_length(options: bytes) -> None:
    with pytest.raises(SanityError) as error:
        TcpSegment.parse(with_options(options), SRC, DST)
    assert reason(error) == "tcp_bad_option_length"


def test_window_scale_above_14_is_clamped() -> None:
    seg = TcpSegment.parse(with_options(b"\x01\x03\x03\x0f"), SRC, DST)
    assert seg.options.window_scale == 14
    seg = TcpSegment.parse(with_options(b"\x01\x03\x03\xff"), SRC, DST)
    assert seg.options.window_scale == 14


def test_eol_ends_options_and_nops_are_skipped() -> None:
    # After EOL the rest of the option space is padding, however it looks.
    seg = TcpSegment.parse(with_options(b"\x01\x02\x04\x05\xb4\x00\x02\x00", b"data"), SRC, DST)
    assert seg.options == TcpOptions(mss=1460)
    assert bytes(seg.payload) == b"data"


def test_unknown_option_skipped_by_length() -> None:
    options = b"\xfe\x06\x02\x04\x05\xb4" + b"\x02\x04\x02\x18"  # body looks like MSS 1460
    seg = TcpSegment.parse(with_options(options), SRC, DST)
    assert seg.options == TcpOptions(mss=536)


def test_last_duplicate_option_wins() -> None:
    seg = TcpSegment.parse(with_options(b"\x02\x04\x05\xb4\x02\x04\x02\x18"), SRC, DST)
    assert seg.options.mss == 536


def test_timestamps_fast_path_agrees_with_general_parser() -> None:
    fast = TcpOptions.parse(bytes.fromhex("0101080a0000000100000002"))
    general = TcpOptions.parse(bytes.fromhex("080a000000010000000201010000"))
    assert fast == general == TcpOptions(timestamps=(1, 2))


# --- fuzzing: whatever the bytes, only WireError subclasses escape -------------------------

option_sets = st.builds(
    TcpOptions,
    mss=st.none() | st.integers(0, 0xFFFF),
    window_scale=st.none() | st.integers(0, 14),
    sack_permitted=st.booleans(),
    sack_blocks=st.lists(
        st.tuples(st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF)), max_size=2
    ).map(tuple),
    timestamps=st.none() | st.tuples(st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF)),
)
segments = st.builds(
    TcpSegment,
    src_port=st.integers(0, 0xFFFF),
    dst_port=st.integers(0, 0xFFFF),
    seq=st.integers(0, 0xFFFFFFFF),
    ack=st.integers(0, 0xFFFFFFFF),
    flags=st.integers(0, 0xFF),
    window=st.integers(0, 0xFFFF),
    urgent=st.integers(0, 0xFFFF),
    options=option_sets,
    payload=st.binary(max_size=64),
)


def parse_quietly(data: bytes, verify_checksum: bool) -> None:
    with contextlib.suppress(WireError):
        TcpSegment.parse(data, SRC, DST, verify_checksum=verify_checksum)


@given(segments)
def test_hypothesis_round_trip(seg: TcpSegment) -> None:
    encoded = seg.encode(SRC, DST)
    assert TcpSegment.parse(encoded, SRC, DST) == seg


@given(st.binary(max_size=120), st.booleans())
def test_hypothesis_random_bytes(data: bytes, verify_checksum: bool) -> None:
    parse_quietly(data, verify_checksum)


@given(st.binary(max_size=40), st.binary(max_size=8))
def test_hypothesis_random_options_with_valid_checksum(options: bytes, payload: bytes) -> None:
    data = with_options(options, payload)
    try:
        seg = TcpSegment.parse(data, SRC, DST)
    except WireError:
        return
    assert bytes(seg.payload) == payload


@given(segments, st.data())
def test_hypothesis_mutations(seg: TcpSegment, data: st.DataObject) -> None:
    encoded = bytearray(seg.encode(SRC, DST))
    for _ in range(data.draw(st.integers(1, 8))):
        bit = data.draw(st.integers(0, len(encoded) * 8 - 1))
        encoded[bit // 8] ^= 1 << (bit % 8)
    truncated = bytes(encoded[: data.draw(st.integers(0, len(encoded)))])
    for mutant in (bytes(encoded), truncated, fix_checksum(encoded)):
        parse_quietly(mutant, verify_checksum=True)
        parse_quietly(mutant, verify_checksum=False)


@given(
    flags=st.integers(0, 0xFF),
    seq=st.integers(0, 0xFFFFFFFF),
    window=st.integers(0, 0xFFFF),
    ident=st.integers(0, 0xFFFF),
    payload=st.binary(max_size=3000),
    options=st.sampled_from([tcp.NO_OPTIONS, LINUX_SYN_OPTIONS, TcpOptions(mss=65480)]),
)
def test_tcp_frame_is_the_header_and_segment_encoded_apart(
    flags: int, seq: int, window: int, ident: int, payload: bytes, options: TcpOptions
) -> None:
    """The one-pass frame encoder the core uses (``slirpnet.native.tcp_frame``, native or
    pure, whichever this run has) against the layered codecs and scapy."""
    segment = TcpSegment(80, 40000, seq, 12345, flags, window, 0, options, payload)
    head = bytes(range(14))
    encoded = options.encode()
    fields = (80, 40000, seq, 12345, flags, window, 0, encoded, payload)
    frame = native.tcp_frame(head, int(DST), int(SRC), ident, *fields)
    body = segment.encode(DST, SRC)
    header = ipv4.IPv4Packet(DST, SRC, ipv4.PROTO_TCP, body, ident=ident).encode_header()
    assert frame == head + header + body
    rebuilt = IP(frame[14:])  # scapy fills both checksums in again: the same bytes
    del rebuilt[IP].chksum
    del rebuilt[TCP].chksum
    assert bytes(rebuilt) == frame[14:]


def test_over_ipv6_checksummed_on_the_ipv6_pseudo_header() -> None:
    src, dst = IPv6Address("fec0::15"), IPv6Address("2001:db8::1")
    raw = bytes(
        IPv6(src=str(src), dst=str(dst))
        / TCP(sport=40000, dport=443, seq=7, flags="S", options=[("MSS", 1440)])
    )[40:]
    segment = TcpSegment.parse(raw, src, dst)
    assert (segment.src_port, segment.options.mss, segment.is_syn) == (40000, 1440, True)
    encoded = TcpSegment(443, 40000, 9, 8, SYN | ACK, 65535, payload=b"x" * 33).encode(dst, src)
    packet = IPv6(bytes(IPv6(src=str(dst), dst=str(src), nh=6) / Raw(encoded)))
    checksum = packet[TCP].chksum
    del packet[TCP].chksum
    assert IPv6(bytes(packet))[TCP].chksum == checksum
    with pytest.raises(IntegrityError):
        TcpSegment.parse(raw, src, IPv6Address("2001:db8::2"))
