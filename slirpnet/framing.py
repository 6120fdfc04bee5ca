"""Length-prefixed Ethernet frames on a byte stream: incremental decoding and encoding, no I/O.

Two transports use this framing, differing only in their numbers:

- QEMU ``-netdev stream`` and ``-netdev socket`` over TCP or unix (QEMU ``net/stream.c``,
  ``net/socket.c``): a 4-byte big-endian length, then the frame.  QEMU itself refuses frames
  over 69,632 bytes; we apply passt's stricter limits (``tap.c``: below ``sizeof(struct
  ethhdr)`` = 14 or above ``L2_MAX_LEN_PASST`` = 65535 is an error that resets the connection).
- VDE stream (``vde_plug`` on stdin/stdout, as ``slirpvde`` uses it): a 2-byte big-endian
  length, then the frame.  vdeplug4 (``libvdestream.c``) skips a length of 0 and refuses one
  over ``MAXPACKET`` = ``VDE_ETHBUFSIZE`` + 2 = 9,236.  Short frames are passed up for the
  Ethernet parser to drop.

A bad length means we have lost the frame boundaries: the decoder raises ``FramingError`` and
stays failed, and the caller closes the connection.  There is no resynchronisation.
"""

from __future__ import annotations

from collections.abc import Iterable

from attrs import define, field, frozen

from slirpnet.wire.buffer import Bytes
from slirpnet.wire.errors import IntegrityError


class FramingError(IntegrityError):
    """The stream carries a length prefix outside the format's limits."""


@frozen
class FrameFormat:
    """One length-prefixed framing: prefix size and the frame lengths it accepts."""

    name: str
    prefix_size: int
    min_len: int
    max_len: int
    skip_zero: bool = False  # a zero length is an empty record, not an error

    def encode(self, frame: Bytes) -> bytes:
        """``frame`` with its length prefix; ``ValueError`` if the format cannot carry it."""
        return self._prefix(len(frame)) + frame

    def encode_batch(self, frames: Iterable[Bytes]) -> bytes:
        """Every frame prefixed, in one bytes object for a single socket write."""
        parts: list[Bytes] = []
        for frame in frames:
            parts.append(self._prefix(len(frame)))
            parts.append(frame)
        return b"".join(parts)

    def decoder(self) -> StreamDecoder:
        return StreamDecoder(self)

    def _prefix(self, length: int) -> bytes:
        if not self.min_len <= length <= self.max_len:
            raise ValueError(
                f"{self.name} cannot carry a {length}-byte frame "
                f"(limits {self.min_len}..{self.max_len})"
            )
        return length.to_bytes(self.prefix_size, "big")


QEMU_STREAM = FrameFormat("qemu", prefix_size=4, min_len=14, max_len=65535)
VDE_STREAM = FrameFormat("vde", prefix_size=2, min_len=1, max_len=9236, skip_zero=True)


@define
class StreamDecoder:
    """Feed it stream bytes in any chunks; it hands back each whole frame once."""

    format: FrameFormat
    _buf: bytearray = field(init=False, factory=bytearray)
    _error: FramingError | None = field(init=False, default=None)

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for the rest of a frame (or of its prefix)."""
        return len(self._buf)

    def feed(self, data: Bytes) -> list[bytes]:
        """The frames completed by ``data``, in order.

        Raises ``FramingError`` on a bad length, and again on every later call; frames
        decoded earlier in the same call are dropped with the connection.
        """
        if self._error is not None:
            raise FramingError(self._error.reason, f"decoder failed earlier: {self._error.detail}")
        fmt = self.format
        size = fmt.prefix_size
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        pos = 0
        end = len(buf)
        # The view must be released before ``buf`` is resized.
        with memoryview(buf) as view:
            while end - pos >= size:
                length = int.from_bytes(view[pos : pos + size], "big")
                start = pos + size
                if length == 0 and fmt.skip_zero:
                    pos = start
                    continue
                if not fmt.min_len <= length <= fmt.max_len:
                    self._error = FramingError(
                        "framing_bad_length",
                        f"{fmt.name} length {length} outside {fmt.min_len}..{fmt.max_len}",
                    )
                    break
                if end - start < length:
                    break
                pos = start + length
                frames.append(bytes(view[start:pos]))
        if self._error is not None:
            buf.clear()
            raise self._error
        del buf[:pos]
        return frames
