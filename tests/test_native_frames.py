"""The native frame builders against their twins in ``slirpnet.wire.tcpframe``, the twins
against the layered codecs (``TcpSegment.encode`` under an IPv4 header), and both
against scapy."""

from __future__ import annotations

import random
from collections.abc import Callable
from ipaddress import IPv4Address
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from slirpnet.wire import ipv4, tcpframe
from slirpnet.wire.tcp import TcpOptions, TcpSegment

native = pytest.importorskip("slirpnet._native", reason="slirpnet._native is not built")

ETHER_V4 = bytes.fromhex("525400123456 525500000002 0800")
ETHER_V6 = bytes.fromhex("525400123456 525500000002 86dd")
SRC6 = bytes.fromhex("fd000000000000000000000000000002")
DST6 = bytes.fromhex("fd000000000000000000000000000001")


def edges(top: int) -> st.SearchStrategy[int]:
    """Any value of a field, its ends, and just beyond them."""
    return st.one_of(st.integers(0, top), st.sampled_from([0, top, top + 1, -1, 2**64]))


U16, U32, FLAGS = edges(0xFFFF), edges(2**32 - 1), edges(0xFFF)
OPTIONS = st.one_of(
    st.integers(0, 10).map(lambda words: random.Random(words).randbytes(4 * words)),
    st.binary(max_size=44),  # mostly not a multiple of 4, or too long
)


@st.composite
def payloads(draw: st.DrawFn, top: int = 65535) -> Any:
    """Cheap payloads of any length, as bytes, bytearray or an offset memoryview."""
    length = draw(st.one_of(st.integers(0, 64), st.integers(0, top)))
    data = random.Random(draw(st.integers(0, 2**32))).randbytes(length)
    kind = draw(st.sampled_from(["bytes", "bytearray", "memoryview"]))
    if kind == "bytearray":
        return bytearray(data)
    if kind == "memoryview":
        offset = draw(st.integers(0, 7))
        return memoryview(bytes(offset) + data)[offset:]
    return data


def outcome(function: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    try:
        return "value", function(*args)
    except (TypeError, ValueError, OverflowError) as error:
        return "raised", type(error)


def assert_twins(name: str, *args: Any) -> Any:
    """The native function and its twin give the same bytes or the same exception type."""
    expected = outcome(getattr(tcpframe, name), *args)
    assert outcome(getattr(native, name), *args) == expected
    return expected


@given(st.tuples(U32, U32, U16, U16, U16, U32, U32, FLAGS, U16, U16, OPTIONS, payloads()))
@example((0, 0, 0, 0, 0, 0, 0, 0, 0, 0, b"", b""))
@example((2**32 - 1, 1, 0xFFFF, 1, 2, 2**32 - 1, 0, 0x18, 0xFFFF, 0, bytes(40), bytes(65455)))
@example((1, 1, 1, 1, 2, 3, 0, 0x18, 1, 0, bytes(40), bytes(65456)))  # one byte too many
def test_tcp_frame_matches_its_twin(fields: tuple[Any, ...]) -> None:
    assert_twins("tcp_frame", ETHER_V4, *fields)


@given(
    st.binary(min_size=15, max_size=17),
    st.tuples(U16, U16, U32, U32, FLAGS, U16, U16, OPTIONS, payloads()),
)
@example(SRC6, (1, 2, 3, 4, 0x18, 5, 0, bytes(40), bytes(65535 - 60)))
@example(SRC6, (1, 2, 3, 4, 0x18, 5, 0, bytes(40), bytes(65535 - 59)))  # one byte too many
def test_tcp6_frame_matches_its_twin(src: bytes, fields: tuple[Any, ...]) -> None:
    assert_twins("tcp6_frame", ETHER_V6, src, DST6, *fields)


@st.composite
def segmentation(draw: st.DrawFn) -> tuple[Any, Any]:
    payload = draw(payloads(top=200_000))
    # At least len/300 per segment: a few hundred frames at most per example.
    mss = draw(
        st.one_of(st.integers(max(1, len(payload) // 300), 70_000), st.sampled_from([0, -1]))
    )
    return payload, mss


@given(U32, U16, U32, U32, FLAGS, U16, OPTIONS, segmentation(), FLAGS)
@example(1, 0xFFFF, 2**32 - 100, 7, 0x10, 512, b"", (bytes(65536), 1448), 0x09)
@example(1, 0, 0, 0, 0x10, 0, b"", (b"", 1448), 0x01)
def test_tcp_frames_match_their_twin(
    src: Any, ident: Any, seq: Any, ack: Any, flags: Any, window: Any, options: Any,
    cut: tuple[Any, Any], last_flags: Any,
) -> None:  # fmt: skip
    payload, mss = cut
    args = (src, 0x0A000001, ident, 40000, 80, seq, ack, flags, window, options, payload, mss)
    assert_twins("tcp_frames", ETHER_V4, *args, last_flags)
    v6 = (SRC6, DST6, 40000, 80, seq, ack, flags, window, options, payload, mss, last_flags)
    assert_twins("tcp6_frames", ETHER_V6, *v6)


@given(
    st.integers(0, 2**32 - 1),
    st.integers(0, 0xFFFF),
    st.integers(0, 2**32 - 1),
    st.integers(0, 0xFF),
    payloads(top=20_000),
    st.integers(1, 3000),
)
def test_segments_are_single_frames(
    seq: int, ident: int, ack: int, flags: int, payload: Any, mss: int
) -> None:
    """Segment i: the piece at i*mss, sequence seq + i*mss, ident + i, last_flags on the last."""
    frames = native.tcp_frames(b"", 1, 2, ident, 3, 4, seq, ack, flags, 9, b"", payload, mss, 0x09)
    data = bytes(payload)
    pieces = [data[i : i + mss] for i in range(0, len(data), mss)] or [b""]
    assert len(frames) == len(pieces)
    for i, (frame, piece) in enumerate(zip(frames, pieces, strict=True)):
        last = 0x09 if i == len(pieces) - 1 else 0
        seq_i, ident_i = (seq + i * mss) % 2**32, (ident + i) % 2**16
        args = (1, 2, ident_i, 3, 4, seq_i, ack, flags | last, 9, 0, b"", piece)
        assert frame == native.tcp_frame(b"", *args)
    frames6 = native.tcp6_frames(b"", SRC6, DST6, 3, 4, seq, ack, flags, 9, b"", payload, mss, 1)
    assert len(frames6) == len(pieces)
    assert frames6[-1] == native.tcp6_frame(
        b"", SRC6, DST6, 3, 4, (seq + (len(pieces) - 1) * mss) % 2**32, ack, flags | 1, 9, 0,
        b"", pieces[-1],
    )  # fmt: skip


OPTION_OBJECTS = st.builds(
    TcpOptions,
    mss=st.none() | st.integers(0, 0xFFFF),
    window_scale=st.none() | st.integers(0, 14),
    sack_permitted=st.booleans(),
    sack_blocks=st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
                         max_size=3).map(tuple),
    timestamps=st.none() | st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
)  # fmt: skip


@given(
    st.integers(0, 2**32 - 1),
    st.integers(0, 0xFFFF),
    st.integers(0, 2**32 - 1),
    st.integers(0, 0xFF),
    st.integers(0, 0xFFFF),
    OPTION_OBJECTS,
    payloads(top=65495 - 40),
)
def test_twin_matches_the_layered_codecs(
    seq: int, window: int, ack: int, flags: int, urgent: int, options: TcpOptions, payload: Any
) -> None:
    try:
        encoded = options.encode()
    except ValueError:
        return  # more than 40 bytes: the layered codec refuses them too
    segment = TcpSegment(40000, 80, seq, ack, flags, window, urgent, options, payload)
    src, dst = IPv4Address(0x0A000202), IPv4Address(0x0A000001)
    body = segment.encode(src, dst)
    header = ipv4.IPv4Packet(src, dst, ipv4.PROTO_TCP, body, ident=0xBEEF).encode_header()
    expected = ETHER_V4 + header + body
    args = (40000, 80, seq, ack, flags, window, urgent, encoded, payload)
    assert tcpframe.tcp_frame(ETHER_V4, 0x0A000202, 0x0A000001, 0xBEEF, *args) == expected
    assert native.tcp_frame(ETHER_V4, 0x0A000202, 0x0A000001, 0xBEEF, *args) == expected


def scapy_fields(flags: int, options: bytes, payload: bytes) -> tuple[dict[str, int], list[Any]]:
    """TCP fields and the layers after the header: the options ride as raw bytes ahead of
    the payload, so that scapy checksums exactly our segment."""
    tcp = {"dataofs": (20 + len(options)) // 4, "flags": flags, "reserved": 0}
    rest = options + payload
    return tcp, [Raw(rest)] if rest else []


def with_rest(packet: Any, rest: list[Any]) -> Any:
    return packet / rest[0] if rest else packet


@given(
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFF),
    st.integers(0, 10).map(lambda n: bytes([1]) * 4 * n),
    payloads(top=9000).map(bytes),
)
def test_ipv4_frames_are_scapys(
    seq: int, ack: int, ident: int, flags: int, options: bytes, payload: bytes
) -> None:
    frame = native.tcp_frame(
        ETHER_V4, 0x0A000202, 0x0A000201, ident, 40000, 80, seq, ack, flags, 512, 0, options,
        payload,
    )  # fmt: skip
    tcp, rest = scapy_fields(flags, options, payload)
    built = Ether(dst="52:54:00:12:34:56", src="52:55:00:00:00:02") / IP(
        src="10.0.2.2", dst="10.0.2.1", id=ident, ttl=64
    )
    built = with_rest(built / TCP(sport=40000, dport=80, seq=seq, ack=ack, window=512, **tcp), rest)
    assert frame == bytes(built)
    dissected = Ether(frame)
    ip_sum, tcp_sum = dissected[IP].chksum, dissected[TCP].chksum
    del dissected[IP].chksum, dissected[TCP].chksum
    redone = Ether(bytes(dissected))  # scapy computes both checksums afresh
    assert (redone[IP].chksum, redone[TCP].chksum) == (ip_sum, tcp_sum)


@given(
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 0xFF),
    st.integers(0, 0xFFFF),
    st.integers(0, 10).map(lambda n: bytes([1]) * 4 * n),
    payloads(top=9000).map(bytes),
    st.binary(min_size=32, max_size=32),
)
def test_ipv6_frames_are_scapys(
    seq: int, ack: int, flags: int, urgent: int, options: bytes, payload: bytes, addresses: bytes
) -> None:
    src, dst = addresses[:16], addresses[16:]
    frame = native.tcp6_frame(
        ETHER_V6, src, dst, 40000, 80, seq, ack, flags, 512, urgent, options, payload
    )
    tcp, rest = scapy_fields(flags, options, payload)
    import ipaddress  # noqa: PLC0415

    built = Ether(dst="52:54:00:12:34:56", src="52:55:00:00:00:02") / IPv6(
        src=str(ipaddress.IPv6Address(src)), dst=str(ipaddress.IPv6Address(dst)), hlim=64
    )
    built = with_rest(
        built / TCP(sport=40000, dport=80, seq=seq, ack=ack, window=512, urgptr=urgent, **tcp),
        rest,
    )
    assert frame == bytes(built)
    dissected = Ether(frame)
    tcp_sum = dissected[TCP].chksum
    del dissected[TCP].chksum
    assert Ether(bytes(dissected))[TCP].chksum == tcp_sum


@pytest.mark.parametrize(
    ("index", "value", "error"),
    [
        (1, 2**32, OverflowError),
        (1, -1, OverflowError),
        (3, 0x10000, OverflowError),
        (4, 65536, OverflowError),
        (6, 2**32, OverflowError),
        (8, 0x1000, OverflowError),
        (9, 0x10000, OverflowError),
        (10, -(2**70), OverflowError),
        (11, b"\x01\x01\x01", ValueError),
        (11, bytes(44), ValueError),
        (12, bytes(65536 - 40), ValueError),
        (5, 80.0, TypeError),
        (0, "head", TypeError),
        (12, "payload", TypeError),
    ],
)
def test_errors_have_the_twins_types(index: int, value: Any, error: type[Exception]) -> None:
    args: list[Any] = [ETHER_V4, 1, 2, 3, 4, 5, 6, 7, 0x10, 9, 0, b"", b""]
    args[index] = value
    assert assert_twins("tcp_frame", *args) == ("raised", error)


def test_segmentation_errors() -> None:
    base: list[Any] = [b"", 1, 2, 3, 4, 5, 6, 7, 0x10, 9, b"", b"abc", 1, 0]
    bad = [(12, 0, ValueError), (12, -5, ValueError), (13, 0x1000, OverflowError)]
    for index, value, error in [*bad, (12, 1.0, TypeError), (11, "text", TypeError)]:
        args = list(base)
        args[index] = value
        assert assert_twins("tcp_frames", *args) == ("raised", error)
    # An mss beyond any payload is one segment, however large.
    args = list(base)
    args[12] = 2**80
    assert assert_twins("tcp_frames", *args)[1] == [
        native.tcp_frame(b"", *base[1:10], 0, b"", b"abc")
    ]
    with pytest.raises(ValueError, match="16 bytes"):
        native.tcp6_frames(b"", SRC6[:15], DST6, 1, 2, 3, 4, 5, 6, b"", b"", 1, 0)
