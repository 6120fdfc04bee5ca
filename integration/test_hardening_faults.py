"""Faults: a VM that vanishes, a host peer that resets, a DNS upstream that goes and
comes back, a host out of file descriptors, and QEMU coming back for its lease.

Each runs ``slirpnet serve`` as users do and looks at it from outside: its open file
descriptors (``/proc/PID/fd``), its control API and its log.
"""

from __future__ import annotations

import shutil
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import pytest
import trio
from scapy.layers.dns import DNS, DNSQR

from integration.conftest import skip_unless_linux_guest
from integration.guest import GuestImage, boot_async
from integration.hostile import Frames, hostile_vm
from integration.linux import system
from integration.linux.harness import LinuxGuest, open_linux_guest
from integration.linux.traffic import (
    TransferServer,
    digest,
    loopback_server,
    pattern,
    transfer,
)
from integration.probe import process_stats, vms, wait_until
from integration.server import free_udp_port, serving
from integration.services import DnsUpstream

GATEWAY = "10.0.2.2"
MB = 1 << 20
_LINGER_ABORT = struct.pack("ii", 1, 0)


# -- a VM that goes away mid-transfer --------------------------------------------------


class Busy:
    """Host side of the guest's connections: sends and receives until they break."""

    def __init__(self) -> None:
        self.moved: dict[int, list[int]] = {}  # connection -> [bytes sent, bytes received]
        self.ended: set[int] = set()

    def moving(self) -> bool:
        """Four connections have moved a MiB each way."""
        return len(self.moved) == 4 and all(min(c) > MB for c in self.moved.values())

    async def handle(self, stream: trio.SocketStream) -> None:
        number = len(self.moved)
        counts = self.moved[number] = [0, 0]
        chunk = b"x" * 65536

        async def send() -> None:
            with suppress(trio.BrokenResourceError):
                while True:
                    await stream.send_all(chunk)
                    counts[0] += len(chunk)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            # A reset: what slirpnet does to a VM's connections when the VM goes.
            with suppress(trio.BrokenResourceError):
                while data := await stream.receive_some(65536):
                    counts[1] += len(data)
            nursery.cancel_scope.cancel()
        self.ended.add(number)


async def test_a_vm_gone_mid_transfer_leaves_no_socket_behind(
    guest_image: GuestImage, tmp_path: Path
) -> None:
    sock, ctl = tmp_path / "vm.sock", tmp_path / "ctl.sock"
    args = ["--listen", f"unix:{sock}", "--control", f"unix:{ctl}", "--dns-upstream", "127.0.0.1:9"]
    busy = Busy()
    async with serving(args, tmp_path / "log") as server, loopback_server(busy.handle) as port:
        pid = server.process.pid
        before = process_stats(pid)
        # Four connections moving data both ways, and the guest stays up until killed.
        script = (
            f"for i in 1 2 3 4; do nc {GATEWAY} {port} </dev/zero >/dev/null & done\nsleep 600\n"
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: boot_async(guest_image, server.netdev(), script, 120))
            await wait_until(busy.moving, 90)
            during = process_stats(pid)
            (vm,) = await vms(ctl)
            nursery.cancel_scope.cancel()  # QEMU is killed: the stream closes
        await wait_until(lambda: len(busy.ended) == 4)
        assert await vms(ctl) == []
        await wait_until(lambda: process_stats(pid).fds == before.fds)
    print(f"slirpnet before the VM: {before}; during its transfers: {during}")
    assert vm["flows"]["tcp"] == 4 and during.fds >= before.fds + 4 + 1  # flows and the VM
    server.assert_clean_exit()


# -- a host peer that resets -------------------------------------------------------------


async def test_a_host_peer_s_reset_reaches_the_guest(linux_guest: LinuxGuest) -> None:
    async def reset_while_sending(stream: trio.SocketStream) -> None:
        for chunk in pattern(1, MB):
            await stream.send_all(chunk)
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ABORT)

    async def reset_while_receiving(stream: trio.SocketStream) -> None:
        received = 0
        while received < MB:
            received += len(await stream.receive_some(65536))
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ABORT)

    async with (
        loopback_server(reset_while_sending) as sending,
        loopback_server(reset_while_receiving) as receiving,
    ):
        with trio.fail_after(30):
            sock = linux_guest.socket()
            await sock.connect((GATEWAY, sending))
            got = 0
            with sock, pytest.raises(ConnectionResetError):
                while data := await sock.recv(65536):
                    got += len(data)
            sock = linux_guest.socket()
            await sock.connect((GATEWAY, receiving))
            with sock, pytest.raises((ConnectionResetError, BrokenPipeError)):
                while True:
                    await sock.send(b"u" * 65536)
    assert got <= MB  # what arrived before the reset, maybe all of it


# -- a DNS upstream that goes away and comes back ---------------------------------------


@asynccontextmanager
async def dns_upstream_on(port: int, *, silent: bool = False) -> AsyncIterator[None]:
    """A loopback DNS upstream on ``port`` (UDP) for the body of the ``async with``;
    ``silent``, it takes queries and never answers."""
    upstream = DnsUpstream({"www.slirpnet.test": "192.0.2.10"})
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", port))

    async def serve() -> None:
        while True:
            message, peer = await sock.recvfrom(65535)
            reply = upstream.answer(message, "udp")
            if reply is not None and not silent:
                await sock.sendto(reply, peer)

    with sock:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            yield
            nursery.cancel_scope.cancel()


async def resolve(guest: LinuxGuest, number: int) -> DNS:
    sock = trio.socket.from_stdlib_socket(system.netns_socket(guest.netns, socket.SOCK_DGRAM))
    with sock, trio.fail_after(10):
        await sock.sendto(
            bytes(DNS(id=number, rd=1, qd=DNSQR(qname="www.slirpnet.test"))), ("10.0.2.3", 53)
        )
        return DNS(await sock.recv(65535))


async def test_a_dns_upstream_that_goes_away_and_comes_back(tmp_path: Path) -> None:
    skip_unless_linux_guest()
    nic, port = tmp_path / "nic.sock", free_udp_port()
    args = ["--listen", f"unixgram:{nic}", "--dns-upstream", f"127.0.0.1:{port}"]
    async with (
        serving(args, tmp_path / "slirpnet.log") as server,
        open_linux_guest(tmp_path / "guest", server=nic) as guest,
    ):
        async with dns_upstream_on(port):
            answered = await resolve(guest, 1)
        refused = await resolve(guest, 2)  # nothing there: the host refuses at once
        async with dns_upstream_on(port, silent=True):
            started = trio.current_time()
            timed_out = await resolve(guest, 3)
            waited = trio.current_time() - started
        async with dns_upstream_on(port):
            back = await resolve(guest, 4)
    log = server.stderr()
    assert (answered.rcode, answered.an[0].rdata) == (0, "192.0.2.10")
    assert (refused.id, refused.rcode) == (2, 2)  # SERVFAIL
    assert (timed_out.id, timed_out.rcode) == (3, 2) and waited >= 1.5  # dns-timeout: 2 s
    assert (back.rcode, back.an[0].rdata) == (0, "192.0.2.10")
    # Said once when it went (though it failed twice), once when it came back.
    assert log.count(f"DNS upstream 127.0.0.1:{port} is not answering") == 1, log
    assert log.count(f"DNS upstream 127.0.0.1:{port} answers again") == 1, log
    server.assert_clean_exit()


# -- a host out of file descriptors ------------------------------------------------------

FD_LIMIT = 48  # slirpnet's RLIMIT_NOFILE: a dozen of its own, the rest for flows


async def test_out_of_fds_new_flows_are_refused_and_the_rest_goes_on(tmp_path: Path) -> None:
    skip_unless_linux_guest()
    if shutil.which("prlimit") is None:
        pytest.skip("prlimit is not installed (Debian package util-linux)")
    nic, raw, ctl = tmp_path / "nic.sock", tmp_path / "raw.sock", tmp_path / "ctl.sock"
    args = [
        *("--listen", f"unixgram:{nic}", "--listen", f"unix:{raw}"),
        *("--control", f"unix:{ctl}", "--dns-upstream", "127.0.0.1:9"),
    ]
    held: list[trio.SocketStream] = []
    release = trio.Event()

    async def hold(stream: trio.SocketStream) -> None:
        await release.wait()

    transfers = TransferServer()
    async with (
        serving(args, tmp_path / "log", wrapper=["prlimit", f"--nofile={FD_LIMIT}"]) as server,
        open_linux_guest(tmp_path / "guest", server=nic) as guest,
        loopback_server(hold) as hold_port,
        loopback_server(transfers.handle) as transfer_port,
    ):
        pid = server.process.pid
        before = process_stats(pid)
        existing = await guest.connect(GATEWAY, transfer_port)  # before the descriptors run out
        refused = 0
        with trio.fail_after(60):
            while refused < 3:
                try:
                    held.append(await guest.connect(GATEWAY, hold_port))
                except ConnectionRefusedError:
                    refused += 1  # a RST at once, not a hang
            exhausted = process_stats(pid)
            assert server.process.returncode is None
            # A VM connecting now is closed at once, not left in the backlog.
            async with hostile_vm(raw) as turned_away:
                await turned_away.closed.wait()
            # The connection opened before carries a whole transfer.
            received = await transfer(existing, 7, 16 * MB, 8, 16 * MB)
            await transfers.wait_for([7])
        release.set()
        for stream in held:
            await stream.aclose()
        await wait_until(lambda: process_stats(pid).fds < exhausted.fds - len(held) // 2)
        # With descriptors again: new flows, new VMs, the control API.
        after = await guest.connect(GATEWAY, hold_port)
        await after.aclose()
        async with hostile_vm(raw) as welcome:
            frames = Frames(bytes.fromhex("525400aa0001"), "10.0.2.77")
            await welcome.send([frames.arp_request(GATEWAY)])
            await wait_until(lambda: welcome.replies["arp_reply"] == 1)
        shown = await vms(ctl)
    log = server.stderr()
    print(f"slirpnet with RLIMIT_NOFILE {FD_LIMIT}: {before} at first, {exhausted} when out")
    print(f"{len(held)} connections held, then {refused} refused")
    assert exhausted.fds >= FD_LIMIT - 2  # (a reserve is let go while refusing)
    assert len(held) >= 10
    assert (received.size, received.digest) == (16 * MB, digest(7, 16 * MB))
    upload = transfers.uploads[7]
    assert (upload.size, upload.digest) == (16 * MB, digest(8, 16 * MB))
    (vm,) = [vm for vm in shown if vm["name"].startswith("unixgram:")]
    assert vm["drops"]["host_out_of_fds"] == refused
    assert log.count("refused (host_out_of_fds)") == 1
    assert log.count(f"VM connection on unix:{raw} refused") == 1
    assert f"up to {FD_LIMIT} file descriptors" in log
    server.assert_clean_exit()


# -- QEMU comes back ---------------------------------------------------------------------


async def test_qemu_reconnecting_gets_its_old_lease(
    guest_image: GuestImage, tmp_path: Path
) -> None:
    sock = tmp_path / "vm.sock"
    args = ["--listen", f"unix:{sock}", "--dns-upstream", "127.0.0.1:9"]
    async with serving(args, tmp_path / "log") as server:
        first = await boot_async(guest_image, server.netdev(), timeout=60)
        # Meanwhile another VM asks: the first's address is still its own.
        async with hostile_vm(sock) as other:
            frames = Frames(bytes.fromhex("525400bb0001"), "0.0.0.0")
            await other.send([frames.dhcp_discover(frames.mac, 1)])
            await wait_until(lambda: other.offers)
        again = await boot_async(guest_image, server.netdev(), timeout=60)
    assert first.lease["ip"] == "10.0.2.15", first.output
    assert other.offers == ["10.0.2.16"]
    assert again.lease["ip"] == "10.0.2.15", again.output
    server.assert_clean_exit()
