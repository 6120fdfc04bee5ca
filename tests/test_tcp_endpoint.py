"""The TCP endpoint alone: segments and host events in, segments and host ops out.

No frames and no sockets: each test builds the guest's segments, reads what the
endpoint answers, and moves a fake clock by hand.  The Go library slirpnet
descends from had six TCP bugs; each has a test here, named ``test_go_bug_...``.
The heavy tests at the end drive a model guest (``tcp_guest.py``) against the
endpoint through a lossy, duplicating, reordering link (``tcp_link.py``).
"""

from __future__ import annotations

import itertools
import random
from ipaddress import IPv4Address

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from slirpnet.core.budget import BufferBudget
from slirpnet.core.sequence import seq_diff
from slirpnet.core.tcp import (
    CONNECT_TIMEOUT,
    DELAYED_ACK,
    HALF_CLOSED_IDLE,
    IDLE_TIMEOUT,
    MAX_RETRANSMITS,
    RECEIVE_BUFFER,
    RECEIVE_RESERVE,
    RTO_INITIAL,
    RTO_MAX,
    RTO_MIN,
    SEND_BUFFER,
    SEND_RESERVE,
    SYN_ACK_RETRIES,
    TIME_WAIT,
    WINDOW_SHIFT,
    HostOp,
    SegmentRun,
    State,
    TcpEndpoint,
)
from slirpnet.wire import tcp
from slirpnet.wire.tcp import ACK, FIN, PSH, RST, SYN, TcpOptions, TcpSegment
from tests.tcp_guest import GuestTcp
from tests.tcp_link import Link, Transfer, segments_of

GUEST_ISN = 1_000_000
ISS = 7_000_000
MSS = 1460
GUEST_PORT, PORT = 40000, 80
GATEWAY, GUEST = IPv4Address("10.0.2.2"), IPv4Address("10.0.2.15")


def seg(
    seq: int,
    ack: int = 0,
    flags: int = ACK,
    data: bytes = b"",
    *,
    window: int = 65535,
    options: TcpOptions = tcp.NO_OPTIONS,
) -> TcpSegment:
    """A segment from the guest."""
    return TcpSegment(
        GUEST_PORT, PORT, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, flags, window, 0, options, data
    )


def syn(
    isn: int = GUEST_ISN, *, mss: int | None = MSS, wscale: int | None = None, **options: object
) -> TcpSegment:
    opts = TcpOptions(mss=mss, window_scale=wscale, **options)  # type: ignore[arg-type]
    return seg(isn, 0, SYN, window=65535, options=opts)


def out(ep: TcpEndpoint) -> list[TcpSegment]:
    segments = segments_of(ep)
    ep.segments.clear()
    return segments


def one(ep: TcpEndpoint) -> TcpSegment:
    segments = out(ep)
    assert len(segments) == 1, segments
    return segments[0]


def batch_end(ep: TcpEndpoint) -> TcpSegment:
    """The owner's end of a batch of the guest's segments: the one segment sent, the
    delayed ACK if one was owed."""
    ep.send_delayed_ack()
    return one(ep)


def ops(ep: TcpEndpoint) -> list[bytes | HostOp]:
    taken = list(ep.host_ops)
    ep.host_ops.clear()
    return taken


def connecting(
    *,
    isn: int = GUEST_ISN,
    iss: int = ISS,
    our_mss: int = MSS,
    budget: BufferBudget | None = None,
    **kw: object,
) -> TcpEndpoint:
    return TcpEndpoint.from_syn(syn(isn, **kw), our_mss, 0.0, iss=iss, budget=budget)  # type: ignore[arg-type]


def established(
    *,
    isn: int = GUEST_ISN,
    iss: int = ISS,
    window: int = 65535,
    our_mss: int = MSS,
    now: float = 0.0,
    budget: BufferBudget | None = None,
    **kw: object,
) -> TcpEndpoint:
    """An endpoint after a clean handshake; the guest's next seq is isn + 1."""
    ep = connecting(isn=isn, iss=iss, our_mss=our_mss, budget=budget, **kw)
    ep.host_connected(now)
    syn_ack = one(ep)
    assert syn_ack.flags == SYN | ACK
    ep.segment_received(seg(isn + 1, iss + 1, window=window), now)
    assert ep.state is State.ESTABLISHED
    assert out(ep) == []
    assert ops(ep) == []
    return ep


def data_of(segments: list[TcpSegment]) -> bytes:
    return b"".join(bytes(s.payload) for s in segments)


def grow_window(ep: TcpEndpoint, now: float = 0.5) -> int:
    """The guest fills each window offered and the host takes it all, until the
    window has grown to RECEIVE_BUFFER; the guest's bytes sent so far."""
    start = ep.rcv_nxt
    while ep.rcv_space < RECEIVE_BUFFER:
        size = seq_diff(ep.rcv_adv, ep.rcv_nxt)
        ep.segment_received(seg(ep.rcv_nxt, ISS + 1, ACK, b"g" * size), now)
        ep.host_written(size, now)
        assert ops(ep) == [b"g" * size]
        out(ep)
    return seq_diff(ep.rcv_nxt, start)


# -- open ----------------------------------------------------------------------------


def test_syn_ack_only_after_the_host_connect_succeeds() -> None:
    ep = connecting()
    assert ep.state is State.CONNECTING
    assert out(ep) == [] and ops(ep) == []
    assert ep.read_allowance == 0
    assert ep.deadline() == CONNECT_TIMEOUT
    ep.host_connected(0.5)
    syn_ack = one(ep)
    assert ep.state is State.SYN_RECEIVED
    assert (syn_ack.src_port, syn_ack.dst_port) == (PORT, GUEST_PORT)
    assert syn_ack.flags == SYN | ACK
    assert (syn_ack.seq, syn_ack.ack) == (ISS, GUEST_ISN + 1)
    assert syn_ack.options == TcpOptions(mss=MSS)  # no window scale: the guest offered none
    assert syn_ack.window == 65535
    assert ep.deadline() == 0.5 + RTO_INITIAL


def test_retransmitted_syns_while_connecting_change_nothing() -> None:
    ep = connecting()
    for now in (1.0, 3.0, 7.0):
        ep.segment_received(syn(), now)
        ep.handle_timer(now)
    assert out(ep) == [] and ops(ep) == []
    assert ep.state is State.CONNECTING
    assert ep.deadline() == CONNECT_TIMEOUT  # the timeout runs from the first SYN


def test_refused_connect_is_a_rst_acknowledging_the_syn() -> None:
    ep = connecting()
    ep.host_failed(0.1)
    rst = one(ep)
    assert rst.flags == RST | ACK
    assert (rst.seq, rst.ack, rst.window) == (0, GUEST_ISN + 1, 0)
    assert ops(ep) == [HostOp.CLOSE]
    assert ep.closed and not ep.unreachable


def test_unreachable_connect_leaves_the_answer_to_icmp() -> None:
    ep = connecting()
    ep.host_failed(0.1, unreachable=True)
    assert out(ep) == []
    assert ops(ep) == [HostOp.CLOSE]
    assert ep.closed and ep.unreachable


def test_connect_timeout_is_unreachable() -> None:
    ep = connecting()
    ep.handle_timer(CONNECT_TIMEOUT - 0.001)
    assert not ep.closed and ops(ep) == []
    ep.handle_timer(CONNECT_TIMEOUT)
    assert out(ep) == []
    assert ops(ep) == [HostOp.CLOSE]  # cancels the connect
    assert ep.closed and ep.unreachable


def test_guest_reset_while_connecting_cancels_the_connect() -> None:
    ep = connecting()
    ep.segment_received(seg(GUEST_ISN + 5, 0, RST), 1.0)  # not at RCV.NXT: blind, ignored
    assert not ep.closed
    ep.segment_received(seg(GUEST_ISN + 1, 0, RST), 1.0)
    assert ops(ep) == [HostOp.CLOSE] and out(ep) == []
    assert ep.closed
    ep.host_connected(2.0)  # the connect finishing late changes nothing
    assert out(ep) == [] and ops(ep) == []


def test_lost_syn_ack_is_sent_again_on_timeout_and_on_a_repeated_syn() -> None:
    ep = connecting()
    ep.host_connected(0.0)
    first = one(ep)
    ep.segment_received(syn(), 0.3)  # the guest's SYN retransmission: our SYN-ACK was lost
    assert one(ep) == first
    ep.segment_received(syn(GUEST_ISN + 99), 0.4)  # another connection's SYN: no
    assert out(ep) == []
    times = []
    now = 0.0
    while not ep.closed:
        now = ep.deadline()
        ep.handle_timer(now)
        times.append(now)
        sent = out(ep)
        if not ep.closed:
            assert sent == [first]
    # RFC 6298 §5.5: each timeout doubles the RTO; Linux gives up after 5 retries.
    assert times == [1.0, 3.0, 7.0, 15.0, 31.0, 63.0]
    assert len(times) == SYN_ACK_RETRIES + 1
    assert sent[-1].flags == RST | ACK and sent[-1].seq == ISS + 1
    assert ops(ep) == [HostOp.ABORT]
    assert ep.counters.retransmits == SYN_ACK_RETRIES + 1  # the repeated SYN's answer too


def test_handshake_ack_must_acknowledge_our_syn() -> None:
    ep = connecting()
    ep.host_connected(0.0)
    out(ep)
    ep.segment_received(seg(GUEST_ISN + 1, ISS + 5), 0.1)
    rst = one(ep)
    assert rst.flags == RST and rst.seq == ISS + 5  # RFC 9293 §3.10.7.4
    assert ep.state is State.SYN_RECEIVED
    ep.segment_received(seg(GUEST_ISN + 1, ISS + 1), 0.2)
    assert ep.state is State.ESTABLISHED
    assert ep.srtt == pytest.approx(0.2)  # the handshake gave an RTT sample


def test_go_bug_no_data_before_the_handshake_completes() -> None:
    ep = connecting()
    ep.host_connected(0.0)
    out(ep)
    assert ep.read_allowance > 0  # the host may be read (a server that speaks first)...
    ep.host_data(b"220 hello\r\n", 0.01)
    ep.host_eof(0.02)
    assert out(ep) == []  # ...but nothing goes to the guest before its ACK
    ep.segment_received(seg(GUEST_ISN + 1, ISS + 1), 0.1)
    sent = one(ep)
    assert sent.flags == ACK | PSH | FIN
    assert (sent.seq, bytes(sent.payload)) == (ISS + 1, b"220 hello\r\n")
    assert ep.state is State.FIN_WAIT_1


def test_handshake_ack_with_data_is_taken() -> None:
    ep = connecting()
    ep.host_connected(0.0)
    out(ep)
    ep.segment_received(seg(GUEST_ISN + 1, ISS + 1, ACK | PSH, b"GET /"), 0.1)
    assert ops(ep) == [b"GET /"]
    assert batch_end(ep).ack == GUEST_ISN + 6


# -- options -------------------------------------------------------------------------


def test_mss_both_ways() -> None:
    ep = established(mss=1000, our_mss=9000)
    assert ep.mss == 1000
    ep.host_data(b"x" * 2500, 1.0)
    assert [len(s.payload) for s in out(ep)] == [1000, 1000, 500]
    ep = connecting(mss=9000, our_mss=1460)
    ep.host_connected(0.0)
    assert one(ep).options.mss == 1460  # ours comes from the MTU
    assert ep.mss == 1460


@pytest.mark.parametrize(("offered", "used"), [(None, 536), (0, 536), (1, 88), (40, 88)])
def test_missing_or_absurd_guest_mss(offered: int | None, used: int) -> None:
    # RFC 9293 §3.7.1: 536 without the option; a tiny one is raised to Linux's floor.
    assert connecting(mss=offered).mss == used


def test_window_scaling_only_when_the_guest_offers_it() -> None:
    ep = connecting(wscale=3)
    ep.host_connected(0.0)
    syn_ack = one(ep)
    assert syn_ack.options.window_scale == WINDOW_SHIFT
    assert syn_ack.window == 65535  # RFC 7323 §2.2: never scaled in a SYN
    ep.segment_received(seg(GUEST_ISN + 1, ISS + 1, window=1000), 0.1)
    assert ep.snd_wnd == 8000  # the guest's windows are scaled by its shift from now on
    ep.host_data(b"x" * 100, 0.2)
    assert one(ep).window == RECEIVE_RESERVE >> WINDOW_SHIFT  # the window starts small
    unscaled = established()
    unscaled.host_data(b"x", 0.1)
    assert one(unscaled).window == 65535


def test_sack_and_timestamps_never_offered() -> None:
    ep = connecting(wscale=7, sack_permitted=True, timestamps=(1, 0))
    ep.host_connected(0.0)
    assert one(ep).options == TcpOptions(mss=MSS, window_scale=WINDOW_SHIFT)


# -- guest to host -------------------------------------------------------------------


def test_in_order_data_goes_to_the_host_and_is_acknowledged() -> None:
    ep = established()
    ep.segment_received(seg(GUEST_ISN + 1, ISS + 1, ACK | PSH, b"hello"), 1.0)
    assert ops(ep) == [b"hello"]
    assert out(ep) == []  # a lone segment: the ACK waits for more, or the batch's end
    ack = batch_end(ep)
    assert (ack.flags, ack.seq, ack.ack) == (ACK, ISS + 1, GUEST_ISN + 6)
    assert ack.window == RECEIVE_RESERVE - 5  # the host has not taken the 5 bytes yet
    assert ep.to_host_pending == 5
    assert ep.counters.bytes_to_host == 5


def test_a_burst_of_segments_is_acknowledged_once_at_the_batch_end() -> None:
    """The segments of one batch get one ACK, at its end (tcp.py: the ACKs RFC 5681
    §4.2 asks for every second segment would leave together there anyway)."""
    ep = established()
    base = GUEST_ISN + 1
    for n in range(7):
        ep.segment_received(seg(base + n * MSS, ISS + 1, ACK, b"b" * MSS), 1.0 + n / 1000)
    assert out(ep) == []
    assert ep.ack_at == 1.0 + DELAYED_ACK  # owed since the first, for at most 40 ms
    assert batch_end(ep).ack == base + 7 * MSS
    assert ep.ack_at is None and ep.deadline() > 1.0 + DELAYED_ACK
    assert b"".join(op for op in ops(ep) if isinstance(op, bytes)) == b"b" * 7 * MSS


def test_a_host_read_is_sent_as_a_run_of_full_segments_and_the_rest() -> None:
    """Software segmentation: whole segments of one host read are one ``SegmentRun``
    (one frame-building call), the tail a segment of its own, the FIN after it."""
    ep = established()
    sent = ep.counters.segments_out
    data = bytes(range(256)) * (MSS * 11 // 512)
    ep.host_data(data, 1.0)
    ep.host_eof(1.0)
    run, tail = ep.segments[:2]
    assert isinstance(run, SegmentRun) and not isinstance(tail, SegmentRun)
    assert (run.seq, run.mss, len(run.payload), run.flags) == (ISS + 1, MSS, 5 * MSS, ACK | PSH)
    segments = out(ep)
    assert [s.seq for s in segments] == [ISS + 1 + i * MSS for i in range(6)] + [
        ISS + 1 + len(data)
    ]
    assert b"".join(bytes(s.payload) for s in segments) == data
    assert segments[-1].flags & FIN and not any(s.flags & FIN for s in segments[:-1])
    assert ep.counters.segments_out - sent == 7 and ep.snd_nxt == ISS + 2 + len(data)


def test_a_lone_segment_is_acked_when_the_delayed_ack_timer_fires() -> None:
    ep = established()
    ep.segment_received(seg(GUEST_ISN + 1, ISS + 1, ACK, b"lone"), 1.0)
    assert out(ep) == []
    assert ep.deadline() == 1.0 + DELAYED_ACK <= 1.0 + 0.5  # RFC 1122: never over 0.5 s
    ep.handle_timer(1.0 + DELAYED_ACK / 2)  # early: nothing yet
    assert out(ep) == []
    ep.handle_timer(1.0 + DELAYED_ACK)
    ack = one(ep)
    assert (ack.flags, ack.ack) == (ACK, GUEST_ISN + 5)
    ep.handle_timer(2.0)
    assert out(ep) == []  # owed once, sent once
    ep.send_delayed_ack()
    assert out(ep) == []


def test_our_data_carries_the_delayed_ack() -> None:
    ep = established()
    ep.segment_received(seg(GUEST_ISN + 1, ISS + 1, ACK | PSH, b"GET /"), 1.0)
    ep.host_data(b"200 OK", 1.01)
    reply = one(ep)
    assert (reply.ack, bytes(reply.payload)) == (GUEST_ISN + 6, b"200 OK")
    assert ep.ack_at is None
    ep.send_delayed_ack()
    assert out(ep) == []  # the reply said it all


def test_out_of_order_segment_gets_a_duplicate_ack_at_once_while_an_ack_waits() -> None:
    """RFC 5681 §4.2: an out-of-order segment, and one that fills the gap, are
    acknowledged at once, whatever the delayed-ACK state."""
    ep = established()
    base = GUEST_ISN + 1
    ep.segment_received(seg(base, ISS + 1, ACK, b"a" * 100), 1.0)  # in order: waits
    assert out(ep) == []
    ep.segment_received(seg(base + 200, ISS + 1, ACK, b"c" * 100), 1.0)  # a hole before it
    assert [s.ack for s in out(ep)] == [base + 100]
    ep.segment_received(seg(base + 100, ISS + 1, ACK, b"b" * 100), 1.0)  # fills the hole
    assert [s.ack for s in out(ep)] == [base + 300]
    assert ep.ack_at is None


def test_out_of_order_data_is_held_and_answered_with_duplicate_acks() -> None:
    ep = established()
    base = GUEST_ISN + 1
    ep.segment_received(seg(base + 10, ISS + 1, ACK, b"KLMNO"), 1.0)
    ep.segment_received(seg(base + 20, ISS + 1, ACK, b"UVWXY"), 1.0)
    assert ops(ep) == []
    assert [s.ack for s in out(ep)] == [base, base]  # RFC 5681 §4.2: one per segment
    assert ep.reassembly.held == 10
    ep.segment_received(seg(base, ISS + 1, ACK, b"ABCDEFGHIJ"), 1.1)
    assert b"".join(op for op in ops(ep) if isinstance(op, bytes)) == b"ABCDEFGHIJKLMNO"
    assert one(ep).ack == base + 15
    ep.segment_received(seg(base + 15, ISS + 1, ACK, b"PQRSTUVWXYZ"), 1.2)  # covers the held
    assert ops(ep) == [b"PQRSTUVWXYZ"]
    assert one(ep).ack == base + 26
    assert ep.reassembly.held == 0


def test_retransmitted_data_is_delivered_once() -> None:
    ep = established()
    base = GUEST_ISN + 1
    ep.segment_received(seg(base, ISS + 1, ACK, b"abcdef"), 1.0)  # its ACK is delayed
    ep.segment_received(seg(base, ISS + 1, ACK, b"abcdef"), 1.1)  # whole duplicate
    ep.segment_received(seg(base + 3, ISS + 1, ACK, b"defghi"), 1.2)  # half old
    assert ops(ep) == [b"abcdef", b"ghi"]
    assert [s.ack for s in out(ep)] == [base + 6, base + 9]  # repeats: acknowledged at once


def test_receive_window_grows_as_the_guest_fills_it() -> None:
    ep = established(wscale=0)
    assert ep.rcv_space == RECEIVE_RESERVE
    sent = grow_window(ep)
    # The first window (65535 in the SYN-ACK) as it was, then doubled at each full
    # window the host took: 64 KiB, 128, 256, 512, then 1 MiB.
    assert sent == RECEIVE_RESERVE * (1 + 1 + 2 + 4 + 8) - 1
    assert seq_diff(ep.rcv_adv, ep.rcv_nxt) == RECEIVE_BUFFER
    ep.segment_received(seg(ep.rcv_nxt, ISS + 1, ACK, b"h"), 1.0)
    assert batch_end(ep).window == (RECEIVE_BUFFER - 1) >> WINDOW_SHIFT


def test_window_does_not_grow_for_a_slow_host() -> None:
    ep = established(wscale=0)
    base = GUEST_ISN + 1
    ep.segment_received(seg(base, ISS + 1, ACK, b"s" * 65535), 1.0)  # fills it
    ep.host_written(1000, 1.1)  # the host takes a little
    ep.segment_received(seg(base + 65535, ISS + 1, ACK, b"s" * 1000), 1.2)  # fills it again
    assert ep.rcv_space == RECEIVE_RESERVE  # the host is the limit, not the window
    assert out(ep)[-1].window == 0


def test_host_that_never_reads_closes_the_window_without_drops() -> None:
    ep = established(wscale=0)
    base = ep.rcv_nxt + grow_window(ep)
    taken = 0
    chunk = b"z" * 65536
    for i in range(RECEIVE_BUFFER // len(chunk)):
        ep.segment_received(seg(base + taken, ISS + 1, ACK, chunk), 1.0 + i)
        taken += len(chunk)
        ack = batch_end(ep)
        assert ops(ep) == [chunk]
        assert ack.ack == base + taken  # everything inside the window is taken
        assert ack.window << WINDOW_SHIFT == RECEIVE_BUFFER - taken
    assert ack.window == 0
    assert ep.to_host_pending == RECEIVE_BUFFER
    assert ep.counters.dropped == 0
    # More is out of the window: dropped and answered with the zero window.
    ep.segment_received(seg(base + taken, ISS + 1, ACK, b"more"), 30.0)
    reply = one(ep)
    assert (reply.ack, reply.window) == (base + taken, 0)
    assert ep.counters.dropped == 1
    # A Linux zero-window probe (SND.UNA-1, no data) gets the same answer.
    ep.segment_received(seg(base + taken - 1, ISS + 1), 31.0)
    assert (one(ep).window, ep.counters.dropped) == (0, 2)
    # The host takes a little: not worth announcing (receiver SWS avoidance)...
    ep.host_written(100, 32.0)
    assert out(ep) == []
    # ...then enough for a segment: a window update at once.
    ep.host_written(MSS, 33.0)
    update = one(ep)
    assert update.ack == base + taken
    assert update.window << WINDOW_SHIFT == (MSS + 100) >> WINDOW_SHIFT << WINDOW_SHIFT
    assert ops(ep) == []


def test_window_updates_go_out_only_when_the_guest_may_be_waiting() -> None:
    """Each host write makes room; announcing every one would be a frame per write."""
    ep = established(wscale=0)
    base = GUEST_ISN + 1
    ep.segment_received(seg(base, ISS + 1, ACK, b"w" * 40000), 1.0)
    left = seq_diff(ep.rcv_adv, ep.rcv_nxt)
    assert one(ep).ack == base + 40000 and left == 65535 - 40000
    # The host takes 10,000: the guest has more than half the room to send into.
    ep.host_written(10000, 1.1)
    assert out(ep) == []
    # It takes the rest: now the guest may be waiting for the news.
    ep.host_written(30000, 1.2)
    update = one(ep)
    assert (update.ack, update.window << WINDOW_SHIFT) == (base + 40000, RECEIVE_RESERVE)


def test_scaled_window_neither_shrinks_by_a_unit_nor_creeps() -> None:
    """RFC 7323 Appendix F: odd-sized segments against a scaled window.

    Rounding the window up at every ACK would move the right edge forward each
    time, past the buffer, with a host that is not reading; rounding down moves
    it back by less than one unit of 2**WINDOW_SHIFT.  Data up to an edge once
    offered is taken all the same.
    """
    ep = established(wscale=0)  # scaling on: our unit is 128 bytes
    unit = 1 << WINDOW_SHIFT
    base = ep.rcv_nxt + grow_window(ep)
    sent = RECEIVE_BUFFER - 1000
    ep.segment_received(seg(base, ISS + 1, ACK, b"x" * sent), 1.0)
    edge = base + sent + (batch_end(ep).window << WINDOW_SHIFT)
    assert edge == base + sent + 1000 // unit * unit  # the room, rounded down
    for odd in itertools.cycle((1, 7, 13, 50)):
        size = min(odd, edge - base - sent)
        if not size:
            break
        ep.segment_received(seg(base + sent, ISS + 1, ACK, b"y" * size), 2.0)
        sent += size
        ack = batch_end(ep)
        assert ack.ack == base + sent  # taken: it was inside an edge once offered
        new_edge = base + sent + (ack.window << WINDOW_SHIFT)
        assert new_edge > edge - unit  # back by less than a unit
        assert new_edge <= base + RECEIVE_BUFFER  # never past the room
        edge = max(edge, new_edge)
    assert ack.window == 0
    assert ep.to_host_pending == sent <= RECEIVE_BUFFER
    assert ep.counters.dropped == 0


def test_scattered_segments_hold_bounded_bookkeeping() -> None:
    ep = established(wscale=7)
    base = GUEST_ISN + 1
    for i in range(1, 500):
        ep.segment_received(seg(base + 2 * i, ISS + 1, ACK, b"s"), 1.0)
    assert len(ep.reassembly) == 64  # MAX_RUNS: the rest was dropped, as if lost
    assert ops(ep) == []
    ep.segment_received(seg(base, ISS + 1, ACK, b"ab"), 2.0)
    assert ops(ep) == [b"ab", b"s"]


def test_go_bug_fin_ack_from_the_guest_reaches_the_host() -> None:
    ep = established()
    base = GUEST_ISN + 1
    ep.segment_received(seg(base, ISS + 1, ACK | FIN | PSH, b"bye"), 1.0)
    assert ops(ep) == [b"bye", HostOp.SHUTDOWN]  # the data first, then the half-close
    ack = one(ep)
    assert ack.ack == base + 4  # the FIN takes a sequence number
    assert ep.state is State.CLOSE_WAIT
    # A half-close: the host still talks to the guest.
    ep.host_data(b"still here", 1.1)
    data = one(ep)
    assert bytes(data.payload) == b"still here" and data.ack == base + 4
    ep.segment_received(seg(base + 4, ISS + 11), 1.2)
    assert ep.snd_una == ISS + 11
    # A bare FIN+ACK works the same.
    other = established()
    other.segment_received(seg(base, ISS + 1, ACK | FIN), 1.0)
    assert ops(other) == [HostOp.SHUTDOWN]


def test_guest_fin_out_of_order_waits_for_the_gap() -> None:
    ep = established()
    base = GUEST_ISN + 1
    ep.segment_received(seg(base + 3, ISS + 1, ACK | FIN, b"def"), 1.0)
    assert ops(ep) == [] and ep.state is State.ESTABLISHED
    assert one(ep).ack == base
    ep.segment_received(seg(base, ISS + 1, ACK, b"abc"), 1.1)
    assert ops(ep) == [b"abc", b"def", HostOp.SHUTDOWN]
    assert one(ep).ack == base + 7
    assert ep.state is State.CLOSE_WAIT


def test_lost_ack_of_the_guest_fin_is_acked_again() -> None:
    ep = established()
    base = GUEST_ISN + 1
    ep.segment_received(seg(base, ISS + 1, ACK | FIN), 1.0)
    first = one(ep)
    ep.segment_received(seg(base, ISS + 1, ACK | FIN), 1.5)  # the guest's FIN again
    assert one(ep) == first
    assert ops(ep) == [HostOp.SHUTDOWN]  # once


# -- host to guest -------------------------------------------------------------------


def test_read_allowance_follows_the_guest_window_and_resumes() -> None:
    ep = established(window=50_000, wscale=2)
    assert ep.read_allowance == 200_000  # the guest's window, scaled
    ep.host_data(b"a" * 150_000, 1.0)
    assert data_of(out(ep)) == b"a" * 150_000
    assert ep.read_allowance == 50_000
    ep.host_data(b"a" * 50_000, 1.0)
    assert ep.read_allowance == 0
    assert data_of(out(ep)) == b"a" * 50_000
    ep.segment_received(seg(GUEST_ISN + 1, ISS + 1 + 100_000, window=10_000), 1.1)
    assert ops(ep) == []  # what is held still fills the window
    # A window larger than what is held lets the shell read again.
    ep = established(window=65535, wscale=0)
    assert ep.read_allowance == 65535
    ep.host_data(b"b" * 65535, 1.0)
    assert ep.read_allowance == 0
    out(ep)
    ep.segment_received(seg(GUEST_ISN + 1, ISS + 1 + 30000, window=65535), 1.1)
    assert ops(ep) == [HostOp.RESUME]
    assert ep.read_allowance == 30000
    out(ep)
    ep.segment_received(seg(GUEST_ISN + 1, ISS + 1 + 40000, window=65535), 1.2)
    assert ops(ep) == []  # it never said 0 since the last RESUME


def test_send_buffer_is_bounded() -> None:
    ep = established(window=0xFFFF, wscale=14)
    ep.segment_received(seg(GUEST_ISN + 1, ISS + 1, window=0xFFFF), 0.1)
    assert ep.snd_wnd == 0xFFFF << 14
    assert ep.read_allowance == SEND_BUFFER


def test_go_bug_unacknowledged_data_is_kept_and_sent_again() -> None:
    ep = established()
    ep.host_data(b"0123456789" * 300, 1.0)  # 3000 bytes: three segments
    first = out(ep)
    assert [len(s.payload) for s in first] == [1460, 1460, 80]
    rto = ep.rto
    assert ep.deadline() == 1.0 + rto
    ep.handle_timer(1.0 + rto)  # nothing ACKed: go back to SND.UNA
    again = one(ep)
    assert again == first[0]
    assert ep.rto == 2 * rto
    ep.segment_received(seg(GUEST_ISN + 1, ISS + 1 + 1460), 2.1)
    assert out(ep) == first[1:]  # go-back-N: the rest follows the ACK
    assert ep.counters.retransmits == 3
    assert ep.counters.bytes_to_guest == 3000


def test_rto_backs_off_then_gives_up_and_resets_both_sides() -> None:
    ep = established()
    ep.host_data(b"lost", 0.0)
    out(ep)
    times = []
    while not ep.closed:
        times.append(ep.deadline())
        ep.handle_timer(times[-1])
    gaps = [round(b - a, 3) for a, b in itertools.pairwise([0.0, *times])]
    # The handshake's RTT of 0 gave RTO_MIN; each timeout doubles it up to RTO_MAX.
    assert gaps == [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 51.2, 60.0, 60.0, 60.0, 60.0]
    assert len(times) == MAX_RETRANSMITS + 1
    assert out(ep)[-1].flags == RST | ACK
    assert ops(ep) == [HostOp.ABORT]


def test_rtt_estimate_follows_rfc_6298() -> None:
    ep = established()
    ep.host_data(b"a", 10.0)
    ep.segment_received(seg(GUEST_ISN + 1, ISS + 2), 10.5)  # the handshake gave 0.0
    assert ep.srtt == pytest.approx(0.875 * 0.0 + 0.125 * 0.5)
    assert ep.rttvar == pytest.approx(0.75 * 0.0 + 0.25 * 0.5)
    assert ep.rto == pytest.approx(0.0625 + 4 * 0.125)
    ep.host_data(b"b", 11.0)
    ep.handle_timer(11.0 + ep.rto)  # a retransmission: never timed (Karn)
    ep.segment_received(seg(GUEST_ISN + 1, ISS + 3), 20.0)
    assert ep.srtt == pytest.approx(0.0625)
    # No sample, but new data got through: the backoff (2 * 0.5625) is undone.
    assert ep.rto == pytest.approx(0.5625)


def test_backoff_is_undone_without_any_rtt_sample() -> None:
    """Under heavy loss Karn may never allow a sample: progress still ends the backoff."""
    ep = connecting()
    ep.host_connected(0.0)
    out(ep)
    ep.handle_timer(1.0)  # the SYN-ACK again: its ACK gives no sample (Karn)
    ep.segment_received(seg(GUEST_ISN + 1, ISS + 1), 1.5)
    assert ep.srtt is None and ep.rto == 2 * RTO_INITIAL
    ep.host_data(b"x" * 3000, 2.0)
    out(ep)
    for now in (4.0, 8.0, 16.0):
        ep.handle_timer(now)
    assert ep.rto == 16 * RTO_INITIAL
    ep.segment_received(seg(GUEST_ISN + 1, ISS + 1 + 1460), 16.5)
    assert ep.srtt is None and ep.rto == RTO_INITIAL  # RFC 6298 §2.1's, not 16 s


def test_fast_retransmit_on_the_third_duplicate_ack_and_newreno_partial_acks() -> None:
    ep = established(window=65535)
    ep.host_data(bytes(range(256)) * 40, 1.0)  # 10240 bytes: 8 segments
    first = out(ep)
    assert len(first) == 8
    una = ISS + 1
    for _ in range(2):
        ep.segment_received(seg(GUEST_ISN + 1, una), 1.01)
    assert out(ep) == []
    ep.segment_received(seg(GUEST_ISN + 1, una), 1.01)
    assert out(ep) == [first[0]]  # the third: resent at once
    ep.segment_received(seg(GUEST_ISN + 1, una), 1.02)
    assert out(ep) == []  # the fourth: already in recovery
    # A partial ACK: segments 1 and 2 arrived; 3 was lost too (RFC 6582 §3.2).
    ep.segment_received(seg(GUEST_ISN + 1, una + 2 * 1460), 1.03)
    assert out(ep) == [first[2]]
    ep.segment_received(seg(GUEST_ISN + 1, una + 10240), 1.04)  # all of it: recovery ends
    assert out(ep) == [] and ep.recover is None
    assert ep.counters.retransmits == 2
    assert ep.retransmit_at is None


def test_duplicate_ack_rules() -> None:
    ep = established(window=65535)
    ep.host_data(b"x" * 3000, 1.0)
    out(ep)
    una = ISS + 1
    # Not duplicates: a window change, data, a FIN... (RFC 5681 §2).
    ep.segment_received(seg(GUEST_ISN + 1, una, window=60000), 1.01)
    ep.segment_received(seg(GUEST_ISN + 1, una, ACK, b"d", window=60000), 1.01)
    ep.segment_received(seg(GUEST_ISN + 2, una, window=60001), 1.01)
    assert ep.dupacks == 0
    out(ep)
    for _ in range(3):
        ep.segment_received(seg(GUEST_ISN + 2, una, window=60001), 1.02)
    assert bytes(one(ep).payload) == b"x" * 1460


def test_ack_of_data_never_sent_is_answered_not_taken() -> None:
    ep = established()
    ep.host_data(b"abc", 1.0)
    out(ep)
    ep.segment_received(seg(GUEST_ISN + 1, ISS + 1 + 500, ACK, b"data"), 1.1)
    reply = one(ep)
    assert (reply.flags, reply.ack) == (ACK, GUEST_ISN + 1)  # the data was not taken either
    assert ep.snd_una == ISS + 1
    assert ops(ep) == []


def test_ack_beyond_what_was_resent_after_a_timeout_is_taken() -> None:
    """After go-back-N, SND.NXT is behind what the guest may already hold."""
    ep = established()
    ep.host_data(b"x" * 4000, 1.0)
    assert len(out(ep)) == 3
    ep.handle_timer(2.0)
    assert ep.snd_nxt == ISS + 1 + 1460
    out(ep)
    ep.segment_received(seg(GUEST_ISN + 1, ISS + 1 + 4000), 2.1)  # it had everything
    assert ep.snd_una == ep.snd_nxt == ep.snd_max == ISS + 4001
    assert out(ep) == []  # nothing resent, nothing answered
    assert ep.retransmit_at is None


def test_pure_acks_carry_snd_max_after_a_timeout() -> None:
    ep = established()
    ep.host_data(b"x" * 4000, 1.0)
    out(ep)
    ep.handle_timer(2.0)
    out(ep)
    assert ep.snd_nxt == ISS + 1461
    # Data from the guest, shrinking its window so that nothing more is resent now.
    ep.segment_received(seg(GUEST_ISN + 1, ISS + 1, ACK, b"q", window=1460), 2.1)
    ack = batch_end(ep)
    assert (ack.ack, ack.payload) == (GUEST_ISN + 2, b"")
    assert ack.seq == ISS + 4001  # the guest may hold it all: never behind its RCV.NXT


def test_go_bug_acks_are_compared_in_our_own_sequence_space() -> None:
    """The Go library compared the guest's ACKs with the guest's own sequence numbers.

    That works only while the two ISNs happen to be in the right order, about half
    of all connections: downloads stalled after the first window.  Here our ISS is
    2**31 away from the guest's ISN, and a download runs through many windows.
    """
    for iss in (GUEST_ISN + 2**31, GUEST_ISN - 2**31 + 10, GUEST_ISN - 5):
        ep = established(iss=iss & 0xFFFFFFFF, window=8192)
        payload = bytes(random.Random(iss).randbytes(100_000))
        ep.host_data(payload, 1.0)
        got = b""
        now = 1.0
        while len(got) < len(payload):
            segments = out(ep)
            assert segments, f"stalled after {len(got)} bytes"
            got += data_of(segments)
            now += 0.01
            ep.segment_received(
                seg(GUEST_ISN + 1, segments[-1].seq + len(segments[-1].payload), window=8192), now
            )
        assert got == payload
        assert ep.counters.retransmits == 0
        assert ep.snd_una == (iss + 1 + len(payload)) & 0xFFFFFFFF


def test_sequence_numbers_wrap_both_ways() -> None:
    isn, iss = 0xFFFFFFFF - 10, 0xFFFFFFFF - 20
    ep = established(isn=isn, iss=iss, window=65535)
    up = bytes(range(256)) * 20
    ep.segment_received(seg(isn + 1 + 2000, iss + 1, ACK, up[2000:]), 1.0)  # across the wrap
    ep.segment_received(seg(isn + 1, iss + 1, ACK, up[:2000]), 1.1)
    assert b"".join(op for op in ops(ep) if isinstance(op, bytes)) == up
    assert out(ep)[-1].ack == (isn + 1 + len(up)) & 0xFFFFFFFF
    down = bytes(range(255, -1, -1)) * 20
    ep.host_data(down, 1.2)
    sent = out(ep)
    assert data_of(sent) == down
    assert sent[0].seq == iss + 1 and sent[-1].seq < 5000  # wrapped
    ep.segment_received(seg(isn + 1 + len(up), iss + 1 + len(down)), 1.3)
    assert ep.snd_una == (iss + 1 + len(down)) & 0xFFFFFFFF
    assert len(ep.send_buffer) == 0


def test_go_bug_zero_window_is_respected_and_probed() -> None:
    ep = established(window=0)
    ep.host_data(b"waiting", 1.0)
    assert out(ep) == []  # the Go library sent anyway
    assert ep.retransmit_at is None
    probes = []
    for _ in range(4):
        now = ep.deadline()
        ep.handle_timer(now)
        probe = one(ep)
        assert (probe.seq, probe.payload, probe.flags) == (ISS, b"", ACK)  # SND.UNA-1
        probes.append(now)
        ep.segment_received(seg(GUEST_ISN + 1, ISS + 1, window=0), now + 0.01)  # still shut
        assert out(ep) == []
    # RFC 9293 §3.8.6.1: the first after an RTO, then exponentially further apart.
    assert probes[0] == pytest.approx(1.0 + RTO_MIN)
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(probes)]
    assert gaps == [0.4, 0.8, 1.6]
    assert not ep.closed  # answered probes never give up
    ep.segment_received(seg(GUEST_ISN + 1, ISS + 1, window=4), probes[-1] + 1)
    assert bytes(one(ep).payload) == b"wait"  # the window's worth, no more
    assert ep.persist_at is None
    ep.segment_received(seg(GUEST_ISN + 1, ISS + 5, window=100), probes[-1] + 2)
    assert bytes(one(ep).payload) == b"ing"
    assert ep.counters.window_probes == 4


def test_unanswered_window_probes_give_up() -> None:
    ep = established(window=0)
    ep.host_data(b"x", 1.0)
    count = 0
    while not ep.closed:
        ep.handle_timer(ep.deadline())
        count += 1
    assert count == MAX_RETRANSMITS + 1
    assert out(ep)[-1].flags == RST | ACK
    assert ops(ep) == [HostOp.ABORT]


def test_window_opening_while_nothing_was_buffered() -> None:
    """A zero window and an idle host: reading ahead leaves something to probe with."""
    ep = established(window=0)
    assert ep.read_allowance == SEND_RESERVE
    ep.host_data(b"late", 5.0)
    assert out(ep) == [] and ep.persist_at is not None


# -- memory shared by a VM's flows ---------------------------------------------------


def test_flows_share_the_vms_budget_beyond_their_reserves() -> None:
    budget = BufferBudget(200_000)
    a = established(window=0xFFFF, wscale=7, budget=budget)
    b = established(window=0xFFFF, wscale=7, budget=budget)
    assert a.snd_wnd == b.snd_wnd == 0xFFFF << 7
    assert a.read_allowance == SEND_RESERVE + 200_000  # its reserve and all the budget
    a.host_data(b"a" * (SEND_RESERVE + 200_000), 1.0)
    assert budget.used == 200_000 and a.read_allowance == 0
    assert b.read_allowance == SEND_RESERVE  # its reserve is still its own
    b.host_data(b"b" * SEND_RESERVE, 1.0)
    assert b.read_allowance == 0 and budget.used == 200_000
    # The guest ACKs some of a's data: the budget it held goes to whoever reads next.
    a.segment_received(seg(GUEST_ISN + 1, ISS + 1 + 150_000, window=0xFFFF), 1.1)
    assert budget.used == 50_000
    assert a.read_allowance == b.read_allowance == 150_000
    ops(a)
    b.segment_received(seg(GUEST_ISN + 1, ISS + 1, window=0xFFFF), 1.2)  # any event of b's
    assert ops(b) == [HostOp.RESUME]
    # The end of a flow gives back everything it held.
    a.segment_received(seg(GUEST_ISN + 1, 0, RST), 1.3)
    assert a.closed and budget.used == 0
    b.host_data(b"b" * 150_000, 1.4)
    assert budget.used == 150_000
    b.discard()  # its owner forgets it (a VM gone, say)
    assert budget.used == 0


def test_windows_shrink_to_the_reserve_when_the_vms_budget_is_spent() -> None:
    budget = BufferBudget(100_000)
    a = established(wscale=0, budget=budget)
    b = established(wscale=0, budget=budget)
    base = a.rcv_nxt + grow_window(a)
    assert budget.used <= budget.limit
    # a's host stops reading: a holds its reserve and the whole budget, then shuts its window.
    edge = a.rcv_adv
    assert seq_diff(edge, base) == (RECEIVE_RESERVE + 100_000) >> WINDOW_SHIFT << WINDOW_SHIFT
    a.segment_received(seg(base, ISS + 1, ACK, b"x" * seq_diff(edge, base)), 1.1)
    assert one(a).window == 0
    assert budget.used <= budget.limit
    # b offers only its reserve now, and still takes data.
    base = GUEST_ISN + 1
    b.segment_received(seg(base, ISS + 1, ACK, b"y" * 1000), 1.2)
    assert ops(b) == [b"y" * 1000]
    ack = batch_end(b)
    assert 1000 + (ack.window << WINDOW_SHIFT) <= RECEIVE_RESERVE + budget.free
    assert (ack.window << WINDOW_SHIFT) >= RECEIVE_RESERVE - 1000 - (1 << WINDOW_SHIFT)
    # a's host takes everything: the budget comes back, and a's window opens again.
    a.host_written(a.to_host_pending, 2.0)
    assert one(a).window << WINDOW_SHIFT >= RECEIVE_RESERVE
    assert budget.used == a._charged + b._charged


# -- close ---------------------------------------------------------------------------


def test_host_closes_first() -> None:
    ep = established()
    base = GUEST_ISN + 1
    ep.host_data(b"last words", 1.0)
    ep.host_eof(1.0)
    sent = out(ep)
    assert data_of(sent) == b"last words"
    assert sent[-1].flags & FIN and ep.state is State.FIN_WAIT_1
    assert ep.read_allowance == 0
    ep.segment_received(seg(base, ISS + 12), 1.1)
    assert ep.state is State.FIN_WAIT_2
    ep.segment_received(seg(base, ISS + 12, ACK, b"more from the guest"), 1.2)
    assert ops(ep) == [b"more from the guest"]
    assert batch_end(ep).ack == base + 19
    ep.segment_received(seg(base + 19, ISS + 12, ACK | FIN), 1.3)
    assert one(ep).ack == base + 20
    assert ep.state is State.TIME_WAIT
    assert ops(ep) == [HostOp.SHUTDOWN]  # the host has not written the bytes yet: no CLOSE
    ep.host_written(19, 1.4)
    assert ops(ep) == [HostOp.CLOSE]
    assert not ep.closed and ep.deadline() == 1.3 + TIME_WAIT
    ep.segment_received(seg(base + 19, ISS + 12, ACK | FIN), 2.0)  # the FIN again: re-ACK
    assert one(ep).ack == base + 20
    assert ep.deadline() == 2.0 + TIME_WAIT
    ep.handle_timer(2.0 + TIME_WAIT)
    assert ep.closed and ops(ep) == [] and out(ep) == []


def test_guest_closes_first() -> None:
    ep = established()
    base = GUEST_ISN + 1
    ep.segment_received(seg(base, ISS + 1, ACK | FIN, b"req"), 1.0)
    assert ops(ep) == [b"req", HostOp.SHUTDOWN]
    out(ep)
    ep.host_data(b"response", 1.1)
    assert bytes(one(ep).payload) == b"response"
    ep.host_eof(1.1)
    fin = one(ep)
    assert (fin.flags, fin.seq, fin.payload) == (ACK | FIN, ISS + 9, b"")
    assert ep.state is State.LAST_ACK
    ep.host_written(3, 1.2)
    assert ops(ep) == [HostOp.CLOSE]  # both directions done at the host: it can go
    ep.segment_received(seg(base + 4, ISS + 10), 1.3)
    assert ep.closed


def test_closing_waits_for_the_host_to_take_the_last_bytes() -> None:
    """The guest's last data must be written before the host socket is closed."""
    ep = established()
    base = GUEST_ISN + 1
    ep.host_eof(1.0)
    out(ep)
    ep.segment_received(seg(base, ISS + 2, ACK | FIN, b"final"), 1.1)  # data, FIN, ACK of ours
    assert ops(ep) == [b"final", HostOp.SHUTDOWN]
    assert ep.state is State.TIME_WAIT
    ep.handle_timer(1.1 + TIME_WAIT)
    assert ep.state is State.CLOSED and not ep.closed  # waits for the host socket
    assert ops(ep) == []
    ep.host_written(5, 5.0)
    assert ops(ep) == [HostOp.CLOSE] and ep.closed


def test_host_that_never_takes_the_last_bytes_is_aborted() -> None:
    ep = established()
    ep.host_eof(1.0)
    out(ep)
    ep.segment_received(seg(GUEST_ISN + 1, ISS + 2, ACK | FIN, b"final"), 1.1)
    ops(ep)
    ep.handle_timer(1.1 + TIME_WAIT)
    assert ep.deadline() == 1.1 + TIME_WAIT + HALF_CLOSED_IDLE
    ep.handle_timer(ep.deadline())
    assert ops(ep) == [HostOp.ABORT] and ep.closed


def test_simultaneous_close_with_a_lost_fin() -> None:
    ep = established()
    base = GUEST_ISN + 1
    ep.host_eof(1.0)
    fin = one(ep)
    assert fin.flags == ACK | FIN and ep.state is State.FIN_WAIT_1
    ep.segment_received(seg(base, ISS + 1, ACK | FIN), 1.01)  # its FIN crossed ours, ours lost
    assert ep.state is State.CLOSING
    assert one(ep).ack == base + 1
    ep.handle_timer(1.0 + RTO_INITIAL)
    again = one(ep)
    assert (again.flags, again.seq, again.ack) == (ACK | FIN, ISS + 1, base + 1)
    assert ep.state is State.CLOSING  # a retransmitted FIN changes no state
    ep.segment_received(seg(base + 1, ISS + 2), 2.1)
    assert ep.state is State.TIME_WAIT
    assert ops(ep) == [HostOp.SHUTDOWN, HostOp.CLOSE]


def test_lost_fin_with_data_is_sent_again_whole() -> None:
    ep = established()
    ep.host_data(b"tail", 1.0)
    ep.host_eof(1.0)
    first = out(ep)
    assert [(s.flags, bytes(s.payload)) for s in first] == [(ACK | PSH, b"tail"), (ACK | FIN, b"")]
    ep.handle_timer(ep.deadline())
    again = one(ep)  # one segment from SND.UNA: the data with the FIN
    assert (again.flags, again.seq, bytes(again.payload)) == (ACK | PSH | FIN, ISS + 1, b"tail")
    ep.segment_received(seg(GUEST_ISN + 1, ISS + 6), 3.5)
    assert ep.state is State.FIN_WAIT_2
    assert ep.retransmit_at is None


def test_fin_goes_out_even_into_a_zero_window() -> None:
    ep = established(window=0)
    ep.host_eof(1.0)
    assert one(ep).flags == ACK | FIN


def test_guest_reset_mid_transfer_aborts_the_host_at_once() -> None:
    ep = established()
    base = GUEST_ISN + 1
    ep.host_data(b"x" * 5000, 1.0)
    out(ep)
    ep.segment_received(seg(base + 100, 0, RST), 1.1)  # in the window, not exact
    assert one(ep).flags == ACK  # RFC 5961 §3.2: a challenge ACK
    assert not ep.closed
    ep.segment_received(seg(base + 2 * RECEIVE_BUFFER, 0, RST), 1.2)  # out of the window
    assert out(ep) == [] and not ep.closed
    ep.segment_received(seg(base, 0, RST), 1.3)
    assert ops(ep) == [HostOp.ABORT]
    assert ep.closed and out(ep) == []
    assert len(ep.send_buffer) == 0 and ep.retransmit_at is None


def test_host_reset_mid_transfer_resets_the_guest() -> None:
    ep = established()
    ep.host_data(b"x" * 3000, 1.0)
    out(ep)
    ep.host_failed(1.1)
    rst = one(ep)
    assert (rst.flags, rst.seq, rst.ack) == (RST | ACK, ISS + 3001, GUEST_ISN + 1)
    assert ops(ep) == [HostOp.CLOSE]
    assert ep.closed


def test_syn_on_an_established_connection_gets_a_challenge_ack() -> None:
    ep = established()
    ep.segment_received(seg(GUEST_ISN + 1, 0, SYN), 1.0)
    reply = one(ep)
    assert (reply.flags, reply.ack) == (ACK, GUEST_ISN + 1)  # RFC 5961 §4.2
    assert ep.state is State.ESTABLISHED


def test_segment_without_ack_is_dropped() -> None:
    ep = established()
    ep.segment_received(seg(GUEST_ISN + 1, 0, PSH, b"x"), 1.0)
    assert ops(ep) == [] and out(ep) == []
    assert ep.counters.dropped == 1


def test_idle_connection_is_reset_after_the_idle_timeout() -> None:
    ep = established(now=0.0)
    ep.segment_received(seg(GUEST_ISN + 1, ISS + 1, ACK, b"k"), 5000.0)  # activity moves it
    assert batch_end(ep).ack == GUEST_ISN + 2
    ep.handle_timer(IDLE_TIMEOUT)
    assert not ep.closed and out(ep) == []
    assert ep.deadline() == 5000.0 + IDLE_TIMEOUT
    ep.handle_timer(5000.0 + IDLE_TIMEOUT)
    assert one(ep).flags == RST | ACK
    assert ops(ep) == [b"k", HostOp.ABORT]
    assert ep.closed


def test_half_closed_connection_idles_out_sooner() -> None:
    ep = established()
    ep.segment_received(seg(GUEST_ISN + 1, ISS + 1, ACK | FIN), 10.0)
    assert ep.state is State.CLOSE_WAIT
    assert ep.deadline() == 10.0 + HALF_CLOSED_IDLE
    ep.handle_timer(10.0 + HALF_CLOSED_IDLE)
    assert out(ep)[-1].flags == RST | ACK
    assert ops(ep) == [HostOp.SHUTDOWN, HostOp.ABORT]


def test_host_events_after_the_end_change_nothing() -> None:
    ep = established()
    ep.segment_received(seg(GUEST_ISN + 1, 0, RST), 1.0)
    ops(ep)
    ep.host_data(b"late", 2.0)
    ep.host_eof(2.0)
    ep.host_written(10, 2.0)
    ep.host_failed(2.0)
    ep.handle_timer(1e9)
    ep.segment_received(seg(GUEST_ISN + 1, ISS + 1, ACK, b"late"), 2.0)
    assert out(ep) == [] and ops(ep) == []


def test_module_constants_have_the_values_the_docs_give() -> None:
    assert (RTO_INITIAL, RTO_MIN, RTO_MAX) == (1.0, 0.2, 60.0)
    assert TIME_WAIT == 2.0
    assert (RECEIVE_BUFFER >> WINDOW_SHIFT) <= 0xFFFF  # the scaled window fits its field
    assert RECEIVE_RESERVE // 2 <= MSS * 64


# -- robustness ----------------------------------------------------------------------


_FLAGS = st.integers(0, 0xFF)
_SEGMENTS = st.builds(
    lambda seq, ack, flags, data, window: seg(
        GUEST_ISN + seq, ISS + ack, flags, data, window=window
    ),
    st.integers(-3000, 3000),
    st.integers(-3000, 3000),
    _FLAGS,
    st.binary(max_size=3000),
    st.integers(0, 0xFFFF),
)


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(_SEGMENTS, st.sampled_from(["seg", "data", "eof", "written", "timer"])),
        max_size=30,
    )
)
def test_any_input_never_raises_and_keeps_the_bounds(events: list[tuple[TcpSegment, str]]) -> None:
    ep = established(wscale=7)
    now = 1.0
    for segment, host in events:
        now += 0.3
        ep.segment_received(segment, now)
        if host == "data":
            ep.host_data(b"h" * min(ep.read_allowance, 5000), now)
        elif host == "eof":
            ep.host_eof(now)
        elif host == "written":
            ep.host_written(ep.to_host_pending, now)
        else:
            ep.handle_timer(max(now, ep.deadline()))
        for out_seg in out(ep):
            out_seg.encode(GATEWAY, GUEST)  # every segment we make can be sent
        ops(ep)
        assert len(ep.send_buffer) <= SEND_BUFFER
        assert ep.to_host_pending <= RECEIVE_BUFFER + (1 << WINDOW_SHIFT)
        assert ep.deadline() >= 0


# -- the whole of it, through a bad link ---------------------------------------------


def transfer(
    seed: int,
    *,
    size: int,
    loss: float = 0.0,
    isn: int | None = None,
    iss: int | None = None,
    **kw: object,
) -> Transfer:
    rng = random.Random(seed)
    guest_options = {k: kw.pop(k) for k in ("mss", "wscale", "buffer", "read_rate") if k in kw}
    guest = GuestTcp(isn=rng.getrandbits(32) if isn is None else isn, **guest_options)  # type: ignore[arg-type]
    link = Link(rng, loss=loss, duplicate=loss, reorder=3 * loss)
    run = Transfer(
        guest=guest,
        link=link,
        upload=rng.randbytes(size),
        download=rng.randbytes(size),
        iss=rng.getrandbits(32) if iss is None else iss,
        **kw,  # type: ignore[arg-type]
    )
    run.run()
    assert bytes(run.written) == run.upload
    assert bytes(guest.received) == run.download
    assert run.shutdown and run.host_closed is HostOp.CLOSE
    assert run.ep.closed and guest.done
    return run


@pytest.mark.parametrize("seed", range(4))
def test_megabytes_both_ways_through_loss_duplicates_and_reordering(seed: int) -> None:
    run = transfer(seed, size=2_000_000, loss=0.03, iss=0xFFFFFFFF - 30_000, isn=0xFFFFFFFF - 700)
    assert run.link.dropped > 100
    assert run.ep.counters.retransmits > 0
    assert run.ep.counters.bytes_to_guest == 2_000_000  # retransmissions counted apart


def test_slow_host_and_slow_guest_reader_through_loss() -> None:
    """Both windows close again and again; nothing is dropped for lack of room."""
    run = transfer(
        11,
        size=600_000,
        loss=0.02,
        write_rate=20_000,
        read_rate=30_000,
        buffer=100_000,
        mss=8960,
        our_mss=8960,
    )
    assert run.ep.counters.window_probes + run.ep.counters.retransmits > 0


@hsettings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    size=st.sampled_from([0, 1, 1459, 1461, 30_000]),
    loss=st.sampled_from([0.0, 0.02, 0.1]),
    mss=st.sampled_from([88, 536, 1460, 65480]),
    our_mss=st.sampled_from([536, 1460, 65480]),
    wscale=st.sampled_from([None, 0, 5, 7]),
    buffer=st.sampled_from([65535, 1 << 20]),
    read_rate=st.sampled_from([None, 10_000]),
    write_rate=st.sampled_from([None, 10_000]),
    isn=st.one_of(st.none(), st.integers(0xFFFFFFFF - 3000, 0xFFFFFFFF)),
    iss=st.one_of(st.none(), st.integers(0xFFFFFFFF - 3000, 0xFFFFFFFF)),
)
def test_any_link_any_pace_byte_exact(
    seed: int,
    size: int,
    loss: float,
    mss: int,
    our_mss: int,
    wscale: int | None,
    buffer: int,
    read_rate: int | None,
    write_rate: int | None,
    isn: int | None,
    iss: int | None,
) -> None:
    transfer(
        seed,
        size=size,
        loss=loss,
        mss=mss,
        our_mss=our_mss,
        wscale=wscale,
        buffer=buffer,
        read_rate=read_rate,
        write_rate=write_rate,
        isn=isn,
        iss=iss,
    )
