"""Guest data reaches a host socket in order, whether written at once or by the writer.

The shell writes a flow's data straight from its flush while nothing is queued for
that socket, and leaves it to the flow's writer task once the socket is full.  A
host that does not read at first fills the socket, so the guest's later segments
meet both paths; the host must still get every byte once, in order.
"""

from __future__ import annotations

import socket

import trio
from scapy.layers.inet import TCP

from slirpnet.core.settings import NetworkSettings
from slirpnet.core.tcp import WINDOW_SHIFT
from tests.test_shell import running
from tests.test_shell_budget import segment

# More than a loopback socket takes while its peer reads nothing (its send buffer grows
# to tcp_wmem's 4 MiB).
SEGMENTS, SIZE = 120, 60000


async def test_data_is_written_in_order_across_direct_and_queued_writes() -> None:
    listener = trio.socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills at once
    await listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    data = b"".join(bytes([n % 256]) * SIZE for n in range(SEGMENTS))
    received = bytearray()
    start_reading = trio.Event()

    async def host() -> None:
        connection, _ = await listener.accept()
        with connection:
            await start_reading.wait()
            while chunk := await connection.recv(65536):
                received.extend(chunk)

    async with trio.open_nursery() as servers, running(NetworkSettings()) as (_, vm):
        servers.start_soon(host)
        await vm.send(segment(port, 40000, "S", 1, options=[("MSS", 65480), ("WScale", 0)]))
        syn_ack = await vm.receive()
        ours = syn_ack[TCP].seq + 1
        await vm.send(segment(port, 40000, "A", 2, ours))
        edge = 2 + syn_ack[TCP].window  # the guest sends only into the window offered
        sent = 0
        while sent < len(data):
            if 2 + sent + SIZE <= edge:
                chunk = data[sent : sent + SIZE]
                await vm.send(segment(port, 40000, "PA", 2 + sent, ours) / chunk)
                sent += SIZE
                continue
            try:
                reply = await vm.receive(timeout=0.3)
            except trio.TooSlowError:
                start_reading.set()  # the window is shut: the host socket is full
                continue
            edge = max(edge, reply[TCP].ack + (reply[TCP].window << WINDOW_SHIFT))
        assert start_reading.is_set()  # the socket did fill: both ways of writing were used
        await vm.send(segment(port, 40000, "FA", 2 + len(data), ours))
        with trio.fail_after(10):
            while len(received) < len(data):
                await trio.sleep(0.01)
        servers.cancel_scope.cancel()
    listener.close()
    assert bytes(received) == data
