"""The endpoint opening to the guest, for a connection accepted on a forwarded host port.

RFC 9293 §3.10.7.3 (SYN-SENT): our SYN, the guest's SYN-ACK or RST, retransmission
of a SYN the guest does not answer, and what the host socket is told each time.
"""

from __future__ import annotations

from slirpnet.core.tcp import (
    IDLE_TIMEOUT,
    RTO_INITIAL,
    SYN_RETRIES,
    WINDOW_SHIFT,
    HostOp,
    State,
    TcpEndpoint,
)
from slirpnet.wire.tcp import ACK, PSH, RST, SYN, TcpOptions, TcpSegment
from tests.tcp_link import segments_of

ISS = 5_000
GUEST_ISN = 900_000
GUEST_PORT, PORT = 8080, 49200  # the guest's listener; our end, as the gateway's port
OUR_MSS = 65480


def opened(now: float = 0.0) -> TcpEndpoint:
    return TcpEndpoint.active(GUEST_PORT, PORT, OUR_MSS, now, iss=ISS)


def from_guest(
    seq: int, ack: int, flags: int, data: bytes = b"", *, window: int = 65535, **options: object
) -> TcpSegment:
    opts = TcpOptions(**options)  # type: ignore[arg-type]
    return TcpSegment(GUEST_PORT, PORT, seq, ack, flags, window, 0, opts, data)


def syn_ack(mss: int = 1460, wscale: int | None = 7, window: int = 64240) -> TcpSegment:
    return from_guest(GUEST_ISN, ISS + 1, SYN | ACK, window=window, mss=mss, window_scale=wscale)


def take(ep: TcpEndpoint) -> tuple[list[TcpSegment], list[bytes | HostOp]]:
    segments, ops = segments_of(ep), list(ep.host_ops)
    ep.segments.clear()
    ep.host_ops.clear()
    return segments, ops


def test_the_syn_offers_our_mss_and_window_scale() -> None:
    ep = opened()
    (syn,), ops = take(ep)
    assert ep.state is State.SYN_SENT
    assert (syn.src_port, syn.dst_port, syn.seq, syn.flags) == (PORT, GUEST_PORT, ISS, SYN)
    assert syn.options.mss == OUR_MSS and syn.options.window_scale == WINDOW_SHIFT
    assert ops == []
    assert ep.read_allowance == 0  # nothing is read from the host before the guest answers


def test_the_guest_syn_ack_establishes_and_reading_starts() -> None:
    ep = opened()
    take(ep)
    ep.segment_received(syn_ack(), 0.01)
    (ack,), ops = take(ep)
    assert ep.state is State.ESTABLISHED
    assert (ack.flags, ack.seq, ack.ack) == (ACK, ISS + 1, GUEST_ISN + 1)
    assert ops == [HostOp.RESUME]
    assert ep.read_allowance > 0
    assert ep.mss == 1460 and ep.guest_shift == 7 and ep.scaling
    assert ep.srtt == 0.01  # the SYN was timed

    ep.host_data(b"hello guest", 0.02)
    (data,), _ = take(ep)
    assert (data.seq, data.flags, bytes(data.payload)) == (ISS + 1, ACK | PSH, b"hello guest")
    ep.segment_received(from_guest(GUEST_ISN + 1, ISS + 12, ACK | PSH, b"hi host"), 0.03)
    ep.send_delayed_ack()  # the end of the batch: a lone segment's ACK waits until then
    segments, ops = take(ep)
    assert ops == [b"hi host"]
    assert segments[-1].ack == GUEST_ISN + 1 + 7


def test_no_scaling_when_the_guest_does_not_offer_it() -> None:
    ep = opened()
    take(ep)
    ep.segment_received(syn_ack(wscale=None, window=30000), 0.01)
    (ack,), _ = take(ep)
    assert not ep.scaling and ep.guest_shift == 0
    assert ep.snd_wnd == 30000
    assert ack.window <= 0xFFFF  # our window unscaled too


def test_a_guest_reset_is_a_closed_port_and_resets_the_host() -> None:
    ep = opened()
    take(ep)
    ep.segment_received(from_guest(0, ISS + 1, RST | ACK), 0.01)
    assert take(ep) == ([], [HostOp.ABORT])
    assert ep.closed


def test_a_reset_without_our_syn_acked_is_ignored() -> None:
    ep = opened()
    take(ep)
    ep.segment_received(from_guest(0, 0, RST), 0.01)
    ep.segment_received(from_guest(0, ISS + 99, RST | ACK), 0.01)
    assert take(ep) == ([], [])
    assert ep.state is State.SYN_SENT


def test_an_ack_of_something_else_gets_a_reset() -> None:
    ep = opened()
    take(ep)
    ep.segment_received(from_guest(GUEST_ISN, ISS + 77, SYN | ACK, mss=1460), 0.01)
    (reset,), ops = take(ep)
    assert (reset.flags, reset.seq) == (RST, ISS + 77)  # RFC 9293 §3.10.7.3
    assert ops == [] and ep.state is State.SYN_SENT


def test_a_silent_guest_gets_the_syn_again_then_the_host_is_reset() -> None:
    ep = opened()
    take(ep)
    now, gaps = 0.0, []
    while not ep.closed:
        due = ep.deadline()
        gaps.append(round(due - now, 3))
        now = due
        ep.handle_timer(now)
        segments, ops = take(ep)
        if ep.closed:
            assert segments == [] and ops == [HostOp.ABORT]
        else:
            (again,) = segments
            assert (again.flags, again.seq) == (SYN, ISS)
    assert gaps == [RTO_INITIAL * 2**n for n in range(SYN_RETRIES + 1)]
    assert ep.counters.retransmits == SYN_RETRIES
    assert now < IDLE_TIMEOUT


def test_the_host_leaving_first_sends_the_guest_nothing() -> None:
    ep = opened()
    take(ep)
    ep.host_failed(0.5)
    assert take(ep) == ([], [HostOp.CLOSE])
    assert ep.closed
