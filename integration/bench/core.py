"""The core alone: frames per second through parse, NAT lookup, TCP endpoint and encode.

Run: python -m integration.bench.core [--quick] [--json FILE]

No sockets and no event loop: one VM on a ``Segment`` with one established TCP flow,
a fake clock, and the shell's part played by plain calls.  The host socket is
assumed to take whatever the guest sends: the guest's frames are fed in batches of
at most ``FEED_BATCH`` that fit the window, each ended with ``send_delayed_acks`` as
the shell's flush does and followed by the host socket's write of the batch (as the
shell's writer reports each ``send``).  The guest acknowledges every second segment, as
Linux's delayed ACK does.  Only the core's calls are timed: building the guest's
frames is not.  Guest frames carry what Linux sends slirpnet on an established
connection: no options (slirpnet never offers timestamps, so a guest never sends them).

Scenarios: guest-to-host data at MTU 65520 and 1500, host-to-guest data read in
256 KiB chunks at both MTUs, a guest's pure ACK on an idle flow, and the codecs
alone (parse with checksums, encode with checksums: the layered codecs, and
``slirpnet.native.tcp_frame``, which the core uses for TCP) for the same frames.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from ipaddress import IPv4Address
from pathlib import Path

from slirpnet import native
from slirpnet.core.flows import SendFlow, TcpFlow
from slirpnet.core.segment import Segment
from slirpnet.core.sequence import seq_diff
from slirpnet.core.settings import NetworkSettings
from slirpnet.core.tcp import State
from slirpnet.shell.transports import FEED_BATCH
from slirpnet.wire import ethernet, ipv4, tcp
from slirpnet.wire.tcp import TcpOptions, TcpSegment

GUEST_MAC = bytes.fromhex("525400123456")
GATEWAY_MAC = bytes.fromhex("52550a000202")
GUEST_IP = IPv4Address("10.0.2.15")
GATEWAY_IP = IPv4Address("10.0.2.2")
GUEST_PORT, HOST_PORT = 40000, 5201
GUEST_ISN = 1_000_000
TCP_HEADER = tcp.HEADER_LEN  # no options: slirpnet's SYN-ACK offers no timestamps
READ_CHUNK = 256 * 1024  # what the shell reads from the host socket at once
GUEST_WINDOW = 0xFFFF  # scaled by 2**7: 8 MiB
_ETHERNET = struct.Struct("!6s6sH")


@dataclass(frozen=True)
class Result:
    scenario: str
    frames: int
    seconds: float
    payload_bytes: int

    @property
    def per_second(self) -> float:
        return self.frames / self.seconds

    @property
    def microseconds(self) -> float:
        return self.seconds / self.frames * 1e6

    @property
    def megabytes_per_second(self) -> float:
        return self.payload_bytes / self.seconds / 1e6


class Lab:
    """One VM on a fresh segment with one established TCP flow, and the guest's side of it."""

    def __init__(self, mtu: int) -> None:
        self.mtu = mtu
        self.segment = Segment(NetworkSettings(mtu=mtu))
        self.vm = self.segment.attach("bench")
        self.now = 0.0
        self.guest_seq = GUEST_ISN
        self.guest_ack = 0
        options = TcpOptions(mss=mtu - 40, window_scale=7, sack_permitted=True, timestamps=(1, 0))
        self.receive(self.frame(tcp.SYN, options=options))
        (open_flow,) = self.segment.take_actions()
        assert isinstance(open_flow.flow, TcpFlow)
        self.flow: TcpFlow = open_flow.flow
        self.segment.flow_connected(self.flow, self.now)
        (syn_ack,) = self.guest_segments()
        self.guest_seq += 1
        self.guest_ack = (syn_ack.seq + 1) & 0xFFFFFFFF
        self.receive(self.frame(tcp.ACK))
        assert self.flow.endpoint.state is State.ESTABLISHED

    @property
    def payload_size(self) -> int:
        """What Linux puts in a full segment: the MTU less IPv4, TCP and timestamps."""
        return self.mtu - ipv4.MIN_HEADER_LEN - TCP_HEADER

    def frame(
        self, flags: int, payload: bytes = b"", options: TcpOptions = tcp.NO_OPTIONS
    ) -> bytes:
        """The guest's next segment (its sequence number moves past ``payload``)."""
        segment = TcpSegment(
            GUEST_PORT,
            HOST_PORT,
            self.guest_seq,
            self.guest_ack,
            flags,
            GUEST_WINDOW,
            options=options,
            payload=payload,
        )
        self.guest_seq = (self.guest_seq + len(payload)) & 0xFFFFFFFF
        body = segment.encode(GUEST_IP, GATEWAY_IP)
        header = ipv4.IPv4Packet(
            GUEST_IP, GATEWAY_IP, ipv4.PROTO_TCP, body, dont_fragment=True
        ).encode_header()
        return _ETHERNET.pack(GATEWAY_MAC, GUEST_MAC, ethernet.ETHERTYPE_IPV4) + header + body

    def receive(self, frame: bytes) -> None:
        self.now += 1e-6
        self.segment.receive(self.vm, frame, self.now)

    def guest_segments(self) -> list[TcpSegment]:
        """What the core sent the guest since last asked, parsed."""
        segments = []
        for frame in self.vm.take_frames():
            packet = ipv4.IPv4Packet.parse(ethernet.EthernetFrame.parse(frame).payload)
            segments.append(TcpSegment.parse(packet.payload, packet.src, packet.dst))
        return segments


def guest_to_host(mtu: int, seconds: float) -> Result:
    """Data frames in per second, fed as the shell feeds them: batches of at most
    ``FEED_BATCH`` that fit the window offered, each ended with the delayed ACKs and
    followed by the host socket's write of all of it."""
    lab = Lab(mtu)
    endpoint = lab.flow.endpoint
    payload = os.urandom(lab.payload_size)
    frames = 0
    timed = 0.0
    while timed < seconds:
        room = seq_diff(endpoint.rcv_adv, endpoint.rcv_nxt)
        batch = [lab.frame(tcp.ACK | tcp.PSH, payload) for _ in range(_fitting(room, payload))]
        started = time.perf_counter()
        for frame in batch:
            lab.receive(frame)
        lab.segment.send_delayed_acks(lab.now)
        written = sum(len(a.payload) for a in lab.segment.take_actions() if isinstance(a, SendFlow))
        lab.segment.flow_written(lab.flow, written, lab.now)
        lab.vm.take_frames()
        timed += time.perf_counter() - started
        frames += len(batch)
    # Every frame was inside the window and taken: no drop path was measured.
    size = frames * len(payload)
    assert endpoint.counters.dropped == 0 and endpoint.counters.bytes_to_host == size
    return Result(f"guest→host data, MTU {mtu}", frames, timed, size)


def _fitting(room: int, payload: bytes) -> int:
    """How many of the guest's segments one batch holds: what the window takes, at most
    the shell's ``FEED_BATCH``."""
    return max(1, min(FEED_BATCH, room // len(payload)))


def host_to_guest(mtu: int, seconds: float) -> Result:
    """Data frames out per second, with the guest's ACKs (one per two segments) taken in."""
    lab = Lab(mtu)
    chunk = os.urandom(READ_CHUNK)
    frames = 0
    timed = 0.0
    while timed < seconds:
        started = time.perf_counter()
        lab.segment.flow_received(lab.flow, chunk, lab.now)
        out = lab.vm.take_frames()
        timed += time.perf_counter() - started
        frames += len(out)
        acks = _guest_acks(lab, out)
        started = time.perf_counter()
        for ack in acks:
            lab.receive(ack)
        lab.segment.take_actions()
        timed += time.perf_counter() - started
    sent = lab.flow.endpoint.counters.bytes_to_guest
    return Result(f"host→guest data, MTU {mtu}", frames, timed, sent)


def _guest_acks(lab: Lab, frames: list[bytes]) -> list[bytes]:
    acks = []
    for number, frame in enumerate(frames, 1):
        packet = ipv4.IPv4Packet.parse(ethernet.EthernetFrame.parse(frame).payload)
        segment = TcpSegment.parse(packet.payload, packet.src, packet.dst, verify_checksum=False)
        if number % 2 == 0 or number == len(frames):
            lab.guest_ack = (segment.seq + len(segment.payload)) & 0xFFFFFFFF
            acks.append(lab.frame(tcp.ACK))
    return acks


def pure_acks(seconds: float) -> Result:
    """A guest's ACK that changes nothing, on an idle flow: the fixed cost of a frame."""
    lab = Lab(1500)
    ack = lab.frame(tcp.ACK)
    frames = 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(1000):
            lab.receive(ack)
        frames += 1000
    assert not lab.vm.outbox and not lab.segment.take_actions()
    return Result("guest's pure ACK, idle flow", frames, elapsed, 0)


def codec(name: str, work: Callable[[], object], payload: int, seconds: float) -> Result:
    frames = 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(100):
            work()
        frames += 100
    return Result(name, frames, elapsed, frames * payload)


def codecs(mtu: int, seconds: float) -> list[Result]:
    lab = Lab(mtu)
    payload = os.urandom(lab.payload_size)
    frame = lab.frame(tcp.ACK | tcp.PSH, payload)
    segment = TcpSegment(
        HOST_PORT, GUEST_PORT, 1, 2, tcp.ACK | tcp.PSH, 512, 0, tcp.NO_OPTIONS, payload
    )

    def parse() -> object:
        packet = ipv4.IPv4Packet.parse(ethernet.EthernetFrame.parse(frame).payload)
        return TcpSegment.parse(packet.payload, packet.src, packet.dst)

    def encode() -> object:
        body = segment.encode(GATEWAY_IP, GUEST_IP)
        header = ipv4.IPv4Packet(GATEWAY_IP, GUEST_IP, ipv4.PROTO_TCP, body).encode_header()
        return b"".join((_ETHERNET.pack(GUEST_MAC, GATEWAY_MAC, 0x0800), header, body))

    head = _ETHERNET.pack(GUEST_MAC, GATEWAY_MAC, 0x0800)

    fields = (HOST_PORT, GUEST_PORT, 1, 2, tcp.ACK | tcp.PSH, 512, 0, b"", payload)

    def tcp_frame() -> object:  # what the core uses for its TCP frames
        return native.tcp_frame(head, int(GATEWAY_IP), int(GUEST_IP), 1, *fields)

    return [
        codec(f"parse Ethernet+IPv4+TCP, MTU {mtu}", parse, len(payload), seconds),
        codec(f"encode TCP+IPv4+Ethernet, MTU {mtu}", encode, len(payload), seconds),
        codec(f"tcp_frame, MTU {mtu}", tcp_frame, len(payload), seconds),
    ]


def run(seconds: float) -> list[Result]:
    results = []
    for mtu in (65520, 1500):
        results.append(guest_to_host(mtu, seconds))
        results.append(host_to_guest(mtu, seconds))
    results.append(pure_acks(seconds))
    for mtu in (65520, 1500):
        results += codecs(mtu, seconds)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="0.2 s per scenario, not 2 s")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    results = run(0.2 if args.quick else 2.0)
    print(f"{'scenario':<40} {'frames/s':>10} {'µs/frame':>9} {'MB/s':>8}")
    for result in results:
        print(
            f"{result.scenario:<40} {result.per_second:>10,.0f} {result.microseconds:>9.2f} "
            f"{result.megabytes_per_second:>8,.0f}"
        )
    if args.json:
        figures = [
            {**asdict(r), "per_second": r.per_second, "mb_per_second": r.megabytes_per_second}
            for r in results
        ]
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
