"""A VM that goes away takes every host socket of its with it, whatever state they are in.

A connect that never completes is made on loopback: a listener whose accept queue is
full drops further SYNs, so a connect to it hangs as one to a silent host would.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import trio
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from slirpnet.core.settings import NetworkSettings
from tests.test_shell import GATEWAY_MAC, GUEST_MAC, running


@contextmanager
def hanging_port() -> Iterator[int]:
    """A loopback port whose connects hang: its listener's accept queue is full."""
    with ExitStack() as stack:
        listener = stack.enter_context(socket.create_server(("127.0.0.1", 0), backlog=0))
        port: int = listener.getsockname()[1]
        filler = stack.enter_context(socket.socket())
        filler.connect(("127.0.0.1", port))  # a backlog of 0 takes one: it is full now
        yield port


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_a_vm_leaving_while_its_connects_hang_leaves_nothing() -> None:
    with hanging_port() as port:
        before = open_fds()
        async with running(NetworkSettings()) as (runtime, vm):
            for sport in range(41000, 41005):
                syn = (
                    Ether(src=GUEST_MAC, dst=GATEWAY_MAC)
                    / IP(src="10.0.2.15", dst="10.0.2.2")
                    / TCP(sport=sport, dport=port, flags="S", seq=1)
                )
                await vm.send(syn)
            (guest,) = runtime.ports
            with trio.fail_after(5):
                while len(guest.vm.connecting) < 5:
                    await trio.sleep(0.01)
            await trio.sleep(0.1)  # the connects are under way, and hang
            assert len(guest.vm.connecting) == 5
            await vm.stream.aclose()
            with trio.fail_after(5):
                while runtime.ports:
                    await trio.sleep(0.01)
            assert len(runtime.host) == 0
        await trio.sleep(0.05)
        assert open_fds() == before
