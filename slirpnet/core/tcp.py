"""The guest-facing half of one NAT'd TCP connection (RFC 9293).  No I/O.

Theory of operation
-------------------
A guest's connection is split in two at the NAT: the guest talks TCP to this
endpoint, and the shell holds an ordinary host socket to the destination.  The
endpoint does everything TCP asks of a peer on the guest's side and tells the
host side what to do through ``host_ops``:

* Open.  A guest SYN creates the endpoint in ``CONNECTING`` while the shell
  connects the host socket; retransmitted SYNs change nothing.  Only when the
  host connect succeeds does the guest get a SYN-ACK (``SYN_RECEIVED``), so a
  refused port is a RST, not an accepted-then-reset connection.
* Guest to host.  In-order data is handed on at once (a ``bytes`` host op);
  out-of-order data waits in a bounded reassembly map and is answered with a
  duplicate ACK.  The advertised window is the room left in the receive budget
  after what the host socket has not yet taken (``host_written`` gives it back),
  so a host that stops reading stops the guest by the window, never by drops.
* Host to guest.  The shell reads only ``read_allowance`` bytes (the room in
  the send buffer).  Data stays buffered until the guest ACKs it, for
  retransmission: RTO per RFC 6298 with backoff, fast retransmit on the third
  duplicate ACK with NewReno's partial-ACK rule (RFC 6582), and zero-window
  probes from the persist timer.  There is no congestion control: the only
  link is the virtual one to the guest, whose receive window is the limit.
* Close.  A FIN either way is a half-close: the guest's becomes
  ``HOST_SHUTDOWN`` (shutdown for writing, after the data), the host's EOF
  becomes our FIN after the buffered data.  A RST either way aborts both.
  ``TIME_WAIT`` is short, only long enough to re-ACK a retransmitted FIN.

All sequence arithmetic is modulo 2**32 (``seq_lt`` and friends), and every
ACK is compared in our own sequence space.  Nothing here raises on any
segment; ``closed`` tells the owner when to forget the endpoint.
"""

from __future__ import annotations

import enum
import random

from attrs import define, field

from slirpnet.wire import tcp
from slirpnet.wire.tcp import TcpOptions, TcpSegment

MASK = 0xFFFFFFFF

RTO_INITIAL = 1.0  # RFC 6298 §2.1
RTO_MIN = 0.2  # Linux's floor; RFC 6298 §2.4's 1 s is far too slow for a virtual link
RTO_MAX = 60.0
MAX_RETRANSMITS = 12  # then the connection is given up, both sides reset
CONNECT_TIMEOUT = 20.0
TIME_WAIT = 2.0  # 2 MSL would be minutes; the only peer is the guest on a lossless link
IDLE_TIMEOUT = 7200.0
HALF_CLOSED_IDLE = 300.0
SEND_BUFFER = 1 << 20  # host data held for the guest, acknowledged or not
RECEIVE_BUFFER = 1 << 20  # guest data the host socket has not taken yet
WINDOW_SHIFT = 7  # RFC 7323: ours, when the guest offers scaling
DEFAULT_GUEST_MSS = 536  # RFC 9293 §3.7.1, when the SYN names none
DUPACK_THRESHOLD = 3  # RFC 5681 §3.2


def seq_diff(a: int, b: int) -> int:
    """``a - b`` in sequence space: negative when ``a`` is before ``b`` (RFC 9293 §3.4)."""
    return ((a - b + 0x80000000) & MASK) - 0x80000000


def seq_lt(a: int, b: int) -> bool:
    return seq_diff(a, b) < 0


def seq_le(a: int, b: int) -> bool:
    return seq_diff(a, b) <= 0


class State(enum.Enum):
    CONNECTING = "connecting"  # guest SYN seen, host socket connecting
    SYN_RECEIVED = "syn-received"
    ESTABLISHED = "established"
    CLOSE_WAIT = "close-wait"  # guest sent FIN
    FIN_WAIT_1 = "fin-wait-1"  # we sent FIN
    FIN_WAIT_2 = "fin-wait-2"
    CLOSING = "closing"
    LAST_ACK = "last-ack"
    TIME_WAIT = "time-wait"
    CLOSED = "closed"


_SYNCHRONIZED = frozenset(State) - {State.CONNECTING, State.SYN_RECEIVED, State.CLOSED}
_RECEIVING = frozenset((State.ESTABLISHED, State.FIN_WAIT_1, State.FIN_WAIT_2))
_FIN_SENT = frozenset(
    (State.FIN_WAIT_1, State.FIN_WAIT_2, State.CLOSING, State.LAST_ACK, State.TIME_WAIT)
)


class HostOp(enum.Enum):
    SHUTDOWN = "shutdown"  # after writing what was queued, shut the socket for writing
    CLOSE = "close"  # both directions are done: close the host socket
    ABORT = "abort"  # close with a RST (SO_LINGER 0)
    RESUME = "resume"  # the send buffer has room again: read from the host


@define
class TcpCounters:
    bytes_to_host: int = 0
    bytes_to_guest: int = 0
    segments_in: int = 0
    segments_out: int = 0
    retransmits: int = 0
    dropped: int = 0  # segments not acceptable (RFC 9293 §3.10.7.4)


@define(eq=False)
class TcpEndpoint:
    guest_port: int
    port: int  # ours, as the guest sees it: the destination port
    guest_isn: int
    guest_mss: int
    our_mss: int
    scaling: bool  # both sides use window scaling (RFC 7323 §1.3)
    guest_shift: int
    now: float
    state: State = State.CONNECTING
    iss: int = field(factory=lambda: random.getrandbits(32))
    # Send side, our sequence space.
    snd_una: int = 0
    snd_nxt: int = 0
    snd_max: int = 0  # the highest sequence sent: below it, a send is a retransmission
    snd_wnd: int = 0
    snd_wl1: int = 0
    snd_wl2: int = 0
    send_buffer: bytearray = field(factory=bytearray)  # from snd_una, acked or not
    fin_queued: bool = False  # the host sent EOF: our FIN follows the data
    # Receive side, the guest's sequence space.
    rcv_nxt: int = 0
    to_host_pending: int = 0  # handed to the host, not yet written by it
    advertised: int = 0  # the window last sent
    reassembly: dict[int, bytes] = field(factory=dict)  # seq -> data beyond rcv_nxt
    reassembly_bytes: int = 0
    fin_seq: int | None = None  # where the guest's FIN is, once seen out of order
    # Timers.
    rto: float = RTO_INITIAL
    srtt: float | None = None
    rttvar: float = 0.0
    retransmit_at: float | None = None
    retries: int = 0
    timed_seq: int | None = None  # the segment being timed (Karn: never a retransmit)
    timed_at: float = 0.0
    persist_at: float | None = None
    expires_at: float = 0.0  # CONNECTING, TIME_WAIT, idle
    last_activity: float = 0.0
    # Loss recovery.
    dupacks: int = 0
    recover: int | None = None  # NewReno: snd_nxt when fast retransmit began
    # Output, drained by the owner.
    segments: list[TcpSegment] = field(factory=list)
    host_ops: list[bytes | HostOp] = field(factory=list)
    counters: TcpCounters = field(factory=TcpCounters)

    @classmethod
    def from_syn(cls, syn: TcpSegment, our_mss: int, now: float) -> TcpEndpoint:
        options = syn.options
        endpoint = cls(
            guest_port=syn.src_port,
            port=syn.dst_port,
            guest_isn=syn.seq,
            guest_mss=options.mss or DEFAULT_GUEST_MSS,
            our_mss=our_mss,
            scaling=options.window_scale is not None,
            guest_shift=options.window_scale or 0,
            now=now,
        )
        endpoint.rcv_nxt = (syn.seq + 1) & MASK
        endpoint.snd_una = endpoint.snd_nxt = endpoint.snd_max = endpoint.iss
        endpoint.snd_wnd = syn.window  # RFC 7323 §2.2: a SYN's window is never scaled
        endpoint.snd_wl1 = syn.seq
        endpoint.expires_at = now + CONNECT_TIMEOUT
        endpoint.last_activity = now
        return endpoint

    # -- what the owner reads ----------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    @property
    def read_allowance(self) -> int:
        """How much the shell may read from the host socket now."""
        if self.fin_queued or self.state not in _SYNCHRONIZED | {State.SYN_RECEIVED}:
            return 0
        return max(0, SEND_BUFFER - len(self.send_buffer))

    @property
    def mss(self) -> int:
        return min(self.guest_mss, self.our_mss)

    def deadline(self) -> float:
        times = [self.expires_at]
        if self.retransmit_at is not None:
            times.append(self.retransmit_at)
        if self.persist_at is not None:
            times.append(self.persist_at)
        return min(times)

    # -- from the host side ------------------------------------------------------------

    def host_connected(self, now: float) -> None:
        if self.state is not State.CONNECTING:
            return
        self.state = State.SYN_RECEIVED
        self.snd_nxt = self.snd_max = (self.iss + 1) & MASK
        self.expires_at = now + IDLE_TIMEOUT  # the SYN-ACK's retransmissions give up first
        self.last_activity = now
        self._send_syn_ack()
        self.retransmit_at = now + self.rto

    def host_failed(self, now: float, op: HostOp = HostOp.CLOSE) -> None:
        """The host connect failed, or the connection is lost: reset the guest's side."""
        if self.state is State.CONNECTING:
            # RFC 9293 §3.10.7.1: a RST acknowledging the SYN, as a closed port would.
            self._emit(tcp.RST | tcp.ACK, seq=0, ack=self.rcv_nxt)
        elif self.state not in (State.CLOSED, State.TIME_WAIT):
            self._emit(tcp.RST | tcp.ACK, seq=self.snd_nxt, ack=self.rcv_nxt)
        self._finish(now, op)

    def host_data(self, data: bytes, now: float) -> None:
        if self.closed or self.fin_queued:
            return
        self.send_buffer += data
        self._touch(now)
        self._transmit(now)

    def host_eof(self, now: float) -> None:
        if self.closed or self.fin_queued:
            return
        self.fin_queued = True
        self._touch(now)
        self._transmit(now)

    def host_written(self, count: int, now: float) -> None:
        """The host socket took ``count`` more bytes: the window can open again."""
        self.to_host_pending = max(0, self.to_host_pending - count)
        if self.state not in _RECEIVING:
            return
        window = self._window()
        # RFC 9293 §3.8.6.2.2 (receiver SWS avoidance): announce only a real gain.
        if window - self.advertised >= min(RECEIVE_BUFFER // 2, 2 * self.mss):
            self._send_ack()

    # -- from the guest ----------------------------------------------------------------

    def segment_received(self, seg: TcpSegment, now: float) -> None:
        self.counters.segments_in += 1
        state = self.state
        if state is State.CLOSED:
            return
        if state is State.CONNECTING:
            if seg.flags & tcp.RST:
                self._finish(now, HostOp.CLOSE)  # the guest gave up; so does the connect
            return  # a retransmitted SYN changes nothing while the host connect runs
        if state is State.SYN_RECEIVED and seg.flags & tcp.SYN and not seg.flags & tcp.ACK:
            if seg.seq == self.guest_isn:
                self._send_syn_ack()  # our SYN-ACK was lost
            return
        self._touch(now)
        if not self._acceptable(seg):
            self.counters.dropped += 1
            if not seg.flags & tcp.RST:
                self._send_ack()  # RFC 9293 §3.10.7.4: tell the guest where we are
            if seg.flags & tcp.ACK and not seg.payload and self.snd_wnd == 0:
                self._ack(seg, now)  # window updates come like this while we probe
            return
        if seg.flags & tcp.RST:
            self._reset_by_guest(seg, now)
            return
        if seg.flags & tcp.SYN:
            self._send_ack()  # RFC 5961 §4.2: a challenge ACK, never a reset
            return
        if not seg.flags & tcp.ACK:
            self.counters.dropped += 1
            return
        if not self._ack(seg, now):
            return
        if self.state in _RECEIVING and (seg.payload or seg.flags & tcp.FIN):
            self._receive(seg, now)

    def _acceptable(self, seg: TcpSegment) -> bool:
        """RFC 9293 §3.10.7.4's four cases: does the segment touch the receive window?"""
        length = len(seg.payload) + (1 if seg.flags & tcp.FIN else 0)
        window = self._window() if self.state in _RECEIVING else max(self._window(), 1)
        start = seq_diff(seg.seq, self.rcv_nxt)
        if length == 0:
            return start == 0 if window == 0 else 0 <= start < max(window, 1)
        if window == 0:
            return False
        end = start + length - 1
        return 0 <= start < window or 0 <= end < window

    def _reset_by_guest(self, seg: TcpSegment, now: float) -> None:
        if seg.seq == self.rcv_nxt:
            self._finish(now, HostOp.ABORT)
        else:
            self._send_ack()  # RFC 5961 §3.2: in the window but not exact: challenge

    def _ack(self, seg: TcpSegment, now: float) -> bool:
        """Process the ACK field; False when the segment must go no further."""
        ack = seg.ack
        if self.state is State.SYN_RECEIVED:
            if ack != self.snd_nxt:
                self._emit(tcp.RST, seq=ack, ack=0)  # RFC 9293 §3.10.7.4, SYN-RECEIVED
                return False
            # Our SYN is acknowledged; it took one sequence number and no buffer space.
            self.state = State.ESTABLISHED
            self.snd_una = ack
            self.retries = 0
            self.retransmit_at = None
            self.timed_seq = None
        if seq_lt(self.snd_nxt, ack):
            self._send_ack()  # it acknowledges what we never sent
            return False
        acked = seq_diff(ack, self.snd_una)
        window = seg.window << self.guest_shift
        if acked > 0:
            self._acked(acked, ack, now)
        elif self.snd_wnd == 0:
            self.retries = 0  # the guest answers our zero-window probes: it is alive
        elif (
            acked == 0
            and not seg.payload
            and not seg.flags & tcp.FIN
            and window == self.snd_wnd
            and self.snd_nxt != self.snd_una
        ):
            self._duplicate_ack(now)
        # RFC 9293 §3.10.7.4: take the window from the newest segment only.
        if seq_lt(self.snd_wl1, seg.seq) or (self.snd_wl1 == seg.seq and seq_le(self.snd_wl2, ack)):
            self.snd_wnd = window
            self.snd_wl1 = seg.seq
            self.snd_wl2 = ack
        if self.snd_wnd > 0:
            self.persist_at = None
        self._transmit(now)
        return not self.closed

    def _acked(self, acked: int, ack: int, now: float) -> None:
        was_full = self.read_allowance == 0 and not self.fin_queued
        data_acked = min(acked, len(self.send_buffer))
        del self.send_buffer[:data_acked]
        self.snd_una = ack
        self.retries = 0
        self.dupacks = 0
        if self.timed_seq is not None and seq_lt(self.timed_seq, ack):
            self._measure(now - self.timed_at)
            self.timed_seq = None
        if self.recover is not None:
            if seq_lt(ack, self.recover):
                self._retransmit_first(now)  # RFC 6582 §3.2: a partial ACK, the next hole
            else:
                self.recover = None
        self.retransmit_at = None if self.snd_una == self.snd_nxt else now + self.rto
        fin_acked = self.state in _FIN_SENT and self.snd_una == self.snd_nxt
        if fin_acked:
            self._our_fin_acked(now)
        if was_full and self.read_allowance > 0:
            self.host_ops.append(HostOp.RESUME)

    def _duplicate_ack(self, now: float) -> None:
        self.dupacks += 1
        if self.dupacks == DUPACK_THRESHOLD and self.recover is None:
            self.recover = self.snd_nxt
            self._retransmit_first(now)

    def _our_fin_acked(self, now: float) -> None:
        if self.state is State.FIN_WAIT_1:
            self.state = State.FIN_WAIT_2
            self.expires_at = now + HALF_CLOSED_IDLE
        elif self.state is State.CLOSING:
            self._enter_time_wait(now)
        elif self.state is State.LAST_ACK:
            self._finish(now, HostOp.CLOSE)

    def _receive(self, seg: TcpSegment, now: float) -> None:
        payload = bytes(seg.payload)
        start = seq_diff(seg.seq, self.rcv_nxt)
        if start < 0:  # the head was received before
            payload = payload[-start:]
            start = 0
        room = self._window() - start
        if seg.flags & tcp.FIN and len(payload) <= room:
            self.fin_seq = (seg.seq + len(seg.payload)) & MASK
        payload = payload[: max(0, room)]
        if start > 0:
            if payload and self.reassembly_bytes + len(payload) <= RECEIVE_BUFFER:
                seq = (self.rcv_nxt + start) & MASK
                self.reassembly_bytes += len(payload) - len(self.reassembly.get(seq, b""))
                self.reassembly[seq] = payload
            self._send_ack()  # RFC 5681 §4.2: a duplicate ACK at once for a gap
            return
        self._deliver(payload)
        self._drain_reassembly()
        if self.fin_seq is not None and self.fin_seq == self.rcv_nxt:
            self._guest_fin(now)
        self._send_ack()

    def _deliver(self, payload: bytes) -> None:
        if not payload:
            return
        self.rcv_nxt = (self.rcv_nxt + len(payload)) & MASK
        self.to_host_pending += len(payload)
        self.counters.bytes_to_host += len(payload)
        self.host_ops.append(payload)

    def _drain_reassembly(self) -> None:
        while self.reassembly:
            progressed = False
            for seq in list(self.reassembly):
                offset = seq_diff(seq, self.rcv_nxt)
                if offset > 0:
                    continue
                data = self.reassembly.pop(seq)
                self.reassembly_bytes -= len(data)
                if offset + len(data) > 0:
                    self._deliver(data[-offset:] if offset < 0 else data)
                    progressed = True
            if not progressed:
                return

    def _guest_fin(self, now: float) -> None:
        self.rcv_nxt = (self.rcv_nxt + 1) & MASK
        self.fin_seq = None
        self.reassembly.clear()
        self.reassembly_bytes = 0
        self.host_ops.append(HostOp.SHUTDOWN)
        if self.state is State.ESTABLISHED:
            self.state = State.CLOSE_WAIT
            self.expires_at = now + HALF_CLOSED_IDLE
        elif self.state is State.FIN_WAIT_1:
            self.state = State.CLOSING
        elif self.state is State.FIN_WAIT_2:
            self._enter_time_wait(now)

    # -- timers ------------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        if self.closed:
            return
        if now >= self.expires_at:
            self._expire(now)
            return
        if self.retransmit_at is not None and now >= self.retransmit_at:
            self._retransmission_timeout(now)
        if self.persist_at is not None and now >= self.persist_at:
            self._probe(now)

    def _expire(self, now: float) -> None:
        if self.state is State.TIME_WAIT:
            self._finish(now, HostOp.CLOSE)
            return
        if self.state is State.CONNECTING:
            self.host_failed(now)  # the host connect took too long
            return
        if now - self.last_activity >= self._idle_limit():
            self.host_failed(now, HostOp.ABORT)
            return
        self.expires_at = self.last_activity + self._idle_limit()

    def _idle_limit(self) -> float:
        if self.state in (State.ESTABLISHED, State.SYN_RECEIVED):
            return IDLE_TIMEOUT
        return HALF_CLOSED_IDLE

    def _retransmission_timeout(self, now: float) -> None:
        self.retries += 1
        if self.retries > MAX_RETRANSMITS:
            self.host_failed(now, HostOp.ABORT)
            return
        self.rto = min(self.rto * 2, RTO_MAX)  # RFC 6298 §5.5
        self.timed_seq = None  # Karn's algorithm
        self.recover = None
        self.dupacks = 0
        if self.state is State.SYN_RECEIVED:
            self._send_syn_ack()
        else:
            # Go back to the first unacknowledged byte and send from there again.
            if self.state in _FIN_SENT and len(self.send_buffer) < seq_diff(
                self.snd_nxt, self.snd_una
            ):
                self._unsend_fin()
            self.snd_nxt = self.snd_una
            self._transmit(now, force_one=True)
        self.retransmit_at = now + self.rto

    def _probe(self, now: float) -> None:
        """RFC 9293 §3.8.6.1: a zero window is probed with one octet of new data."""
        self.persist_at = now + self.rto
        self.rto = min(self.rto * 2, RTO_MAX)
        self._transmit(now, force_one=True)

    def _unsend_fin(self) -> None:
        """Take back a FIN so the go-back-N resend carries it again after the data."""
        self.state = State.ESTABLISHED if self.state is State.FIN_WAIT_1 else State.CLOSE_WAIT

    # -- sending -----------------------------------------------------------------------

    def _transmit(self, now: float, *, force_one: bool = False) -> None:
        """Send what the guest's window allows; ``force_one`` sends a segment regardless."""
        if self.state not in _SYNCHRONIZED or self.state is State.TIME_WAIT:
            return
        while True:
            in_flight = seq_diff(self.snd_nxt, self.snd_una)
            offset = in_flight  # FIN is never in the buffer, so this is where unsent data starts
            unsent = len(self.send_buffer) - offset
            room = self.snd_wnd - in_flight
            if unsent > 0 and (room > 0 or force_one):
                size = min(unsent, self.mss, room if room > 0 else 1)
                data = bytes(self.send_buffer[offset : offset + size])
                fin = self.fin_queued and unsent == size and size <= room
                self._send_data(data, fin, now)
                force_one = False
                continue
            if unsent <= 0 and self.fin_queued and self.state not in _FIN_SENT:
                self._send_data(b"", True, now)
            break
        stalled = unsent > 0 and self.snd_wnd == 0 and self.snd_nxt == self.snd_una
        if stalled and self.persist_at is None:
            self.persist_at = now + self.rto

    def _send_data(self, data: bytes, fin: bool, now: float) -> None:
        seq = self.snd_nxt
        flags = tcp.ACK | (tcp.PSH if data else 0) | (tcp.FIN if fin else 0)
        self._emit(flags, seq=seq, ack=self.rcv_nxt, payload=data)
        self.snd_nxt = (seq + len(data) + (1 if fin else 0)) & MASK
        if seq_lt(seq, self.snd_max):
            self.counters.retransmits += 1
        else:
            self.counters.bytes_to_guest += len(data)
            if self.timed_seq is None:  # Karn's algorithm: time only what is sent once
                self.timed_seq, self.timed_at = seq, now
        if seq_lt(self.snd_max, self.snd_nxt):
            self.snd_max = self.snd_nxt
        if fin:
            self.state = State.FIN_WAIT_1 if self.state is State.ESTABLISHED else State.LAST_ACK
            self.expires_at = now + HALF_CLOSED_IDLE
        if self.retransmit_at is None:
            self.retransmit_at = now + self.rto

    def _retransmit_first(self, now: float) -> None:
        """Resend the segment at ``snd_una`` (fast retransmit, partial ACKs)."""
        size = min(len(self.send_buffer), self.mss, seq_diff(self.snd_nxt, self.snd_una))
        fin = self.state in _FIN_SENT and size == len(self.send_buffer)
        if size <= 0 and not fin:
            return
        self.timed_seq = None
        self.counters.retransmits += 1
        flags = tcp.ACK | (tcp.FIN if fin else 0)
        payload = bytes(self.send_buffer[:size])
        self._emit(flags, seq=self.snd_una, ack=self.rcv_nxt, payload=payload)
        self.retransmit_at = now + self.rto

    def _send_syn_ack(self) -> None:
        options = TcpOptions(mss=self.our_mss, window_scale=WINDOW_SHIFT if self.scaling else None)
        window = min(self._window(), 0xFFFF)  # RFC 7323 §2.2: unscaled in a SYN
        self._emit(
            tcp.SYN | tcp.ACK, seq=self.iss, ack=self.rcv_nxt, options=options, window=window
        )

    def _send_ack(self) -> None:
        self._emit(tcp.ACK, seq=self.snd_nxt, ack=self.rcv_nxt)

    def _emit(
        self,
        flags: int,
        *,
        seq: int,
        ack: int,
        payload: bytes = b"",
        options: TcpOptions = tcp.NO_OPTIONS,
        window: int | None = None,
    ) -> None:
        if window is None:
            shift = WINDOW_SHIFT if self.scaling else 0
            window = min(self._window() >> shift, 0xFFFF)
            self.advertised = window << shift
        if flags & tcp.RST:
            window = 0
        self.counters.segments_out += 1
        self.segments.append(
            TcpSegment(self.port, self.guest_port, seq, ack, flags, window, 0, options, payload)
        )

    def _window(self) -> int:
        return max(0, RECEIVE_BUFFER - self.to_host_pending)

    # -- bookkeeping -------------------------------------------------------------------

    def _measure(self, sample: float) -> None:
        """RFC 6298 §2.2-2.3."""
        if self.srtt is None:
            self.srtt, self.rttvar = sample, sample / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - sample)
            self.srtt = 0.875 * self.srtt + 0.125 * sample
        self.rto = min(max(self.srtt + 4 * self.rttvar, RTO_MIN), RTO_MAX)

    def _touch(self, now: float) -> None:
        self.last_activity = now
        if self.state is State.ESTABLISHED:
            self.expires_at = now + IDLE_TIMEOUT

    def _enter_time_wait(self, now: float) -> None:
        self.state = State.TIME_WAIT
        self.retransmit_at = self.persist_at = None
        self.expires_at = now + TIME_WAIT
        self.host_ops.append(HostOp.CLOSE)

    def _finish(self, now: float, op: HostOp) -> None:
        if self.state is not State.TIME_WAIT:
            self.host_ops.append(op)
        self.state = State.CLOSED
        self.retransmit_at = self.persist_at = None
        self.expires_at = now
