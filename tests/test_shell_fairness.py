"""One VM's flood does not hold up another VM of the same server.

A read from a VM's stream may hold thousands of small frames.  Fed to the core all at
once, they would keep every other task of the server (other VMs, host sockets) waiting
for as long as the flood lasts; they are fed ``FEED_BATCH`` at a time instead.
"""

from __future__ import annotations

import socket

import trio
import trio.testing
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import ARP, Ether

from slirpnet.core.settings import NetworkSettings
from slirpnet.framing import QEMU_STREAM
from slirpnet.shell.runtime import NamespaceRuntime
from slirpnet.shell.transports import FEED_BATCH, serve_stream
from tests.test_shell import GATEWAY_MAC, FakeVm

FLOOD = 3000  # frames, all in the socket at once: one read takes them all
QUIET_MAC = "52:54:00:00:00:02"


async def test_a_vm_is_served_between_another_s_flooded_frames() -> None:
    flooding_mac = "52:54:00:00:00:01"
    request = Ether(src=flooding_mac, dst=GATEWAY_MAC) / ARP(
        hwsrc=flooding_mac, psrc="10.0.2.15", pdst="10.0.2.2"
    )
    flood = QEMU_STREAM.encode(bytes(request)) * FLOOD
    ping = Ether(src=QUIET_MAC, dst=GATEWAY_MAC) / IP(src="10.0.2.16", dst="10.0.2.2") / ICMP()
    async with (
        NamespaceRuntime.open("test", NetworkSettings()) as runtime,
        trio.open_nursery() as nursery,
    ):
        vms = []
        for name in ("flooding", "quiet"):
            ours, theirs = trio.socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2 * len(flood))
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 2 * len(flood))
            nursery.start_soon(
                serve_stream, runtime.attach, trio.SocketStream(theirs), name, QEMU_STREAM
            )
            vms.append(FakeVm(trio.SocketStream(ours)))
        flooding, quiet = vms
        await trio.testing.wait_all_tasks_blocked()
        flooding_port = next(port for port in runtime.ports if port.name == "flooding")

        await flooding.stream.send_all(flood)
        while flooding_port.stats.frames_in == 0:  # the flood is being handled
            await trio.sleep(0)
        await quiet.send(ping)
        reply = await quiet.receive()
        handled = flooding_port.stats.frames_in
        nursery.cancel_scope.cancel()
    assert reply[ICMP].type == 0
    # Fed whole, the flood's read would all be handled before the quiet VM's ping.
    assert FEED_BATCH <= handled < FLOOD // 2, handled
