"""The fast checksum against a word-by-word reference and against scapy."""

from __future__ import annotations

import random
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.utils import checksum as scapy_checksum

from slirpnet.wire.checksum import fold, internet_checksum, ones_sum, pseudo_header_sum


def reference_sum(data: bytes) -> int:
    """RFC 1071 §4.1, word by word with end-around carry."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


@given(st.binary(max_size=2000))
def test_ones_sum_matches_reference(data: bytes) -> None:
    assert ones_sum(data) == reference_sum(data)


@given(st.binary(max_size=2000))
def test_checksum_matches_scapy(data: bytes) -> None:
    assert internet_checksum(data) == scapy_checksum(data)


def test_ones_complement_zero_is_kept_apart() -> None:
    # All-zero input sums to +0; other input congruent to 0 sums to -0 (0xFFFF).
    assert ones_sum(b"\0\0\0\0") == 0
    assert ones_sum(b"\xff\xff") == 0xFFFF
    assert ones_sum(b"\x80\x00\x7f\xff") == 0xFFFF
    assert internet_checksum(b"\xff\xff") == 0
    assert internet_checksum(b"") == 0xFFFF


def test_odd_length_is_padded_with_zero_on_the_right() -> None:
    assert ones_sum(b"\x12") == 0x1200
    assert ones_sum(b"\x12\x34\x56") == 0x1234 + 0x5600


def test_memoryview_and_bytearray_inputs() -> None:
    data = bytes(range(256)) * 3
    assert ones_sum(memoryview(data)[1:]) == reference_sum(data[1:])
    assert ones_sum(bytearray(data)) == reference_sum(data)


@given(st.binary(max_size=600), st.binary(max_size=600).map(lambda b: b[: len(b) // 2 * 2]))
def test_start_chains_sums(tail: bytes, head: bytes) -> None:
    assert ones_sum(tail, ones_sum(head)) == reference_sum(head + tail)


def test_pseudo_header_sum_matches_the_words() -> None:
    src, dst = IPv4Address("10.0.2.15"), IPv4Address("192.0.2.200")
    header = src.packed + dst.packed + bytes([0, 6]) + (1234).to_bytes(2, "big")
    assert ones_sum(b"", pseudo_header_sum(src, dst, 6, 1234)) == reference_sum(header)


@given(
    st.integers(0, 2**128 - 1).map(IPv6Address),
    st.integers(0, 2**128 - 1).map(IPv6Address),
    st.integers(0, 255),
    st.integers(0, 0xFFFFFFFF),
)
def test_ipv6_pseudo_header_sum_matches_the_words(
    src: IPv6Address, dst: IPv6Address, next_header: int, length: int
) -> None:
    # RFC 8200 §8.1: the addresses, a 32-bit length, three zero bytes and the next header.
    header = src.packed + dst.packed + length.to_bytes(4, "big") + bytes([0, 0, 0, next_header])
    assert ones_sum(b"", pseudo_header_sum(src, dst, next_header, length)) == reference_sum(header)


@pytest.mark.parametrize("size", [8191, 8192, 8193, 8194, 16385, 65535, 65536])
def test_large_buffers_cross_chunk_boundaries(size: int) -> None:
    data = random.Random(size).randbytes(size)
    assert ones_sum(data) == reference_sum(data)
    assert ones_sum(b"\xff" * size) == reference_sum(b"\xff" * size)
    assert ones_sum(bytes(size)) == 0


@given(st.lists(st.integers(0, 0xFFFFFFFF), max_size=600))
def test_fold_of_a_sum_of_fields_matches_the_words(fields: list[int]) -> None:
    """32-bit fields added whole fold to the sum of their 16-bit halves, as codecs use it."""
    words = b"".join(field.to_bytes(4, "big") for field in fields)
    assert fold(sum(fields)) == reference_sum(words)


def test_fold_keeps_ones_complement_zeros_apart() -> None:
    assert fold(0) == 0
    assert fold(0xFFFF) == fold(0x1FFFE) == fold(0xFFFF << 4096) == 0xFFFF
