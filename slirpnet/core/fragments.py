"""IPv4 fragments: a guest's put back together, ours cut to the MTU (RFC 791 §3.2).  No I/O.

Theory of operation
-------------------
A guest at MTU 1500 sends a 4000-byte ping or UDP datagram as fragments, and a host
socket takes only whole datagrams, so ``Reassembly`` rebuilds them: per VM, keyed by
source, destination, protocol and identification (RFC 791 §3.2), each datagram's
fragments are kept as disjoint pieces sorted by offset.  Since any overlap gives the
datagram up, it is complete exactly when its last fragment (MF clear) has come and
the pieces add up to that fragment's end: no hole list (RFC 815) is needed.  The
whole datagram, with fragment zero's header, goes on through the normal path.

What a guest cannot make it do, each fragment refused counted under its reason in
the VM's ``stats.drops``:

- ``ipv4_frag_bad_length``: an empty fragment, or one with MF set whose length is
  not a multiple of 8 (RFC 791: offsets count 8-byte units).  Dropped alone.
- ``ipv4_frag_too_big``: one that ends past 65535 bytes, the largest datagram (the
  "ping of death").  Dropped alone.
- ``ipv4_frag_overlap``: one that overlaps a piece held.  Overlaps are how filters
  are evaded, never what a stack sends, so the whole datagram goes, and the
  fragments of it still to come with it (RFC 5722 §4, IPv6's rule, which Linux
  applies to IPv4 as well).  An exact repeat, a lossy link's duplicate, is dropped
  alone as ``ipv4_frag_duplicate`` (RFC 5722 erratum 3089).
- ``ipv4_frag_inconsistent``: a last fragment with another end than the last one
  held, or data past the end: the datagram goes, as for an overlap.
- ``ipv4_frag_limit``: a new datagram beyond ``MAX_DATAGRAMS`` in reassembly, or a
  fragment that would take the VM past ``MAX_BYTES`` (its datagram goes too).  New
  fragments are refused rather than old ones evicted, as Linux does past its
  threshold: a flood then harms the VM that floods, for at most the timeout.
- ``ipv4_frag_timeout``: a datagram still incomplete ``REASSEMBLY_TIMEOUT`` after its
  first fragment came, counted once (``expire``).  RFC 1122 §3.3.2: its source hears
  ICMP time exceeded if fragment zero came; ``expire`` hands that fragment back.

A datagram given up stays as a marker without data until its time runs out, so that
its later fragments are dropped under the same reason instead of starting over.

Toward the guest, ``split`` cuts a datagram longer than the MTU into fragments.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from ipaddress import IPv4Address
from typing import Final

from attrs import evolve

from slirpnet.core.timers import Deadlines
from slirpnet.core.vm import Vm
from slirpnet.wire.buffer import Bytes
from slirpnet.wire.ipv4 import IPv4Packet

# Fixed, not taken from the TTL (RFC 1122 §3.3.2).  RFC 791 suggested 15 s, RFC 1122
# recommends 60 to 120 s for a host reassembling across the Internet, Linux and libslirp
# wait 30 s.  slirpnet is one hop from the sender: a guest's stack sends the fragments of
# a datagram back to back over one virtual link, so they come within milliseconds or
# never, and a longer wait would only keep lost or hostile fragments (and a flooding VM
# refused) for longer.  So RFC 791's 15 s.
REASSEMBLY_TIMEOUT: Final = 15.0
# Per VM.  A guest's fragments arrive in order and complete at once, so a few
# datagrams in progress is the norm; 64 of them, or 1 MiB (sixteen of the largest),
# is far beyond it and still small beside a VM's 64 MiB of TCP buffers.
MAX_DATAGRAMS: Final = 64
MAX_BYTES: Final = 1 << 20
# What a fragment weighs besides its data (its bytes object and list entries), so
# that a flood of 8-byte fragments counts for what it costs.
FRAGMENT_COST: Final = 64
MAX_DATAGRAM: Final = 65535  # RFC 791 §3.1: the total length is 16 bits

BAD_LENGTH: Final = "ipv4_frag_bad_length"
TOO_BIG: Final = "ipv4_frag_too_big"
OVERLAP: Final = "ipv4_frag_overlap"
DUPLICATE: Final = "ipv4_frag_duplicate"
INCONSISTENT: Final = "ipv4_frag_inconsistent"
LIMIT: Final = "ipv4_frag_limit"
TIMEOUT: Final = "ipv4_frag_timeout"

Key = tuple[IPv4Address, IPv4Address, int, int]  # source, destination, protocol, ident


class _Datagram:
    """One datagram in reassembly: its pieces, disjoint and sorted by offset."""

    __slots__ = ("cost", "dead", "deadline", "first", "offsets", "pieces", "received", "total")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.offsets: list[int] = []
        self.pieces: list[bytes] = []
        self.received = 0  # bytes, the pieces' lengths summed
        self.total: int | None = None  # the payload's length, once the last fragment came
        self.first: IPv4Packet | None = None  # fragment zero, its payload a piece
        self.cost = 0  # charged to the VM's MAX_BYTES
        self.dead: str | None = None  # why it was given up

    def conflict(self, offset: int, end: int, last: bool) -> str | None:
        """Why a fragment of ``[offset, end)`` may not join the pieces, if it may not."""
        total, offsets = self.total, self.offsets
        if last:
            if total is not None and end != total:
                return INCONSISTENT
            if total is None and offsets and offsets[-1] + len(self.pieces[-1]) >= end:
                return INCONSISTENT  # data held at or past the end this one claims
        elif total is not None and end >= total:
            return INCONSISTENT  # MF set, yet it reaches the end
        index = bisect_left(offsets, offset)
        if index < len(offsets) and offsets[index] == offset:
            return DUPLICATE if len(self.pieces[index]) == end - offset else OVERLAP
        if index and offsets[index - 1] + len(self.pieces[index - 1]) > offset:
            return OVERLAP
        if index < len(offsets) and offsets[index] < end:
            return OVERLAP
        return None

    def insert(self, offset: int, data: bytes, last: bool) -> None:
        index = bisect_left(self.offsets, offset)
        self.offsets.insert(index, offset)
        self.pieces.insert(index, data)
        self.received += len(data)
        if last:
            self.total = offset + len(data)

    @property
    def complete(self) -> bool:
        return self.received == self.total


class _VmFragments:
    """A VM's datagrams in reassembly, oldest (so soonest due) first."""

    __slots__ = ("held", "pending", "scheduled", "vm")

    def __init__(self, vm: Vm) -> None:
        self.vm = vm
        self.pending: dict[Key, _Datagram] = {}
        self.held = 0  # bytes charged, of live datagrams
        self.scheduled = math.inf  # when its entry in the timer queue is due


class Reassembly:
    """Every VM's datagrams in reassembly on one segment, and when they expire."""

    def __init__(self) -> None:
        self._vms: dict[Vm, _VmFragments] = {}
        # At most one live entry per VM: deadlines only grow (each is its datagram's
        # arrival plus the timeout), so the earliest pending is the VM's next.
        self._timers: Deadlines[_VmFragments] = Deadlines()

    def add(self, vm: Vm, packet: IPv4Packet, now: float) -> IPv4Packet | None:
        """A fragment from ``vm``: the whole datagram when this one completes it, else
        None (held, or refused and counted)."""
        outcome = self._add(vm, packet, now)
        if isinstance(outcome, IPv4Packet):
            vm.stats.count("ipv4_reassembled")
            return outcome
        if outcome == LIMIT:
            why = f"over {MAX_DATAGRAMS} datagrams or {MAX_BYTES} bytes in reassembly"
            vm.refuse(LIMIT, now, why)
        elif outcome is not None:
            vm.drop(outcome)
        return None

    def _add(self, vm: Vm, packet: IPv4Packet, now: float) -> IPv4Packet | str | None:
        """The whole datagram, None while it is incomplete, or why the fragment is refused."""
        offset, size = packet.fragment_offset, len(packet.payload)
        end, last = offset + size, not packet.more_fragments
        if size == 0 or (not last and size % 8):
            return BAD_LENGTH
        if packet.header_len + end > MAX_DATAGRAM:
            return TOO_BIG
        queue = self._vms.get(vm)
        if queue is None:
            queue = self._vms[vm] = _VmFragments(vm)
        key = (packet.src, packet.dst, packet.protocol, packet.ident)
        cost = size + FRAGMENT_COST
        datagram = queue.pending.get(key)
        if datagram is None:
            if len(queue.pending) >= MAX_DATAGRAMS or queue.held + cost > MAX_BYTES:
                return LIMIT
            datagram = queue.pending[key] = _Datagram(now + REASSEMBLY_TIMEOUT)
            self._schedule(queue, datagram.deadline)
        elif datagram.dead is not None:
            return datagram.dead
        else:
            problem = datagram.conflict(offset, end, last)
            if problem is None and queue.held + cost > MAX_BYTES:
                problem = LIMIT
            if problem is not None:
                if problem != DUPLICATE:
                    _give_up(queue, datagram, problem)
                return problem
        data = bytes(packet.payload)  # a copy: a view would keep the whole frame alive
        if offset == 0:
            datagram.first = evolve(packet, payload=data)
        datagram.insert(offset, data, last)
        datagram.cost += cost
        queue.held += cost
        if not datagram.complete:
            return None
        del queue.pending[key]
        queue.held -= datagram.cost
        first = datagram.first
        assert first is not None  # the pieces cover [0, total)
        if first.header_len + datagram.received > MAX_DATAGRAM:
            return TOO_BIG  # fragment zero's options made it too long
        return evolve(first, payload=b"".join(datagram.pieces), more_fragments=False)

    def forget(self, vm: Vm) -> None:
        """``vm`` has left: its datagrams go with it."""
        self._vms.pop(vm, None)

    def held(self, vm: Vm) -> tuple[int, int]:
        """The datagrams ``vm`` has in reassembly (given up ones included) and the bytes
        charged for them."""
        queue = self._vms.get(vm)
        return (0, 0) if queue is None else (len(queue.pending), queue.held)

    def next_time(self) -> float | None:
        """When ``expire`` should next run (possibly early), or None."""
        return self._timers.next_time()

    def expire(self, now: float) -> list[tuple[Vm, IPv4Packet]]:
        """Give up the datagrams whose time has run out, counting each incomplete one;
        fragment zero of those that had it, for ICMP time exceeded (RFC 1122 §3.3.2)."""
        zeros: list[tuple[Vm, IPv4Packet]] = []
        for queue in self._timers.pop_due(now):
            queue.scheduled = math.inf
            if self._vms.get(queue.vm) is not queue:
                continue  # its VM has left
            pending = queue.pending
            while pending:
                key = next(iter(pending))
                datagram = pending[key]
                if datagram.deadline > now:
                    self._schedule(queue, datagram.deadline)
                    break
                del pending[key]
                if datagram.dead is None:
                    queue.held -= datagram.cost
                    queue.vm.drop(TIMEOUT)
                    if datagram.first is not None:
                        zeros.append((queue.vm, datagram.first))
        return zeros

    def _schedule(self, queue: _VmFragments, deadline: float) -> None:
        if deadline < queue.scheduled:
            queue.scheduled = deadline
            self._timers.push(deadline, queue)


def _give_up(queue: _VmFragments, datagram: _Datagram, reason: str) -> None:
    """Keep ``datagram`` as a marker only: its data freed, its later fragments dropped."""
    queue.held -= datagram.cost
    datagram.dead = reason
    datagram.cost = 0
    datagram.offsets, datagram.pieces, datagram.first = [], [], None


def split(packet: IPv4Packet, mtu: int) -> list[tuple[bytes, Bytes]]:
    """``packet`` as (header, data) pairs of at most ``mtu`` bytes each (RFC 791 §3.2):
    itself when it fits, else fragments of 8-byte multiples, the header copied, MF set
    on all but the last.

    slirpnet originates every datagram it sends a guest (replies read from host
    sockets, its own echo replies and errors), with DF clear, so it fragments them
    itself.  It never forwards a guest's datagram onto a smaller MTU (the other side
    is a host socket, whose kernel finds its own path MTU), so RFC 1191's
    fragmentation needed has no case here: no datagram is ever too big with DF set.
    """
    header_len, payload = packet.header_len, packet.payload
    if header_len + len(payload) <= mtu:
        return [(packet.encode_header(), payload)]
    if packet.options:
        raise ValueError("slirpnet's own datagrams carry no options to copy or not")
    step = (mtu - header_len) // 8 * 8
    view = memoryview(payload)
    pieces: list[tuple[bytes, Bytes]] = []
    for offset in range(0, len(view), step):
        data = view[offset : offset + step]
        more = offset + step < len(view) or packet.more_fragments
        fragment = evolve(
            packet,
            payload=data,
            more_fragments=more,
            fragment_offset=packet.fragment_offset + offset,
        )
        pieces.append((fragment.encode_header(), data))
    return pieces
