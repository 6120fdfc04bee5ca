"""A TCP receiver's out-of-order data, held until the gap before it fills.

RFC 9293 §3.10.7.4 lets a receiver keep segments that arrive beyond RCV.NXT
inside its window, so that a loss costs one retransmission and not the whole
window.  They are kept here as sorted runs that neither overlap nor touch (a
byte already held wins over a retransmission's copy of it), each a list of the
segments' payloads so that joining them costs nothing until they are handed on.

The window bounds the bytes held; ``MAX_RUNS`` bounds the bookkeeping, so that
a guest scattering one-byte segments across its window cannot make us keep an
object per byte.  Data that would need another run is dropped, as if lost: the
guest sends it again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from slirpnet.core.sequence import seq_add, seq_diff

MAX_RUNS: Final = 64  # FreeBSD keeps at most 100 segments per connection (net.inet.tcp.reass)


@dataclass
class _Run:
    seq: int
    length: int
    chunks: list[bytes]


@dataclass
class Reassembly:
    _runs: list[_Run] = field(default_factory=list)  # in sequence order beyond RCV.NXT
    held: int = 0  # bytes, overlaps counted once

    def __len__(self) -> int:
        """How many runs (separate stretches of data) are held."""
        return len(self._runs)

    def blocks(self, base: int) -> list[tuple[int, int]]:
        """The held stretches as (start, end) offsets from ``base``."""
        return [(seq_diff(r.seq, base), seq_diff(r.seq, base) + r.length) for r in self._runs]

    def add(self, seq: int, data: bytes, base: int) -> None:
        """Keep ``data``, which starts at ``seq`` beyond ``base`` (RCV.NXT)."""
        start = seq_diff(seq, base)
        end = start + len(data)
        position = start
        for run in list(self._runs):
            run_start = seq_diff(run.seq, base)
            run_end = run_start + run.length
            if run_end <= position:
                continue
            if run_start >= end:
                break
            if run_start > position:
                self._insert(position, data[position - start : run_start - start], base)
            position = max(position, run_end)
        if position < end:
            self._insert(position, data[position - start :], base)

    def _insert(self, offset: int, data: bytes, base: int) -> None:
        """Place bytes that overlap nothing held, joining the runs they touch."""
        runs = self._runs
        index = 0
        while index < len(runs) and seq_diff(runs[index].seq, base) < offset:
            index += 1
        before = runs[index - 1] if index > 0 else None
        after = runs[index] if index < len(runs) else None
        end = offset + len(data)
        joins_before = before is not None and seq_diff(before.seq, base) + before.length == offset
        joins_after = after is not None and seq_diff(after.seq, base) == end
        if before is not None and joins_before:
            before.chunks.append(data)
            before.length += len(data)
            if after is not None and joins_after:
                before.chunks.extend(after.chunks)
                before.length += after.length
                del runs[index]
        elif after is not None and joins_after:
            after.chunks.insert(0, data)
            after.seq = seq_add(base, offset)
            after.length += len(data)
        elif len(runs) < MAX_RUNS:
            runs.insert(index, _Run(seq_add(base, offset), len(data), [data]))
        else:
            return
        self.held += len(data)

    def pop(self, base: int) -> list[bytes]:
        """The data that continues from ``base`` (RCV.NXT) on, taken out; [] if none.

        Runs that ``base`` has passed are dropped, and a run it reaches into is cut.
        """
        runs = self._runs
        while runs:
            run = runs[0]
            behind = -seq_diff(run.seq, base)  # bytes of the run before base
            if behind < 0:
                return []
            del runs[0]
            self.held -= run.length
            if behind < run.length:
                return _cut(run.chunks, behind)
        return []

    def clear(self) -> None:
        self._runs.clear()
        self.held = 0


def _cut(chunks: list[bytes], count: int) -> list[bytes]:
    """``chunks`` without their first ``count`` bytes."""
    while count:
        first = chunks[0]
        if len(first) > count:
            chunks[0] = first[count:]
            break
        count -= len(first)
        del chunks[0]
    return chunks
