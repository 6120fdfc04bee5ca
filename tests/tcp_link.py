"""A guest and our endpoint, joined by a lossy virtual link, on a fake clock.

``Transfer`` plays all three parts around a ``TcpEndpoint``: the guest (a
``GuestTcp``), the link (a seeded random generator drops, duplicates and delays
segments, which reorders them), and the shell's host socket, which reads host
data only while ``read_allowance`` says so (and waits for ``RESUME`` once it
said 0), and writes the guest's bytes at ``write_rate`` per tick.  It checks
as it goes what must hold at every moment, and ``run`` returns once both ends
are done, or fails.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import deque

from slirpnet.core import tcp as tcp_module
from slirpnet.core.tcp import HostOp, SegmentRun, TcpEndpoint
from slirpnet.wire import tcp
from slirpnet.wire.tcp import TcpSegment
from tests.tcp_guest import GuestTcp, diff

TICK = 0.001  # the host socket's pace, and the link's one-way delay


def segments_of(ep: TcpEndpoint) -> list[TcpSegment]:
    """What ``ep`` produced, each run cut into the segments its frames carry."""
    return [
        part
        for seg in ep.segments
        for part in (seg.split() if isinstance(seg, SegmentRun) else [seg])
    ]


class Link:
    """Both directions of the wire: segments arrive after a delay, or twice, or never."""

    def __init__(
        self, rng: random.Random, *, loss: float = 0.0, duplicate: float = 0.0, reorder: float = 0.0
    ) -> None:
        self.rng = rng
        self.loss, self.duplicate, self.reorder = loss, duplicate, reorder
        self._queue: list[tuple[float, int, bool, TcpSegment]] = []
        self._order = itertools.count()
        self.dropped = 0

    def send(self, seg: TcpSegment, now: float, *, to_guest: bool) -> None:
        rng = self.rng
        if rng.random() < self.loss:
            self.dropped += 1
            return
        for _ in range(2 if rng.random() < self.duplicate else 1):
            delay = TICK * (1 + (rng.random() * 20 if rng.random() < self.reorder else 0))
            heapq.heappush(self._queue, (now + delay, next(self._order), to_guest, seg))

    def next_time(self) -> float | None:
        return self._queue[0][0] if self._queue else None

    def due(self, now: float) -> list[tuple[bool, TcpSegment]]:
        out = []
        while self._queue and self._queue[0][0] <= now:
            _, _, to_guest, seg = heapq.heappop(self._queue)
            out.append((to_guest, seg))
        return out


class Transfer:
    def __init__(
        self,
        *,
        guest: GuestTcp,
        link: Link,
        upload: bytes = b"",  # guest to host
        download: bytes = b"",  # host to guest
        write_rate: int | None = None,  # bytes the host socket takes per tick
        read_chunk: int = 1 << 18,  # the shell's largest read
        iss: int | None = None,
        our_mss: int = 1460,
        guest_closes: bool = True,
        host_closes: bool = True,
    ) -> None:
        self.guest, self.link = guest, link
        self.upload, self.download = upload, download
        self.write_rate, self.read_chunk = write_rate, read_chunk
        self.iss, self.our_mss = iss, our_mss
        self.guest_closes, self.host_closes = guest_closes, host_closes
        self.now = 0.0
        self.endpoint: TcpEndpoint | None = None
        # The host socket.
        self.read = 0  # bytes of ``download`` handed to the endpoint
        self.reading = True  # False after read_allowance said 0, until RESUME
        self.eof_given = False
        self.queued: deque[bytes] = deque()  # the guest's bytes the socket has not taken
        self.written = bytearray()
        self.shutdown = False
        self.host_closed: HostOp | None = None
        self.guest_sent = False

    @property
    def ep(self) -> TcpEndpoint:
        assert self.endpoint is not None
        return self.endpoint

    def run(self, limit: float = 600.0) -> None:
        guest = self.guest
        guest.connect(self.now)
        self._move()
        while not self._finished():
            assert self.now < limit, self._status()
            self.now = self._next_time()
            for to_guest, seg in self.link.due(self.now):
                if to_guest:
                    guest.receive(seg, self.now)
                elif self.endpoint is None:
                    self._syn(seg)
                else:
                    self.ep.segment_received(seg, self.now)
            if self.endpoint is not None and self.now >= self.ep.deadline():
                self.ep.handle_timer(self.now)
            deadline = guest.deadline()
            if deadline is not None and self.now >= deadline:
                guest.handle_timer(self.now)
            self._host()
            self._guest_app()
            self._move()

    def _finished(self) -> bool:
        return (
            self.endpoint is not None
            and self.ep.closed
            and (self.guest.done or not self.guest_closes)
            and not self.link.next_time()
        )

    def _status(self) -> str:
        ep = self.endpoint
        return (
            f"stuck at {self.now:.3f}: endpoint {ep and ep.state}, guest {self.guest.state}, "
            f"uploaded {len(self.written)}/{len(self.upload)}, "
            f"downloaded {len(self.guest.received)}/{len(self.download)}"
        )

    def _next_time(self) -> float:
        times = [t for t in (self.link.next_time(), self.guest.deadline()) if t is not None]
        if self.endpoint is not None and not self.ep.closed:
            # A closed endpoint is forgotten (as the segment forgets its flow): its last
            # deadline, past by now, would hold the clock still for ever.
            times.append(self.ep.deadline())
        if self._host_busy():
            times.append(self.now + TICK)
        return max(min(times), self.now)

    def _host_busy(self) -> bool:
        reading = self.reading and not self.eof_given and self.endpoint is not None
        return bool(self.queued) or reading or bool(self.guest.unread)

    def _syn(self, seg: TcpSegment) -> None:
        if seg.flags & (tcp.SYN | tcp.ACK) != tcp.SYN:
            return
        self.endpoint = TcpEndpoint.from_syn(seg, self.our_mss, self.now, iss=self.iss)
        self.ep.host_connected(self.now)

    def _host(self) -> None:
        if self.endpoint is None or self.host_closed is not None:
            return
        ep = self.ep
        if self.reading and not self.eof_given:
            allowance = ep.read_allowance
            if allowance == 0:
                self.reading = False
            elif self.read < len(self.download):
                chunk = self.download[self.read : self.read + min(allowance, self.read_chunk)]
                self.read += len(chunk)
                ep.host_data(chunk, self.now)
            elif self.host_closes:
                self.eof_given = True
                ep.host_eof(self.now)
        take = sum(map(len, self.queued)) if self.write_rate is None else self.write_rate
        taken = 0
        while self.queued and taken < take:
            chunk = self.queued.popleft()
            part = chunk[: take - taken]
            if len(part) < len(chunk):
                self.queued.appendleft(chunk[len(part) :])
            self.written += part
            taken += len(part)
        if taken:
            ep.host_written(taken, self.now)

    def _guest_app(self) -> None:
        guest = self.guest
        if guest.state == "established" and not self.guest_sent:
            self.guest_sent = True
            guest.send(self.upload, self.now)
        guest.app_read()
        if (
            self.guest_closes
            and self.guest_sent
            and not guest.closing
            and len(guest.received) == len(self.download)
        ):
            guest.close(self.now)

    def _move(self) -> None:
        """Carry what both ends produced: segments onto the link, host ops to the socket."""
        for seg in self.guest.out:
            self.link.send(seg, self.now, to_guest=False)
        self.guest.out.clear()
        if self.endpoint is None:
            return
        ep = self.ep
        for seg in segments_of(ep):
            self._guest_window_respected(seg)
            self.link.send(seg, self.now, to_guest=True)
        ep.segments.clear()
        for op in ep.host_ops:
            assert self.host_closed is None, f"{op!r} after {self.host_closed}"
            if isinstance(op, bytes | memoryview):
                assert not self.shutdown, "data after the shutdown"
                self.queued.append(op)
            elif op is HostOp.SHUTDOWN:
                assert not self.shutdown
                self.shutdown = True
            elif op is HostOp.RESUME:
                self.reading = True
            else:
                if op is HostOp.CLOSE:
                    assert not self.queued, "closed before the host took every byte"
                self.host_closed = op
        ep.host_ops.clear()
        self._bounded()

    def _guest_window_respected(self, seg: TcpSegment) -> None:
        """No byte beyond the right edge of any window the guest ever offered."""
        if seg.payload and not seg.flags & tcp.SYN:
            end = (seg.seq + len(seg.payload)) % (1 << 32)
            assert diff(end, self.guest.rcv_adv) <= 0, "sent beyond the guest's window"

    def _bounded(self) -> None:
        ep = self.ep
        assert len(ep.send_buffer) <= tcp_module.SEND_BUFFER
        assert ep.to_host_pending <= tcp_module.RECEIVE_BUFFER
        assert ep.reassembly.held <= tcp_module.RECEIVE_BUFFER
