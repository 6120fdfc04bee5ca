"""A VM's TCP buffer budget holds with real host sockets and many flows at once.

The guest opens connections to a loopback server that sends without pause, offers a
huge window and never acknowledges a byte: every flow reads from its host socket as
much as the budget lets it.  Flows that asked how much they may read, then waited for
the socket, must not all spend the same free bytes.
"""

from __future__ import annotations

import trio
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from slirpnet.core.settings import NetworkSettings
from tests.test_shell import GATEWAY_MAC, GUEST_MAC, running

FLOWS = 20
LIMIT = 1 << 20  # the VM's budget here: a small one, that 20 flows overrun at once


async def blast(listener: trio.socket.SocketType) -> None:
    async with trio.open_nursery() as nursery:
        while True:
            connection, _ = await listener.accept()

            async def send(sock: trio.socket.SocketType = connection) -> None:
                with sock:
                    try:
                        while True:
                            await sock.send(bytes(1 << 16))
                    except OSError:
                        return

            nursery.start_soon(send)


def segment(port: int, sport: int, flags: str, seq: int, ack: int = 0, **kw: object) -> Ether:
    return (
        Ether(src=GUEST_MAC, dst=GATEWAY_MAC)
        / IP(src="10.0.2.15", dst="10.0.2.2")
        / TCP(sport=sport, dport=port, flags=flags, seq=seq, ack=ack, window=65535, **kw)
    )


async def test_flows_that_never_ack_hold_no_more_than_the_budget() -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(FLOWS)
    port = listener.getsockname()[1]
    async with trio.open_nursery() as servers, running(NetworkSettings(mtu=1500)) as (runtime, vm):
        servers.start_soon(blast, listener)
        while not runtime.ports:
            await trio.sleep(0.01)
        (guest,) = runtime.ports
        guest.vm.tcp_buffers.limit = LIMIT
        for sport in range(40000, 40000 + FLOWS):
            await vm.send(segment(port, sport, "S", 1, options=[("MSS", 1460), ("WScale", 14)]))
        handshakes = 0
        with trio.fail_after(10):
            while handshakes < FLOWS:
                reply = await vm.receive()
                if reply[TCP].flags == "SA":
                    # The handshake's ACK, with a window of 1 GiB; no other ACK ever follows.
                    ack = segment(port, reply[TCP].dport, "A", 2, reply[TCP].seq + 1)
                    await vm.send(ack)
                    handshakes += 1
        most = 0
        with trio.move_on_after(1.0):
            while True:
                most = max(most, guest.vm.tcp_buffers.used)
                await trio.sleep(0.01)
        servers.cancel_scope.cancel()
    listener.close()
    # The flows filled the budget, and never more than it.  (Each holds its reserve
    # besides: SEND_RESERVE, not charged.)
    assert LIMIT // 2 < most <= LIMIT, most
