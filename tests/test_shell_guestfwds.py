"""Guest forwards on real host ends: a loopback TCP service, a unix socket, a command.

A scripted guest on a socket pair connects to the guestfwd's address and port, sends
data, half-closes, and reads until the host end's FIN.  Commands are real processes:
each must be gone (reaped, no zombie) when its flow ends, however it ends, and the
test process must hold no more descriptors than before.
"""

from __future__ import annotations

import hashlib
import os
import random
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from slirpnet.core.guestfwd import parse_guestfwd
from slirpnet.core.settings import NetworkSettings
from slirpnet.shell import guestfwds
from tests.test_shell import GATEWAY_MAC, GUEST_MAC, FakeVm, running

SERVICE = "10.0.2.100"
PAYLOAD = random.Random(7).randbytes(30000)
CHUNK = 1400


class GuestConnection:
    """One TCP connection of the guest's, to SERVICE:PORT, with just enough TCP for tests:
    segments within the window offered, every one of the host's acknowledged."""

    def __init__(self, vm: FakeVm, port: int, sport: int = 40000) -> None:
        self.vm = vm
        self.port = port
        self.sport = sport
        self.seq = 1000
        self.ack = 0
        self.received = bytearray()
        self.fin = False

    def _segment(self, flags: str, payload: bytes = b"") -> Ether:
        tcp = TCP(sport=self.sport, dport=self.port, flags=flags, seq=self.seq, ack=self.ack)
        if flags == "S":
            tcp.options = [("MSS", 1460)]
        return (
            Ether(src=GUEST_MAC, dst=GATEWAY_MAC) / IP(src="10.0.2.15", dst=SERVICE) / tcp / payload
        )

    async def connect(self) -> str:
        """The answer's flags: "SA" (then the handshake is completed) or "RA"."""
        await self.vm.send(self._segment("S"))
        answer = await self._next()
        if answer[TCP].flags == "SA":
            self.seq += 1
            self.ack = answer[TCP].seq + 1
            await self.vm.send(self._segment("A"))
        return str(answer[TCP].flags)

    async def send(self, data: bytes) -> None:
        for start in range(0, len(data), CHUNK):
            chunk = data[start : start + CHUNK]
            await self.vm.send(self._segment("PA", chunk))
            self.seq += len(chunk)
            await self._take_waiting()

    async def shutdown(self) -> None:
        await self.vm.send(self._segment("FA"))
        self.seq += 1

    async def reset(self) -> None:
        await self.vm.send(self._segment("R"))

    async def read_to_end(self, timeout: float = 10.0) -> bytes:
        with trio.fail_after(timeout):
            while not self.fin:
                self._take(await self._next())
                await self.vm.send(self._segment("A"))
        return bytes(self.received)

    async def _take_waiting(self) -> None:
        """ACKs and data that came meanwhile (a host that echoes answers as we send)."""
        while self.vm.pending:
            self._take(await self._next())
            await self.vm.send(self._segment("A"))

    def _take(self, frame: Ether) -> None:
        tcp = frame[TCP]
        assert "R" not in tcp.flags, f"reset by the gateway: {frame!r}"
        data = bytes(tcp.payload)
        if tcp.seq == self.ack and data:
            self.received += data
            self.ack += len(data)
        if "F" in tcp.flags and tcp.seq + len(data) == self.ack:
            self.fin = True
            self.ack += 1

    async def _next(self) -> Ether:
        frame = await self.vm.receive()
        assert frame.haslayer(TCP) and frame[IP].src == SERVICE, frame.show(dump=True)
        assert frame[TCP].sport == self.port
        return frame


def children() -> set[int]:
    """This process's children, zombies included (a zombie is a child until reaped)."""
    pids: set[int] = set()
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as listing:
            pids |= {int(pid) for pid in listing.read().split()}
    return pids


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def gone(before: set[int], timeout: float = 5.0) -> None:
    """Every child started since ``before`` was is reaped, within ``timeout``."""
    with trio.fail_after(timeout):
        while children() - before:
            await trio.sleep(0.01)


@asynccontextmanager
async def served(
    family: socket.AddressFamily,
    address: object,
    handler: Callable[[trio.SocketStream], Awaitable[None]],
) -> AsyncIterator[object]:
    """A listening socket of ``family`` at ``address``, serving each connection with
    ``handler``; yields where it listens."""
    listener = trio.socket.socket(family, socket.SOCK_STREAM)
    await listener.bind(address)
    listener.listen()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, handler, [trio.SocketListener(listener)])
        yield listener.getsockname()
        nursery.cancel_scope.cancel()


async def echo(stream: trio.SocketStream) -> None:
    """Everything back, then our FIN after the peer's."""
    async with stream:
        while data := await stream.receive_some(65536):
            await stream.send_all(data)


async def exchange(settings: NetworkSettings, payload: bytes = PAYLOAD) -> bytes:
    """Send ``payload`` to SERVICE:4321 through a namespace with ``settings``, half-close,
    and return everything the host end sent back before its FIN."""
    async with running(settings) as (runtime, vm):
        connection = GuestConnection(vm, 4321)
        assert await connection.connect() == "SA"
        await connection.send(payload)
        await connection.shutdown()
        answer = await connection.read_to_end()
        with trio.fail_after(5):
            while len(runtime.host):  # the flow has closed
                await trio.sleep(0.01)
    return answer


def with_guestfwd(spec: str) -> NetworkSettings:
    return NetworkSettings(guest_forwards=(parse_guestfwd(spec),))


async def test_a_tcp_target_on_loopback() -> None:
    fds = open_fds()
    async with served(socket.AF_INET, ("127.0.0.1", 0), echo) as (_, port):
        assert await exchange(with_guestfwd(f"tcp:{SERVICE}:4321-tcp:127.0.0.1:{port}")) == PAYLOAD
    assert open_fds() == fds


async def test_a_unix_socket_target(tmp_path: Path) -> None:
    path = tmp_path / "service.sock"
    fds = open_fds()
    async with served(socket.AF_UNIX, str(path), echo):
        assert await exchange(with_guestfwd(f"tcp:{SERVICE}:4321-unix:{path}")) == PAYLOAD
    assert open_fds() == fds


async def test_a_command_echoes_and_is_reaped() -> None:
    before, fds = children(), open_fds()
    assert await exchange(with_guestfwd(f"tcp:{SERVICE}:4321-cmd:cat")) == PAYLOAD
    await gone(before)
    assert open_fds() == fds


async def test_the_guests_fin_is_the_commands_stdin_eof() -> None:
    # sha256sum answers only once its stdin ends, and its stdout's end is our FIN.
    before = children()
    answer = await exchange(with_guestfwd(f"tcp:{SERVICE}:4321-cmd:sha256sum"))
    assert answer == f"{hashlib.sha256(PAYLOAD).hexdigest()}  -\n".encode()
    await gone(before)


async def test_a_shell_only_when_asked_for() -> None:
    # Split as a shell would, run without one: the quotes group, the ; is an argument.
    # (echo reads nothing: data sent after it exits would have nowhere to go, a RST.)
    spec = f"tcp:{SERVICE}:4321-cmd:echo 'a  b' ; $HOME"
    assert await exchange(with_guestfwd(spec), b"") == b"a  b ; $HOME\n"
    spec = f"tcp:{SERVICE}:4321-cmd:sh -c 'wc -c; echo \"$0\"' sh-here"
    assert await exchange(with_guestfwd(spec)) == f"{len(PAYLOAD)}\nsh-here\n".encode()


@pytest.mark.parametrize(
    "target",
    [
        "cmd:/nonexistent/slirpnet-test-command",
        "cmd:/dev/null",  # not executable
        "unix:/nonexistent/slirpnet-test.sock",
        "tcp:127.0.0.1:{closed}",
    ],
)
async def test_a_target_that_cannot_be_reached_is_a_rst(target: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    before, fds = children(), open_fds()
    settings = with_guestfwd(f"tcp:{SERVICE}:4321-" + target.format(closed=closed))
    async with running(settings) as (runtime, vm):
        assert await GuestConnection(vm, 4321).connect() == "RA"
        with trio.fail_after(5):
            while len(runtime.host):
                await trio.sleep(0.01)
        (port,) = runtime.ports
        assert sum(port.vm.stats.events[f"tcp_host_{k}"] for k in ("refused", "failed")) == 1
    assert children() == before
    assert open_fds() == fds


async def test_a_command_still_running_is_terminated_when_the_flow_ends() -> None:
    before, fds = children(), open_fds()
    async with running(with_guestfwd(f"tcp:{SERVICE}:4321-cmd:sleep 60")) as (runtime, vm):
        connection = GuestConnection(vm, 4321)
        assert await connection.connect() == "SA"
        assert len(children() - before) == 1
        await connection.reset()
        await gone(before, timeout=1.5)  # SIGTERM, well before TERMINATE_GRACE
        assert len(runtime.host) == 0
    assert open_fds() == fds


IGNORES_SIGTERM = (
    "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "sys.stdout.write('ready'); sys.stdout.flush(); time.sleep(60)"
)


async def test_a_command_that_ignores_sigterm_is_killed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guestfwds, "TERMINATE_GRACE", 0.3)
    before, fds = children(), open_fds()
    spec = f'tcp:{SERVICE}:4321-cmd:{sys.executable} -c "{IGNORES_SIGTERM}"'
    async with running(with_guestfwd(spec)) as (_, vm):
        connection = GuestConnection(vm, 4321)
        assert await connection.connect() == "SA"
        with trio.fail_after(10):
            while connection.received != b"ready":
                connection._take(await connection._next())
        # The VM goes away: its flows end with it, and so does the command.
        await vm.stream.aclose()
        await gone(before)
    assert open_fds() == fds
