"""Stream framing: chunking never changes the frames, bad lengths fail for good."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slirpnet.framing import QEMU_STREAM, VDE_STREAM, FrameFormat, FramingError
from slirpnet.wire.errors import IntegrityError

FORMATS = pytest.mark.parametrize("fmt", [QEMU_STREAM, VDE_STREAM], ids=lambda f: f.name)


def frames_for(fmt: FrameFormat, max_size: int = 1600) -> st.SearchStrategy[list[bytes]]:
    frame = st.binary(min_size=fmt.min_len, max_size=min(max_size, fmt.max_len))
    return st.lists(frame, max_size=20)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (taken modulo its length, sorted)."""
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def decode_chunks(fmt: FrameFormat, chunks: list[bytes]) -> list[bytes]:
    decoder = fmt.decoder()
    frames = [frame for chunk in chunks for frame in decoder.feed(chunk)]
    assert decoder.buffered == 0
    return frames


@st.composite
def format_frames_cuts(draw: st.DrawFn) -> tuple[FrameFormat, list[bytes], list[int]]:
    fmt = draw(st.sampled_from([QEMU_STREAM, VDE_STREAM]))
    return fmt, draw(frames_for(fmt)), draw(st.lists(st.integers(min_value=0), max_size=40))


@given(format_frames_cuts())
def test_chunking_does_not_change_the_frames(
    case: tuple[FrameFormat, list[bytes], list[int]],
) -> None:
    fmt, frames, cuts = case
    stream = fmt.encode_batch(frames)
    assert decode_chunks(fmt, [stream]) == frames
    assert decode_chunks(fmt, split(stream, cuts)) == frames


@FORMATS
def test_byte_by_byte(fmt: FrameFormat) -> None:
    frames = [bytes(range(14)), b"\xaa" * 1500, b"\x55" * 60]
    stream = fmt.encode_batch(frames)
    decoder = fmt.decoder()
    out: list[bytes] = []
    for i in range(len(stream)):
        out += decoder.feed(stream[i : i + 1])
        consumed = sum(fmt.prefix_size + len(frame) for frame in out)
        assert decoder.buffered == i + 1 - consumed
    assert out == frames
    assert decoder.buffered == 0


@FORMATS
def test_accepts_bytearray_and_memoryview(fmt: FrameFormat) -> None:
    stream = fmt.encode(b"x" * 20) + fmt.encode(b"y" * 30)
    decoder = fmt.decoder()
    assert decoder.feed(bytearray(stream[:10])) == []
    assert decoder.feed(memoryview(stream)[10:]) == [b"x" * 20, b"y" * 30]
    assert fmt.encode(memoryview(b"z" * 20)) == fmt.encode(b"z" * 20)


def test_partial_frame_is_buffered() -> None:
    stream = QEMU_STREAM.encode(b"\x01" * 65535)
    decoder = QEMU_STREAM.decoder()
    assert decoder.feed(stream[:3]) == []
    assert decoder.buffered == 3
    assert decoder.feed(stream[3:40000]) == []
    assert decoder.buffered == 40000
    assert decoder.feed(stream[40000:] + stream[:2]) == [b"\x01" * 65535]
    assert decoder.buffered == 2


def test_many_frames_in_one_chunk() -> None:
    frames = [i.to_bytes(2, "big") * 30 for i in range(5000)]
    assert decode_chunks(QEMU_STREAM, [QEMU_STREAM.encode_batch(frames)]) == frames


@pytest.mark.parametrize(
    ("fmt", "prefix"),
    [
        (QEMU_STREAM, (0).to_bytes(4, "big")),
        (QEMU_STREAM, (13).to_bytes(4, "big")),
        (QEMU_STREAM, (65536).to_bytes(4, "big")),
        (QEMU_STREAM, b"\xff\xff\xff\xff"),
        (VDE_STREAM, (9237).to_bytes(2, "big")),
        (VDE_STREAM, b"\xff\xff"),
    ],
    ids=["qemu-0", "qemu-13", "qemu-65536", "qemu-max", "vde-9237", "vde-max"],
)
def test_bad_length_fails_for_good(fmt: FrameFormat, prefix: bytes) -> None:
    decoder = fmt.decoder()
    good = fmt.encode(b"g" * 64)
    assert decoder.feed(good) == [b"g" * 64]
    with pytest.raises(FramingError) as caught:
        decoder.feed(prefix + b"\0" * 64)
    assert caught.value.reason == "framing_bad_length"
    assert isinstance(caught.value, IntegrityError)
    with pytest.raises(FramingError):
        decoder.feed(good)
    with pytest.raises(FramingError):
        decoder.feed(b"")


def test_bad_length_split_across_feeds() -> None:
    decoder = QEMU_STREAM.decoder()
    assert decoder.feed(b"\x00\x01") == []
    with pytest.raises(FramingError):
        decoder.feed(b"\x00\x00")


def test_vde_zero_lengths_are_skipped() -> None:
    zero = b"\x00\x00"
    stream = zero + VDE_STREAM.encode(b"a" * 20) + zero * 3 + VDE_STREAM.encode(b"b") + zero
    assert decode_chunks(VDE_STREAM, [stream]) == [b"a" * 20, b"b"]
    assert decode_chunks(VDE_STREAM, split(stream, list(range(len(stream))))) == [b"a" * 20, b"b"]


@pytest.mark.parametrize(
    ("fmt", "length"),
    [
        (QEMU_STREAM, 14),
        (QEMU_STREAM, 65535),
        (VDE_STREAM, 1),
        (VDE_STREAM, 13),
        (VDE_STREAM, 9236),
    ],
)
def test_boundary_lengths_are_accepted(fmt: FrameFormat, length: int) -> None:
    frame = bytes(i & 0xFF for i in range(length))
    stream = length.to_bytes(fmt.prefix_size, "big") + frame
    assert fmt.encode(frame) == stream
    assert decode_chunks(fmt, [stream]) == [frame]


@pytest.mark.parametrize(
    ("fmt", "length"),
    [(QEMU_STREAM, 13), (QEMU_STREAM, 65536), (VDE_STREAM, 0), (VDE_STREAM, 9237)],
)
def test_encoding_an_impossible_frame_is_our_bug(fmt: FrameFormat, length: int) -> None:
    with pytest.raises(ValueError, match=fmt.name):
        fmt.encode(b"\0" * length)
    with pytest.raises(ValueError, match=fmt.name):
        fmt.encode_batch([b"\0" * 20, b"\0" * length])


@given(
    st.sampled_from([QEMU_STREAM, VDE_STREAM]),
    st.lists(st.binary(max_size=300), max_size=20),
)
def test_garbage_raises_only_framing_error(fmt: FrameFormat, chunks: list[bytes]) -> None:
    decoder = fmt.decoder()
    failed = False
    for chunk in chunks:
        try:
            frames = decoder.feed(chunk)
        except FramingError:
            failed = True
            continue
        assert not failed, "a failed decoder must keep failing"
        assert all(fmt.min_len <= len(frame) <= fmt.max_len for frame in frames)


@given(format_frames_cuts())
def test_batch_equals_concatenated_single_encodes(
    case: tuple[FrameFormat, list[bytes], list[int]],
) -> None:
    fmt, frames, _ = case
    assert fmt.encode_batch(frames) == b"".join(fmt.encode(frame) for frame in frames)
    assert fmt.encode_batch(iter(frames)) == fmt.encode_batch(frames)


@FORMATS
def test_round_trip_of_many_frames(fmt: FrameFormat) -> None:
    sizes = [fmt.min_len, fmt.max_len, *range(fmt.min_len, fmt.min_len + 2000, 7)]
    frames = [bytes([n & 0xFF]) * n for n in sizes]
    stream = b"".join(fmt.encode(frame) for frame in frames)
    assert decode_chunks(fmt, split(stream, list(range(0, len(stream), 1013)))) == frames
