"""Loopback services that the guests reach through slirpnet: a DNS upstream and a TFTP server.

Both listen on 127.0.0.1 at an ephemeral port and live in the test's own trio nursery:
``async with dns_upstream({...}) as dns`` and ``async with tftp_server({...}) as tftp``.
They record what they were asked, so tests can check the guest's traffic really arrived.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import trio
from scapy.layers.dns import DNS, DNSRR

# -- DNS ----------------------------------------------------------------------------------

TYPE_A = 1
RCODE_NXDOMAIN = 3


class DnsUpstream:
    """Answers A queries for its records, NODATA for their other types, NXDOMAIN otherwise.

    UDP and TCP (RFC 1035 §4.2.2: a 2-byte length before each message) on one port.
    """

    def __init__(self, records: dict[str, str]) -> None:
        self.records = {name.lower().rstrip("."): address for name, address in records.items()}
        self.port = 0
        self.queries: list[tuple[str, str, int]] = []  # (transport, name, qtype)

    def answer(self, message: bytes, transport: str) -> bytes | None:
        try:
            query = DNS(message)
            question = query.qd[0]
        except Exception:  # whatever scapy makes of junk, there is no question to answer
            return None
        name = question.qname.decode().lower().rstrip(".")
        self.queries.append((transport, name, question.qtype))
        reply = DNS(id=query.id, qr=1, aa=1, rd=query.rd, ra=1, qd=question)
        if name not in self.records:
            reply.rcode = RCODE_NXDOMAIN
        elif question.qtype == TYPE_A:
            reply.an = DNSRR(rrname=question.qname, type="A", ttl=30, rdata=self.records[name])
        return bytes(reply)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        udp, tcp = _same_port_pair()
        self.port = udp.getsockname()[1]
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(tcp))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._serve_udp, trio.socket.from_stdlib_socket(udp))
            nursery.start_soon(trio.serve_listeners, self._serve_tcp, [listener])
            task_status.started()

    async def _serve_udp(self, sock: trio.socket.SocketType) -> None:
        with sock:
            while True:
                message, peer = await sock.recvfrom(65535)
                reply = self.answer(message, "udp")
                if reply is not None:
                    await sock.sendto(reply, peer)

    async def _serve_tcp(self, stream: trio.SocketStream) -> None:
        buffer = b""
        async with stream:
            async for data in stream:
                buffer += data
                while len(buffer) >= 2 and len(buffer) >= 2 + int.from_bytes(buffer[:2], "big"):
                    length = int.from_bytes(buffer[:2], "big")
                    reply = self.answer(buffer[2 : 2 + length], "tcp")
                    buffer = buffer[2 + length :]
                    if reply is not None:
                        await stream.send_all(len(reply).to_bytes(2, "big") + reply)


def _same_port_pair() -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket bound to the same ephemeral port of 127.0.0.1."""
    for _ in range(20):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            tcp.bind(("127.0.0.1", udp.getsockname()[1]))
        except OSError as error:
            udp.close()
            tcp.close()
            if error.errno != errno.EADDRINUSE:
                raise
            continue
        tcp.listen()
        return udp, tcp
    raise RuntimeError("no port of 127.0.0.1 was free for both UDP and TCP")


@asynccontextmanager
async def dns_upstream(records: dict[str, str]) -> AsyncIterator[DnsUpstream]:
    server = DnsUpstream(records)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        yield server
        nursery.cancel_scope.cancel()


# -- TFTP (RFC 1350, with RFC 2347 option negotiation for RFC 2348 blksize) ---------------

RRQ, DATA, ACK, ERROR, OACK = 1, 3, 4, 5, 6
DEFAULT_BLOCK = 512
RETRANSMIT = 1.0
ATTEMPTS = 5
MARK = "mark:"


class TftpServer:
    """Serves ``files`` for reading; each transfer is answered from the server's own port.

    Reading ``mark:NAME`` records NAME and returns every name recorded so far, one a line
    (``mark:`` alone only reads them): guests use it to tell each other, and the test, how
    far they got.
    """

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.marks: list[str] = []
        self.port = 0
        self.transfers: list[tuple[str, int]] = []  # (file name, block size) of each request
        self._peers: dict[tuple[str, int], trio.MemorySendChannel[int]] = {}

    def content(self, name: str) -> bytes | None:
        if name.startswith(MARK):
            mark = name[len(MARK) :]
            if mark and mark not in self.marks:
                self.marks.append(mark)
            return "".join(f"{mark}\n" for mark in self.marks).encode()
        return self.files.get(name)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started()
            with sock:
                while True:
                    packet, peer = await sock.recvfrom(65535)
                    self._dispatch(nursery, sock, packet, peer)

    def _dispatch(
        self,
        nursery: trio.Nursery,
        sock: trio.socket.SocketType,
        packet: bytes,
        peer: tuple[str, int],
    ) -> None:
        if len(packet) < 4:
            return
        opcode = struct.unpack_from("!H", packet)[0]
        if opcode == ACK and peer in self._peers:
            # Past 64 queued ACKs the rest are duplicates; the transfer catches up from later ones.
            with suppress(trio.WouldBlock):
                self._peers[peer].send_nowait(struct.unpack_from("!H", packet, 2)[0])
        elif opcode == RRQ and peer not in self._peers:
            fields = packet[2:].split(b"\0")
            name = fields[0].decode(errors="replace")
            options = {
                key.decode().lower(): value.decode()
                for key, value in zip(fields[2:-1:2], fields[3:-1:2], strict=False)
            }
            send, receive = trio.open_memory_channel[int](64)
            self._peers[peer] = send
            nursery.start_soon(self._transfer, sock, peer, name, options, receive)

    async def _transfer(
        self,
        sock: trio.socket.SocketType,
        peer: tuple[str, int],
        name: str,
        options: dict[str, str],
        acks: trio.MemoryReceiveChannel[int],
    ) -> None:
        try:
            data = self.content(name)
            if data is None:
                await sock.sendto(struct.pack("!HH", ERROR, 1) + b"file not found\0", peer)
                return
            size = DEFAULT_BLOCK
            if "blksize" in options:
                size = max(8, min(int(options["blksize"]), 65464))
            self.transfers.append((name, size))
            if "blksize" in options:
                oack = struct.pack("!H", OACK) + b"blksize\0%d\0" % size
                if not await self._exchange(sock, peer, oack, 0, acks):
                    return
            # The last block is shorter than the block size, even if that makes it empty.
            for block in range(1, len(data) // size + 2):
                chunk = data[(block - 1) * size : block * size]
                packet = struct.pack("!HH", DATA, block & 0xFFFF) + chunk
                if not await self._exchange(sock, peer, packet, block & 0xFFFF, acks):
                    return
        finally:
            del self._peers[peer]

    @staticmethod
    async def _exchange(
        sock: trio.socket.SocketType,
        peer: tuple[str, int],
        packet: bytes,
        block: int,
        acks: trio.MemoryReceiveChannel[int],
    ) -> bool:
        """Send ``packet`` until ``block`` is acknowledged; False when the client gave up."""
        for _ in range(ATTEMPTS):
            await sock.sendto(packet, peer)
            with trio.move_on_after(RETRANSMIT):
                while await acks.receive() != block:
                    pass
                return True
        return False


@asynccontextmanager
async def tftp_server(files: dict[str, bytes]) -> AsyncIterator[TftpServer]:
    server = TftpServer(files)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        yield server
        nursery.cancel_scope.cancel()
