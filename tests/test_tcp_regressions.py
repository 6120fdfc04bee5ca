"""Regressions found by the integration tests with the Linux TCP stack (integration/linux).

Each test drives slirpnet's shell over a socket pair with a scripted guest (scapy frames)
and a real host socket on loopback, and reproduces one bug in a fraction of a second.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from slirpnet.core.settings import NetworkSettings
from slirpnet.framing import QEMU_STREAM
from slirpnet.shell.runtime import NamespaceRuntime
from slirpnet.shell.transports import serve_stream
from tests.test_tcp_endpoint import transfer

GUEST_MAC = "52:54:00:12:34:56"
GATEWAY_MAC = "52:55:0a:00:02:02"
GUEST = "10.0.2.15"
GATEWAY = "10.0.2.2"


class ScriptedGuest:
    """A guest's TCP, one frame at a time: the test says what it sends and reads what comes."""

    def __init__(self, stream: trio.SocketStream, dport: int, sport: int = 40000) -> None:
        self.stream = stream
        self.decoder = QEMU_STREAM.decoder()
        self.pending: list[bytes] = []
        self.dport = dport
        self.sport = sport
        self.seq = 1000  # the guest's next sequence number
        self.ack = 0  # what the guest acknowledges: slirpnet's next

    async def send(self, flags: str, payload: bytes = b"") -> None:
        await self.stream.send_all(self.frame(flags, payload))

    async def send_together(self, *frames: bytes) -> None:
        """Frames in one write: slirpnet handles them all before its tasks run again."""
        await self.stream.send_all(b"".join(frames))

    def frame(self, flags: str, payload: bytes = b"", window: int = 65535) -> bytes:
        """The next segment, framed; the guest's sequence number moves past it."""
        frame = (
            Ether(src=GUEST_MAC, dst=GATEWAY_MAC)
            / IP(src=GUEST, dst=GATEWAY)
            / TCP(
                sport=self.sport,
                dport=self.dport,
                flags=flags,
                seq=self.seq,
                ack=self.ack,
                window=window,
                options=[("MSS", 65480)] if "S" in flags else [],
            )
            / payload
        )
        self.seq += len(payload) + ("S" in flags) + ("F" in flags)
        return QEMU_STREAM.encode(bytes(frame))

    async def receive(self, timeout: float = 5.0) -> TCP:
        """The next TCP segment from slirpnet; ``ack`` follows its sequence space."""
        with trio.fail_after(timeout):
            while True:
                while not self.pending:
                    data = await self.stream.receive_some(1 << 17)
                    assert data, "slirpnet closed the connection"
                    self.pending += self.decoder.feed(data)
                frame = Ether(self.pending.pop(0))
                if TCP in frame:
                    segment = frame[TCP]
                    end = segment.seq + len(segment.payload) + (segment.flags.S or segment.flags.F)
                    self.ack = max(self.ack, end)
                    return segment

    async def connect(self) -> None:
        await self.send("S")
        syn_ack = await self.receive()
        assert syn_ack.flags == "SA"
        await self.send("A")


@asynccontextmanager
async def guest_of_slirpnet(port: int) -> AsyncIterator[ScriptedGuest]:
    async with (
        NamespaceRuntime.open("test", NetworkSettings()) as runtime,
        trio.open_nursery() as nursery,
    ):
        ours, theirs = trio.socket.socketpair()
        nursery.start_soon(
            serve_stream, runtime.attach, trio.SocketStream(theirs), "pair", QEMU_STREAM
        )
        async with trio.SocketStream(ours) as stream:
            yield ScriptedGuest(stream, port)
        nursery.cancel_scope.cancel()


def listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


async def test_guest_data_still_queued_for_the_host_survives_the_close() -> None:
    """The host half-closes first; the guest's last data and FIN then arrive together.
    Entering TIME-WAIT closed the host socket at once, before the data was written."""
    upload = bytes(range(256)) * 250
    with listener() as server_listener:
        async with guest_of_slirpnet(server_listener.getsockname()[1]) as guest:
            await guest.connect()
            server, _ = server_listener.accept()
            server.shutdown(socket.SHUT_WR)
            fin = await guest.receive()
            assert fin.flags.F
            await guest.send_together(guest.frame("PA", upload), guest.frame("FA"))
            while (await guest.receive()).ack != guest.seq:
                pass  # the ACK of the guest's FIN: slirpnet is in TIME-WAIT
            received = await trio.to_thread.run_sync(read_all, server)
    assert len(received) == len(upload)
    assert hashlib.sha256(received).digest() == hashlib.sha256(upload).digest()


def read_all(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    with sock:
        chunks = []
        while chunk := sock.recv(1 << 16):
            chunks.append(chunk)
    return b"".join(chunks)


def test_a_fin_retransmitted_after_time_wait_is_acknowledged_while_the_host_drains() -> None:
    """Found by hypothesis (test_any_link_any_pace_byte_exact): our ACK of the guest's FIN
    was lost and the guest's backed-off retransmission came after TIME_WAIT, while the
    host socket still held bytes.  The endpoint ignored it in CLOSED and the guest kept
    retrying; the harness's clock also stood still on the closed endpoint's deadline."""
    run = transfer(
        68108605,
        size=1461,
        loss=0.1,
        mss=536,
        our_mss=1460,
        wscale=5,
        buffer=1 << 20,
        read_rate=10_000,
        write_rate=10_000,
        isn=4294966709,
    )
    assert run.guest.fin_acked
