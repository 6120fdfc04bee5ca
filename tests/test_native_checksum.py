"""``_native.ones_sum`` against its twin, ``slirpnet.wire.checksum.ones_sum``."""

from __future__ import annotations

import random

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from slirpnet.wire.checksum import ones_sum
from tests.test_wire_checksum import reference_sum

native = pytest.importorskip("slirpnet._native", reason="slirpnet._native is not built")

LENGTHS = st.one_of(st.integers(0, 70), st.integers(0, 65535))
STARTS = st.one_of(
    st.integers(0, 0xFFFF),
    st.integers(0, 2**64 + 0xFFFF),
    st.integers(0, 2**504),  # header fields with 40 option bytes, summed as one int
    st.sampled_from([0xFFFF, 0x10000, 2**32 - 1, 2**63, 2**64 - 1, 2**64, 0xFFFF * 2**70]),
)


def buffer_of(data: bytes, kind: str, offset: int) -> bytes | bytearray | memoryview:
    if kind == "bytearray":
        return bytearray(data)
    if kind == "memoryview":
        return memoryview(bytes(offset) + data + b"\xff")[offset : offset + len(data)]
    return data


@given(
    LENGTHS,
    st.integers(0, 2**32),
    STARTS,
    st.sampled_from(["bytes", "bytearray", "memoryview"]),
    st.integers(0, 7),
)
@example(0, 0, 0, "bytes", 0)
@example(65535, 1, 2**64, "memoryview", 3)
def test_ones_sum_matches_its_twin(
    length: int, seed: int, start: int, kind: str, offset: int
) -> None:
    data = random.Random(seed).randbytes(length)
    buffer = buffer_of(data, kind, offset)
    assert native.ones_sum(buffer, start) == ones_sum(data, start)
    assert native.ones_sum(data=buffer, start=start) == ones_sum(data, start)


@given(st.binary(max_size=300))
def test_ones_sum_matches_rfc1071_word_by_word(data: bytes) -> None:
    assert native.ones_sum(data) == reference_sum(data)


def test_ones_complement_zero() -> None:
    # +0 only for all-zero input and start; anything else congruent to 0 is -0.
    assert native.ones_sum(bytes(9)) == 0
    assert native.ones_sum(b"") == 0
    assert native.ones_sum(b"", 0xFFFF) == 0xFFFF
    assert native.ones_sum(b"\xff\xff") == 0xFFFF
    assert native.ones_sum(bytes(8), 0xFFFF * 2**70) == 0xFFFF
    assert native.ones_sum(b"\x01") == 0x100  # an odd last byte is a high half
    assert native.ones_sum(b"\xff", 0xFF) == 0xFFFF


@pytest.mark.parametrize("length", [1, 7, 8, 9, 31, 32, 33, 1447, 1448])
def test_every_tail_length(length: int) -> None:
    data = bytes(i % 251 + 1 for i in range(length))
    for cut in range(min(length, 9)):
        assert native.ones_sum(data[cut:]) == reference_sum(data[cut:])


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="negative"):
        native.ones_sum(b"ab", -1)
    with pytest.raises(ValueError, match="negative"):
        native.ones_sum(b"ab", -(2**80))
    with pytest.raises(TypeError):
        native.ones_sum(b"ab", 1.0)
    with pytest.raises(TypeError):
        native.ones_sum("text")
    with pytest.raises(BufferError):  # a strided view is not one run of bytes
        native.ones_sum(memoryview(b"abcdef")[::2])
    with pytest.raises(TypeError):
        native.ones_sum(b"ab", 1, 2)
    with pytest.raises(TypeError):
        native.ones_sum(b"ab", begin=1)
    with pytest.raises(TypeError):
        native.ones_sum(b"ab", data=b"cd")
    with pytest.raises(TypeError):
        native.ones_sum()
