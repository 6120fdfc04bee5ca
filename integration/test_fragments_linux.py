"""IPv4 fragments with the real Linux stack as the guest, at MTU 1500.

The guest's 4000-byte pings and UDP datagrams leave its stack in fragments, which
slirpnet must put back together; the answers, longer than the MTU, must come back
in fragments that the guest's stack puts back together.  A ping to the gateway is
answered by slirpnet itself, one to a namespace host of the test's own through a
host socket; the UDP datagram goes to an echo server on the host's loopback through
10.0.2.2.  slirpnet's capture shows every frame within the MTU and, dissected by
scapy, fragments both ways that make the whole datagrams.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio
from scapy.layers.inet import ICMP, IP, UDP, defrag
from scapy.plist import PacketList
from scapy.utils import rdpcap

from integration.conftest import skip_unless_linux_guest
from integration.linux import system
from integration.linux.harness import LinuxGuest, open_linux_guest
from integration.linux.nshost import namespace_host

GATEWAY = "10.0.2.2"
SIZE = 4000


async def test_large_pings_and_udp_cross_in_fragments_both_ways(tmp_path: Path) -> None:
    skip_unless_linux_guest()
    captures = tmp_path / "pcap"
    captures.mkdir()
    args = ["--mtu", "1500", "--pcap", str(captures)]
    payload = bytes(range(256)) * (SIZE // 256) + bytes(SIZE % 256)
    with namespace_host() as host:
        async with open_linux_guest(tmp_path / "guest", slirpnet_args=args) as guest:
            assert guest.mtu == 1500
            gateway_ping = await ping(guest, GATEWAY)
            host_ping = await ping(guest, host.address)
            async with udp_echo_server() as port:
                echoed = await udp_round_trip(guest, port, payload)

    assert f"{SIZE + 8} bytes from {GATEWAY}: seq=0" in gateway_ping, gateway_ping
    assert f"{SIZE + 8} bytes from {host.address}: seq=0" in host_ping, host_ping
    assert echoed == payload

    (capture,) = captures.iterdir()
    packets = rdpcap(str(capture))
    assert max(len(frame) for frame in packets) <= 14 + 1500
    guest_address = guest.address
    sent = reassembled(packets, src=guest_address)
    answered = reassembled(packets, dst=guest_address)
    # What the guest sent in fragments, as slirpnet took it: the two requests, the datagram.
    assert sorted((p.dst, p.proto, len(p)) for p in sent) == sorted(
        [(GATEWAY, 1, SIZE + 28), (host.address, 1, SIZE + 28), (GATEWAY, 17, SIZE + 28)]
    )
    # What slirpnet cut up for the guest: the two echo replies and the UDP answer.
    replies = {(p.src, p.proto): p for p in answered}
    assert sorted(replies) == sorted([(GATEWAY, 1), (host.address, 1), (GATEWAY, 17)])
    for source in (GATEWAY, host.address):
        echo = replies[source, 1][ICMP]
        assert echo.type == 0 and len(bytes(echo.payload)) == SIZE
    assert bytes(replies[GATEWAY, 17][UDP].payload) == payload


async def ping(guest: LinuxGuest, address: str) -> str:
    """busybox ping's output for one 4000-byte echo request to ``address``."""
    result = await trio.run_process(
        guest.command("busybox", "ping", "-c", "1", "-s", str(SIZE), "-W", "10", address),
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    return (result.stdout + result.stderr).decode()


@asynccontextmanager
async def udp_echo_server() -> AsyncIterator[int]:
    """A UDP echo server on the host's loopback, at an ephemeral port, yielded."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))

    async def echo() -> None:
        while True:
            data, peer = await sock.recvfrom(65535)
            await sock.sendto(data, peer)

    with sock:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(echo)
            yield sock.getsockname()[1]
            nursery.cancel_scope.cancel()


async def udp_round_trip(guest: LinuxGuest, port: int, payload: bytes) -> bytes:
    """``payload`` from the guest to the host's ``port`` through the gateway, and back."""
    sock = trio.socket.from_stdlib_socket(system.netns_socket(guest.netns, socket.SOCK_DGRAM))
    with sock, trio.fail_after(20):
        await sock.connect((GATEWAY, port))
        while True:  # UDP: a datagram may be lost on the way while the link settles
            await sock.send(payload)
            with trio.move_on_after(2):
                return await sock.recv(65535)


def reassembled(packets: PacketList, *, src: str = "", dst: str = "") -> list[IP]:
    """The datagrams sent in fragments from ``src`` (or to ``dst``), put back together."""
    fragments = [
        p[IP]
        for p in packets
        if p.haslayer(IP)
        and (p[IP].flags.MF or p[IP].frag)
        and (p[IP].src == src if src else p[IP].dst == dst)
    ]
    whole, rebuilt, missing = defrag(fragments)
    assert not whole and not missing, "a fragment without the rest of its datagram"
    return [IP(bytes(datagram)) for datagram in rebuilt]
