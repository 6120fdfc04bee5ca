"""The stream decoders against a model: lying, zero, short and oversized length prefixes,
in any chunking.  The outcome is exactly the model's frames or a ``FramingError``,
never anything else, and a decoder that failed keeps failing.

The model reads the whole stream at once, the plain way; the decoder under test is
incremental, so any disagreement is a chunking bug.  ``test_framing.py`` has the
unit tests of each rule.
"""

from __future__ import annotations

import itertools

import pytest
from attrs import frozen
from hypothesis import given, settings
from hypothesis import strategies as st

from slirpnet.framing import QEMU_STREAM, VDE_STREAM, FrameFormat, FramingError

FORMATS = {"qemu": QEMU_STREAM, "vde": VDE_STREAM}
# Lengths at and around every limit either format has, and past the 16-bit field.
LENGTHS = [0, 1, 2, 13, 14, 15, 60, 1514, 9236, 9237, 65535, 65536, 0x7FFFFFFF, 0xFFFFFFFF]


@frozen
class Expected:
    frames: list[tuple[int, bytes]]  # each frame, with the stream offset where it ends
    error_at: int | None  # the offset where a bad prefix is complete
    buffered: int  # bytes held back at the end, with no error


def model(fmt: FrameFormat, stream: bytes) -> Expected:
    frames = []
    pos = 0
    while len(stream) - pos >= fmt.prefix_size:
        start = pos + fmt.prefix_size
        length = int.from_bytes(stream[pos:start], "big")
        if length == 0 and fmt.skip_zero:
            pos = start
        elif not fmt.min_len <= length <= fmt.max_len:
            return Expected(frames, start, 0)
        elif len(stream) - start < length:
            break
        else:
            pos = start + length
            frames.append((pos, stream[start:pos]))
    return Expected(frames, None, len(stream) - pos)


@st.composite
def streams(draw: st.DrawFn, fmt: FrameFormat) -> bytes:
    """Records with honest and dishonest prefixes, and raw junk, end to end."""
    parts = []
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["frame", "frame", "prefix", "lying", "junk"]))
        if kind == "frame":
            length = draw(st.sampled_from([fmt.min_len, fmt.max_len]) | st.integers(1, 1600))
            parts.append(_prefix(fmt, length) + bytes([length & 0xFF]) * length)
        elif kind == "prefix":  # a bare prefix of any length: zero, short, oversized
            parts.append(_prefix(fmt, draw(st.sampled_from(LENGTHS))))
        elif kind == "lying":  # a prefix that claims more than follows
            length = draw(st.integers(2, fmt.max_len))
            parts.append(_prefix(fmt, length) + bytes(draw(st.integers(0, min(length - 1, 200)))))
        else:
            parts.append(draw(st.binary(max_size=12)))
    return b"".join(parts)


def _prefix(fmt: FrameFormat, length: int) -> bytes:
    return (length % (1 << (8 * fmt.prefix_size))).to_bytes(fmt.prefix_size, "big")


def _chunks(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    return [stream[a:b] for a, b in itertools.pairwise(points)] or [b""]


@pytest.mark.parametrize("name", sorted(FORMATS))
@settings(max_examples=300)
@given(data=st.data(), cuts=st.lists(st.integers(min_value=0), max_size=30))
def test_decoder_agrees_with_the_model(name: str, data: st.DataObject, cuts: list[int]) -> None:
    fmt = FORMATS[name]
    stream = data.draw(streams(fmt), "stream")
    expected = model(fmt, stream)
    decoder = fmt.decoder()
    frames: list[bytes] = []
    offset = 0
    failed: tuple[int, int] | None = None  # the failing call's chunk, as stream offsets
    for chunk in [*_chunks(stream, cuts), b""]:
        if failed is not None:
            with pytest.raises(FramingError):
                decoder.feed(chunk)
            continue
        try:
            got = decoder.feed(chunk)
        except FramingError as error:
            assert error.reason == "framing_bad_length"
            failed = (offset, offset + len(chunk))
        else:
            assert all(type(frame) is bytes for frame in got)
            frames += got
        offset += len(chunk)
    if expected.error_at is None:
        assert failed is None
        assert frames == [frame for _, frame in expected.frames]
        assert decoder.buffered == expected.buffered
    else:
        # It fails in the call that completes the bad prefix, and the frames completed
        # in that same call go down with the connection.
        assert failed is not None
        start, end = failed
        assert start < expected.error_at <= end
        assert frames == [frame for stop, frame in expected.frames if stop <= start]
