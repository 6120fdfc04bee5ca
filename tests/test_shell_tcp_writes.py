"""Guest data reaches a host socket in order, whether written at once or later.

The shell writes a flow's data straight from its flush, and what the socket does
not take when the poller says it takes more.  A host that does not read at first
fills the socket, so the guest's later segments meet both paths; the host must
still get every byte once, in order, even after the flow has closed.
"""

from __future__ import annotations

import os
import socket
import struct
from ipaddress import IPv4Address

import trio
from scapy.layers.inet import TCP

from slirpnet.core.flows import CloseFlow, Endpoint, OpenFlow, SendFlow, TcpFlow
from slirpnet.core.settings import NetworkSettings
from slirpnet.core.tcp import WINDOW_SHIFT, TcpEndpoint
from slirpnet.core.vm import Vm
from slirpnet.shell.runtime import NamespaceRuntime
from tests.test_shell import running
from tests.test_shell_budget import segment

# More than a loopback socket takes while its peer reads nothing (its send buffer grows
# to tcp_wmem's 4 MiB).
SEGMENTS, SIZE = 120, 60000
DATA = b"".join(bytes([n % 256]) * SIZE for n in range(SEGMENTS))


def unwatched_flow(vm: Vm, port: int) -> TcpFlow:
    """A TCP flow to ``port`` made here and marked closed in the core, which then ignores
    what the shell tells it: only the shell's side of it runs."""
    now = trio.current_time()
    flow = TcpFlow(
        vm=vm,
        guest=Endpoint(bytes.fromhex("525400123456"), IPv4Address("10.0.2.15"), 40000),
        host_address=IPv4Address("127.0.0.1"),
        host_port=port,
        deadline=now + 60,
        dst_address=IPv4Address("10.0.2.2"),
        dst_port=port,
        endpoint=TcpEndpoint.active(40000, port, 1460, now),
    )
    flow.closed = True
    return flow


async def listener() -> trio.socket.SocketType:
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills at once
    await sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


async def test_data_is_written_in_order_across_direct_and_queued_writes() -> None:
    host_listener = await listener()
    port = host_listener.getsockname()[1]
    received = bytearray()
    start_reading = trio.Event()

    async def host() -> None:
        connection, _ = await host_listener.accept()
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
        while sent < len(DATA):
            if 2 + sent + SIZE <= edge:
                chunk = DATA[sent : sent + SIZE]
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
        await vm.send(segment(port, 40000, "FA", 2 + len(DATA), ours))
        with trio.fail_after(10):
            while len(received) < len(DATA):
                await trio.sleep(0.01)
        servers.cancel_scope.cancel()
    host_listener.close()
    assert bytes(received) == DATA


async def test_a_flow_closed_with_data_unwritten_writes_it_all_then_closes() -> None:
    """The core closes a flow while the guest's data (acknowledged to the guest) still
    waits for a full socket: the host gets every byte, then EOF."""
    host_listener = await listener()
    port = host_listener.getsockname()[1]
    async with (
        NamespaceRuntime.open("test", NetworkSettings()) as runtime,
        runtime.attach("vm") as vm_port,
    ):
        flow = unwatched_flow(vm_port.vm, port)
        runtime.host.apply(OpenFlow(flow))
        connection, _ = await host_listener.accept()
        runtime.host.apply(SendFlow(flow, DATA))
        runtime.host.write_unwritten()
        runtime.host.apply(CloseFlow(flow))
        assert len(runtime.host) == 0  # gone from the flows' sockets, still writing
        received = bytearray()
        with connection, trio.fail_after(10):
            while chunk := await connection.recv(65536):
                received.extend(chunk)
    host_listener.close()
    assert bytes(received) == DATA


async def test_a_lingering_flow_whose_host_resets_is_closed_at_once() -> None:
    """Nothing is left to linger for once the host has reset the connection: its socket
    closes then, not at the end of ``CLOSE_LINGER``."""
    host_listener = await listener()
    port = host_listener.getsockname()[1]
    async with (
        NamespaceRuntime.open("test", NetworkSettings()) as runtime,
        runtime.attach("vm") as vm_port,
    ):
        before = len(os.listdir("/proc/self/fd"))
        flow = unwatched_flow(vm_port.vm, port)
        runtime.host.apply(OpenFlow(flow))
        connection, _ = await host_listener.accept()
        runtime.host.apply(SendFlow(flow, DATA))
        runtime.host.write_unwritten()
        runtime.host.apply(CloseFlow(flow))  # lingers: the socket holds unwritten data
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.close()  # a RST
        with trio.fail_after(5):
            while len(os.listdir("/proc/self/fd")) > before:
                await trio.sleep(0.01)
    host_listener.close()
