"""The gateway's TFTP server (core/tftp.py) through the ``Segment``, on a fake clock.

A fake shell answers the flows' actions from a dict of files, as shell/tftpfiles.py
does from the disk, and checks every read is bounded; scapy builds the guest's
packets and dissects the server's.
"""

from __future__ import annotations

import struct
from collections import Counter
from ipaddress import IPv4Address

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.layers.tftp import (
    TFTP,
    TFTP_ACK,
    TFTP_DATA,
    TFTP_ERROR,
    TFTP_OACK,
    TFTP_RRQ,
    TFTP_WRQ,
    TFTP_Option,
    TFTP_Options,
)
from scapy.packet import Packet, Raw

from slirpnet.core import tftp as service
from slirpnet.core.addr import V4_LOOPBACK
from slirpnet.core.flows import (
    FLOW_FAILED,
    Action,
    CloseFlow,
    OpenFlow,
    ReadFlow,
    SendFlow,
    TftpFlow,
    UdpFlow,
)
from slirpnet.core.gatewayports import FORWARD_PORTS
from slirpnet.core.segment import Segment
from slirpnet.core.vm import Vm
from tests.test_core_segment import (
    GATEWAY_IP,
    GATEWAY_MAC,
    GUEST_IP,
    GUEST_MAC,
    checked,
    new_segment,
    udp_frame,
)

ROOT = "/srv/tftp"  # never opened: the fake shell below stands for the disk
GUEST_PORT = 2070


class Files:
    """The shell's part: opens and reads ``files``, recording every read."""

    def __init__(self, segment: Segment, files: dict[str, bytes]) -> None:
        self.segment = segment
        self.files = files
        self.open: dict[TftpFlow, bytes] = {}
        self.reads: list[tuple[int, int]] = []
        self.closed: list[TftpFlow] = []
        self.answer_opens = True

    def run(self, now: float = 0.0) -> list[Action]:
        """Carry out the actions, as the shell does, until there are none."""
        done = []
        while actions := self.segment.take_actions():
            for action in actions:
                done.append(action)
                flow = action.flow
                if isinstance(action, OpenFlow) and isinstance(flow, TftpFlow):
                    assert flow not in self.open
                    if not self.answer_opens:
                        continue
                    data = self.files.get(flow.path)
                    if data is None:
                        self.segment.flow_error(flow, service.NOT_FOUND, now)
                    elif data == b"DENIED":
                        self.segment.flow_error(flow, service.DENIED, now)
                    else:
                        self.open[flow] = data
                        self.segment.flow_received(flow, service.FILE_SIZE.pack(len(data)), now)
                elif isinstance(action, ReadFlow):
                    assert isinstance(flow, TftpFlow) and flow in self.open, "a read of no file"
                    assert 0 < action.size <= max(service.MAX_WINDOW_BYTES, 65464)
                    self.reads.append((action.offset, action.size))
                    data = self.open[flow][action.offset : action.offset + action.size]
                    self.segment.flow_received(flow, data, now)
                elif isinstance(action, CloseFlow) and isinstance(flow, TftpFlow):
                    assert flow.closed
                    self.open.pop(flow, None)
                    self.closed.append(flow)
        return done


def tftp_frame(packet: Packet, port: int = 69, sport: int = GUEST_PORT) -> bytes:
    return udp_frame(GATEWAY_IP, port, packet, sport=sport)


def rrq(name: bytes, *options: tuple[bytes, bytes], mode: bytes = b"octet") -> Packet:
    request = TFTP() / TFTP_RRQ(filename=name, mode=mode)
    if options:
        request /= TFTP_Options(options=[TFTP_Option(oname=k, value=v) for k, v in options])
    return request


def ack(block: int) -> Packet:
    return TFTP() / TFTP_ACK(block=block)


def received(vm: Vm) -> list[Packet]:
    """The server's packets to the guest, each checked to come from the gateway."""
    packets = []
    for frame in vm.take_frames():
        pkt = checked(frame)
        assert (pkt[IP].src, pkt[IP].dst, pkt[UDP].dport) == (GATEWAY_IP, GUEST_IP, GUEST_PORT)
        # scapy dissects TFTP only to or from port 69: each packet is taken apart here.
        udp = pkt[UDP]
        packets.append(UDP(sport=udp.sport, dport=udp.dport) / TFTP(bytes(udp.payload)))
    return packets


def data_blocks(packets: list[Packet]) -> list[tuple[int, bytes]]:
    return [(p[TFTP_DATA].block, bytes(p[TFTP_DATA].payload)) for p in packets]


def error_of(packets: list[Packet]) -> tuple[int, int, bytes]:
    """(source port, code, message) of the one packet, an ERROR."""
    (packet,) = packets
    return packet.sport, packet[TFTP_ERROR].errorcode, packet[TFTP_ERROR].errormsg


def options_of(packet: Packet) -> list[tuple[bytes, bytes]]:
    return [(o.oname, o.value) for o in packet[TFTP_Options].options]


def blob(size: int) -> bytes:
    return bytes(i * 13 & 0xFF for i in range(size))


@pytest.fixture
def segment() -> Segment:
    return new_segment(tftp_root=ROOT)


@pytest.fixture
def vm(segment: Segment) -> Vm:
    return segment.attach("guest")


def start(segment: Segment, vm: Vm, files: Files, packet: Packet, now: float = 0.0) -> list[Packet]:
    segment.receive(vm, tftp_frame(packet), now)
    files.run(now)
    return received(vm)


def fetch(segment: Segment, vm: Vm, files: Files, packet: Packet) -> tuple[bytes, list[Packet]]:
    """Run a transfer to its end, acknowledging each packet: the file and all packets."""
    packets = start(segment, vm, files, packet)
    seen = list(packets)
    content = b""
    while packets:
        last = packets[-1]
        if last.haslayer(TFTP_OACK):
            number = 0
        else:
            for _, payload in data_blocks(packets):
                content += payload
            number = last[TFTP_DATA].block
        segment.receive(vm, tftp_frame(ack(number), port=last.sport), 0.0)
        files.run()
        packets = received(vm)
        seen += packets
    return content, seen


# -- transfers ---------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 511, 512, 1300, 1536])
def test_a_read_without_options_in_blocks_of_512(segment: Segment, vm: Vm, size: int) -> None:
    content = blob(size)
    files = Files(segment, {"boot/kernel": content})
    got, packets = fetch(segment, vm, files, rrq(b"boot/kernel"))
    assert got == content
    # RFC 1350 §6: blocks of 512 and a last one shorter, empty when the size is a multiple.
    sizes = [len(payload) for _, payload in data_blocks(packets)]
    assert sizes == [512] * (size // 512) + [size % 512]
    assert [block for block, _ in data_blocks(packets)] == list(range(1, len(sizes) + 1))
    # From a port of the transfer's own, not 69 (RFC 1350 §4).
    ports = {packet.sport for packet in packets}
    assert len(ports) == 1 and next(iter(ports)) in FORWARD_PORTS
    assert len(files.closed) == 1 and files.open == {}
    assert vm.stats.events["tftp_transfer_done"] == 1
    assert vm.stats.drops == Counter()


def test_options_agreed_in_an_oack(segment: Segment, vm: Vm) -> None:
    content = blob(10000)
    files = Files(segment, {"f": content})
    options = [(b"blksize", b"1432"), (b"tsize", b"0"), (b"foo", b"1"), (b"timeout", b"3")]
    options.append((b"windowsize", b"4"))
    (oack,) = start(segment, vm, files, rrq(b"f", *options))
    # RFC 2347 §2: the options taken, in the order asked; an unknown one left out.
    assert options_of(oack) == [
        (b"blksize", b"1432"),
        (b"tsize", b"10000"),  # RFC 2349 §3: the size, answering 0
        (b"timeout", b"3"),
        (b"windowsize", b"4"),
    ]
    segment.receive(vm, tftp_frame(ack(0), port=oack.sport), 0.0)
    files.run()
    window = received(vm)
    assert [(block, len(payload)) for block, payload in data_blocks(window)] == [
        (1, 1432),
        (2, 1432),
        (3, 1432),
        (4, 1432),
    ]
    assert files.reads == [(0, 4 * 1432)]


def test_the_whole_file_with_options(segment: Segment, vm: Vm) -> None:
    content = blob(100_000)
    files = Files(segment, {"f": content})
    got, _ = fetch(segment, vm, files, rrq(b"f", (b"blksize", b"1000"), (b"windowsize", b"7")))
    assert got == content
    # Every read a window's worth at its place, bounded.
    assert files.reads == [(offset, 7000) for offset in range(0, 100_000 + 1, 7000)]


def test_block_size_is_what_the_mtu_carries() -> None:
    segment = new_segment(tftp_root=ROOT, mtu=1500)
    vm = segment.attach("guest")
    files = Files(segment, {"f": blob(5000)})
    (oack,) = start(segment, vm, files, rrq(b"f", (b"blksize", b"65464")))
    # RFC 2348 §2: a smaller value answered; 1500 - IPv4 20 - UDP 8 - TFTP 4.
    assert options_of(oack) == [(b"blksize", b"1468")]


def test_window_is_bounded_in_bytes(segment: Segment, vm: Vm) -> None:
    files = Files(segment, {"f": blob(1_000_000)})
    (oack,) = start(segment, vm, files, rrq(b"f", (b"blksize", b"65464"), (b"windowsize", b"64")))
    fits = service.MAX_WINDOW_BYTES // 65464
    assert options_of(oack) == [(b"blksize", b"65464"), (b"windowsize", str(fits).encode())]
    segment.receive(vm, tftp_frame(ack(0), port=oack.sport), 0.0)
    files.run()
    assert len(received(vm)) == fits
    assert files.reads == [(0, fits * 65464)]


@pytest.mark.parametrize(
    "option",
    [
        (b"blksize", b"7"),
        (b"blksize", b"65465"),
        (b"blksize", b"big"),
        (b"timeout", b"0"),
        (b"timeout", b"256"),
        (b"windowsize", b"0"),
        (b"windowsize", b"-1"),
        (b"tsize", b"unknown"),
    ],
)
def test_values_out_of_range_are_declined(
    segment: Segment, vm: Vm, option: tuple[bytes, bytes]
) -> None:
    files = Files(segment, {"f": blob(600)})
    packets = start(segment, vm, files, rrq(b"f", option))
    # RFC 2347: no option taken, so no OACK: the transfer starts with DATA 1 of 512.
    assert [(block, len(payload)) for block, payload in data_blocks(packets)] == [(1, 512)]


def test_a_missed_block_restarts_the_window_after_the_ack(segment: Segment, vm: Vm) -> None:
    content = blob(8 * 100)
    files = Files(segment, {"f": content})
    (oack,) = start(segment, vm, files, rrq(b"f", (b"blksize", b"100"), (b"windowsize", b"4")))
    tid = oack.sport
    segment.receive(vm, tftp_frame(ack(0), port=tid), 0.0)
    files.run()
    assert [block for block, _ in data_blocks(received(vm))] == [1, 2, 3, 4]
    # The guest saw blocks 1 and 2 only: RFC 7440 §4, the next window starts at 3.
    segment.receive(vm, tftp_frame(ack(2), port=tid), 0.0)
    files.run()
    assert data_blocks(received(vm)) == [
        (n, content[(n - 1) * 100 : n * 100]) for n in (3, 4, 5, 6)
    ]
    assert files.reads[-1] == (200, 400)


def test_duplicate_acks_are_not_answered(segment: Segment, vm: Vm) -> None:
    """RFC 1350's Sorcerer's Apprentice: answering a duplicate ACK doubles every block."""
    files = Files(segment, {"f": blob(2000)})
    (first,) = start(segment, vm, files, rrq(b"f"))
    segment.receive(vm, tftp_frame(ack(1), port=first.sport), 0.0)
    files.run()
    assert [block for block, _ in data_blocks(received(vm))] == [2]
    for number in (1, 0, 1, 500):
        segment.receive(vm, tftp_frame(ack(number), port=first.sport), 0.1)
        files.run()
    assert received(vm) == []


def test_an_unacknowledged_window_is_sent_again_then_given_up(segment: Segment, vm: Vm) -> None:
    files = Files(segment, {"f": blob(3000)})
    packets = start(segment, vm, files, rrq(b"f", (b"windowsize", b"2")))
    (oack,) = packets
    segment.receive(vm, tftp_frame(ack(0), port=oack.sport), 0.0)
    files.run()
    window = received(vm)
    assert len(window) == 2
    now = 0.0
    for _ in range(service.MAX_TRIES):
        now += service.DEFAULT_TIMEOUT
        assert segment.get_timer() == pytest.approx(now)
        segment.handle_timer(now)
        files.run(now)
        assert [bytes(p) for p in received(vm)] == [bytes(p) for p in window]
    now += service.DEFAULT_TIMEOUT
    segment.handle_timer(now)
    files.run(now)
    assert received(vm) == []
    assert len(files.closed) == 1
    assert vm.stats.events["tftp_retransmits"] == service.MAX_TRIES
    assert vm.stats.events["tftp_timed_out"] == 1


def test_the_timeout_the_guest_asked_for(segment: Segment, vm: Vm) -> None:
    files = Files(segment, {"f": blob(100)})
    (oack,) = start(segment, vm, files, rrq(b"f", (b"timeout", b"5")))
    segment.handle_timer(1.0)
    files.run(1.0)
    assert received(vm) == []  # not yet
    assert segment.get_timer() == pytest.approx(5.0)
    segment.handle_timer(5.0)
    files.run(5.0)
    (again,) = received(vm)
    assert bytes(again) == bytes(oack)  # the OACK, sent again


def test_progress_resets_the_tries(segment: Segment, vm: Vm) -> None:
    files = Files(segment, {"f": blob(512 * 10)})
    (first,) = start(segment, vm, files, rrq(b"f"))
    now = 0.0
    for block in range(1, 8):
        for _ in range(service.MAX_TRIES):  # each block needs every try there is
            now += service.DEFAULT_TIMEOUT
            segment.handle_timer(now)
            files.run(now)
            assert len(received(vm)) == 1
        segment.receive(vm, tftp_frame(ack(block), port=first.sport), now)
        files.run(now)
        assert [b for b, _ in data_blocks(received(vm))] == [block + 1]
    assert files.closed == []


def test_block_numbers_roll_over(segment: Segment, vm: Vm) -> None:
    """A file of more than 65535 blocks: block numbers go on from 0 (as tftp-hpa's).

    65538 blocks are too many to dissect with scapy: the frames are read with struct,
    after the first has been checked to be a DATA packet at the offset assumed."""
    size = 8 * 65537 + 3
    content = blob(size)
    files = Files(segment, {"big": content})
    (oack,) = start(segment, vm, files, rrq(b"big", (b"blksize", b"8"), (b"windowsize", b"65535")))
    window = service.MAX_WINDOW_BYTES // 8
    assert options_of(oack) == [(b"blksize", b"8"), (b"windowsize", str(window).encode())]
    numbers: list[int] = []
    got = b""
    last = 0
    while True:
        segment.receive(vm, tftp_frame(ack(last), port=oack.sport), 0.0)
        files.run()
        frames = vm.take_frames()
        if not frames:
            break
        if not numbers:
            assert data_blocks([received_one(frames[0])]) == [(1, content[:8])]
        for frame in frames:
            opcode, last = struct.unpack_from("!HH", frame, 42)
            assert opcode == 3
            numbers.append(last)
            got += frame[46:]
    assert got == content
    assert numbers == [n % 65536 for n in range(1, 65539)]
    assert max(size for _, size in files.reads) <= service.MAX_WINDOW_BYTES


def received_one(frame: bytes) -> Packet:
    udp = checked(frame)[UDP]
    return UDP(sport=udp.sport, dport=udp.dport) / TFTP(bytes(udp.payload))


def test_a_repeated_request_is_answered_again_not_twice(segment: Segment, vm: Vm) -> None:
    files = Files(segment, {"f": blob(100)})
    (first,) = start(segment, vm, files, rrq(b"f", (b"tsize", b"0")))
    (again,) = start(segment, vm, files, rrq(b"f", (b"tsize", b"0")))
    assert bytes(again) == bytes(first)  # the same OACK from the same port
    assert len(files.open) == 1


def test_a_new_request_from_the_same_port_ends_the_old(segment: Segment, vm: Vm) -> None:
    files = Files(segment, {"a": blob(2000), "b": blob(30)})
    (first,) = start(segment, vm, files, rrq(b"a"))
    segment.receive(vm, tftp_frame(ack(1), port=first.sport), 0.0)
    files.run()
    received(vm)
    (other,) = start(segment, vm, files, rrq(b"b"))
    assert data_blocks([other]) == [(1, blob(30))]
    assert len(files.closed) == 1 and files.closed[0].path == "a"


def test_transfers_per_vm_are_bounded(segment: Segment, vm: Vm) -> None:
    files = Files(segment, {"f": blob(5000)})
    for port in range(service.MAX_TRANSFERS):
        segment.receive(vm, tftp_frame(rrq(b"f"), sport=3000 + port), 0.0)
    files.run()
    assert len(files.open) == service.MAX_TRANSFERS
    vm.take_frames()
    segment.receive(vm, tftp_frame(rrq(b"f")), 0.0)
    assert files.run() == []
    assert error_of(received(vm)) == (69, 0, b"too many transfers")
    assert vm.stats.drops == Counter({"tftp_transfer_limit": 1})
    # Another VM is not held back.
    other = segment.attach("other")
    frame = udp_frame(GATEWAY_IP, 69, rrq(b"f"), src="52:54:00:65:43:21", src_ip="10.0.2.16")
    segment.receive(other, frame, 0.0)
    assert [type(a) for a in files.run()] == [OpenFlow, ReadFlow]


def test_leaving_closes_the_transfers(segment: Segment, vm: Vm) -> None:
    files = Files(segment, {"f": blob(5000)})
    start(segment, vm, files, rrq(b"f"))
    segment.detach(vm)
    files.run()
    assert len(files.closed) == 1 and files.open == {}
    assert segment.tftp.flows_of(vm) == []


# -- refusals ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        b"../etc/passwd",
        b"..",
        b"a/../../etc/passwd",
        b"a/..",  # even one that stays within: ".." is never taken
        b"/etc/passwd",
        b"//etc/passwd",
        b".",
        b"./",
        b"\xff\xfe",  # not UTF-8
        b"x" * 256,
    ],
)
def test_paths_out_of_the_root_are_refused(segment: Segment, vm: Vm, name: bytes) -> None:
    files = Files(segment, {})
    packets = start(segment, vm, files, rrq(name))
    assert error_of(packets) == (69, 2, b"access violation")
    assert files.open == {} and files.reads == []
    assert vm.stats.drops == Counter({"tftp_path_refused": 1})


def test_a_nul_in_the_name_is_malformed(segment: Segment, vm: Vm) -> None:
    raw = b"\x00\x01ok.txt\x00../../etc/passwd\x00octet\x00"
    files = Files(segment, {"ok.txt": b"x"})
    segment.receive(vm, tftp_frame(Raw(raw)), 0.0)
    assert files.run() == []
    assert vm.take_frames() == []
    assert vm.stats.drops == Counter({"tftp_bad_mode": 1})


@pytest.mark.parametrize("name", [b"a/./b", b"a//b", b"a/b/"])
def test_dot_and_empty_components_fall_away(segment: Segment, vm: Vm, name: bytes) -> None:
    files = Files(segment, {"a/b": b"hello"})
    assert data_blocks(start(segment, vm, files, rrq(name))) == [(1, b"hello")]


def test_not_found_and_denied_as_the_shell_says(segment: Segment, vm: Vm) -> None:
    files = Files(segment, {"secret": b"DENIED"})
    (missing,) = start(segment, vm, files, rrq(b"nothing"))
    assert missing[TFTP_ERROR].errorcode == 1
    assert missing.sport in FORWARD_PORTS
    (denied,) = start(segment, vm, files, rrq(b"secret"))
    assert (denied[TFTP_ERROR].errorcode, denied[TFTP_ERROR].errormsg) == (2, b"access violation")
    assert len(files.closed) == 2
    assert vm.stats.events["tftp_not_found"] == 1
    assert vm.stats.drops == Counter({"tftp_path_refused": 1})


def test_a_failed_read_ends_the_transfer(segment: Segment, vm: Vm) -> None:
    files = Files(segment, {"f": blob(2000)})
    (first,) = start(segment, vm, files, rrq(b"f"))
    (flow,) = files.open
    segment.receive(vm, tftp_frame(ack(1), port=first.sport), 0.0)
    segment.take_actions()  # the read, never answered but by an error
    segment.flow_error(flow, FLOW_FAILED, 0.0)
    assert error_of(received(vm))[1:] == (0, b"cannot read the file")
    assert flow.closed


def test_a_shell_that_never_answers_the_open(segment: Segment, vm: Vm) -> None:
    files = Files(segment, {"f": blob(10)})
    files.answer_opens = False
    assert start(segment, vm, files, rrq(b"f")) == []
    segment.handle_timer(service.DEFAULT_TIMEOUT)
    assert [type(action) for action in files.run()] == [CloseFlow]
    assert error_of(received(vm))[1:] == (0, b"cannot read the file")
    assert segment.tftp.flows_of(vm) == []


def test_writes_are_refused(segment: Segment, vm: Vm) -> None:
    files = Files(segment, {})
    packets = start(segment, vm, files, TFTP() / TFTP_WRQ(filename=b"f", mode=b"octet"))
    assert error_of(packets) == (69, 2, b"read-only server")
    assert vm.stats.drops == Counter({"tftp_write_refused": 1})


def test_netascii_is_refused(segment: Segment, vm: Vm) -> None:
    files = Files(segment, {"f": b"text"})
    assert error_of(start(segment, vm, files, rrq(b"f", mode=b"netascii")))[:2] == (69, 4)


def test_port_69_takes_requests_only(segment: Segment, vm: Vm) -> None:
    files = Files(segment, {})
    assert error_of(start(segment, vm, files, ack(1)))[:2] == (69, 4)
    # An error is never answered with an error.
    assert start(segment, vm, files, TFTP() / TFTP_ERROR(errorcode=0, errormsg=b"x")) == []
    assert vm.stats.drops == Counter({"tftp_not_a_request": 2})


def test_an_unexpected_packet_ends_the_transfer(segment: Segment, vm: Vm) -> None:
    files = Files(segment, {"f": blob(2000)})
    (first,) = start(segment, vm, files, rrq(b"f"))
    data = TFTP() / TFTP_DATA(block=1) / b"upload"
    segment.receive(vm, tftp_frame(data, port=first.sport), 0.0)
    files.run()
    assert error_of(received(vm)) == (first.sport, 4, b"unexpected packet")
    assert len(files.closed) == 1


def test_the_guest_giving_up_ends_the_transfer(segment: Segment, vm: Vm) -> None:
    files = Files(segment, {"f": blob(2000)})
    (oack,) = start(segment, vm, files, rrq(b"f", (b"blksize", b"1024")))
    error = TFTP() / TFTP_ERROR(errorcode=8, errormsg=b"no thanks")
    segment.receive(vm, tftp_frame(error, port=oack.sport), 0.0)
    files.run()
    assert received(vm) == []
    assert len(files.closed) == 1
    assert vm.stats.events["tftp_guest_error"] == 1


def test_a_transfer_port_from_elsewhere_is_plain_nat(segment: Segment, vm: Vm) -> None:
    """Only the requesting port reaches a transfer; the same gateway port from another
    guest port goes to the host, as it would without TFTP."""
    files = Files(segment, {"f": blob(2000)})
    (first,) = start(segment, vm, files, rrq(b"f"))
    segment.receive(vm, tftp_frame(ack(1), port=first.sport, sport=GUEST_PORT + 1), 0.0)
    actions = segment.take_actions()
    assert [type(a) for a in actions] == [OpenFlow, SendFlow]
    flow = actions[0].flow
    assert isinstance(flow, UdpFlow)
    assert (flow.host_address, flow.host_port) == (V4_LOOPBACK, first.sport)


def test_without_a_root_port_69_is_the_hosts() -> None:
    segment = new_segment()
    vm = segment.attach("guest")
    segment.receive(vm, tftp_frame(rrq(b"f")), 0.0)
    actions = segment.take_actions()
    assert [type(a) for a in actions] == [OpenFlow, SendFlow]
    flow = actions[0].flow
    assert isinstance(flow, UdpFlow)
    assert (flow.host_address, flow.host_port) == (IPv4Address("127.0.0.1"), 69)


def test_served_under_restrict_and_without_host_loopback() -> None:
    segment = new_segment(tftp_root=ROOT, restrict=True, host_loopback=False)
    vm = segment.attach("guest")
    files = Files(segment, {"f": b"boot"})
    assert data_blocks(start(segment, vm, files, rrq(b"f"))) == [(1, b"boot")]


def test_over_ipv6_from_the_gateways_ipv6_address() -> None:
    """As libslirp, the server answers on fec0::2 too; the block size fits IPv6's headers."""
    segment = new_segment(tftp_root=ROOT, mtu=1500)
    vm = segment.attach("guest")
    files = Files(segment, {"f": blob(3000)})
    guest6 = "fec0::5054:ff:fe12:3456"
    request = rrq(b"f", (b"blksize", b"65464"))
    frame = bytes(
        Ether(src=GUEST_MAC, dst=GATEWAY_MAC)
        / IPv6(src=guest6, dst="fec0::2")
        / UDP(sport=GUEST_PORT, dport=69)
        / request
    )
    segment.receive(vm, frame, 0.0)
    files.run()
    (reply,) = vm.take_frames()
    answer = Ether(reply)
    assert (answer[IPv6].src, answer[IPv6].dst) == ("fec0::2", guest6)
    assert answer[UDP].dport == GUEST_PORT and answer[UDP].sport in FORWARD_PORTS
    oack = TFTP(bytes(answer[UDP].payload))
    # 1500 - IPv6 40 - UDP 8 - TFTP 4.
    assert options_of(oack) == [(b"blksize", b"1448")]
    ack0 = Ether(src=GUEST_MAC, dst=GATEWAY_MAC) / IPv6(src=guest6, dst="fec0::2")
    ack0 /= UDP(sport=GUEST_PORT, dport=answer[UDP].sport) / ack(0)
    segment.receive(vm, bytes(ack0), 0.0)
    files.run()
    blocks = [TFTP(bytes(Ether(f)[UDP].payload)) for f in vm.take_frames()]
    assert [(b[TFTP_DATA].block, len(b[TFTP_DATA].payload)) for b in blocks] == [(1, 1448)]
