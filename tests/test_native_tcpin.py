"""``tcp_in``, the fast path's reading of a guest's TCP frame: the native function against
its twin in ``slirpnet.wire.tcpin``, and both against scapy's reading of the same frames."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, IPOption_NOP
from scapy.layers.l2 import Ether

from slirpnet.wire import tcpin
from tests.fuzz.atheris_native import GATEWAY_MAC, outcome, plausible

native = pytest.importorskip("slirpnet._native", reason="slirpnet._native is not built")

GUEST_MAC = "52:54:00:12:34:56"
GATEWAY = ":".join(f"{b:02x}" for b in GATEWAY_MAC)


def frame(payload: bytes = b"", tcp_options: list[Any] | None = None, **ip: Any) -> bytes:
    packet = (
        Ether(src=GUEST_MAC, dst=GATEWAY)
        / IP(src="10.0.2.15", dst="10.0.2.2", **ip)
        / TCP(sport=40000, dport=80, seq=2**32 - 3, ack=99, flags="PA", window=4096)
    )
    if tcp_options is not None:
        packet[TCP].options = tcp_options
    return bytes(packet / payload)


def twins(data: Any, mac: Any = GATEWAY_MAC) -> Any:
    """The same value from both, or the same exception type; returns the value."""
    expected = outcome(tcpin.tcp_in, data, mac)
    assert outcome(native.tcp_in, data, mac) == expected
    return expected[1]


@pytest.mark.parametrize("size", [0, 1, 6, 1448, 65495])
def test_a_valid_frame_reads_as_scapy_reads_it(size: int) -> None:
    data = frame(random.Random(size).randbytes(size))
    fields = twins(data)
    packet = Ether(data)
    tcp = packet[TCP]
    assert fields == (
        bytes.fromhex(GUEST_MAC.replace(":", "")),
        0x0A00020F,
        0x0A000202,
        40000,
        80,
        tcp.seq,
        tcp.ack,
        tcp.dataofs << 12 | int(tcp.flags),
        tcp.window,
        tcp.urgptr,
        14 + packet[IP].len,
    )


def test_options_and_padding_are_the_callers_to_read() -> None:
    with_options = frame(b"x", tcp_options=[("MSS", 1460), ("NOP", None), ("WScale", 7)])
    fields = twins(with_options)
    assert fields[7] >> 12 == 7 and fields[10] == len(with_options)  # 28 header bytes
    padded = frame(b"pad") + bytes(20)  # Ethernet padding: not part of the segment
    assert twins(padded)[10] == len(padded) - 20


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (frame(b"x", tcp_options=[]), "valid"),
        (frame(b"x")[:-1], "shorter than its total length"),
        (frame(b"x", flags="MF"), "a fragment"),
        (frame(b"x", frag=1), "a fragment's tail"),
        (frame(b"x", flags="evil"), "the reserved flag"),
        (frame(b"x", options=[IPOption_NOP()] * 4), "IPv4 options"),
        (frame(b"x", proto=17), "not TCP"),
        (frame(b"x", chksum=0x1234), "a bad IPv4 checksum"),
        (frame(b"x", len=39), "a total length too short for TCP"),
    ],
)
def test_anything_but_the_common_case_is_none(data: bytes, why: str) -> None:
    assert (twins(data) is not None) == (why == "valid"), why


def test_a_bad_tcp_checksum_or_data_offset_is_none() -> None:
    good = bytearray(frame(b"data"))
    good[50] ^= 0xFF
    assert twins(bytes(good)) is None
    offset = Ether(frame(b"data"))
    offset[TCP].dataofs = 15  # 60 bytes of header in a 24-byte segment
    del offset[TCP].chksum
    assert twins(bytes(offset)) is None
    assert twins(frame(b"x"), mac=bytes(6)) is None  # not to the gateway
    assert twins(frame(b"x"), mac=GATEWAY_MAC + b"\0") is None


@given(st.binary(max_size=200), st.integers(0, 255))
@example(b"", 0xFF)
def test_random_and_plausible_frames_read_alike(data: bytes, how: int) -> None:
    twins(data)
    twins(plausible(data, GATEWAY_MAC, how | 1))


@given(st.integers(0, 1600), st.lists(st.tuples(st.integers(0, 1700), st.integers(0, 255))))
def test_damaged_valid_frames_read_alike(size: int, damage: list[tuple[int, int]]) -> None:
    data = bytearray(frame(bytes(size)))
    for at, value in damage:
        if at < len(data):
            data[at] = value
    twins(bytes(data))
    twins(bytearray(data))
    twins(memoryview(b"\0" + bytes(data))[1:])


def test_what_is_not_a_buffer_is_a_type_error() -> None:
    for args in (("text", GATEWAY_MAC), (frame(), "mac"), (None, GATEWAY_MAC)):
        assert outcome(native.tcp_in, *args) == outcome(tcpin.tcp_in, *args)
        assert outcome(native.tcp_in, *args)[1] is TypeError
