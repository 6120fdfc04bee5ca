"""IPv4 fragments: a guest's reassembled by the core, ours cut to the MTU.

scapy's ``fragment`` builds the guest's fragments and its ``defrag`` puts ours back
together, so both directions are checked against code we did not write.  The
harness is ``test_core_segment.py``'s; 192.0.2.0/24 is only a value inside frames.
"""

from __future__ import annotations

import random
from collections import Counter
from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, defrag, fragment, in4_chksum
from scapy.layers.l2 import Ether
from scapy.packet import Packet
from scapy.utils import checksum

from slirpnet.core.flows import EchoFlow, SendFlow, TcpFlow, UdpFlow
from slirpnet.core.fragments import (
    FRAGMENT_COST,
    MAX_BYTES,
    MAX_DATAGRAM,
    MAX_DATAGRAMS,
    REASSEMBLY_TIMEOUT,
    Reassembly,
    split,
)
from slirpnet.core.segment import Segment
from slirpnet.core.vm import Vm
from slirpnet.wire.ipv4 import PROTO_UDP, IPv4Packet
from tests.test_core_segment import (
    DNS_IP,
    GATEWAY_IP,
    GATEWAY_MAC,
    GUEST_IP,
    GUEST_MAC,
    OTHER_IP,
    OTHER_MAC,
    REMOTE_IP,
    Shell,
    checked,
    framed,
    new_segment,
)

MTU = 1500
DATA = bytes(range(256)) * 16  # 4096 bytes, no two 8-byte units alike at a given offset
ETHERNET = bytes(Ether(src=GUEST_MAC, dst=GATEWAY_MAC, type=0x0800))


def datagram(size: int = 4000, *, ident: int = 7, dport: int = 9, src: str = GUEST_IP) -> IP:
    return IP(src=src, dst=REMOTE_IP, id=ident) / UDP(sport=40000, dport=dport) / DATA[:size]


def pieces(packet: IP, size: int = 1480) -> list[bytes]:
    """``packet``'s fragments of ``size`` bytes of payload, as frames from the guest."""
    return [framed(f) for f in fragment(packet, size)]


def raw(offset: int, data: bytes, *, more: bool, ident: int = 7, options: bytes = b"") -> bytes:
    """A fragment by hand: ``data`` at byte ``offset`` of datagram ``ident``'s payload."""
    header = IP(src=GUEST_IP, dst=REMOTE_IP, id=ident, proto=PROTO_UDP, options=options)
    header.flags, header.frag = "MF" if more else 0, offset // 8
    return framed(header / data)


def fast_fragment(offset: int, ident: int, data: bytes = DATA[:8]) -> bytes:
    """``data`` at ``offset`` with MF set, built without scapy, for floods."""
    header = IPv4Packet(
        IPv4Address(GUEST_IP),
        IPv4Address(REMOTE_IP),
        PROTO_UDP,
        data,
        ident=ident,
        more_fragments=True,
        fragment_offset=offset,
    )
    return ETHERNET + header.encode()


def feed(segment: Segment, vm: Vm, frames: list[bytes], now: float = 0.0) -> None:
    for frame in frames:
        segment.receive(vm, frame, now)


def sent_once(shell: Shell) -> bytes:
    """The one datagram the guest sent a host socket (a UDP flow opened for it)."""
    _, payload = shell.opened_one(UdpFlow)
    return payload


def defragmented(frames: list[bytes], mtu: int = MTU) -> Packet:
    """Our fragments, each within ``mtu``, put back together by scapy: the one datagram."""
    assert len(frames) > 1
    packets = []
    for frame in frames:
        assert len(frame) <= 14 + mtu
        packets.append(checked(frame)[IP])
    whole_ones, rebuilt, missing = defrag(packets)
    assert (len(whole_ones), len(rebuilt), len(missing)) == (0, 1, 0)
    return IP(bytes(rebuilt[0]))  # dissected anew, so its checksums are checked below


@pytest.fixture
def segment() -> Segment:
    return new_segment(mtu=MTU)


@pytest.fixture
def vm(segment: Segment) -> Vm:
    return segment.attach("guest")


@pytest.fixture
def shell(segment: Segment) -> Shell:
    return Shell(segment)


# -- reassembly: whatever the order --------------------------------------------------


ORDERS = {
    "in_order": [0, 1, 2],
    "reversed": [2, 1, 0],
    "middle_first": [1, 2, 0],
    "last_first": [2, 0, 1],
}


@pytest.mark.parametrize("order", ORDERS.values(), ids=ORDERS.keys())
def test_a_datagram_is_reassembled_in_any_order(
    segment: Segment, vm: Vm, shell: Shell, order: list[int]
) -> None:
    frames = pieces(datagram(4000))
    assert len(frames) == 3
    feed(segment, vm, [frames[index] for index in order])
    assert sent_once(shell) == DATA[:4000]
    assert vm.stats.drops == Counter()
    assert vm.stats.events["ipv4_reassembled"] == 1
    assert segment.ipv4.fragments.held(vm) == (0, 0)


@given(
    units=st.integers(1, 185),  # 8 to 1480 bytes a fragment
    count=st.integers(1, 40),  # fragments, about
    seed=st.integers(0, 2**32 - 1),
    repeats=st.integers(0, 4),
)
def test_any_cut_shuffled_with_repeats_is_reassembled_once(
    units: int, count: int, seed: int, repeats: int
) -> None:
    size = min(units * 8 * count - random.Random(seed).randrange(units * 8), len(DATA))
    segment = new_segment(mtu=MTU)
    vm = segment.attach("guest")
    shell = Shell(segment)
    frames = pieces(datagram(size), units * 8)
    rng = random.Random(seed)
    order = rng.sample(frames, len(frames))
    # Repeats of fragments already seen, before the last one completes the datagram.
    for _ in range(repeats if len(order) > 1 else 0):
        order.insert(rng.randint(1, len(order) - 1), order[0])
    feed(segment, vm, order)
    if len(frames) == 1:  # small enough to go whole: not a fragment at all
        assert vm.stats.events["ipv4_reassembled"] == 0
    else:
        assert vm.stats.events["ipv4_reassembled"] == 1
    assert sent_once(shell) == DATA[:size]
    duplicates = len(order) - len(frames)
    assert vm.stats.drops == Counter({"ipv4_frag_duplicate": duplicates} if duplicates else {})
    assert segment.ipv4.fragments.held(vm) == (0, 0)


def test_a_duplicate_after_completion_starts_anew_and_times_out(
    segment: Segment, vm: Vm, shell: Shell
) -> None:
    frames = pieces(datagram(4000))
    feed(segment, vm, frames)
    sent_once(shell)
    segment.receive(vm, frames[1], 1.0)  # a late duplicate: a new datagram's, for all we know
    assert segment.ipv4.fragments.held(vm) == (1, 1480 + FRAGMENT_COST)
    segment.handle_timer(1.0 + REASSEMBLY_TIMEOUT)
    assert vm.stats.drops == Counter({"ipv4_frag_timeout": 1})
    assert vm.take_frames() == []  # no fragment zero: no ICMP to send
    assert segment.ipv4.fragments.held(vm) == (0, 0)


def test_datagrams_are_told_apart_by_source_destination_protocol_and_ident(
    segment: Segment, vm: Vm, shell: Shell
) -> None:
    first = pieces(datagram(3000, ident=1))
    second = pieces(datagram(3000, ident=2, dport=10))
    other_protocol = framed(IP(src=GUEST_IP, dst=REMOTE_IP, id=1, proto=1, flags="MF") / DATA[:8])
    feed(segment, vm, [first[0], second[0], other_protocol, first[1], second[1]])
    feed(segment, vm, [second[2], first[2]])
    sends = [a for a in shell.actions() if isinstance(a, SendFlow)]
    assert [(a.flow.host_port, a.payload) for a in sends] == [(10, DATA[:3000]), (9, DATA[:3000])]
    assert segment.ipv4.fragments.held(vm) == (1, 8 + FRAGMENT_COST)  # the ICMP one, waiting


def test_the_whole_datagram_has_fragment_zeros_header() -> None:
    """RFC 791 §3.2: fragment zero's header, options and all, is the datagram's."""
    options = b"\x94\x04\x00\x00"  # router alert
    whole = IP(src=GUEST_IP, dst=REMOTE_IP, id=3, ttl=9, tos=0x10, options=options)
    whole = whole / UDP(sport=1, dport=9) / DATA[:3000]
    reassembly, vm = Reassembly(), Vm("guest")
    results = [reassembly.add(vm, IPv4Packet.parse(bytes(f)), 0.0) for f in fragment(whole, 1480)]
    assert results[:-1] == [None, None]
    packet = results[-1]
    assert packet is not None and not packet.is_fragment
    assert (packet.ttl, packet.tos, packet.ident, packet.options) == (9, 0x10, 3, options)
    assert packet.encode() == bytes(whole)


# -- what is refused -----------------------------------------------------------------


def test_an_overlap_gives_the_whole_datagram_up(segment: Segment, vm: Vm, shell: Shell) -> None:
    """RFC 5722 §4: the datagram and its fragments still to come are discarded."""
    frames = pieces(datagram(4000))
    segment.receive(vm, frames[0], 0.0)
    segment.receive(vm, raw(1472, DATA[1472 : 1480 + 16], more=True), 0.0)  # over both
    assert vm.stats.drops == Counter({"ipv4_frag_overlap": 1})
    assert segment.ipv4.fragments.held(vm) == (1, 0)  # a marker, its data freed
    feed(segment, vm, frames[1:], 1.0)
    assert shell.actions() == []
    assert vm.stats.drops == Counter({"ipv4_frag_overlap": 3})
    # Its time over, the same identification may be used again.
    segment.handle_timer(REASSEMBLY_TIMEOUT)
    assert segment.ipv4.fragments.held(vm) == (0, 0)
    assert vm.stats.drops["ipv4_frag_timeout"] == 0  # given up once, counted once
    assert vm.take_frames() == []
    feed(segment, vm, frames, REASSEMBLY_TIMEOUT)
    assert sent_once(shell) == DATA[:4000]


OVERLAPS = {
    "same_start_longer": (raw(0, DATA[:16], more=True), raw(0, DATA[:24], more=True)),
    "same_start_shorter": (raw(0, DATA[:24], more=True), raw(0, DATA[:16], more=True)),
    "inside": (raw(0, DATA[:48], more=True), raw(16, DATA[16:24], more=True)),
    "around": (raw(16, DATA[16:24], more=True), raw(8, DATA[8:40], more=True)),
    "into_the_next": (raw(16, DATA[16:32], more=True), raw(8, DATA[8:24], more=True)),
    "from_the_previous": (raw(0, DATA[:16], more=True), raw(8, DATA[8:24], more=True)),
    "last_over_the_previous": (raw(8, DATA[8:24], more=True), raw(16, DATA[16:32], more=False)),
}


@pytest.mark.parametrize(("held", "overlapping"), OVERLAPS.values(), ids=OVERLAPS.keys())
def test_every_kind_of_overlap_is_one(
    segment: Segment, vm: Vm, held: bytes, overlapping: bytes
) -> None:
    feed(segment, vm, [held, overlapping])
    assert vm.stats.drops == Counter({"ipv4_frag_overlap": 1})
    assert segment.ipv4.fragments.held(vm) == (1, 0)


INCONSISTENT = {
    "two_ends": (raw(8, DATA[8:16], more=False), raw(16, DATA[16:24], more=False)),
    "data_past_the_end": (raw(8, DATA[8:16], more=False), raw(24, DATA[24:32], more=True)),
    "end_before_data_held": (raw(24, DATA[24:32], more=True), raw(8, DATA[8:16], more=False)),
    "more_after_the_end": (raw(8, DATA[8:16], more=False), raw(8, DATA[8:16], more=True)),
    "end_where_more_was_said": (raw(8, DATA[8:16], more=True), raw(8, DATA[8:16], more=False)),
}


@pytest.mark.parametrize(("held", "contradiction"), INCONSISTENT.values(), ids=INCONSISTENT.keys())
def test_fragments_that_contradict_the_end_give_it_up(
    segment: Segment, vm: Vm, held: bytes, contradiction: bytes
) -> None:
    feed(segment, vm, [held, contradiction])
    assert vm.stats.drops == Counter({"ipv4_frag_inconsistent": 1})
    segment.receive(vm, raw(0, DATA[:8], more=True), 0.0)
    assert vm.stats.drops == Counter({"ipv4_frag_inconsistent": 2})


BAD = {
    "not_8_byte_units": (raw(0, DATA[:13], more=True), "ipv4_frag_bad_length"),
    "empty_with_more": (raw(8, b"", more=True), "ipv4_frag_bad_length"),
    "empty_last": (raw(8, b"", more=False), "ipv4_frag_bad_length"),
    "ping_of_death": (raw(65528, DATA[:8], more=False), "ipv4_frag_too_big"),
    "one_byte_past": (raw(65512, DATA[:4], more=False), "ipv4_frag_too_big"),
}


@pytest.mark.parametrize(("frame", "reason"), BAD.values(), ids=BAD.keys())
def test_malformed_fragments_are_dropped_alone(
    segment: Segment, vm: Vm, shell: Shell, frame: bytes, reason: str
) -> None:
    frames = pieces(datagram(4000))
    feed(segment, vm, [frames[0], frame, *frames[1:]])
    assert vm.stats.drops == Counter({reason: 1})
    assert sent_once(shell) == DATA[:4000]  # the datagram it claimed to be part of is fine


def test_the_largest_datagram_is_taken(segment: Segment, vm: Vm, shell: Shell) -> None:
    payload = bytes(MAX_DATAGRAM - 28)  # 65507 bytes of UDP: a 65535-byte datagram
    feed(segment, vm, pieces(IP(src=GUEST_IP, dst=REMOTE_IP) / UDP(dport=9) / payload, 65000))
    assert sent_once(shell) == payload
    assert vm.stats.drops == Counter()


def test_fragment_zeros_options_may_make_it_too_big(segment: Segment, vm: Vm) -> None:
    """Each fragment fits, but with fragment zero's 40 bytes of options the whole
    datagram would be 65540 bytes long."""
    segment.receive(vm, raw(0, bytes(65000), more=True, options=b"\x01" * 40), 0.0)
    segment.receive(vm, raw(65000, bytes(480), more=False), 0.0)
    assert segment.take_actions() == []
    assert vm.stats.drops == Counter({"ipv4_frag_too_big": 1})
    assert segment.ipv4.fragments.held(vm) == (0, 0)


# -- time -------------------------------------------------------------------------------


def test_a_hole_times_out_and_fragment_zeros_sender_hears_it(
    segment: Segment, vm: Vm, shell: Shell
) -> None:
    frames = pieces(datagram(4000))
    segment.receive(vm, frames[0], 10.0)
    segment.receive(vm, frames[2], 11.0)
    assert segment.get_timer() == 10.0 + REASSEMBLY_TIMEOUT
    segment.handle_timer(10.0 + REASSEMBLY_TIMEOUT - 0.001)
    assert vm.stats.drops == Counter()
    segment.handle_timer(10.0 + REASSEMBLY_TIMEOUT)
    assert vm.stats.drops == Counter({"ipv4_frag_timeout": 1})
    assert shell.actions() == []
    assert segment.get_timer() is None
    # RFC 1122 §3.3.2: ICMP time exceeded, reassembly, quoting fragment zero.
    (frame,) = vm.take_frames()
    error = checked(frame)
    assert (error[IP].src, error[IP].dst) == (GATEWAY_IP, GUEST_IP)
    assert (error[ICMP].type, error[ICMP].code) == (11, 1)
    assert bytes(error[ICMP].payload) == frames[0][14 : 14 + 20 + 8]
    # The hole filled too late starts a datagram of its own, which times out in turn.
    segment.receive(vm, frames[1], 30.0)
    segment.handle_timer(30.0 + REASSEMBLY_TIMEOUT)
    assert vm.stats.drops == Counter({"ipv4_frag_timeout": 2})
    assert vm.take_frames() == []


def test_each_datagram_has_its_own_time(segment: Segment, vm: Vm, shell: Shell) -> None:
    early = pieces(datagram(2000, ident=1))
    late = pieces(datagram(2000, ident=2, dport=10))
    segment.receive(vm, early[0], 0.0)
    segment.receive(vm, late[0], 5.0)
    segment.receive(vm, early[1], 6.0)  # completes the first: its timer entry is stale now
    assert sent_once(shell) == DATA[:2000]
    segment.handle_timer(segment.get_timer() or 0.0)
    assert vm.stats.drops == Counter()
    assert segment.ipv4.fragments.next_time() == 5.0 + REASSEMBLY_TIMEOUT
    segment.receive(vm, late[1], 19.0)
    assert [a.payload for a in shell.actions() if isinstance(a, SendFlow)] == [DATA[:2000]]
    segment.handle_timer(20.0)
    assert segment.ipv4.fragments.next_time() is None
    assert vm.stats.drops == Counter()


def test_a_stream_of_datagrams_keeps_one_timer_entry(segment: Segment, vm: Vm) -> None:
    frames = pieces(datagram(2000))
    for ident in range(300):
        for frame in frames:  # the identification changed, and the IPv4 checksum with it
            packet = Ether(frame)
            packet[IP].id, packet[IP].chksum = ident, None
            segment.receive(vm, bytes(packet), ident * 0.001)
    assert len(segment.ipv4.fragments._timers) == 1
    assert vm.stats.events["ipv4_reassembled"] == 300


def test_a_vm_that_leaves_takes_its_datagrams(segment: Segment, vm: Vm) -> None:
    segment.receive(vm, pieces(datagram(4000))[0], 0.0)
    segment.detach(vm)
    assert segment.ipv4.fragments.held(vm) == (0, 0)
    segment.handle_timer(REASSEMBLY_TIMEOUT)
    assert vm.stats.drops == Counter()
    assert vm.take_frames() == []
    assert segment.get_timer() is None


# -- limits ----------------------------------------------------------------------------


def test_a_flood_of_first_fragments_stays_within_the_bound(
    segment: Segment, vm: Vm, shell: Shell
) -> None:
    flood = 300
    for ident in range(flood):
        segment.receive(vm, fast_fragment(0, ident, DATA[:1480]), 0.0)
    count, held = segment.ipv4.fragments.held(vm)
    assert count == MAX_DATAGRAMS and held == MAX_DATAGRAMS * (1480 + FRAGMENT_COST)
    assert vm.stats.drops == Counter({"ipv4_frag_limit": flood - MAX_DATAGRAMS})
    # Another VM is not held up by it.
    other = segment.attach("other")
    frames = [framed(f, src=OTHER_MAC) for f in fragment(datagram(4000, src=OTHER_IP), 1480)]
    feed(segment, other, frames)
    assert sent_once(shell) == DATA[:4000]
    # Once the flood's time is up, the flooding VM is heard again.
    segment.handle_timer(REASSEMBLY_TIMEOUT)
    assert vm.stats.drops["ipv4_frag_timeout"] == MAX_DATAGRAMS
    feed(segment, vm, pieces(datagram(4000, ident=flood)), REASSEMBLY_TIMEOUT)
    assert [a.payload for a in shell.actions() if isinstance(a, SendFlow)] == [DATA[:4000]]


def test_a_flood_of_large_fragments_stays_within_the_bytes() -> None:
    segment = new_segment()  # the default MTU: fragments of up to 65 KB
    vm = segment.attach("guest")
    flood = 40
    for ident in range(flood):
        first = fragment(datagram(0, ident=ident) / bytes(60000), 59000)[0]
        segment.receive(vm, framed(first), 0.0)
    count, held = segment.ipv4.fragments.held(vm)
    assert count == MAX_BYTES // (59000 + FRAGMENT_COST) and held <= MAX_BYTES
    assert vm.stats.drops == Counter({"ipv4_frag_limit": flood - count})


def test_datagrams_of_tiny_fragments_are_given_up_at_the_bytes_bound(
    segment: Segment, vm: Vm
) -> None:
    per_fragment = 8 + FRAGMENT_COST
    units = (MAX_DATAGRAM - 20) // 8  # all a datagram has room for
    feed(segment, vm, [fast_fragment(unit * 8, 1) for unit in range(units)])
    assert segment.ipv4.fragments.held(vm) == (1, units * per_fragment)
    room = (MAX_BYTES - units * per_fragment) // per_fragment
    feed(segment, vm, [fast_fragment(unit * 8, 2) for unit in range(room + 1)])
    assert vm.stats.drops == Counter({"ipv4_frag_limit": 1})
    # The second datagram is given up, its later fragments with it; the first stays.
    assert segment.ipv4.fragments.held(vm) == (2, units * per_fragment)
    segment.receive(vm, fast_fragment((room + 1) * 8, 2), 0.0)
    assert vm.stats.drops == Counter({"ipv4_frag_limit": 2})


# -- reassembled datagrams go the normal way ------------------------------------------


def test_a_large_ping_to_the_gateway_comes_back_in_fragments(segment: Segment, vm: Vm) -> None:
    data = DATA[:4000]
    request = IP(src=GUEST_IP, dst=GATEWAY_IP, id=77) / ICMP(type=8, id=5, seq=6) / data
    feed(segment, vm, [framed(f) for f in fragment(request, 1480)])
    reply = defragmented(vm.take_frames())
    assert (reply.src, reply.dst) == (GATEWAY_IP, GUEST_IP)
    assert (reply[ICMP].type, reply[ICMP].id, reply[ICMP].seq) == (0, 5, 6)
    assert bytes(reply[ICMP].payload) == data
    assert checksum(bytes(reply[ICMP])) == 0
    assert vm.stats.drops == Counter()


def test_a_large_ping_elsewhere_goes_whole_and_its_reply_in_fragments(
    segment: Segment, vm: Vm, shell: Shell
) -> None:
    data = DATA[:4000]
    request = IP(src=GUEST_IP, dst=REMOTE_IP, id=78) / ICMP(type=8, id=5, seq=6) / data
    feed(segment, vm, [framed(f) for f in fragment(request, 1480)])
    flow, sent = shell.opened_one(EchoFlow)
    assert sent == bytes(request[ICMP])
    host_reply = ICMP(type=0, id=999, seq=6) / data  # a ping socket's own identifier
    segment.flow_received(flow, bytes(host_reply), 1.0)
    reply = defragmented(vm.take_frames())
    assert (reply.src, reply[ICMP].type, reply[ICMP].id) == (REMOTE_IP, 0, 5)
    assert bytes(reply[ICMP].payload) == data
    assert checksum(bytes(reply[ICMP])) == 0


def test_a_large_udp_reply_comes_back_in_fragments(segment: Segment, vm: Vm, shell: Shell) -> None:
    feed(segment, vm, pieces(datagram(4000)))
    flow, _ = shell.opened_one(UdpFlow)
    segment.flow_received(flow, DATA[::-1], 1.0)
    reply = defragmented(vm.take_frames())
    assert (reply.src, reply.dst, reply[UDP].sport, reply[UDP].dport) == (
        REMOTE_IP,
        GUEST_IP,
        9,
        40000,
    )
    assert bytes(reply[UDP].payload) == DATA[::-1]
    assert in4_chksum(17, reply, bytes(reply[UDP])) == 0


def test_a_fragmented_tcp_segment_is_taken(segment: Segment, vm: Vm) -> None:
    syn = IP(src=GUEST_IP, dst=REMOTE_IP) / TCP(sport=40000, dport=80, flags="S", seq=1)
    feed(segment, vm, [framed(f) for f in fragment(syn / DATA[:40], 24)])
    (flow,) = vm.flows.values()
    assert isinstance(flow, TcpFlow)
    assert (flow.host_address, flow.host_port) == (IPv4Address(REMOTE_IP), 80)


def test_an_icmp_error_about_a_reassembled_datagram_quotes_it_whole(
    segment: Segment, vm: Vm
) -> None:
    whole = IP(src=GUEST_IP, dst=DNS_IP, id=5) / UDP(sport=40000, dport=1234) / DATA[:4000]
    feed(segment, vm, [framed(f) for f in fragment(whole, 1480)])  # a port DNS_IP lacks
    assert vm.stats.drops == Counter({"no_service": 1})
    (frame,) = vm.take_frames()
    error = checked(frame)
    assert (error[ICMP].type, error[ICMP].code) == (3, 3)
    assert bytes(error[ICMP].payload) == bytes(whole)[:28]  # total length 4028, no MF


# -- cutting ours -----------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 1472, 1473, 1480, 2952, 2953, 4000, 65507])
@pytest.mark.parametrize("mtu", [576, 1500, 9000])
def test_split_is_what_scapy_defragments(size: int, mtu: int) -> None:
    body = bytes(UDP(sport=1, dport=2) / (DATA * 16)[:size])
    packet = IPv4Packet(
        IPv4Address(GATEWAY_IP), IPv4Address(GUEST_IP), PROTO_UDP, body, ident=4242, tos=8
    )
    parts = split(packet, mtu)
    if 20 + len(body) <= mtu:
        assert [b"".join(part) for part in parts] == [packet.encode()]
        return
    head = bytes(Ether(dst=GUEST_MAC, src=GATEWAY_MAC, type=0x0800))
    frames = [b"".join((head, *part)) for part in parts]
    fragments = [checked(frame)[IP] for frame in frames]
    assert all((f.id, f.tos, f.ttl, f.proto) == (4242, 8, 64, 17) for f in fragments)
    step = (mtu - 20) // 8 * 8
    assert [f.frag * 8 for f in fragments] == [i * step for i in range(len(parts))]
    assert [f.flags for f in fragments] == ["MF"] * (len(parts) - 1) + [0]
    assert bytes(defragmented(frames, mtu)) == packet.encode()


def test_split_refuses_what_it_would_get_wrong() -> None:
    packet = IPv4Packet(
        IPv4Address(GATEWAY_IP), IPv4Address(GUEST_IP), PROTO_UDP, bytes(2000), options=bytes(4)
    )
    with pytest.raises(ValueError):
        split(packet, MTU)
