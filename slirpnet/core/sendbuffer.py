"""The host data a TCP flow holds for the guest, from SND.UNA on, until it is ACKed.  No I/O.

A contiguous bytearray copies what it holds whenever an append outgrows it
(CPython moves the data to a fresh block once bytes were deleted from its front),
so a flow holding 1 MiB for a slow guest copied up to 1 MiB for every read from
the host.  Here the host's reads are kept as they came, in order: an append
copies nothing, an ACK drops whole chunks from the front, and a segment is a
memoryview of the chunk it lies in (a copy only when it straddles two).  A plain
list holds the chunks (an idle flow's buffer weighs about a hundred bytes, where a
deque would be seven hundred), and a hint remembers where the last segment came
from: segments are taken in order, so finding the next one walks at most a chunk
or two, however many chunks 1 MiB of small reads made.

Small reads (below ``MERGE``) collect in a bytearray at the end, which becomes
an ordinary chunk once it holds ``MERGE`` bytes: a trickle of tiny reads neither
makes thousands of chunks to walk nor copies more than once.  A segment taken
from that open chunk is a copy, so no view ever pins a buffer that still grows.
"""

from __future__ import annotations

from itertools import islice
from typing import Final

from slirpnet.wire.buffer import Bytes

MERGE: Final = 1 << 14


class SendBuffer:
    __slots__ = ("_chunks", "_hint_at", "_hint_index", "_origin", "_size", "_start")

    def __init__(self) -> None:
        self._chunks: list[bytes | bytearray] = []  # only the last may be a bytearray
        self._start = 0  # bytes of the first chunk already acknowledged
        self._size = 0
        # Positions count every byte ever appended: the first chunk's first byte is at
        # ``_origin``; the last segment came from chunk ``_hint_index``, at ``_hint_at``.
        self._origin = self._hint_index = self._hint_at = 0

    def __len__(self) -> int:
        return self._size

    def append(self, data: bytes) -> None:
        """Host data, after what is held."""
        if not data:
            return
        chunks = self._chunks
        last = chunks[-1] if chunks else None
        if isinstance(last, bytearray):
            last += data
            if len(last) >= MERGE:
                chunks[-1] = bytes(last)  # full: an ordinary chunk from now on
        elif len(data) < MERGE:
            chunks.append(bytearray(data))
        else:
            chunks.append(data)
        self._size += len(data)

    def drop(self, count: int) -> None:
        """Forget the first ``count`` bytes (the guest acknowledged them)."""
        count = min(count, self._size)
        self._size -= count
        chunks = self._chunks
        start = self._start + count
        done = 0
        while done < len(chunks) and start >= len(chunks[done]):
            start -= len(chunks[done])
            self._origin += len(chunks[done])
            done += 1
        del chunks[:done]
        self._start = start
        self._hint_index -= done
        if self._hint_index < 0:
            self._hint_index, self._hint_at = 0, self._origin

    def clear(self) -> None:
        self._chunks.clear()
        self._origin += self._start + self._size
        self._start = self._size = 0
        self._hint_index, self._hint_at = 0, self._origin

    def span(self, offset: int) -> int:
        """Bytes held from ``offset`` to the end of the chunk it lies in: as much as one
        ``get`` gives as a view of a host read, without a copy."""
        index, position = self._locate(offset)
        if index == len(self._chunks):
            return 0
        return len(self._chunks[index]) - position

    def get(self, offset: int, size: int) -> bytes | memoryview:
        """``size`` bytes from ``offset`` on (both within what is held)."""
        index, position = self._locate(offset)
        chunks = self._chunks
        if index == len(chunks):
            return b""
        chunk = chunks[index]
        end = position + size
        if end <= len(chunk):
            if isinstance(chunk, bytearray):
                with memoryview(chunk) as view:
                    return bytes(view[position:end])
            return memoryview(chunk)[position:end]
        return self._gather(index, position, size)

    def _locate(self, offset: int) -> tuple[int, int]:
        """The chunk the byte at ``offset`` lies in, and where in it (past the last
        chunk when nothing is held there); the hint moves to it."""
        chunks = self._chunks
        wanted = self._origin + self._start + offset
        index, at = self._hint_index, self._hint_at
        if at > wanted:  # behind the hint (a retransmission): from the front
            index, at = 0, self._origin
        while index < len(chunks) and wanted - at >= len(chunks[index]):
            at += len(chunks[index])
            index += 1
        if index < len(chunks):
            self._hint_index, self._hint_at = index, at
        return index, wanted - at

    def _gather(self, index: int, position: int, size: int) -> bytes:
        """A segment that straddles chunks, from ``position`` into chunk ``index``: the
        one copy is the join's (the open bytearray's part is copied first: no view of it
        may outlive this call)."""
        parts: list[Bytes] = []
        for chunk in islice(self._chunks, index, None):
            if isinstance(chunk, bytearray):
                with memoryview(chunk) as view:
                    part: Bytes = bytes(view[position : position + size])
            else:
                part = memoryview(chunk)[position : position + size]
            parts.append(part)
            size -= len(part)
            position = 0
            if not size:
                break
        return b"".join(parts)
