"""The shell out of file descriptors: new flows and connections are refused, the rest go on.

``no_fds_left`` makes it real: it lowers this process's RLIMIT_NOFILE to just above its
highest descriptor and fills every gap below, so the next socket() or accept() fails
with EMFILE, as on a host that has run out.  The test's own servers open everything
they need beforehand.
"""

from __future__ import annotations

import errno
import os
import resource
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address
from pathlib import Path

import pytest
import trio
import trio.testing
from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.l2 import Ether

from slirpnet.core.forwards import parse_forwards
from slirpnet.core.settings import NetworkSettings, Upstream
from slirpnet.framing import QEMU_STREAM
from slirpnet.server import bind_unix
from slirpnet.shell.runtime import NamespaceRuntime
from slirpnet.shell.transports import serve_listener
from tests.test_shell import GATEWAY_MAC, GUEST_MAC, FakeVm, running, udp_server


@contextmanager
def no_fds_left() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    taken: list[int] = []
    try:
        top = max(int(fd) for fd in os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (top + 1, hard))
        while True:
            try:
                taken.append(os.open(os.devnull, os.O_RDONLY))
            except OSError as error:
                assert error.errno == errno.EMFILE
                break
        yield
    finally:
        for fd in taken:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def syn(dport: int, sport: int) -> Ether:
    return (
        Ether(src=GUEST_MAC, dst=GATEWAY_MAC)
        / IP(src="10.0.2.15", dst="10.0.2.2")
        / TCP(sport=sport, dport=dport, flags="S", seq=1000)
    )


async def test_new_flows_are_refused_and_open_ones_go_on() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    with udp_server() as server, listener:
        udp_port = server.getsockname()[1]
        settings = NetworkSettings(dns_upstreams=(Upstream(IPv4Address("127.0.0.1"), udp_port),))
        async with running(settings) as (runtime, vm):
            await vm.send(vm.udp("10.0.2.2", udp_port, b"before", sport=41000))
            with trio.fail_after(5):
                assert (await server.recvfrom(100))[0] == b"before"
            with no_fds_left():
                await vm.send(syn(port, 42000))
                reset = await vm.receive()
                assert (reset[TCP].flags, reset[TCP].dport) == ("RA", 42000)
                await vm.send(vm.udp("10.0.2.2", udp_port, b"new", sport=41001))
                error = await vm.receive()
                assert (error[ICMP].type, error[ICMP].code, error[IP].src) == (3, 1, "10.0.2.2")
                query = DNS(id=9, qd=DNSQR(qname="a.test"))
                await vm.send(vm.udp("10.0.2.3", 53, bytes(query), sport=41002))
                assert (await vm.receive())[DNS].rcode == 2  # SERVFAIL
                # The flow opened before goes on.
                await vm.send(vm.udp("10.0.2.2", udp_port, b"during", sport=41000))
                with trio.fail_after(5):
                    assert (await server.recvfrom(100))[0] == b"during"
            (guest,) = runtime.ports
            assert guest.stats.drops["host_out_of_fds"] == 3
            # With descriptors again, new flows open.
            await vm.send(syn(port, 42001))
            syn_ack = await vm.receive()
            assert (syn_ack[TCP].flags, syn_ack[TCP].dport) == ("SA", 42001)


async def test_a_vm_connecting_when_out_of_fds_is_refused_not_left_hanging(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "vm.sock"
    listener = trio.SocketListener(
        trio.socket.from_stdlib_socket(bind_unix(path, socket.SOCK_STREAM))
    )
    async with (
        NamespaceRuntime.open("test", NetworkSettings()) as runtime,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(serve_listener, runtime.attach, listener, "unix:vm", QEMU_STREAM)
        await trio.testing.wait_all_tasks_blocked()
        refused, later = (trio.socket.socket(socket.AF_UNIX) for _ in range(2))
        with no_fds_left():
            await refused.connect(str(path))
            with trio.fail_after(5):
                assert await refused.recv(10) == b""  # closed at once
        await later.connect(str(path))
        vm = FakeVm(trio.SocketStream(later))
        await vm.send(vm.udp("10.0.2.3", 9, b"x"))
        assert (await vm.receive())[ICMP].type == 3  # served
        refused.close()
        nursery.cancel_scope.cancel()
    assert "VM connection on unix:vm refused; 1 so far" in caplog.text


async def test_a_forward_out_of_fds_resets_the_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    forward = parse_forwards(f"tcp:127.0.0.1:{free_port()}-:22")[0]
    async with NamespaceRuntime.open("test", NetworkSettings()) as runtime:
        runtime.forwards.add(forward)
        await trio.testing.wait_all_tasks_blocked()
        client = socket.socket()
        client.setblocking(False)
        with no_fds_left():
            with pytest.raises(BlockingIOError):
                client.connect(("127.0.0.1", forward.host_port))
            with trio.fail_after(5):
                await trio.lowlevel.wait_readable(client)
        with pytest.raises(ConnectionResetError):
            client.recv(10)
        client.close()
    assert "out of file descriptors: connection from 127.0.0.1" in caplog.text


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
