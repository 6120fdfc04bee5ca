"""The most hostile guest there is: a test-owned VM that writes raw frames into slirpnet.

``async with hostile_vm(path) as vm`` connects to slirpnet's ``--listen unix:PATH`` the
way QEMU's ``-netdev stream`` does (4-byte big-endian length, then an Ethernet frame)
and sends whatever the test makes: SYNs to thousands of ports, datagrams to thousands
of destinations, ARP and DHCP from made-up addresses, as fast as slirpnet takes them.
A reader tallies what comes back (``vm.replies``: RSTs, ICMP errors by type and code,
DHCP offers and NAKs, ...), so a test can see each refusal arrive.

Frames are built here with struct, independently of slirpnet's codecs.  Destinations
are the test's own: the gateway (the host's loopback) or namespace hosts it made.
"""

from __future__ import annotations

import os
import random
import socket
import struct
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from ipaddress import IPv4Address
from pathlib import Path

import trio

GATEWAY_MAC = bytes.fromhex("52550a000202")  # libslirp's convention: 52:55 + 10.0.2.2
BROADCAST_MAC = b"\xff" * 6
ETH_IPV4, ETH_ARP = 0x0800, 0x0806
PROTO_ICMP, PROTO_TCP, PROTO_UDP = 1, 6, 17
BATCH = 256  # frames per write: enough to keep slirpnet's reader busy


def checksum(data: bytes) -> int:
    """RFC 1071's ones'-complement sum."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class Frames:
    """Frames from one NIC (``mac``, ``address``) of a guest on 10.0.2.0/24."""

    def __init__(self, mac: bytes, address: str) -> None:
        self.mac = mac
        self.address = IPv4Address(address).packed
        self._ident = 0

    def ethernet(self, ethertype: int, payload: bytes, dst: bytes = GATEWAY_MAC) -> bytes:
        return dst + self.mac + struct.pack("!H", ethertype) + payload

    def ipv4(self, dst: str, protocol: int, payload: bytes, src: bytes | None = None) -> bytes:
        self._ident = (self._ident + 1) & 0xFFFF
        source = self.address if src is None else src
        header = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(payload),
            self._ident,
            0x4000,
            64,
            protocol,
            0,
            source,
            IPv4Address(dst).packed,
        )
        header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
        return header + payload

    def _pseudo(self, dst: str, protocol: int, length: int, src: bytes | None = None) -> bytes:
        source = self.address if src is None else src
        return source + IPv4Address(dst).packed + struct.pack("!BBH", 0, protocol, length)

    def tcp(
        self, dst: str, dport: int, sport: int, seq: int, ack: int, flags: int, options: bytes
    ) -> bytes:
        """A TCP segment with no data and a window of 65535 (scaled if the SYN said so)."""
        offset = (20 + len(options)) // 4
        segment = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, offset << 4, flags, 65535, 0, 0)
        segment += options
        total = checksum(self._pseudo(dst, PROTO_TCP, len(segment)) + segment)
        segment = segment[:16] + struct.pack("!H", total) + segment[18:]
        return self.ethernet(ETH_IPV4, self.ipv4(dst, PROTO_TCP, segment))

    def syn(self, dst: str, dport: int, sport: int, *, window_scale: int | None = None) -> bytes:
        """A SYN with an MSS option, as any stack sends, and window scaling if asked."""
        options = struct.pack("!BBH", 2, 4, 1460)
        if window_scale is not None:
            options += struct.pack("!BBBB", 1, 3, 3, window_scale)  # NOP, then RFC 7323 §2.2
        return self.tcp(dst, dport, sport, random.getrandbits(32), 0, 0x02, options)

    def handshake_ack(self, frame: bytes) -> bytes | None:
        """For a SYN-ACK to us, the ACK that completes the handshake (and then never
        another: the data that follows stays unacknowledged); None for other frames."""
        if struct.unpack_from("!H", frame, 12)[0] != ETH_IPV4 or frame[23] != PROTO_TCP:
            return None
        ip = frame[14:]
        body = ip[(ip[0] & 0x0F) * 4 :]
        if body[13] & 0x12 != 0x12:
            return None
        sport, dport, seq, ack = struct.unpack_from("!HHII", body)
        source = str(IPv4Address(ip[12:16]))
        return self.tcp(source, sport, dport, ack, (seq + 1) & 0xFFFFFFFF, 0x10, b"")

    def udp(
        self,
        dst: str,
        dport: int,
        sport: int,
        payload: bytes,
        *,
        src: bytes | None = None,
        eth_dst: bytes = GATEWAY_MAC,
    ) -> bytes:
        length = 8 + len(payload)
        datagram = struct.pack("!HHHH", sport, dport, length, 0) + payload
        total = checksum(self._pseudo(dst, PROTO_UDP, length, src) + datagram) or 0xFFFF
        datagram = datagram[:6] + struct.pack("!H", total) + datagram[8:]
        return self.ethernet(ETH_IPV4, self.ipv4(dst, PROTO_UDP, datagram, src), eth_dst)

    def arp_request(self, target: str, sender_mac: bytes | None = None) -> bytes:
        """Who has ``target``?  From ``sender_mac`` (a made-up one, say) if given."""
        mac = self.mac if sender_mac is None else sender_mac
        body = struct.pack("!HHBBH", 1, ETH_IPV4, 6, 4, 1) + mac + self.address
        body += b"\0" * 6 + IPv4Address(target).packed
        return BROADCAST_MAC + mac + struct.pack("!H", ETH_ARP) + body

    def dhcp_discover(self, chaddr: bytes, xid: int) -> bytes:
        """RFC 2131 DISCOVER from client hardware address ``chaddr``, broadcast."""
        bootp = struct.pack("!BBBBIHH4s4s4s4s", 1, 1, 6, 0, xid, 0, 0x8000, *([b"\0" * 4] * 4))
        bootp += chaddr + b"\0" * 10 + b"\0" * 192
        options = b"\x63\x82\x53\x63" + bytes((53, 1, 1, 255))
        return self.udp(
            "255.255.255.255",
            67,
            68,
            bootp + options,
            src=b"\0" * 4,
            eth_dst=BROADCAST_MAC,
        )


def made_up_macs(count: int, seed: int = 7) -> Iterator[bytes]:
    """Locally administered unicast MACs, none of them a real NIC's."""
    rng = random.Random(seed)
    for _ in range(count):
        yield bytes((0x02, *rng.randbytes(5)))


def tally(frame: bytes, replies: Counter[str], offers: list[str]) -> None:
    """What a frame from slirpnet is, in the few words a flood test needs; the
    addresses of DHCP offers go to ``offers``."""
    ethertype = struct.unpack_from("!H", frame, 12)[0]
    if ethertype == ETH_ARP:
        replies["arp_reply" if frame[21] == 2 else "arp_other"] += 1
        return
    if ethertype != ETH_IPV4:
        replies["other"] += 1
        return
    ip = frame[14:]
    body = ip[(ip[0] & 0x0F) * 4 :]
    protocol = ip[9]
    if protocol == PROTO_TCP:
        flags = body[13]
        replies[
            "tcp_rst" if flags & 0x04 else "tcp_syn_ack" if flags & 0x12 == 0x12 else "tcp"
        ] += 1
    elif protocol == PROTO_ICMP:
        replies[f"icmp_{body[0]}_{body[1]}"] += 1
    elif protocol == PROTO_UDP:
        sport = struct.unpack_from("!H", body)[0]
        payload = body[8:]
        if sport == 67:
            kind = _dhcp_type(payload)
            replies[f"dhcp_{kind}"] += 1
            if kind == "offer":
                offers.append(str(IPv4Address(payload[16:20])))  # yiaddr
        elif sport == 53:
            replies[f"dns_rcode_{payload[3] & 0x0F}"] += 1
        else:
            replies["udp"] += 1


def _dhcp_type(message: bytes) -> str:
    options = message[240:]
    while len(options) >= 2 and options[0] != 255:
        if options[0] == 0:
            options = options[1:]
            continue
        if options[0] == 53:
            return {2: "offer", 5: "ack", 6: "nak"}.get(options[2], str(options[2]))
        options = options[2 + options[1] :]
    return "unknown"


class HostileVm:
    def __init__(
        self, stream: trio.SocketStream, answer: Callable[[bytes], bytes | None] | None
    ) -> None:
        self.stream = stream
        self.answer = answer  # makes a frame to send back for one received, or None
        self._sending = trio.Lock()
        self.replies: Counter[str] = Counter()
        self.offers: list[str] = []  # the addresses of DHCP offers, in order
        self.sent = 0
        self.closed = trio.Event()  # slirpnet closed the connection

    async def send(self, frames: Iterable[bytes]) -> None:
        """``frames``, written in batches as fast as slirpnet reads them."""
        batch: list[bytes] = []
        for frame in frames:
            batch.append(struct.pack("!I", len(frame)) + frame)
            if len(batch) == BATCH:
                await self._write(batch)
                batch = []
        if batch:
            await self._write(batch)

    async def _write(self, batch: list[bytes]) -> None:
        async with self._sending:
            await self.stream.send_all(b"".join(batch))
        self.sent += len(batch)

    async def _read(self) -> None:
        buffer = bytearray()
        try:
            while data := await self.stream.receive_some(1 << 20):
                buffer += data
                offset = 0
                answers = []
                while len(buffer) - offset >= 4:
                    size = struct.unpack_from("!I", buffer, offset)[0]
                    if len(buffer) - offset - 4 < size:
                        break
                    frame = bytes(buffer[offset + 4 : offset + 4 + size])
                    tally(frame, self.replies, self.offers)
                    if self.answer is not None and (reply := self.answer(frame)) is not None:
                        answers.append(reply)
                    offset += 4 + size
                del buffer[:offset]
                await self.send(answers)
        except trio.BrokenResourceError:
            pass
        self.closed.set()


@asynccontextmanager
async def hostile_vm(
    path: Path, answer: Callable[[bytes], bytes | None] | None = None
) -> AsyncIterator[HostileVm]:
    """A raw-frame VM on slirpnet's unix stream socket at ``path``, until the block ends;
    ``answer`` makes what it sends back for a frame it receives (``handshake_ack``)."""
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.connect(os.fspath(path))
    stream = trio.SocketStream(sock)
    vm = HostileVm(stream, answer)
    async with stream, trio.open_nursery() as nursery:
        nursery.start_soon(vm._read)
        yield vm
        nursery.cancel_scope.cancel()
