"""Policy, proven from a real guest: ``--restrict``, ``--no-host-loopback`` and ``--deny``,
and who may plug a VM into slirpnet's sockets.

The guest is the Linux stack in a namespace (``integration/linux``).  What it tries to
reach: a TCP and a UDP echo service on the host's loopback (through the gateway) and
on two namespace hosts of the test's own.  What must keep working whatever the
policy: the built-in services (DHCP, DNS forwarded to the test's loopback upstream,
ping of the gateway) and a port forward into the guest.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from scapy.layers.dns import DNS, DNSQR

from integration.conftest import skip_unless_linux_guest
from integration.linux import system
from integration.linux.harness import LinuxGuest, open_linux_guest
from integration.linux.nshost import namespace_host
from integration.server import free_tcp_port, serving
from integration.services import dns_upstream

GATEWAY = "10.0.2.2"
PYTHON = "/usr/bin/python3"  # one that user nobody may run, unlike a virtualenv's under /root
RECORDS = {"www.slirpnet.test": "192.0.2.10"}


# -- what the guest can reach ----------------------------------------------------------


async def echo_tcp(listener: trio.socket.SocketType) -> None:
    """Answer every connection's first byte with ``!``."""
    async with trio.open_nursery() as nursery:
        while True:
            connection, _ = await listener.accept()

            async def answer(sock: trio.socket.SocketType = connection) -> None:
                with sock:
                    if await sock.recv(1):
                        await sock.send(b"!")

            nursery.start_soon(answer)


async def echo_udp(sock: trio.socket.SocketType) -> None:
    while True:
        _, peer = await sock.recvfrom(100)
        await sock.sendto(b"!", peer)


@asynccontextmanager
async def echo_services(make: object, address: str) -> AsyncIterator[int]:
    """TCP and UDP echo on the same port of ``address``, with sockets ``make(kind)``."""
    tcp: trio.socket.SocketType = make(socket.SOCK_STREAM)  # type: ignore[operator]
    udp: trio.socket.SocketType = make(socket.SOCK_DGRAM)  # type: ignore[operator]
    with tcp, udp:
        await tcp.bind((address, 0))
        port = tcp.getsockname()[1]
        await udp.bind((address, port))
        tcp.listen()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(echo_tcp, tcp)
            nursery.start_soon(echo_udp, udp)
            yield port
            nursery.cancel_scope.cancel()


def in_netns(netns: str) -> object:
    return lambda kind: trio.socket.from_stdlib_socket(system.netns_socket(netns, kind))


async def outcome(guest: LinuxGuest, kind: socket.SocketKind, address: str, port: int) -> str:
    """ "ok" when the echo answered, else the error's name (EHOSTUNREACH...) or "timeout"."""
    sock = trio.socket.from_stdlib_socket(system.netns_socket(guest.netns, kind))
    with sock, trio.move_on_after(5):
        try:
            await sock.connect((address, port))
            await sock.send(b"?")
            return "ok" if await sock.recv(1) == b"!" else "bad answer"
        except OSError as error:
            return errno.errorcode.get(error.errno or 0, str(error))
    return "timeout"


async def resolves(guest: LinuxGuest) -> bool:
    sock = trio.socket.from_stdlib_socket(system.netns_socket(guest.netns, socket.SOCK_DGRAM))
    with sock, trio.move_on_after(5):
        query = DNS(id=5, rd=1, qd=DNSQR(qname="www.slirpnet.test"))
        await sock.sendto(bytes(query), ("10.0.2.3", 53))
        answer = DNS(await sock.recv(65535))
        return answer.rcode == 0 and answer.an[0].rdata == RECORDS["www.slirpnet.test"]
    return False


async def pings_gateway(guest: LinuxGuest) -> bool:
    argv = guest.command("busybox", "ping", "-c", "1", "-W", "3", GATEWAY)
    return (await trio.run_process(argv, check=False, capture_stdout=True)).returncode == 0


async def forward_works(guest: LinuxGuest, host_port: int, guest_port: int) -> bool:
    """A host connection to the forward reaches a listener in the guest, and back."""
    listener = trio.socket.from_stdlib_socket(system.netns_socket(guest.netns))
    with listener, trio.move_on_after(10):
        await listener.bind(("0.0.0.0", guest_port))
        listener.listen()
        client = await trio.open_tcp_stream("127.0.0.1", host_port)
        async with client:
            accepted, _ = await listener.accept()
            with accepted:
                await client.send_all(b"from the host")
                heard = await accepted.recv(100)
                await accepted.send(b"from the guest")
                answer = await client.receive_some(100)
        return (heard, answer) == (b"from the host", b"from the guest")
    return False


POLICIES = {
    # name: (slirpnet flags with {a} for host a's address, what the guest reaches)
    "restrict": (
        ["--restrict"],
        {"loopback": "EHOSTUNREACH", "a": "EHOSTUNREACH", "b": "EHOSTUNREACH"},
    ),
    "no-host-loopback": (["--no-host-loopback"], {"loopback": "EHOSTUNREACH", "a": "ok"}),
    "deny": (
        ["--deny", "{a}/32", "--deny", "127.0.0.0/8"],
        {"loopback": "EHOSTUNREACH", "a": "EHOSTUNREACH", "b": "ok"},
    ),
}
REASONS = {"restrict": "restricted", "no-host-loopback": "host_loopback_disabled", "deny": "denied"}


@pytest.mark.parametrize("policy", list(POLICIES))
async def test_a_guest_reaches_what_the_policy_allows_and_the_services(
    policy: str, tmp_path: Path
) -> None:
    skip_unless_linux_guest()
    flags, expected = POLICIES[policy]
    nic = tmp_path / "nic.sock"
    host_port, guest_port = free_tcp_port(), 8022
    async with (
        dns_upstream(RECORDS) as dns,
        echo_services(
            lambda kind: trio.socket.socket(socket.AF_INET, kind), "127.0.0.1"
        ) as loopback_port,
    ):
        with namespace_host() as a, namespace_host() as b:
            async with (
                echo_services(in_netns(a.netns), a.address) as a_port,
                echo_services(in_netns(b.netns), b.address) as b_port,
            ):
                args = [
                    *("--listen", f"unixgram:{nic}", "--dns-upstream", f"127.0.0.1:{dns.port}"),
                    *("--forward", f"tcp:127.0.0.1:{host_port}-:{guest_port}"),
                    *(flag.format(a=a.address) for flag in flags),
                ]
                async with (
                    serving(args, tmp_path / "slirpnet.log") as server,
                    open_linux_guest(tmp_path / "guest", server=nic) as guest,
                ):
                    targets = {
                        "loopback": (GATEWAY, loopback_port),
                        "a": (a.address, a_port),
                        "b": (b.address, b_port),
                    }
                    reached = {}
                    for name, (address, port) in targets.items():
                        for kind, label in (
                            (socket.SOCK_STREAM, "tcp"),
                            (socket.SOCK_DGRAM, "udp"),
                        ):
                            reached[f"{name} {label}"] = await outcome(guest, kind, address, port)
                    services = {
                        "dhcp": guest.address.startswith("10.0.2."),
                        "dns": await resolves(guest),
                        "ping gateway": await pings_gateway(guest),
                        "forward": await forward_works(guest, host_port, guest_port),
                    }
    wanted = {
        f"{name} {label}": expected.get(name, "ok")
        for name in ("loopback", "a", "b")
        for label in ("tcp", "udp")
    }
    assert reached == wanted, server.stderr()[-3000:]
    assert services == dict.fromkeys(services, True), server.stderr()[-3000:]
    # Refused at once (ICMP admin-prohibited), counted, and said once in the log.
    assert server.stderr().count(f"refused ({REASONS[policy]})") == 1
    server.assert_clean_exit()


# -- who may plug a VM in ----------------------------------------------------------------


def can_connect_as_nobody(path: Path) -> bool:
    """Whether an unprivileged user (nobody) can connect to the unix socket at ``path``."""
    code = "import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])"
    argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", PYTHON]
    result = subprocess.run([*argv, "-c", code, str(path)], capture_output=True, check=False)
    return result.returncode == 0


async def test_only_the_owner_may_plug_a_vm_in_unless_the_mode_says_otherwise() -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None or not os.path.exists(PYTHON):
        pytest.skip(f"needs root, setpriv (util-linux) and {PYTHON} to try as another user")
    # Not under pytest's tmp_path: its parents are root's alone, whatever the socket's mode.
    where = Path(tempfile.mkdtemp(prefix="slirpnet-mode-"))
    try:
        where.chmod(0o755)
        modes = {}
        for name, flags in (("private", []), ("shared", ["--socket-mode", "0666"])):
            path = where / f"{name}.sock"
            args = ["--listen", f"unix:{path}", "--dns-upstream", "127.0.0.1:9", *flags]
            async with serving(args, where / f"{name}.log"):
                modes[name] = (path.stat().st_mode & 0o777, can_connect_as_nobody(path))
    finally:
        shutil.rmtree(where)
    assert modes == {"private": (0o600, False), "shared": (0o666, True)}
