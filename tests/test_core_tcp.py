"""The core ``Segment``'s TCP NAT: real frames in and out, host socket events by hand.

scapy builds the guests' segments and dissects ours (checksums included), as an
independent oracle.  The shell is ``TcpShell``: it keeps the host sockets'
bookkeeping from the actions and checks their order.  192.0.2.0/24 is only
ever a value inside frames: nothing is sent anywhere.
"""

from __future__ import annotations

import random
from collections import Counter
from ipaddress import IPv4Address

import pytest
from scapy.layers.inet import ICMP, IP, TCP, IPOption_NOP, TCPerror, in4_chksum
from scapy.layers.l2 import Ether

from slirpnet.core.addr import V4_LOOPBACK
from slirpnet.core.flows import (
    FLOW_REFUSED,
    FLOW_RESET,
    FLOW_UNREACHABLE,
    Action,
    CloseFlow,
    Flow,
    OpenFlow,
    ResumeFlow,
    SendFlow,
    ShutdownFlow,
    TcpFlow,
)
from slirpnet.core.segment import Segment
from slirpnet.core.tcp import CONNECT_TIMEOUT, DELAYED_ACK, SEND_RESERVE, TIME_WAIT, State
from slirpnet.core.vm import Vm
from slirpnet.wire.tcp import TcpSegment
from tests.tcp_guest import GuestTcp
from tests.test_core_segment import (
    GATEWAY_IP,
    GUEST_IP,
    GUEST_MAC,
    OTHER_IP,
    OTHER_MAC,
    REMOTE_IP,
    checked,
    framed,
    new_segment,
)

ISN = 0xFFFFFF00  # near the wrap, on purpose
SPORT = 40000


class TcpShell:
    """Host sockets as the core drives them: opened, fed, shut down, resumed, closed."""

    def __init__(self, segment: Segment) -> None:
        self.segment = segment
        self.open: set[Flow] = set()
        self.sent: dict[Flow, bytearray] = {}
        self.shut: set[Flow] = set()
        self.closed: dict[Flow, bool] = {}  # flow -> aborted

    def actions(self) -> list[Action]:
        actions = self.segment.take_actions()
        for action in actions:
            flow = action.flow
            if isinstance(action, OpenFlow):
                assert flow not in self.open and flow not in self.closed
                self.open.add(flow)
                self.sent[flow] = bytearray()
                continue
            assert flow in self.open, f"{action!r} on a socket not open"
            if isinstance(action, SendFlow):
                assert flow not in self.shut, "data after the shutdown"
                self.sent[flow] += action.payload
            elif isinstance(action, ShutdownFlow):
                self.shut.add(flow)
            elif isinstance(action, CloseFlow):
                self.open.remove(flow)
                self.closed[flow] = action.abort
        return actions

    def opened(self) -> TcpFlow:
        actions = self.actions()
        assert [type(a) for a in actions] == [OpenFlow], actions
        flow = actions[0].flow
        assert isinstance(flow, TcpFlow)
        return flow


def tcp_frame(
    flags: str,
    seq: int,
    ack: int = 0,
    data: bytes = b"",
    *,
    dst: str = REMOTE_IP,
    dport: int = 80,
    sport: int = SPORT,
    src_ip: str = GUEST_IP,
    src: str = GUEST_MAC,
    window: int = 65535,
    options: list[tuple[str, object]] | None = None,
) -> bytes:
    layer = TCP(
        sport=sport,
        dport=dport,
        seq=seq & 0xFFFFFFFF,
        ack=ack & 0xFFFFFFFF,
        flags=flags,
        window=window,
        options=options or [],
    )
    return framed(IP(src=src_ip, dst=dst) / layer / data, src=src)


def syn_frame(**kw: object) -> bytes:
    options = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("WScale", 7)]
    return tcp_frame("S", ISN, options=options, **kw)  # type: ignore[arg-type]


def frames(vm: Vm) -> list[Ether]:
    """The frames for the VM, dissected after checking every checksum."""
    out = []
    for frame in vm.take_frames():
        pkt = checked(frame)
        if pkt.haslayer(TCP):
            body = frame[14 + pkt[IP].ihl * 4 :]
            assert in4_chksum(6, pkt[IP], body) == 0, "TCP checksum"
        out.append(pkt)
    return out


def one_tcp(vm: Vm) -> TCP:
    (pkt,) = frames(vm)
    return pkt[TCP]


@pytest.fixture
def segment() -> Segment:
    return new_segment(mtu=1500)


@pytest.fixture
def vm(segment: Segment) -> Vm:
    return segment.attach("guest")


@pytest.fixture
def shell(segment: Segment) -> TcpShell:
    return TcpShell(segment)


def connect(segment: Segment, vm: Vm, shell: TcpShell, now: float = 0.0, **kw: object) -> TcpFlow:
    """SYN, host connect, SYN-ACK, ACK: an established flow."""
    segment.receive(vm, syn_frame(**kw), now)
    flow = shell.opened()
    segment.flow_connected(flow, now)
    syn_ack = one_tcp(vm)
    assert syn_ack.flags == "SA"
    segment.receive(vm, tcp_frame("A", ISN + 1, syn_ack.seq + 1, **kw), now)  # type: ignore[arg-type]
    assert flow.endpoint.state is State.ESTABLISHED
    assert vm.take_frames() == [] and shell.actions() == []
    return flow


def our_seq(flow: TcpFlow) -> int:
    return flow.endpoint.iss + 1


# -- open ----------------------------------------------------------------------------


def test_go_bug_syn_asks_for_a_host_connect_and_waits(
    segment: Segment, vm: Vm, shell: TcpShell
) -> None:
    """The Go library dialed in the packet path; here a SYN only asks the shell."""
    segment.receive(vm, syn_frame(), 0.0)
    flow = shell.opened()
    assert (flow.host_address, flow.host_port) == (IPv4Address(REMOTE_IP), 80)
    assert (flow.guest.address, flow.guest.port) == (IPv4Address(GUEST_IP), SPORT)
    assert vm.take_frames() == []  # no SYN-ACK before the host said yes
    assert segment.get_timer() == CONNECT_TIMEOUT
    segment.receive(vm, syn_frame(), 1.0)  # the guest's SYN again
    assert shell.actions() == [] and vm.take_frames() == []  # no second connect
    segment.flow_connected(flow, 1.5)
    syn_ack = one_tcp(vm)
    pkt = syn_ack.underlayer
    assert (pkt.src, pkt.dst) == (REMOTE_IP, GUEST_IP)
    assert (syn_ack.sport, syn_ack.dport, syn_ack.flags) == (80, SPORT, "SA")
    assert syn_ack.ack == (ISN + 1) & 0xFFFFFFFF
    # MSS from the MTU; window scaling because the guest offered it; no SACK and
    # no timestamps, though the guest offered them: we implement neither.
    assert syn_ack.options == [("MSS", 1460), ("NOP", None), ("WScale", 7)]


def test_gateway_port_goes_to_host_loopback(segment: Segment, vm: Vm, shell: TcpShell) -> None:
    segment.receive(vm, syn_frame(dst=GATEWAY_IP, dport=8080), 0.0)
    flow = shell.opened()
    assert (flow.host_address, flow.host_port) == (V4_LOOPBACK, 8080)
    segment.flow_connected(flow, 0.1)
    assert one_tcp(vm).underlayer.src == GATEWAY_IP


def test_refused_connect_is_a_rst(segment: Segment, vm: Vm, shell: TcpShell) -> None:
    segment.receive(vm, syn_frame(), 0.0)
    flow = shell.opened()
    segment.flow_error(flow, FLOW_REFUSED, 0.2)
    rst = one_tcp(vm)
    assert (rst.flags, rst.seq, rst.ack) == ("RA", 0, (ISN + 1) & 0xFFFFFFFF)
    assert shell.actions() == [CloseFlow(flow)]
    assert vm.flows == {}
    assert vm.stats.events == Counter({"tcp_host_refused": 1})


def test_unreachable_connect_is_icmp_host_unreachable(
    segment: Segment, vm: Vm, shell: TcpShell
) -> None:
    segment.receive(vm, syn_frame(), 0.0)
    flow = shell.opened()
    segment.flow_error(flow, FLOW_UNREACHABLE, 0.2)
    (pkt,) = frames(vm)
    assert pkt[IP].src == GATEWAY_IP and pkt[IP].dst == GUEST_IP
    assert (pkt[ICMP].type, pkt[ICMP].code) == (3, 1)
    quoted = pkt[TCPerror]  # what Linux matches to the socket: ports and sequence number
    assert (quoted.sport, quoted.dport, quoted.seq) == (SPORT, 80, ISN)
    assert quoted.underlayer.src == GUEST_IP and quoted.underlayer.dst == REMOTE_IP
    assert shell.actions() == [CloseFlow(flow)]
    assert vm.flows == {}


def test_connect_timeout_is_icmp_host_unreachable(
    segment: Segment, vm: Vm, shell: TcpShell
) -> None:
    segment.receive(vm, syn_frame(), 0.0)
    flow = shell.opened()
    segment.handle_timer(CONNECT_TIMEOUT - 0.1)
    assert vm.take_frames() == [] and shell.actions() == []
    segment.handle_timer(CONNECT_TIMEOUT)
    (pkt,) = frames(vm)
    assert (pkt[ICMP].type, pkt[ICMP].code) == (3, 1)
    assert shell.actions() == [CloseFlow(flow)]  # cancels the connect
    segment.flow_connected(flow, CONNECT_TIMEOUT + 1)  # too late: ignored
    assert vm.take_frames() == [] and shell.actions() == []


def test_other_flows_keep_moving_while_one_destination_hangs(
    segment: Segment, vm: Vm, shell: TcpShell
) -> None:
    segment.receive(vm, syn_frame(dst="192.0.2.99"), 0.0)
    hung = shell.opened()
    flow = connect(segment, vm, shell, 1.0)
    segment.receive(vm, tcp_frame("PA", ISN + 1, our_seq(flow), b"ping"), 2.0)
    assert shell.actions() == [SendFlow(flow, b"ping")]
    segment.send_delayed_acks(2.0)  # the end of the batch
    assert one_tcp(vm).ack == (ISN + 5) & 0xFFFFFFFF
    segment.flow_received(flow, b"pong", 2.1)
    assert bytes(one_tcp(vm).payload) == b"pong"
    segment.receive(vm, tcp_frame("A", ISN + 5, our_seq(flow) + 4), 2.2)
    assert hung.endpoint.state is State.CONNECTING
    segment.handle_timer(CONNECT_TIMEOUT)
    assert frames(vm)[0][ICMP].type == 3
    assert shell.actions() == [CloseFlow(hung)]
    assert flow.endpoint.state is State.ESTABLISHED


def test_lost_syn_ack_is_sent_again(segment: Segment, vm: Vm, shell: TcpShell) -> None:
    segment.receive(vm, syn_frame(), 0.0)
    flow = shell.opened()
    segment.flow_connected(flow, 0.0)
    first = one_tcp(vm)
    assert segment.get_timer() == 1.0
    segment.handle_timer(1.0)
    assert bytes(one_tcp(vm)) == bytes(first)  # the same segment again
    segment.receive(vm, syn_frame(), 1.5)
    assert one_tcp(vm).flags == "SA"


# -- data, half-close, close ---------------------------------------------------------


def test_data_both_ways_half_close_and_close(segment: Segment, vm: Vm, shell: TcpShell) -> None:
    flow = connect(segment, vm, shell)
    una = our_seq(flow)
    segment.receive(vm, tcp_frame("PA", ISN + 1, una, b"GET / HTTP/1.0\r\n\r\n"), 1.0)
    assert shell.actions() == [SendFlow(flow, b"GET / HTTP/1.0\r\n\r\n")]
    segment.send_delayed_acks(1.0)  # the end of the batch
    assert one_tcp(vm).ack == (ISN + 19) & 0xFFFFFFFF
    # The guest's FIN: a half-close; the host keeps talking.
    segment.receive(vm, tcp_frame("FA", ISN + 19, una), 1.1)
    assert shell.actions() == [ShutdownFlow(flow)]
    assert one_tcp(vm).ack == (ISN + 20) & 0xFFFFFFFF
    segment.flow_received(flow, b"HTTP/1.0 200 OK\r\n\r\nbody", 1.2)
    data = one_tcp(vm)
    assert (data.seq, bytes(data.payload)) == (una, b"HTTP/1.0 200 OK\r\n\r\nbody")
    segment.flow_eof(flow, 1.3)
    fin = one_tcp(vm)
    assert fin.flags == "FA" and fin.seq == una + 23
    # Both directions are done at the host, but it has not written the request yet.
    assert shell.actions() == []
    segment.flow_written(flow, 18, 1.4)
    assert shell.actions() == [CloseFlow(flow)]  # not an abort
    segment.receive(vm, tcp_frame("A", ISN + 20, una + 24), 1.5)
    assert vm.flows == {} and vm.take_frames() == []
    assert shell.sent[flow] == b"GET / HTTP/1.0\r\n\r\n"
    assert shell.closed == {flow: False}
    assert flow.endpoint.budget is vm.tcp_buffers and vm.tcp_buffers.used == 0


def test_a_batch_of_guest_segments_gets_one_ack_at_its_end(
    segment: Segment, vm: Vm, shell: TcpShell
) -> None:
    flow = connect(segment, vm, shell)
    una = our_seq(flow)
    for n in range(5):
        segment.receive(vm, tcp_frame("A", ISN + 1 + n * 1000, una, b"d" * 1000), 1.0)
    assert [a.payload for a in shell.actions()] == [b"d" * 1000] * 5  # type: ignore[union-attr]
    assert frames(vm) == []
    assert flow.endpoint.ack_at == 1.0 + DELAYED_ACK  # all five wait...
    assert (segment.get_timer() or 0.0) <= 1.0 + DELAYED_ACK
    segment.send_delayed_acks(1.0)  # ...for the batch's end
    assert one_tcp(vm).ack == (ISN + 5001) & 0xFFFFFFFF
    segment.send_delayed_acks(1.0)
    assert vm.take_frames() == []  # once
    # A lone segment and no batch end: the delayed-ACK timer.
    segment.receive(vm, tcp_frame("A", ISN + 5001, una, b"e" * 10), 2.0)
    assert vm.take_frames() == []
    assert (segment.get_timer() or 0.0) <= 2.0 + DELAYED_ACK
    segment.handle_timer(2.0 + DELAYED_ACK / 2)
    assert vm.take_frames() == []
    segment.handle_timer(2.0 + DELAYED_ACK)
    assert one_tcp(vm).ack == (ISN + 5011) & 0xFFFFFFFF


def test_established_flow_frames_are_checked_like_any_other(
    segment: Segment, vm: Vm, shell: TcpShell
) -> None:
    """The shortcut for an established flow's frames (``_established_tcp``) leaves
    whatever it does not fully check to the general path: the same drops, reasons
    and deliveries as before it."""
    flow = connect(segment, vm, shell)
    una = our_seq(flow)

    def variant(ip: dict[str, object], tcp: dict[str, object], data: bytes) -> bytes:
        layer = TCP(sport=SPORT, dport=80, ack=una & 0xFFFFFFFF, flags="A", **tcp)
        return framed(IP(src=GUEST_IP, dst=REMOTE_IP, **ip) / layer / data)

    seq = ISN + 1
    bad = [
        ({}, {"chksum": 0x1234}, "tcp_bad_checksum"),
        ({"chksum": 0x1234}, {}, "ipv4_bad_checksum"),
        ({"flags": "MF"}, {}, "ipv4_frag_bad_length"),  # 21 bytes: not a multiple of 8
        ({"frag": 8189}, {}, "ipv4_frag_too_big"),  # past 65535 bytes
        ({"flags": "evil"}, {}, "ipv4_reserved_flag"),
    ]
    for ip, tcp, reason in bad:
        segment.receive(vm, variant(ip, {"seq": seq & 0xFFFFFFFF, **tcp}, b"x"), 1.0)
        assert vm.stats.drops[reason] >= 1, reason
    assert shell.actions() == [] and vm.take_frames() == []
    # Well formed, if unusual: taken.  IPv4 options; Ethernet padding (not data).
    options = {"options": [IPOption_NOP()] * 4}
    segment.receive(vm, variant(options, {"seq": seq & 0xFFFFFFFF}, b"opts"), 1.1)
    segment.receive(vm, variant({}, {"seq": (seq + 4) & 0xFFFFFFFF}, b"pad") + bytes(20), 1.1)
    assert shell.actions() == [SendFlow(flow, b"opts"), SendFlow(flow, b"pad")]
    segment.send_delayed_acks(1.1)  # the batch's end: one ACK for both
    assert [pkt[TCP].ack for pkt in frames(vm)] == [(seq + 7) & 0xFFFFFFFF]
    assert sum(vm.stats.drops.values()) == len(bad)


def test_time_wait_gives_way_to_a_new_connection(segment: Segment, vm: Vm, shell: TcpShell) -> None:
    flow = connect(segment, vm, shell)
    segment.flow_eof(flow, 1.0)
    una = our_seq(flow)
    assert one_tcp(vm).flags == "FA"
    segment.receive(vm, tcp_frame("FA", ISN + 1, una + 1), 1.1)
    assert one_tcp(vm).ack == (ISN + 2) & 0xFFFFFFFF
    assert flow.endpoint.state is State.TIME_WAIT
    assert [type(a) for a in shell.actions()] == [ShutdownFlow, CloseFlow]
    # The guest's FIN again: ACKed again from TIME_WAIT.
    segment.receive(vm, tcp_frame("FA", ISN + 1, una + 1), 1.2)
    assert one_tcp(vm).ack == (ISN + 2) & 0xFFFFFFFF
    # A new SYN on the same ports, beyond the old sequence numbers: a new flow at once.
    segment.receive(vm, tcp_frame("S", ISN + 100_000, options=[("MSS", 1460)]), 1.3)
    new = shell.opened()
    assert new is not flow and vm.flows == {new.key: new}
    # The old one's timer passes quietly.
    segment.handle_timer(1.1 + TIME_WAIT)
    assert vm.take_frames() == [] and shell.actions() == []


def test_time_wait_ends_after_a_short_wait(segment: Segment, vm: Vm, shell: TcpShell) -> None:
    flow = connect(segment, vm, shell)
    segment.flow_eof(flow, 1.0)
    segment.receive(vm, tcp_frame("FA", ISN + 1, our_seq(flow) + 1), 1.1)
    vm.take_frames()
    shell.actions()
    assert flow.endpoint.deadline() == pytest.approx(1.1 + TIME_WAIT)
    segment.handle_timer(1.1 + TIME_WAIT)
    assert vm.flows == {}
    assert shell.open == set()


def test_go_bug_fin_ack_with_data_reaches_the_host(
    segment: Segment, vm: Vm, shell: TcpShell
) -> None:
    flow = connect(segment, vm, shell)
    segment.receive(vm, tcp_frame("FPA", ISN + 1, our_seq(flow), b"last"), 1.0)
    assert shell.actions() == [SendFlow(flow, b"last"), ShutdownFlow(flow)]


def test_a_host_read_goes_out_as_one_run_of_full_segments(
    segment: Segment, vm: Vm, shell: TcpShell
) -> None:
    """Software segmentation: a read of 5.5 MSS is a run of five full segments and one
    of the rest, each frame checked by scapy, its sequence numbers and IPv4
    identifications consecutive."""
    flow = connect(segment, vm, shell)
    mss = flow.endpoint.mss
    data = bytes(range(256)) * (11 * mss // 512)
    segment.flow_received(flow, data, 1.0)
    pkts = frames(vm)
    assert [len(p[TCP].payload) for p in pkts] == [mss] * 5 + [len(data) - 5 * mss]
    assert [p[TCP].seq - our_seq(flow) for p in pkts] == [i * mss for i in range(6)]
    assert all(p[TCP].flags == "PA" and p[TCP].ack == ISN + 1 for p in pkts)
    idents = [p[IP].id for p in pkts]
    assert idents == [(idents[0] + i) & 0xFFFF for i in range(6)]
    assert b"".join(bytes(p[TCP].payload) for p in pkts) == data
    assert flow.endpoint.counters.segments_out >= 6


def test_guest_reset_mid_transfer_aborts_the_host_socket(
    segment: Segment, vm: Vm, shell: TcpShell
) -> None:
    flow = connect(segment, vm, shell)
    segment.flow_received(flow, b"x" * 5000, 1.0)
    assert len(frames(vm)) == 4
    segment.receive(vm, tcp_frame("R", ISN + 1), 1.1)
    assert shell.actions() == [CloseFlow(flow, abort=True)]
    assert vm.flows == {} and vm.take_frames() == []
    # A late segment of that connection: no flow, so a RST as a closed port gives.
    segment.receive(vm, tcp_frame("A", ISN + 1, our_seq(flow) + 1460), 1.2)
    rst = one_tcp(vm)
    assert (rst.flags, rst.seq) == ("R", our_seq(flow) + 1460)
    assert vm.stats.drops == Counter({"tcp_no_flow": 1})


def test_host_reset_mid_transfer_resets_the_guest(
    segment: Segment, vm: Vm, shell: TcpShell
) -> None:
    flow = connect(segment, vm, shell)
    segment.flow_received(flow, b"partial", 1.0)
    frames(vm)
    segment.flow_error(flow, FLOW_RESET, 1.1)
    rst = one_tcp(vm)
    assert (rst.flags, rst.seq) == ("RA", our_seq(flow) + 7)
    assert shell.actions() == [CloseFlow(flow)]
    assert vm.stats.events == Counter({"tcp_host_reset": 1})


def test_reading_resumes_as_the_guest_acks(segment: Segment, vm: Vm, shell: TcpShell) -> None:
    flow = connect(segment, vm, shell, window=100)  # x 2**7: 12800 bytes
    assert flow.endpoint.read_allowance == SEND_RESERVE
    segment.flow_received(flow, b"y" * SEND_RESERVE, 1.0)
    assert sum(len(p[TCP].payload) for p in frames(vm)) == 12800
    assert flow.endpoint.read_allowance == 0
    segment.receive(vm, tcp_frame("A", ISN + 1, our_seq(flow) + 12800, window=700), 1.1)
    actions = shell.actions()
    assert actions == [ResumeFlow(flow)]
    assert flow.endpoint.read_allowance == 700 * 128 - (SEND_RESERVE - 12800)


def test_a_run_of_plain_acks_in_one_batch_is_handled_as_its_last(
    segment: Segment, vm: Vm, shell: TcpShell
) -> None:
    flow = connect(segment, vm, shell)
    segment.flow_received(flow, b"y" * 6000, 1.0)
    assert sum(len(p[TCP].payload) for p in frames(vm)) == 6000
    taken_before = flow.endpoint.counters.segments_in
    frames_before = vm.stats.frames_in
    acks = [tcp_frame("A", ISN + 1, our_seq(flow) + n * 1460) for n in (1, 2, 4)]
    segment.receive_many(vm, acks, 1.1)
    assert flow.endpoint.snd_una == (our_seq(flow) + 4 * 1460) & 0xFFFFFFFF
    assert flow.endpoint.counters.segments_in == taken_before + 1  # the last one only
    assert vm.stats.frames_in == frames_before + 3  # every frame is still counted
    assert vm.stats.events["tcp_acks_coalesced"] == 2


def test_duplicate_acks_are_never_coalesced(segment: Segment, vm: Vm, shell: TcpShell) -> None:
    """Three of them are a fast retransmit (RFC 5681 §3.2)."""
    flow = connect(segment, vm, shell)
    segment.flow_received(flow, b"y" * 6000, 1.0)
    frames(vm)
    duplicate = tcp_frame("A", ISN + 1, our_seq(flow))
    segment.receive_many(vm, [duplicate] * 3, 1.1)
    assert vm.stats.events["tcp_acks_coalesced"] == 0
    assert flow.endpoint.counters.retransmits == 1
    assert [p[TCP].seq for p in frames(vm)] == [our_seq(flow)]


def test_only_plain_acks_of_one_connection_give_way(
    segment: Segment, vm: Vm, shell: TcpShell
) -> None:
    flow = connect(segment, vm, shell)
    other = connect(segment, vm, shell, sport=SPORT + 1)
    segment.flow_received(flow, b"y" * 6000, 1.0)
    segment.flow_received(other, b"y" * 6000, 1.0)
    frames(vm)
    batch = [
        tcp_frame("A", ISN + 1, our_seq(flow) + 1460),
        tcp_frame("A", ISN + 1, our_seq(other) + 1460, sport=SPORT + 1),  # another flow
        tcp_frame("A", ISN + 1, our_seq(other) + 2920, sport=SPORT + 1),  # gives way: not this
        tcp_frame("PA", ISN + 1, our_seq(other) + 4380, b"data", sport=SPORT + 1),  # data
        tcp_frame("A", ISN + 1, our_seq(flow) + 2920, window=1000),
        tcp_frame("FA", ISN + 1, our_seq(flow) + 4380),  # a FIN
    ]
    segment.receive_many(vm, batch, 1.1)
    assert vm.stats.events["tcp_acks_coalesced"] == 1
    assert flow.endpoint.guest_fin and other.endpoint.rcv_nxt == (ISN + 1 + 4) & 0xFFFFFFFF


# -- limits and lifetime -------------------------------------------------------------


def test_flow_cap_answers_with_a_rst_and_counts() -> None:
    segment = new_segment(max_flows=2)
    vm = segment.attach("guest")
    shell = TcpShell(segment)
    for port in (1, 2):
        segment.receive(vm, syn_frame(sport=port), 0.0)
        shell.opened()
    segment.receive(vm, syn_frame(sport=3), 0.0)
    assert shell.actions() == []
    rst = one_tcp(vm)
    assert (rst.flags, rst.dport, rst.ack) == ("RA", 3, (ISN + 1) & 0xFFFFFFFF)
    assert vm.stats.drops == Counter({"flow_limit": 1})
    other = segment.attach("other")  # the cap is per VM
    segment.receive(other, syn_frame(sport=3, src=OTHER_MAC, src_ip=OTHER_IP), 0.0)
    shell.opened()


def test_detach_aborts_every_host_socket(segment: Segment, vm: Vm, shell: TcpShell) -> None:
    established = connect(segment, vm, shell)
    segment.flow_received(established, b"q" * 200_000, 0.5)  # held for the guest
    assert vm.tcp_buffers.used == 200_000 - SEND_RESERVE
    segment.receive(vm, syn_frame(sport=41000), 1.0)
    connecting = shell.opened()
    segment.detach(vm)
    assert set(closes := shell.actions()) == {
        CloseFlow(established, abort=True),
        CloseFlow(connecting, abort=True),
    }
    assert len(closes) == 2
    assert shell.open == set() and vm.flow_count == 0
    assert vm.tcp_buffers.used == 0  # what the flows held is given back
    segment.flow_connected(connecting, 2.0)
    segment.flow_received(established, b"late", 2.0)
    segment.handle_timer(1e6)
    assert shell.actions() == [] and vm.take_frames() == []


# -- a whole transfer, frames and all --------------------------------------------------


def test_transfer_through_frames_with_loss() -> None:
    """The model guest against the segment: its segments framed, ours parsed back."""
    segment = new_segment(mtu=1500)
    vm = segment.attach("guest")
    shell = TcpShell(segment)
    rng = random.Random(7)
    upload, download = rng.randbytes(300_000), rng.randbytes(300_000)
    guest = GuestTcp(isn=ISN, port=SPORT, dst_port=80)
    now = 0.0
    guest.connect(now)
    flow: TcpFlow | None = None
    given = 0
    sent_upload = False
    reading = True
    for _ in range(100_000):
        for seg in guest.out:
            if rng.random() > 0.02:  # the link loses 2%, both ways
                segment.receive(vm, _frame_of(seg), now)
        guest.out.clear()
        for action in shell.actions():
            if isinstance(action, OpenFlow):
                flow = action.flow  # type: ignore[assignment]
                assert flow is not None
                segment.flow_connected(flow, now)
            elif isinstance(action, SendFlow):
                segment.flow_written(action.flow, len(action.payload), now)
            elif isinstance(action, ResumeFlow):
                reading = True
        for frame in vm.take_frames():
            if rng.random() > 0.02:
                pkt = checked(frame)
                raw = bytes(pkt[IP])[pkt[IP].ihl * 4 :]
                guest.receive(
                    TcpSegment.parse(raw, IPv4Address(pkt[IP].src), IPv4Address(GUEST_IP)), now
                )
        if guest.state == "established" and not sent_upload:
            guest.send(upload, now)
            sent_upload = True
        guest.app_read()
        if flow is not None and not flow.closed and reading and given <= len(download):
            allowance = flow.endpoint.read_allowance
            if allowance == 0:
                reading = False
            elif given < len(download):
                chunk = download[given : given + min(allowance, 65536)]
                given += len(chunk)
                segment.flow_received(flow, chunk, now)
            else:
                given += 1
                segment.flow_eof(flow, now)
        if len(guest.received) == len(download) and not guest.closing and sent_upload:
            guest.close(now)
        if flow is not None and flow.closed and guest.done:
            break
        now += 0.001
        if (deadline := guest.deadline()) is not None and now >= deadline:
            guest.handle_timer(now)
        if (timer := segment.get_timer()) is not None and now >= timer:
            segment.handle_timer(now)
    assert flow is not None and flow.closed
    assert bytes(guest.received) == download
    assert shell.sent[flow] == upload
    assert flow in shell.shut and shell.closed == {flow: False}
    assert flow.endpoint.counters.retransmits > 0
    assert vm.tcp_buffers.used == 0


def _frame_of(seg: TcpSegment) -> bytes:
    body = seg.encode(IPv4Address(GUEST_IP), IPv4Address(REMOTE_IP))
    return framed(IP(src=GUEST_IP, dst=REMOTE_IP, proto=6) / body)
