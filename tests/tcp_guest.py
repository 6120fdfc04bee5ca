"""A guest's TCP for the tests: simple, but correct, and written apart from the core's.

It opens a connection, sends its data inside the peer's window (go-back-N on a
timeout, one retransmission on the third duplicate ACK, a one-byte probe of a
zero window), receives in order while keeping out-of-order segments, ACKs every
segment at once, and closes with a FIN after its data.  Its application reads
``read_rate`` bytes per ``app_read`` (everything if None), so the window it
advertises is the room really left in ``buffer``.  Its sequence arithmetic is
its own, so that a mistake in ``slirpnet.core.sequence`` cannot hide in both ends.
"""

from __future__ import annotations

import heapq

from slirpnet.wire import tcp
from slirpnet.wire.tcp import TcpOptions, TcpSegment

M = 1 << 32


def diff(a: int, b: int) -> int:
    """a - b modulo 2**32, as a signed distance."""
    d = (a - b) % M
    return d - M if d >= M // 2 else d


class GuestTcp:
    def __init__(
        self,
        *,
        isn: int,
        mss: int = 1460,
        wscale: int | None = 7,
        buffer: int = 1 << 20,
        read_rate: int | None = None,
        port: int = 40000,
        dst_port: int = 80,
        rto: float = 0.2,
    ) -> None:
        self.isn, self.mss, self.wscale, self.buffer = isn, mss, wscale, buffer
        self.read_rate = read_rate
        self.port, self.dst_port = port, dst_port
        self.state = "closed"
        # Sending: ``outgoing`` starts at SND.UNA; the FIN follows it once ``closing``.
        self.snd_una = self.snd_nxt = self.snd_max = isn
        self.outgoing = bytearray()
        self.closing = False
        self.fin_acked = False
        self.snd_wnd = 0
        self.snd_wl1 = self.snd_wl2 = 0  # the segment the window came from (RFC 9293)
        self.send_mss = 536
        self.peer_shift = 0
        self.base_rto = self.rto = rto
        self.retransmit_at: float | None = None
        self.persist_at: float | None = None
        self.dupacks = 0
        # Receiving.
        self.my_shift = 0
        self.rcv_nxt = self.rcv_adv = 0  # RCV.ADV: the furthest right edge offered
        self.rcv_pos = 0  # RCV.NXT as a position in the stream, not wrapped
        self.held: list[tuple[int, bytes, bool]] = []  # heap of (position, data, FIN)
        self.unread = bytearray()
        self.received = bytearray()  # what the application has read
        self.peer_fin = False
        self.out: list[TcpSegment] = []

    # -- the application -------------------------------------------------------------

    def connect(self, now: float) -> None:
        self.state = "syn-sent"
        self._syn()
        self.snd_nxt = self.snd_max = (self.isn + 1) % M
        self.retransmit_at = now + self.rto

    def send(self, data: bytes, now: float) -> None:
        assert not self.closing
        self.outgoing += data
        self._transmit(now)

    def close(self, now: float) -> None:
        self.closing = True
        self._transmit(now)

    def app_read(self) -> None:
        """The application reads; a window update follows if the window was nearly shut."""
        count = len(self.unread) if self.read_rate is None else self.read_rate
        taken = bytes(self.unread[:count])
        if not taken:
            return
        before = diff(self.rcv_adv, self.rcv_nxt)
        del self.unread[: len(taken)]
        self.received += taken
        step = min(self.buffer // 2, self.mss)  # RFC 9293 §3.8.6.2.2
        if self.state == "established" and before < step <= self._room():
            self._ack()

    @property
    def done(self) -> bool:
        return self.peer_fin and self.fin_acked and not self.unread

    def deadline(self) -> float | None:
        times = [t for t in (self.retransmit_at, self.persist_at) if t is not None]
        return min(times) if times else None

    # -- segments from the peer ------------------------------------------------------

    def receive(self, seg: TcpSegment, now: float) -> None:
        if self.state == "syn-sent":
            self._syn_sent(seg, now)
            return
        if self.state != "established":
            return
        start = diff(seg.seq, self.rcv_nxt)
        if seg.flags & tcp.RST:
            if start == 0:
                self.state = "reset"
            return
        length = len(seg.payload) + (1 if seg.flags & tcp.FIN else 0)
        window = max(self._room(), diff(self.rcv_adv, self.rcv_nxt))
        if length == 0:
            acceptable = start == 0 if window <= 0 else 0 <= start < window
        else:
            acceptable = window > 0 and (0 <= start < window or 0 <= start + length - 1 < window)
        if not acceptable:
            if window <= 0 and seg.flags & tcp.ACK:
                self._take_ack(seg, now)  # a zero window still takes ACKs
            self._ack()
            self._transmit(now)
            return
        if seg.flags & tcp.ACK:
            self._take_ack(seg, now)
        if length:
            self._take_data(seg, start)
            self._ack()
        self._transmit(now)

    def _syn_sent(self, seg: TcpSegment, now: float) -> None:
        if seg.ack != (self.isn + 1) % M:
            return
        if seg.flags & tcp.RST:
            self.state = "reset"
            return
        if seg.flags & (tcp.SYN | tcp.ACK) != tcp.SYN | tcp.ACK:
            return
        self.state = "established"
        self.snd_una = seg.ack
        self.rcv_nxt = (seg.seq + 1) % M
        self.rcv_adv = (self.rcv_nxt + min(self._room(), 0xFFFF)) % M  # our SYN's window
        scale = seg.options.window_scale
        if self.wscale is not None and scale is not None:
            self.peer_shift, self.my_shift = scale, self.wscale
        self.send_mss = min(seg.options.mss or 536, self.mss)
        self.snd_wnd = seg.window  # never scaled in a SYN
        self.snd_wl1, self.snd_wl2 = seg.seq, seg.ack
        self.retransmit_at = None
        self.rto = self.base_rto
        self._ack()
        self._transmit(now)

    def _take_ack(self, seg: TcpSegment, now: float) -> None:
        acked = diff(seg.ack, self.snd_una)
        if acked < 0 or diff(seg.ack, self.snd_max) > 0:
            return
        window = seg.window << self.peer_shift
        if acked > 0:
            data = min(acked, len(self.outgoing))
            del self.outgoing[:data]
            self.fin_acked = self.fin_acked or acked > data
            self.snd_una = seg.ack
            if diff(self.snd_nxt, seg.ack) < 0:
                self.snd_nxt = seg.ack
            self.dupacks = 0
            self.rto = self.base_rto
            self.retransmit_at = None if self.snd_una == self.snd_max else now + self.rto
        elif not seg.payload and window == self.snd_wnd and self.snd_una != self.snd_max:
            self.dupacks += 1
            if self.dupacks == 3:
                self._segment(self.snd_una, now, resend=True)
        if diff(seg.seq, self.snd_wl1) > 0 or (
            seg.seq == self.snd_wl1 and diff(seg.ack, self.snd_wl2) >= 0
        ):
            self.snd_wnd, self.snd_wl1, self.snd_wl2 = window, seg.seq, seg.ack

    def _take_data(self, seg: TcpSegment, start: int) -> None:
        data, seq, fin = bytes(seg.payload), seg.seq, bool(seg.flags & tcp.FIN)
        if start < 0:
            data, seq, start = data[-start:], self.rcv_nxt, 0
        room = max(self._room() - start, diff(self.rcv_adv, seq))
        if len(data) > room:
            data, fin = data[: max(0, room)], False
        heapq.heappush(self.held, (self.rcv_pos + start, data, fin))
        while self.held and self.held[0][0] <= self.rcv_pos:
            position, d, f = heapq.heappop(self.held)
            offset = position - self.rcv_pos
            if offset + len(d) < 0:
                continue  # all of it (and its FIN) came before
            new = d[-offset:]
            self.unread += new
            self.rcv_pos += len(new)
            self.rcv_nxt = (self.rcv_nxt + len(new)) % M
            if f and not self.peer_fin:
                self.peer_fin = True
                self.rcv_pos += 1
                self.rcv_nxt = (self.rcv_nxt + 1) % M

    # -- sending ---------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        if self.state not in ("syn-sent", "established"):
            return
        if self.retransmit_at is not None and now >= self.retransmit_at:
            self.rto = min(self.rto * 2, 10.0)
            self.retransmit_at = now + self.rto
            if self.state == "syn-sent":
                self._syn()
            else:
                self.snd_nxt = self.snd_una
                self._segment(self.snd_una, now)
        if self.persist_at is not None and now >= self.persist_at:
            self.persist_at = None
            if self.snd_una == self.snd_max and len(self.outgoing) > 0:
                self._segment(self.snd_nxt, now, size=1)  # RFC 9293 §3.8.6.1: one new byte

    def _transmit(self, now: float) -> None:
        if self.state != "established":
            return
        while True:
            offset = diff(self.snd_nxt, self.snd_una)
            unsent = len(self.outgoing) - offset
            room = diff((self.snd_wl2 + self.snd_wnd) % M, self.snd_nxt)  # from the window's ACK
            if unsent > 0 and room > 0:
                self._segment(self.snd_nxt, now, size=min(room, unsent))
            elif unsent == 0 and self.closing and not self.fin_acked:
                self._segment(self.snd_nxt, now)  # the FIN alone
            else:
                break
        waiting = self.snd_una == self.snd_max and len(self.outgoing) > 0 and room <= 0
        if waiting and self.persist_at is None:
            self.persist_at = now + self.rto

    def _segment(
        self, seq: int, now: float, *, size: int | None = None, resend: bool = False
    ) -> None:
        """Send from ``seq``: at most ``size`` bytes and one MSS, with the FIN if it ends there."""
        offset = diff(seq, self.snd_una)
        size = min(self.send_mss, len(self.outgoing) - offset, size or self.send_mss)
        fin = self.closing and offset + size == len(self.outgoing)
        data = bytes(self.outgoing[offset : offset + size])
        self._emit(tcp.ACK | (tcp.FIN if fin else 0), seq, self.rcv_nxt, payload=data)
        end = (seq + size + fin) % M
        if not resend:
            self.snd_nxt = end
        if diff(end, self.snd_max) > 0:
            self.snd_max = end
        if self.retransmit_at is None:
            self.retransmit_at = now + self.rto

    def _syn(self) -> None:
        options = TcpOptions(mss=self.mss, window_scale=self.wscale)
        self._emit(tcp.SYN, self.isn, 0, options=options, window=min(self._room(), 0xFFFF))

    def _ack(self) -> None:
        self._emit(tcp.ACK, self.snd_max, self.rcv_nxt)

    def _room(self) -> int:
        return max(0, self.buffer - len(self.unread))

    def _emit(
        self,
        flags: int,
        seq: int,
        ack: int,
        *,
        payload: bytes = b"",
        options: TcpOptions = tcp.NO_OPTIONS,
        window: int | None = None,
    ) -> None:
        if window is None:
            # The room, or the edge offered before, rounded down to the scale's unit:
            # the edge moves back by less than a unit at most, and never creeps on.
            unit = 1 << self.my_shift
            offered = diff(self.rcv_adv, self.rcv_nxt)
            window = min(max(self._room(), offered, 0) // unit, 0xFFFF)
            edge = (self.rcv_nxt + window * unit) % M
            if diff(edge, self.rcv_adv) > 0:
                self.rcv_adv = edge
        self.out.append(
            TcpSegment(self.port, self.dst_port, seq, ack, flags, window, 0, options, payload)
        )
