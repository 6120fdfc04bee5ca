"""The guest-facing half of one NAT'd TCP connection (RFC 9293).  No I/O.

Theory of operation
-------------------
A guest's connection is split in two at the NAT: the guest talks TCP to this
endpoint, and the shell holds an ordinary host socket to the destination.  The
endpoint is fed the guest's segments (``segment_received``), what happens on
the host socket (``host_connected``, ``host_data``, ``host_eof``,
``host_written``, ``host_failed``) and the time (``handle_timer`` once
``deadline()`` has come).  It answers with ``segments`` for the guest and
``host_ops`` for the host socket, which its owner takes after every call.

* Open.  A guest SYN creates the endpoint in ``CONNECTING`` while the shell
  connects the host socket; retransmitted SYNs change nothing.  Only when the
  host connect succeeds does the guest get a SYN-ACK (``SYN_RECEIVED``), so a
  refused port is a RST, not an accepted-then-reset connection.  An unreachable
  host, or a connect slower than ``CONNECT_TIMEOUT``, sends nothing and sets
  ``unreachable``: the owner answers with ICMP host unreachable.  Host data that
  arrives before the guest's ACK completes the handshake waits for it.
* Forwards.  A connection accepted on a forwarded host port opens the other
  way: ``active`` sends the guest a SYN (``SYN_SENT``, RFC 9293 §3.10.7.3) and
  the guest's SYN-ACK makes the connection ``ESTABLISHED``, at which the shell
  starts reading the host socket (``RESUME``).  A RST means the guest's port is
  closed and the host connection is reset; a guest that never answers gets
  ``SYN_RETRIES`` SYNs, then the same.
* Options.  MSS both ways (ours from the MTU) and window scaling when the guest
  offers it (RFC 7323 §2).  SACK and timestamps are never offered, so a guest
  never uses them (RFC 2018 §2, RFC 7323 §3.2).
* Guest to host.  In-order data is handed on at once (a ``bytes`` host op);
  out-of-order data waits in a bounded ``Reassembly`` and is answered with a
  duplicate ACK at once.  In-order data waits in ``ack_at`` (delayed ACK,
  ``DELAYED_ACK``) for data of ours to ride on, for ``send_delayed_ack`` (the
  owner's end of a batch of frames) or for the timer: the segments of one batch are
  acknowledged once, as a receiver that takes them in one go (GRO) does.  RFC 5681
  §4.2 asks for an ACK every second full-sized segment; here those ACKs would leave
  together at the batch's end anyway, each a frame more for the guest and QEMU to
  handle and nothing the last one does not say.  A FIN, data that
  fills a gap or lies outside the window are acknowledged at once, as is one
  that leaves no room for another like it.  The advertised window is the room
  really left: bytes the host socket has not taken yet (``host_written`` gives
  them back) count against it, so a host that stops reading stops the guest by
  the window, never by drops.  The room the host makes is announced on its own
  only when the guest may be waiting for it (``_window_update``).
  The window starts at ``RECEIVE_RESERVE`` and doubles each time the guest fills
  it, up to ``RECEIVE_BUFFER``: a flow the guest hardly sends on never ties up
  memory with a window it does not use.
* Host to guest.  The shell reads only ``read_allowance`` bytes: what the
  guest's window and the send buffer have room for (a little more at a zero
  window, so there is something to probe with).  Data stays buffered until the
  guest ACKs it, for retransmission: RTO per RFC 6298 with backoff and go-back-N
  from SND.UNA, fast retransmit on the third duplicate ACK with NewReno's
  partial-ACK rule (RFC 6582), window probes from the persist timer.  There is
  no congestion control: the only link is the virtual one to the guest, whose
  receive window is the limit.  Whole segments of one host read go out as one
  ``SegmentRun`` in ``segments``, which the owner cuts into frames in one call
  (software segmentation).
* Close.  A FIN either way is a half-close: the guest's becomes
  ``HostOp.SHUTDOWN`` after its data, the host's EOF becomes our FIN after the
  buffered data, and data keeps flowing the other way.  Once both directions
  are done and the host socket has taken every byte, it is closed
  (``HostOp.CLOSE``).  A RST either way aborts both sides at once.
  ``TIME_WAIT`` is short, only long enough to re-ACK a retransmitted FIN.
* Memory.  A flow holds at most ``SEND_BUFFER`` bytes for the guest and
  ``RECEIVE_BUFFER`` from it (the offered window included).  Beyond
  ``SEND_RESERVE`` and ``RECEIVE_RESERVE`` it draws on its VM's ``BufferBudget``, shared by the
  VM's flows: a flow short of budget reads less and offers a smaller window.

Sequence numbers are compared modulo 2**32, and every ACK in our own sequence
space (it must lie in SND.UNA..SND.MAX).  Nothing here raises on any segment;
``closed`` tells the owner when to forget the endpoint.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field
from typing import Final

from slirpnet.core.budget import BufferBudget
from slirpnet.core.reassembly import Reassembly
from slirpnet.core.sendbuffer import SendBuffer
from slirpnet.core.sequence import seq_add, seq_diff, seq_le, seq_lt
from slirpnet.wire import tcp
from slirpnet.wire.buffer import Bytes
from slirpnet.wire.tcp import TcpOptions, TcpSegment

RTO_INITIAL: Final = 1.0  # RFC 6298 §2.1
RTO_MIN: Final = 0.2  # Linux's floor; RFC 6298 §2.4's 1 s is far too slow for a virtual link
RTO_MAX: Final = 60.0  # RFC 6298 §2.5
MAX_RETRANSMITS: Final = 12  # timeouts in a row (about 5 minutes), then both sides are reset
SYN_ACK_RETRIES: Final = 5  # Linux's tcp_synack_retries: about a minute
# A forward's SYN to a silent guest: about a minute, then the host gets a RST.
SYN_RETRIES: Final = 5
# A guest's own connect gives up after about two minutes (Linux: six SYN retries);
# answering well before that tells it "unreachable" instead of leaving it to time out.
CONNECT_TIMEOUT: Final = 20.0
# 2 MSL would be minutes, against stray duplicates of a long Internet path; the only
# peer here is the guest on a virtual link: we only re-ACK a retransmitted FIN.
TIME_WAIT: Final = 2.0
IDLE_TIMEOUT: Final = 7200.0  # RFC 1122 §4.2.3.6: keep-alives, where used, come every 2 h or sooner
# One direction closed and nothing heard for this long: the other side is gone.  Also
# how long a closed connection's host socket may take to accept the last guest bytes.
HALF_CLOSED_IDLE: Final = 300.0
SEND_BUFFER: Final = 1 << 20  # host data held for the guest, sent or not, until ACKed
RECEIVE_BUFFER: Final = 1 << 20  # guest data: not yet taken by the host socket, or the window
# A flow's own, never drawn from the VM's budget, so that every flow can always move.
# Guest to host: not smaller, since at slirpnet's MTU one segment is 64 KiB and a window
# below one MSS stalls a Linux sender until its probe timer (tcp_snd_wnd_test will not
# split a segment).  Host to guest: how far we read ahead of a zero window, to have data
# to probe with; small, since a guest that never ACKs holds it on every flow it opens.
RECEIVE_RESERVE: Final = 1 << 16
SEND_RESERVE: Final = 1 << 14
WINDOW_SHIFT: Final = 7  # RFC 7323 §2.3: ours, when the guest scales: 65535 << 7 covers 8 MiB
DEFAULT_GUEST_MSS: Final = 536  # RFC 9293 §3.7.1, when the SYN names none
MIN_GUEST_MSS: Final = 88  # Linux's TCP_MIN_MSS: no one-byte segments on a guest's say-so
DUPACK_THRESHOLD: Final = 3  # RFC 5681 §3.2
# RFC 1122 §4.2.3.2: an ACK may wait, for at most 0.5 s.  40 ms is Linux's shortest
# delay; the shell acknowledges at the end of each batch of frames anyway.
DELAYED_ACK: Final = 0.04
# A min or max of two ints is a comparison once compiled by mypyc; of three, a call to
# the builtin: the per-segment ones below are nested pairs.


def _kept(payload: Bytes) -> bytes | memoryview:
    """A guest payload the host socket may have later: the view itself when it is of an
    immutable frame (a 64 KiB payload is not copied on its way to the host), else a copy
    (a caller's bytearray may change once it has been fed)."""
    if isinstance(payload, memoryview) and isinstance(payload.obj, bytes):
        return payload
    return bytes(payload)


class State(enum.Enum):
    CONNECTING = "connecting"  # guest SYN seen, host socket connecting
    SYN_SENT = "syn-sent"  # a forward's host connection: our SYN to the guest is out
    SYN_RECEIVED = "syn-received"
    ESTABLISHED = "established"
    CLOSE_WAIT = "close-wait"  # guest sent FIN
    FIN_WAIT_1 = "fin-wait-1"  # we sent FIN
    FIN_WAIT_2 = "fin-wait-2"
    CLOSING = "closing"
    LAST_ACK = "last-ack"
    TIME_WAIT = "time-wait"
    CLOSED = "closed"  # the guest side is done (the host socket may still be draining)

    # Members are singletons compared by identity: hashing by identity too keeps the
    # ``state in _SENDING`` tests of every segment in C (Enum's own hash is Python).
    __hash__ = object.__hash__


# Where data (and our FIN) may go to the guest, first sends and retransmissions.
_SENDING = frozenset(
    (State.ESTABLISHED, State.CLOSE_WAIT, State.FIN_WAIT_1, State.CLOSING, State.LAST_ACK)
)
# Where the guest may still send data.
_RECEIVING = frozenset((State.SYN_RECEIVED, State.ESTABLISHED, State.FIN_WAIT_1, State.FIN_WAIT_2))
# Where host data is still taken (before the host's EOF).
_READING = frozenset((State.SYN_RECEIVED, State.ESTABLISHED, State.CLOSE_WAIT))


class HostOp(enum.Enum):
    SHUTDOWN = "shutdown"  # after writing what was queued, shut the socket for writing
    CLOSE = "close"  # both directions are done and every byte written: close the host socket
    ABORT = "abort"  # close with a RST (SO_LINGER 0)
    RESUME = "resume"  # ``read_allowance`` is no longer 0: read from the host again


class SegmentRun:
    """Full-sized segments of consecutive data sent as one, for software segmentation:
    the frame builder (``native.tcp_frames``) cuts ``payload`` into ``mss``-byte
    segments from ``seq`` on, each with ``flags``, the last with ``last_flags`` too.
    A run is what a host read gives when the guest's window is open: one object and
    one native call for many frames, not a segment object and a call each."""

    __slots__ = (
        "ack",
        "dst_port",
        "flags",
        "last_flags",
        "mss",
        "payload",
        "seq",
        "src_port",
        "window",
    )

    def __init__(
        self,
        src_port: int,
        dst_port: int,
        seq: int,
        ack: int,
        flags: int,
        last_flags: int,
        window: int,
        payload: bytes | memoryview,
        mss: int,
    ) -> None:
        self.src_port = src_port
        self.dst_port = dst_port
        self.seq = seq
        self.ack = ack
        self.flags = flags
        self.last_flags = last_flags
        self.window = window
        self.payload = payload
        self.mss = mss

    def split(self) -> list[TcpSegment]:
        """The segments the run stands for, as the frame builder cuts them."""
        mss, count = self.mss, len(self.payload) // self.mss
        return [
            TcpSegment(
                self.src_port,
                self.dst_port,
                seq_add(self.seq, i * mss),
                self.ack,
                self.flags | (self.last_flags if i == count - 1 else 0),
                self.window,
                0,
                tcp.NO_OPTIONS,
                self.payload[i * mss : (i + 1) * mss],
            )
            for i in range(count)
        ]


@dataclass
class TcpCounters:
    bytes_to_host: int = 0
    bytes_to_guest: int = 0  # first sends only
    segments_in: int = 0
    segments_out: int = 0
    retransmits: int = 0  # segments sent again (timeouts, fast retransmits, go-back-N)
    window_probes: int = 0
    dropped: int = 0  # segments not acceptable (RFC 9293 §3.10.7.4)


@dataclass(eq=False)
class TcpEndpoint:
    guest_port: int
    port: int  # ours, as the guest sees it: the destination port
    guest_isn: int
    iss: int
    guest_mss: int
    our_mss: int
    scaling: bool  # both sides use window scaling (RFC 7323 §1.3)
    guest_shift: int
    state: State = State.CONNECTING
    unreachable: bool = False  # the connect failed without a RST: ICMP is the owner's
    # Send side, our sequence space.  The buffer starts at SND.UNA.
    snd_una: int = 0
    snd_nxt: int = 0  # the next to send: moves back to SND.UNA on a timeout
    snd_max: int = 0  # the highest ever sent: an ACK beyond it acknowledges nothing real
    snd_wnd: int = 0
    snd_wl1: int = 0  # the guest's sequence number and ACK that SND.WND came with:
    snd_wl2: int = 0  # the window reaches to SND.WL2 + SND.WND, not SND.UNA + SND.WND
    send_buffer: SendBuffer = field(default_factory=SendBuffer)
    fin_queued: bool = False  # the host sent EOF: our FIN follows the buffered data
    # Receive side, the guest's sequence space.
    rcv_nxt: int = 0
    rcv_adv: int = 0  # the furthest right edge of a window ever advertised
    to_host_pending: int = 0  # handed to the host, not yet written by it
    rcv_space: int = RECEIVE_RESERVE  # the most we hold (pending and window), grown by use
    rcv_drained: int = 0  # bytes the host took since rcv_space last grew
    reassembly: Reassembly = field(default_factory=Reassembly)
    fin_seq: int | None = None  # where the guest's FIN is, seen ahead of RCV.NXT
    guest_fin: bool = False  # the guest's FIN is in: the host was told to shut down
    host_released: bool = False  # CLOSE or ABORT was sent: the host socket is gone
    # Timers.
    rto: float = RTO_INITIAL
    srtt: float | None = None
    rttvar: float = 0.0
    retransmit_at: float | None = None
    retries: int = 0
    timed_seq: int | None = None  # the segment being timed (Karn: never a retransmit)
    timed_at: float = 0.0
    persist_at: float | None = None
    probes: int = 0  # window probes since the guest last answered one
    persist_backoff: int = 0  # window probes since the window closed
    expires_at: float = 0.0  # connect timeout, TIME_WAIT, or when to look at idleness
    last_activity: float = 0.0
    # Loss recovery.
    dupacks: int = 0
    recover: int | None = None  # NewReno: SND.MAX when fast retransmit began
    # Output, taken by the owner.
    segments: list[TcpSegment | SegmentRun] = field(default_factory=list)
    host_ops: list[bytes | memoryview | HostOp] = field(default_factory=list)
    counters: TcpCounters = field(default_factory=TcpCounters)
    # On its own, a flow is bounded by its buffers only.
    budget: BufferBudget = field(default_factory=lambda: BufferBudget(SEND_BUFFER + RECEIVE_BUFFER))
    _charged: int = 0  # what this flow holds in ``budget`` now
    _ack_due: bool = False  # the guest must hear RCV.NXT and the window now
    ack_at: float | None = None  # a delayed ACK is owed, by this time
    _read_blocked: bool = False  # read_allowance was 0 when last looked at

    @classmethod
    def from_syn(
        cls,
        syn: TcpSegment,
        our_mss: int,
        now: float,
        *,
        budget: BufferBudget | None = None,
        iss: int | None = None,
    ) -> TcpEndpoint:
        options = syn.options
        iss = random.getrandbits(32) if iss is None else iss
        endpoint = cls(
            guest_port=syn.src_port,
            port=syn.dst_port,
            guest_isn=syn.seq,
            iss=iss,
            guest_mss=max(options.mss or DEFAULT_GUEST_MSS, MIN_GUEST_MSS),
            our_mss=our_mss,
            scaling=options.window_scale is not None,
            guest_shift=options.window_scale or 0,
        )
        if budget is not None:
            endpoint.budget = budget
        endpoint.rcv_nxt = endpoint.rcv_adv = seq_add(syn.seq, 1)
        endpoint.snd_una = endpoint.snd_nxt = endpoint.snd_max = iss
        endpoint.snd_wnd = syn.window  # RFC 7323 §2.2: a SYN's window is never scaled
        endpoint.snd_wl1 = syn.seq
        endpoint.snd_wl2 = seq_add(iss, 1)  # the SYN's window counts from our first byte
        endpoint.expires_at = now + CONNECT_TIMEOUT
        endpoint.last_activity = now
        return endpoint

    @classmethod
    def active(
        cls,
        guest_port: int,
        port: int,
        our_mss: int,
        now: float,
        *,
        budget: BufferBudget | None = None,
        iss: int | None = None,
    ) -> TcpEndpoint:
        """An endpoint that opens to the guest's ``guest_port`` from our ``port``: its SYN
        is in ``segments``.  The guest's MSS and scaling come with its SYN-ACK."""
        iss = random.getrandbits(32) if iss is None else iss
        endpoint = cls(
            guest_port=guest_port,
            port=port,
            guest_isn=0,
            iss=iss,
            guest_mss=DEFAULT_GUEST_MSS,
            our_mss=our_mss,
            scaling=True,  # offered; the SYN-ACK says whether the guest agrees
            guest_shift=0,
            state=State.SYN_SENT,
        )
        if budget is not None:
            endpoint.budget = budget
        endpoint.snd_una = iss
        endpoint.snd_nxt = endpoint.snd_max = seq_add(iss, 1)
        endpoint.last_activity = now
        endpoint.expires_at = now + IDLE_TIMEOUT  # the SYN's retransmissions give up first
        endpoint._send_syn()
        endpoint.timed_seq, endpoint.timed_at = iss, now
        endpoint.retransmit_at = now + endpoint.rto
        endpoint._settle()
        return endpoint

    # -- what the owner reads ----------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Both sides are done: forget the endpoint."""
        return self.state is State.CLOSED and self.host_released

    @property
    def read_allowance(self) -> int:
        """How much the shell may read from the host socket now."""
        if self.fin_queued or self.state not in _READING:
            return 0
        held = len(self.send_buffer)
        window = seq_diff(self._snd_edge(), self.snd_una)
        limit = min(
            SEND_BUFFER, min(max(window, SEND_RESERVE), max(held, SEND_RESERVE) + self.budget.free)
        )
        return max(0, limit - held)

    @property
    def mss(self) -> int:
        """The largest payload we send."""
        return min(self.guest_mss, self.our_mss)

    def takes_new_syn(self, seg: TcpSegment) -> bool:
        """In TIME_WAIT, may this SYN open a new connection on the same ports?

        RFC 9293 §3.10.7.4 (after RFC 6191): yes if it starts beyond RCV.NXT, so it
        cannot be an old duplicate; and only once the host socket is gone.
        """
        return (
            self.state is State.TIME_WAIT
            and self.host_released
            and seg.flags & (tcp.SYN | tcp.ACK | tcp.RST) == tcp.SYN
            and seq_lt(self.rcv_nxt, seg.seq)
        )

    def discard(self) -> None:
        """The owner forgets this endpoint: what it held goes back to the budget, and
        its buffers are freed now, whoever still holds a reference to it."""
        self.budget.used -= self._charged
        self._charged = 0
        self.send_buffer = SendBuffer()
        self.reassembly.clear()

    def deadline(self) -> float:
        # Written out: a tuple of the three would box each float, every segment.
        deadline = self.expires_at
        due = self.retransmit_at
        if due is not None and due < deadline:
            deadline = due
        due = self.persist_at
        if due is not None and due < deadline:
            deadline = due
        due = self.ack_at
        if due is not None and due < deadline:
            deadline = due
        return deadline

    # -- from the host side ------------------------------------------------------------

    def host_connected(self, now: float) -> None:
        if self.state is not State.CONNECTING:
            return
        self.state = State.SYN_RECEIVED
        self.snd_nxt = self.snd_max = seq_add(self.iss, 1)
        self.expires_at = now + IDLE_TIMEOUT  # the SYN-ACK's retransmissions give up first
        self.last_activity = now
        self._send_syn_ack()
        self.timed_seq, self.timed_at = self.iss, now
        self.retransmit_at = now + self.rto
        self._settle()

    def host_failed(self, now: float, *, unreachable: bool = False) -> None:
        """The host socket failed: its connect (refused, or ``unreachable``) or later."""
        if self.state is State.CONNECTING:
            if unreachable:
                self.unreachable = True
            else:
                # RFC 9293 §3.10.7.1: a RST acknowledging the SYN, as a closed port's.
                self._emit(tcp.RST | tcp.ACK, seq=0, ack=self.rcv_nxt)
        elif self.state not in (State.SYN_SENT, State.TIME_WAIT, State.CLOSED):
            self._send_reset()  # (in SYN_SENT the guest has nothing to reset yet)
        self._terminate(HostOp.CLOSE)
        self._settle()

    def host_data(self, data: bytes, now: float) -> None:
        if self.fin_queued or self.state not in _READING:
            return
        self.send_buffer.append(data)
        self._account()
        self.last_activity = now
        self._transmit(now)
        self._settle()

    def host_eof(self, now: float) -> None:
        if self.fin_queued or self.state not in _READING:
            return
        self.fin_queued = True
        self.last_activity = now
        self._transmit(now)
        self._release_host_when_done()
        self._settle()

    def host_written(self, count: int, now: float) -> None:
        """The host socket took ``count`` more bytes: the window can open again."""
        self.to_host_pending = max(0, self.to_host_pending - count)
        self.rcv_drained += count
        self._account()
        self.last_activity = now
        self._release_host_when_done()
        if self.state in _RECEIVING and self.state is not State.SYN_RECEIVED:
            self._window_update()
        self._settle()

    def _window_update(self) -> None:
        """Tell the guest of room the host made, when it may be waiting for it.

        RFC 9293 §3.8.6.2.2 (receiver SWS avoidance): only a gain of an MSS or more.
        And only once the window left to the guest is at most half the room (as
        Linux's __tcp_cleanup_rbuf): with more left, the guest keeps sending, and the
        ACKs of that data carry the new edge; so a host that keeps up costs no
        frame of its own per write.  Never a deadlock: while no update goes out, the
        guest has more than half an MSS of window to send into.
        """
        left = seq_diff(self.rcv_adv, self.rcv_nxt)
        room = self._room()
        if room - left >= min(self.mss, RECEIVE_RESERVE // 2) and left <= room // 2:
            self._send_ack()

    # -- from the guest ----------------------------------------------------------------

    def segment_received(self, seg: TcpSegment, now: float) -> None:
        self.counters.segments_in += 1
        state = self.state
        if state is State.CLOSED:
            # Past TIME_WAIT, with the host socket still draining: a FIN again means our
            # ACK of it was lost, and the guest retries until it gives up unless answered
            # as TIME_WAIT would (RFC 9293 §3.10.7.4).
            if seg.flags & tcp.FIN and self.guest_fin and not seg.flags & tcp.RST:
                self._send_ack()
            return
        if state is State.CONNECTING:
            if seg.flags & tcp.RST and seg.seq == self.rcv_nxt:
                self._terminate(HostOp.CLOSE)  # the guest gave up; so does the connect
            return  # a retransmitted SYN changes nothing while the host connect runs
        if state is State.SYN_SENT:
            self._syn_sent(seg, now)
            self._settle()
            return
        if state is State.SYN_RECEIVED and seg.flags & (tcp.SYN | tcp.ACK) == tcp.SYN:
            if seg.seq == self.guest_isn:  # our SYN-ACK was lost
                self.counters.retransmits += 1
                self.timed_seq = None  # Karn's algorithm
                self._send_syn_ack()
            return
        self.last_activity = now
        if self._acceptable(seg):
            self._accepted(seg, now)
        else:
            self._unacceptable(seg, now)
        if self.state is not State.CLOSED:
            self._transmit(now)
            if self._ack_due:
                self._send_ack()
        self._settle()

    def _syn_sent(self, seg: TcpSegment, now: float) -> None:
        """RFC 9293 §3.10.7.3: the guest answers our SYN."""
        if seg.flags & tcp.ACK and seg.ack != self.snd_max:
            if not seg.flags & tcp.RST:
                self._emit(tcp.RST, seq=seg.ack, ack=0)  # it acknowledges no SYN of ours
            return
        if seg.flags & tcp.RST:
            if seg.flags & tcp.ACK:
                self._terminate(HostOp.ABORT)  # the guest's port is closed: so is the host's
            return
        if seg.flags & (tcp.SYN | tcp.ACK) != tcp.SYN | tcp.ACK:
            return  # a simultaneous open, or neither: not what a guest's listener sends
        options = seg.options
        self.guest_isn = seg.seq
        self.rcv_nxt = self.rcv_adv = seq_add(seg.seq, 1)
        self.guest_mss = max(options.mss or DEFAULT_GUEST_MSS, MIN_GUEST_MSS)
        # RFC 7323 §1.3: scaling only when both SYNs carry the option.
        self.scaling = options.window_scale is not None
        self.guest_shift = options.window_scale or 0
        self.snd_una = seg.ack
        self.snd_wnd = seg.window  # RFC 7323 §2.2: a SYN's window is never scaled
        self.snd_wl1, self.snd_wl2 = seg.seq, seg.ack
        self.retries = 0
        self.retransmit_at = None
        self.last_activity = now
        self._time(seg.ack, now)
        self._enter(State.ESTABLISHED, now)
        self._send_ack()

    def _acceptable(self, seg: TcpSegment) -> bool:
        """RFC 9293 §3.10.7.4's four cases: does the segment touch the receive window?"""
        length = len(seg.payload) + (1 if seg.flags & tcp.FIN else 0)
        length += 1 if seg.flags & tcp.SYN else 0
        if seg.seq == self.rcv_nxt and (length == 0 or seq_diff(self.rcv_adv, self.rcv_nxt) > 0):
            # Where expected: a bare ACK whatever the window, data while a window offered
            # earlier is open (RCV.WND is at least that).  No need to work the room out.
            return True
        window = self._rcv_wnd()
        start = seq_diff(seg.seq, self.rcv_nxt)
        if length == 0:
            return start == 0 if window == 0 else 0 <= start < window
        if window == 0:
            return False
        end = start + length - 1
        return 0 <= start < window or 0 <= end < window

    def _unacceptable(self, seg: TcpSegment, now: float) -> None:
        self.counters.dropped += 1
        if seg.flags & tcp.RST:
            return  # RFC 5961 §3.2: out of the window, ignored without a word
        if self.state is State.TIME_WAIT and seg.flags & tcp.FIN:
            self.expires_at = now + TIME_WAIT  # RFC 9293 §3.10.7.4: restart the 2 MSL wait
        if seg.flags & tcp.ACK and not seg.flags & tcp.SYN and self._rcv_wnd() == 0:
            # RFC 9293 §3.10.7.4: a zero window takes no data, but valid ACKs still count.
            self._ack(seg, now)
        self._ack_due = True  # tell the guest where we are

    def _accepted(self, seg: TcpSegment, now: float) -> None:
        if seg.flags & tcp.RST:
            if seg.seq == self.rcv_nxt:
                self._terminate(HostOp.ABORT)
            else:
                self._ack_due = True  # RFC 5961 §3.2: in the window but not exact: challenge
            return
        if seg.flags & tcp.SYN:
            self._ack_due = True  # RFC 5961 §4.2: a challenge ACK, never a reset
            return
        if not seg.flags & tcp.ACK:
            self.counters.dropped += 1
            return
        if not self._ack(seg, now):
            return
        if not (seg.payload or seg.flags & tcp.FIN):
            return
        if self.state in _RECEIVING:
            self._receive(seg, now)
        else:
            self._ack_due = True  # data after the guest's FIN: nothing to take (RFC 9293)

    def _ack(self, seg: TcpSegment, now: float) -> bool:
        """Process the ACK field; False when the segment must go no further."""
        ack = seg.ack
        if self.state is State.SYN_RECEIVED:
            if ack != self.snd_max:
                self._emit(tcp.RST, seq=ack, ack=0)  # RFC 9293 §3.10.7.4, SYN-RECEIVED
                return False
            # Our SYN is acknowledged; it took one sequence number and no buffer space.
            self.snd_una = ack
            self.retries = 0
            self.retransmit_at = None
            self._time(ack, now)
            self._enter(State.ESTABLISHED, now)
        if seq_lt(self.snd_max, ack):
            self._ack_due = True  # RFC 9293 §3.10.7.4: it acknowledges what we never sent
            return False
        acked = seq_diff(ack, self.snd_una)
        if acked < 0:
            return True  # an old ACK: nothing to learn from it, but its data counts
        self.probes = 0  # the guest is there
        window = seg.window << self.guest_shift
        if acked > 0:
            self._acked(acked, ack, now)
        elif (
            not seg.payload
            and not seg.flags & (tcp.SYN | tcp.FIN)
            and window == self.snd_wnd
            and self.snd_una != self.snd_max
        ):
            self._duplicate_ack(now)  # RFC 5681 §2's definition, all five conditions
        # RFC 9293 §3.10.7.4: take the window from the newest segment only.
        if seq_lt(self.snd_wl1, seg.seq) or (self.snd_wl1 == seg.seq and seq_le(self.snd_wl2, ack)):
            self.snd_wnd = window
            self.snd_wl1 = seg.seq
            self.snd_wl2 = ack
        return self.state is not State.CLOSED

    def _acked(self, acked: int, ack: int, now: float) -> None:
        held = len(self.send_buffer)
        fin_acked = self.fin_queued and acked > held
        self.send_buffer.drop(min(acked, held))
        self._account()
        self.snd_una = ack
        if seq_lt(self.snd_nxt, ack):
            self.snd_nxt = ack  # after a go-back-N, the guest had more than we resent
        if self.retries:
            # New data got through: undo the backoff.  RFC 6298 keeps it until a fresh
            # sample, which go-back-N retransmissions never give (Karn); on a virtual
            # link it protects nothing and turns each further loss into a long stall.
            self.rto = RTO_INITIAL if self.srtt is None else self._estimate()
        self.retries = 0
        self.dupacks = 0
        self._time(ack, now)
        if self.recover is not None:
            if seq_lt(ack, self.recover):
                self._retransmit_first(now)  # RFC 6582 §3.2 step 5: a partial ACK, next hole
            else:
                self.recover = None
        # RFC 6298 §5.2-5.3: stop the timer when all is ACKed, else restart it.
        self.retransmit_at = None if self.snd_una == self.snd_max else now + self.rto
        if fin_acked:
            self._our_fin_acked(now)

    def _duplicate_ack(self, now: float) -> None:
        self.dupacks += 1
        if self.dupacks == DUPACK_THRESHOLD and self.recover is None:
            self.recover = self.snd_max  # RFC 6582 §3.2 step 2
            self._retransmit_first(now)

    def _our_fin_acked(self, now: float) -> None:
        if self.state is State.FIN_WAIT_1:
            self._enter(State.FIN_WAIT_2, now)
        elif self.state is State.CLOSING:
            self._enter(State.TIME_WAIT, now)
        elif self.state is State.LAST_ACK:
            self._guest_side_done(now)

    def _receive(self, seg: TcpSegment, now: float) -> None:
        """Text and FIN of an acceptable segment (RFC 9293 §3.10.7.4, seventh and eighth)."""
        payload = seg.payload
        start = seq_diff(seg.seq, self.rcv_nxt)
        fin = bool(seg.flags & tcp.FIN)
        if start < 0:  # the head was received before
            payload = payload[-start:]
            start = 0
        # A tail beyond the window is cut, FIN too.  (Within the edge offered earlier it
        # never is: RCV.WND is at least that, and need not be worked out.)
        if start + len(payload) > seq_diff(self.rcv_adv, self.rcv_nxt):
            window = self._rcv_wnd()
            if start + len(payload) > window:
                payload = payload[: max(0, window - start)]
                fin = False
        end = seq_add(seg.seq, len(seg.payload))
        no_room = seq_diff(self.rcv_adv, end) < len(payload)  # for another such segment
        if no_room and self.rcv_drained >= self.rcv_space // 2:
            # The host keeps up: the window, not the host, limits the guest.
            self.rcv_space = min(2 * self.rcv_space, RECEIVE_BUFFER)
            self.rcv_drained = 0
        if fin:
            self.fin_seq = seq_add(self.rcv_nxt, start + len(payload))
        if start > 0:
            self._ack_due = True  # out of order: a duplicate ACK at once (RFC 5681 §4.2)
            if payload:
                self.reassembly.add(seq_add(self.rcv_nxt, start), bytes(payload), self.rcv_nxt)
            return
        # RFC 5681 §4.2: at once for data that fills a gap, and for a FIN, a repeat or
        # a segment cut at the window edge (the guest must hear where it stands); and
        # when no room is left for another such segment (the guest waits for a window).
        if (
            fin
            or len(payload) != len(seg.payload)
            or self.reassembly
            or self.fin_seq is not None
            or no_room
        ):
            self._ack_due = True
        else:
            self._delay_ack(now)
        self._deliver(_kept(payload))
        for chunk in self.reassembly.pop(self.rcv_nxt):
            self._deliver(chunk)
        if self.fin_seq == self.rcv_nxt:
            self._guest_fin(now)

    def _delay_ack(self, now: float) -> None:
        """In-order data: acknowledged at the batch's end, or soon (see the module)."""
        if self.ack_at is None:
            self.ack_at = now + DELAYED_ACK

    def send_delayed_ack(self) -> None:
        """Acknowledge now what was waiting for the delayed ACK (the owner calls this at
        the end of a batch of the guest's segments, when no more are coming at once)."""
        if self.ack_at is not None and self.state is not State.CLOSED:
            self._send_ack()
            self._settle()

    def _deliver(self, payload: bytes | memoryview) -> None:
        if not payload:
            return
        self.rcv_nxt = seq_add(self.rcv_nxt, len(payload))
        self.to_host_pending += len(payload)
        self.counters.bytes_to_host += len(payload)
        self.host_ops.append(payload)

    def _guest_fin(self, now: float) -> None:
        self.rcv_nxt = seq_add(self.rcv_nxt, 1)
        self.fin_seq = None
        self.reassembly.clear()
        self.guest_fin = True
        self._account()  # the window offered is void now
        self.host_ops.append(HostOp.SHUTDOWN)
        if self.state is State.ESTABLISHED:
            self._enter(State.CLOSE_WAIT, now)
        elif self.state is State.FIN_WAIT_1:
            self._enter(State.CLOSING, now)
        elif self.state is State.FIN_WAIT_2:
            self._enter(State.TIME_WAIT, now)
        self._release_host_when_done()

    # -- timers ------------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        if self.closed:
            return
        if now >= self.expires_at:
            self._expire(now)
        else:
            if self.ack_at is not None and now >= self.ack_at and self.state is not State.CLOSED:
                self._send_ack()
            if self.retransmit_at is not None and now >= self.retransmit_at:
                self._retransmission_timeout(now)
            if self.persist_at is not None and now >= self.persist_at:
                self._probe(now)
        self._settle()

    def _expire(self, now: float) -> None:
        state = self.state
        if state is State.CONNECTING:
            self.unreachable = True  # the host connect took too long
            self._terminate(HostOp.CLOSE)
        elif state is State.TIME_WAIT:
            self._guest_side_done(now)
        elif now < (idle_until := self.last_activity + self._idle_limit()):
            # Not ``now - last < limit``: in floating point that can hold with
            # ``last + limit <= now``, and the timer would come due at ``now`` for ever.
            self.expires_at = idle_until
        elif state is State.CLOSED:
            self._terminate(HostOp.ABORT)  # the host socket never took the last bytes
        else:
            self._send_reset()
            self._terminate(HostOp.ABORT)

    def _idle_limit(self) -> float:
        if self.state in (State.SYN_RECEIVED, State.ESTABLISHED):
            return IDLE_TIMEOUT
        return HALF_CLOSED_IDLE

    def _retransmission_timeout(self, now: float) -> None:
        self.retries += 1
        limit = {State.SYN_RECEIVED: SYN_ACK_RETRIES, State.SYN_SENT: SYN_RETRIES}.get(
            self.state, MAX_RETRANSMITS
        )
        if self.retries > limit:
            if self.state is not State.SYN_SENT:  # the guest has no connection to reset
                self._send_reset()
            self._terminate(HostOp.ABORT)
            return
        self.rto = min(self.rto * 2, RTO_MAX)  # RFC 6298 §5.5
        self.timed_seq = None  # Karn's algorithm
        self.recover = None
        self.dupacks = 0
        if self.state is State.SYN_RECEIVED:
            self.counters.retransmits += 1
            self._send_syn_ack()
        elif self.state is State.SYN_SENT:
            self.counters.retransmits += 1
            self._send_syn()
        else:
            # RFC 6298 §5.4: the earliest segment not ACKed, even into a window that
            # has shrunk since, but no byte that was never sent beyond the window; the
            # rest follows as ACKs come (go-back-N).
            self.snd_nxt = self.snd_una
            held = len(self.send_buffer)
            window = seq_diff(self._snd_edge(), self.snd_una)
            size = min(min(held, self.mss), max(seq_diff(self.snd_max, self.snd_una), window))
            self._send_segment(0, size, self.fin_queued and size == held, now)
        self.retransmit_at = now + self.rto

    def _probe(self, now: float) -> None:
        """RFC 9293 §3.8.6.1: the persist timer fired on a zero window, ask again.

        Like Linux's, the probe is SND.UNA-1 with no data: never acceptable, so the
        guest answers it with an ACK carrying its window, whatever that window is.
        """
        self.probes += 1
        if self.probes > MAX_RETRANSMITS:
            self._send_reset()
            self._terminate(HostOp.ABORT)
            return
        self.counters.window_probes += 1
        self._emit(tcp.ACK, seq=seq_add(self.snd_una, -1), ack=self.rcv_nxt)
        self.persist_backoff += 1  # RFC 9293 §3.8.6.1 (SHLD-30): exponentially further apart
        self.persist_at = now + min(self.rto * 2**self.persist_backoff, RTO_MAX)

    # -- sending -----------------------------------------------------------------------

    def _transmit(self, now: float) -> None:
        """Send what the guest's window allows, then our FIN once the data is all out."""
        if self.state in _SENDING:
            held = len(self.send_buffer)
            window = None  # ours, the same in every segment of the run: worked out once
            mss = self.mss
            while True:
                offset = seq_diff(self.snd_nxt, self.snd_una)
                unsent = held - offset
                room = seq_diff(self._snd_edge(), self.snd_nxt)
                if unsent > 0 and room > 0:
                    window = self._advertise() if window is None else window
                    # Whole segments in one host read: one run (software segmentation).
                    count = 0
                    if min(unsent, room) >= 2 * mss:
                        count = min(min(unsent, room), self.send_buffer.span(offset)) // mss
                    if count >= 2:
                        fin = self.fin_queued and count * mss == unsent
                        self._send_run(offset, count, mss, fin, now, window)
                        continue
                    size = min(min(unsent, mss), room)
                    # The FIN rides on the last data; it needs no window of its own.
                    fin = self.fin_queued and size == unsent
                    self._send_segment(offset, size, fin, now, window)
                elif unsent == 0 and self.fin_queued:
                    self._send_segment(offset, 0, True, now)
                else:
                    break
        self._persist(now)

    def _persist(self, now: float) -> None:
        """Run the persist timer while data waits for a window and nothing is in flight."""
        offset = seq_diff(self.snd_nxt, self.snd_una)
        waiting = (
            self.state in _SENDING
            and len(self.send_buffer) > offset
            and seq_le(self._snd_edge(), self.snd_nxt)
            and self.snd_una == self.snd_max
        )
        if not waiting:
            self.persist_at = None
            self.persist_backoff = 0
        elif self.persist_at is None:
            self.persist_at = now + self.rto  # RFC 9293 §3.8.6.1 (SHLD-29)

    def _snd_edge(self) -> int:
        """The right edge of the guest's window (RFC 9293 §3.8.6's SND.UNA + SND.WND, taken
        from the ACK the window came with: a reordered older segment can move SND.UNA)."""
        return seq_add(self.snd_wl2, self.snd_wnd)

    def _send_segment(
        self, offset: int, size: int, fin: bool, now: float, window: int | None = None
    ) -> None:
        """Send ``size`` bytes from ``offset`` into the buffer (at SND.NXT), and maybe FIN."""
        seq = self.snd_nxt
        payload = self.send_buffer.get(offset, size)
        flags = tcp.ACK | (tcp.PSH if payload else 0) | (tcp.FIN if fin else 0)
        self._emit(flags, seq=seq, ack=self.rcv_nxt, payload=payload, window=window)
        self._sent(seq, size, fin, now, 1)

    def _send_run(
        self, offset: int, count: int, mss: int, fin: bool, now: float, window: int
    ) -> None:
        """Send ``count`` full segments from ``offset`` as one run, the FIN on the last."""
        seq = self.snd_nxt
        payload = self.send_buffer.get(offset, count * mss)
        self._ack_sent()
        self.counters.segments_out += count
        last_flags = tcp.FIN if fin else 0
        self.segments.append(
            SegmentRun(
                self.port,
                self.guest_port,
                seq,
                self.rcv_nxt,
                tcp.ACK | tcp.PSH,
                last_flags,
                window,
                payload,
                mss,
            )
        )
        self._sent(seq, count * mss, fin, now, count)

    def _sent(self, seq: int, size: int, fin: bool, now: float, segments: int) -> None:
        """What sending ``size`` bytes from ``seq`` on, in ``segments``, changes."""
        end = seq_add(seq, size + fin)
        if seq_lt(seq, self.snd_max):
            self.counters.retransmits += segments
        elif self.timed_seq is None:  # Karn's algorithm: time only what is sent once
            self.timed_seq, self.timed_at = seq, now
        fresh = seq_diff(end, self.snd_max) - fin
        if fresh > 0:
            self.counters.bytes_to_guest += min(fresh, size)
        self.snd_nxt = end
        if seq_lt(self.snd_max, end):
            self.snd_max = end
        if fin and self.state is State.ESTABLISHED:
            self._enter(State.FIN_WAIT_1, now)
        elif fin and self.state is State.CLOSE_WAIT:
            self._enter(State.LAST_ACK, now)
        if self.retransmit_at is None:
            self.retransmit_at = now + self.rto

    def _retransmit_first(self, now: float) -> None:
        """Resend the segment at SND.UNA, leaving SND.NXT (fast retransmit, partial ACKs)."""
        held = len(self.send_buffer)
        outstanding = seq_diff(self.snd_max, self.snd_una)
        size = min(min(held, self.mss), outstanding)
        fin = self.fin_queued and size == held and outstanding > held
        if size <= 0 and not fin:
            return
        self.timed_seq = None
        self.counters.retransmits += 1
        flags = tcp.ACK | (tcp.PSH if size else 0) | (tcp.FIN if fin else 0)
        payload = self.send_buffer.get(0, size)
        self._emit(flags, seq=self.snd_una, ack=self.rcv_nxt, payload=payload)
        self.retransmit_at = now + self.rto

    def _send_syn_ack(self) -> None:
        options = TcpOptions(mss=self.our_mss, window_scale=WINDOW_SHIFT if self.scaling else None)
        window = min(self._room(), 0xFFFF)  # RFC 7323 §2.2: unscaled in a SYN
        if seq_lt(self.rcv_adv, seq_add(self.rcv_nxt, window)):
            self.rcv_adv = seq_add(self.rcv_nxt, window)
        self._emit(
            tcp.SYN | tcp.ACK, seq=self.iss, ack=self.rcv_nxt, options=options, window=window
        )

    def _send_syn(self) -> None:
        options = TcpOptions(mss=self.our_mss, window_scale=WINDOW_SHIFT)
        window = min(self._room(), 0xFFFF)  # RFC 7323 §2.2: unscaled in a SYN
        self._emit(tcp.SYN, seq=self.iss, ack=0, options=options, window=window)

    def _send_ack(self) -> None:
        # SND.MAX, not SND.NXT: after a go-back-N the guest may hold more than we resent,
        # and a sequence number behind its RCV.NXT would make it drop the ACK.
        self._emit(tcp.ACK, seq=self.snd_max, ack=self.rcv_nxt)

    def _send_reset(self) -> None:
        self._emit(tcp.RST | tcp.ACK, seq=self.snd_max, ack=self.rcv_nxt)

    def _emit(
        self,
        flags: int,
        *,
        seq: int,
        ack: int,
        payload: bytes | memoryview = b"",
        options: TcpOptions = tcp.NO_OPTIONS,
        window: int | None = None,
    ) -> None:
        if flags & tcp.RST:
            window = 0
        elif window is None:
            window = self._advertise()
        if flags & tcp.ACK:
            self._ack_sent()
        self.counters.segments_out += 1
        self.segments.append(
            TcpSegment(self.port, self.guest_port, seq, ack, flags, window, 0, options, payload)
        )

    def _ack_sent(self) -> None:
        """Any segment of ours carries RCV.NXT: no ACK is owed after it."""
        self._ack_due = False
        self.ack_at = None

    # -- the receive window ------------------------------------------------------------

    def _room(self) -> int:
        """How many bytes from RCV.NXT on we can hold now."""
        held = self._receive_held()
        limit = min(self.rcv_space, max(held, RECEIVE_RESERVE) + self.budget.free)
        return max(0, limit - self.to_host_pending)

    def _receive_held(self) -> int:
        """Guest bytes the host has not taken, and the window still offered for more."""
        if self.host_released:
            return 0
        offered = 0 if self.guest_fin else max(0, seq_diff(self.rcv_adv, self.rcv_nxt))
        return self.to_host_pending + offered

    def _account(self) -> None:
        """Charge the budget for what this flow holds beyond its reserve each way."""
        charge = max(0, len(self.send_buffer) - SEND_RESERVE)
        charge += max(0, self._receive_held() - RECEIVE_RESERVE)
        self.budget.used += charge - self._charged
        self._charged = charge

    def _rcv_wnd(self) -> int:
        """RCV.WND: the room, or more if a window offered earlier reaches further."""
        return max(self._room(), seq_diff(self.rcv_adv, self.rcv_nxt))

    def _advertise(self) -> int:
        """The window field for a segment going out now.

        The room, rounded down to the scale's unit; or, when the room has shrunk
        below what was offered, the offered edge rounded down to a unit from
        RCV.NXT.  So the right edge never moves back by a unit or more, and never
        passes the room: rounding up instead, at every ACK, would let the edge creep
        forward with nothing behind it, and a host that never reads would never
        close the window (RFC 7323 Appendix F; Linux's tcp_shrink_window).  Data
        the guest sent up to an edge offered earlier is still taken (``_rcv_wnd``).
        """
        shift = WINDOW_SHIFT if self.scaling else 0
        offered = seq_diff(self.rcv_adv, self.rcv_nxt)
        window = min(max(max(self._room(), offered), 0) >> shift, 0xFFFF)
        edge = seq_add(self.rcv_nxt, window << shift)
        if seq_lt(self.rcv_adv, edge):
            self.rcv_adv = edge
            self._account()
        return window

    # -- bookkeeping -------------------------------------------------------------------

    def _time(self, ack: int, now: float) -> None:
        """Take an RTT sample if ``ack`` covers the segment being timed (RFC 6298 §2-3)."""
        if self.timed_seq is None or not seq_lt(self.timed_seq, ack):
            return
        sample = now - self.timed_at
        self.timed_seq = None
        if self.srtt is None:
            self.srtt, self.rttvar = sample, sample / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - sample)
            self.srtt = 0.875 * self.srtt + 0.125 * sample
        self.rto = self._estimate()

    def _estimate(self) -> float:
        """RFC 6298 §2.3's RTO from SRTT and RTTVAR, within RTO_MIN..RTO_MAX."""
        assert self.srtt is not None
        return min(max(self.srtt + 4 * self.rttvar, RTO_MIN), RTO_MAX)

    def _enter(self, state: State, now: float) -> None:
        self.state = state
        if state is State.TIME_WAIT:
            self.retransmit_at = self.persist_at = None
            self.expires_at = now + TIME_WAIT
        else:
            self.expires_at = self.last_activity + self._idle_limit()

    def _release_host_when_done(self) -> None:
        """Close the host socket once both directions are done and it has every byte."""
        if (
            self.fin_queued
            and self.guest_fin
            and self.to_host_pending == 0
            and not self.host_released
        ):
            self.host_released = True
            self.host_ops.append(HostOp.CLOSE)

    def _guest_side_done(self, now: float) -> None:
        """Both FINs are through: only the host socket's last writes may be left."""
        self.state = State.CLOSED
        self.retransmit_at = self.persist_at = self.ack_at = None
        self.send_buffer.clear()
        self.last_activity = now
        self.expires_at = now + HALF_CLOSED_IDLE
        self._release_host_when_done()

    def _terminate(self, op: HostOp) -> None:
        """The connection is over, both sides at once; ``op`` for the host socket."""
        self.state = State.CLOSED
        self.retransmit_at = self.persist_at = self.ack_at = None
        self.send_buffer.clear()
        self.reassembly.clear()
        if not self.host_released:
            self.host_released = True
            self.host_ops.append(op)

    def _settle(self) -> None:
        """After every event: settle the budget; tell the shell when it may read again."""
        self._account()
        blocked = self.read_allowance == 0
        if self._read_blocked and not blocked:
            self.host_ops.append(HostOp.RESUME)
        self._read_blocked = blocked
