"""The real Linux TCP stack as a guest: a network namespace whose NIC is a tap behind QEMU.

QEMU runs with no machine at all, only a hub joining a tap to the backend under test:

    netns [tap] ── QEMU hub ── -netdev dgram ──────────► slirpnet serve --listen unixgram:
    netns [tap] ── QEMU hub ── -netdev user (libslirp, in QEMU)

or, with ``stream=True``, ``-netdev stream`` to ``slirpnet serve --listen unix:``, as a
VM's NIC is usually wired; and with a lossy link (``faults``) the relay sits between them:

    netns [tap] ── hub 0 ── dgram ─► relay ◄─ stream ─ slirpnet serve --connect unix:
    netns [tap] ── hub 0 ── dgram ─► relay ◄─ dgram ── hub 1 ── -netdev user

QEMU's side is a datagram socket, never ``-netdev stream``: QEMU 7.2 corrupts frames
that a hub sends into a full stream socket.  When a write is partial, the stream
remembers how far it got (``send_index``) and queues the frame; when the socket drains,
``qemu_flush_queued_packets`` first flushes the hub's other ports, whose next frame
is then written from ``send_index`` on: the old frame's head with the new one's tail.
(A NIC peered straight to the stream, as users run it, has no hub and no such bug.)
With ``stream=True`` QEMU's socket gets a send buffer of ``STREAM_SEND_BUFFER``, more than
TCP's windows ever put in flight, so its writes are never partial and the hub never meets
a full socket: the stream's figures are then those of a NIC peered to it.

The tap is made in the root namespace (QEMU attaches to it there, so libslirp's sockets
are the root namespace's, as slirpnet's are), then moved into a fresh namespace where
busybox udhcpc takes the backend's lease.  Sockets the test makes with ``guest.socket()``
live in that namespace and use the Linux TCP stack through the backend; the gateway
10.0.2.2 reaches the host's loopback.

Everything is torn down when the ``async with`` ends, failed or not.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import trio

from integration.linux import ipv6, system
from integration.linux.relay import Faults

Backend = Literal["slirpnet", "libslirp"]
QEMU = "qemu-system-x86_64"
REPO = Path(__file__).resolve().parents[2]
_UDHCPC_SCRIPT = Path(__file__).resolve().with_name("udhcpc.sh")
STARTUP_TIMEOUT = 30.0
STREAM_SEND_BUFFER = 64 << 20
# A loopback port nobody serves: slirpnet must never ask the machine's own resolver.
_DNS_UPSTREAM = "127.0.0.1:9"


class HarnessError(RuntimeError):
    """The guest's network could not be set up; the message points at the logs."""


@dataclass
class LinuxGuest:
    netns: str
    interface: str
    backend: Backend
    workdir: Path
    lease: dict[str, str] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)  # "slirpnet", "qemu", "relay"
    slaac: ipv6.Slaac | None = None  # with ``ipv6_enabled``: what SLAAC gave

    @property
    def slirpnet_pid(self) -> int | None:
        """Of the slirpnet the harness started (none when the caller runs the server)."""
        return self.pids.get("slirpnet")

    @property
    def address(self) -> str:
        return self.lease["ip"]

    @property
    def mtu(self) -> int:
        """The MTU the lease offered: the interface's too, unless ``apply_mtu=False``."""
        return int(self.lease.get("mtu", "1500"))

    def socket(self, family: socket.AddressFamily = socket.AF_INET) -> trio.socket.SocketType:
        """A TCP socket in the guest's namespace."""
        return trio.socket.from_stdlib_socket(system.netns_socket(self.netns, family=family))

    async def connect(self, host: str, port: int) -> trio.SocketStream:
        """A TCP connection from the guest to ``host:port`` (10.0.2.2 is the host's loopback,
        fec0::2 its ::1)."""
        sock = self.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        try:
            await sock.connect((host, port))
        except BaseException:
            sock.close()
            raise
        return trio.SocketStream(sock)

    @property
    def relay_stats(self) -> Path:
        """Where the lossy relay keeps its counters (see ``relay.read_stats``)."""
        return self.workdir / "relay-stats.json"

    def command(self, *argv: str) -> list[str]:
        """``argv`` to run in the guest's namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def logs(self) -> str:
        """The backend's and the relay's logs, for a failing test to show."""
        parts = []
        for path in sorted(self.workdir.glob("*.log")):
            text = path.read_text(errors="replace")
            parts.append(f"--- {path.name} (last 4000 chars) ---\n{text[-4000:]}")
        return "\n".join(parts)


@asynccontextmanager
async def open_linux_guest(
    workdir: Path,
    backend: Backend = "slirpnet",
    faults: Faults | None = None,
    *,
    slirpnet_args: Sequence[str] = (),
    slirpnet_env: Mapping[str, str] | None = None,
    log_level: str | None = None,
    server: Path | None = None,
    apply_mtu: bool = True,
    lease: bool = True,
    ipv6_enabled: bool = False,
    stream: bool = False,
) -> AsyncIterator[LinuxGuest]:
    """A namespace with a leased address behind ``backend``, through a lossy relay if ``faults``.

    ``slirpnet_args`` go to ``slirpnet serve`` (``--mtu 1500``, say) and ``slirpnet_env``
    into its environment.  ``log_level`` is slirpnet's (default: $SLIRPNET_TEST_LOG_LEVEL,
    else info); its log and QEMU's go to ``workdir``.  ``guest.pids`` names the processes.
    With ``server``, the ``unixgram:`` path of a slirpnet the caller runs, none is
    started: the guest is one more VM of that server.  With ``apply_mtu=False`` the
    interface keeps MTU 1500 whatever the lease offers, as systemd-networkd's
    ``UseMTU=no``, Windows and iPXE do (``guest.mtu`` is still the lease's).  With
    ``lease=False`` no DHCP client runs: the interface is up, and the test's own takes the
    lease (``guest.lease`` stays empty).  With ``ipv6_enabled`` the namespace takes an
    address by SLAAC too (``guest.slaac``) and libslirp runs with its IPv6; without,
    neither the namespace's NIC nor libslirp has any.  With ``stream`` QEMU reaches
    slirpnet by ``-netdev stream`` (see the module).
    """
    reason = system.missing()
    if reason is not None:
        raise HarnessError(f"the Linux-stack guest cannot run here: {reason}")
    if server is not None and (backend != "slirpnet" or faults is not None):
        raise ValueError("a guest of a running server has no relay and no other backend")
    if stream and (backend != "slirpnet" or faults is not None or server is not None):
        raise ValueError("a stream is slirpnet's own listener's, without a relay")
    system.sweep_stale()
    workdir.mkdir(parents=True, exist_ok=True)
    tap = system.unique_name("t")
    guest = LinuxGuest(system.unique_name("ns"), tap, backend, workdir)
    level = log_level or os.environ.get("SLIRPNET_TEST_LOG_LEVEL", "info")
    async with AsyncExitStack() as stack:
        stack.callback(_remove_links, guest.netns, tap)
        system.ip("netns", "add", guest.netns)
        system.ip("tuntap", "add", "dev", tap, "mode", "tap")
        nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(nursery.cancel_scope.cancel)
        nic_path = workdir / "nic.sock"  # where QEMU's hub 0 sends the guest's frames
        backend_path = workdir / "backend.sock"  # the relay's other side
        netdevs = [f"tap,id=t0,ifname={tap},script=no,downscript=no"]
        # QEMU turns IPv4 off when ipv6=on is given alone.
        libslirp_ipv6 = "ipv4=on,ipv6=on" if ipv6_enabled else "ipv6=off"
        if faults is not None:
            relay = await _start(
                nursery,
                workdir / "relay.log",
                [
                    *(sys.executable, "-m", "integration.linux.relay"),
                    *("--guest", str(nic_path), "--backend", str(backend_path)),
                    *("--backend-kind", "stream" if backend == "slirpnet" else "dgram"),
                    *("--loss", str(faults.loss), "--duplicate", str(faults.duplicate)),
                    *("--reorder", str(faults.reorder), "--seed", str(faults.seed)),
                    *("--stats", str(guest.relay_stats)),
                ],
                ready=lambda: nic_path.exists() and backend_path.exists(),
            )
            guest.pids["relay"] = relay.pid
        if server is not None:
            netdevs.append(_dgram_netdev("s0", server, local=workdir / "nic.qemu"))
        elif backend == "slirpnet":
            # Without the relay, slirpnet takes datagrams itself; behind it, a stream.
            where = (
                ["--listen", f"{'unix' if stream else 'unixgram'}:{nic_path}"]
                if faults is None
                else ["--connect", f"unix:{backend_path}"]
            )
            slirpnet = await _start(
                nursery,
                workdir / "slirpnet.log",
                [
                    *(sys.executable, "-m", "slirpnet", "serve", *where),
                    *("--dns-upstream", _DNS_UPSTREAM, "--log-level", level),
                    # Leases of its own: a run never starts with another run's.
                    *("--state-dir", str(workdir / "state")),
                    *slirpnet_args,
                ],
                ready=nic_path.exists,
                env=slirpnet_env,
            )
            guest.pids["slirpnet"] = slirpnet.pid
            netdevs.append(
                f"stream,id=s0,server=off,addr.type=unix,addr.path={nic_path}"
                if stream
                else _dgram_netdev("s0", nic_path)
            )
        elif faults is None:
            netdevs.append(f"user,id=s0,{libslirp_ipv6}")
        else:
            netdevs.append(_dgram_netdev("s0", nic_path))
            netdevs += [_dgram_netdev("s1", backend_path), f"user,id=u0,{libslirp_ipv6}"]
            netdevs += ["hubport,id=h2,hubid=1,netdev=s1", "hubport,id=h3,hubid=1,netdev=u0"]
        netdevs += ["hubport,id=h0,hubid=0,netdev=t0", "hubport,id=h1,hubid=0,netdev=s0"]
        qemu = [QEMU, "-machine", "none", "-nodefaults", "-display", "none"]
        for netdev in netdevs:
            qemu += ["-netdev", netdev]
        with system.default_send_buffer(STREAM_SEND_BUFFER) if stream else nullcontext():
            process = await _start(nursery, workdir / "qemu.log", qemu, ready=lambda: True)
            guest.pids["qemu"] = process.pid
            await _wait_for(lambda: system.tap_attached(process.pid, tap), process, "QEMU's tap")
            if stream:  # its socket is made by a thread of its own: connected, it has one
                await _wait_for(lambda: _stream_connected(nic_path), process, "QEMU's stream")
                if _send_buffer(process.pid) < STREAM_SEND_BUFFER:
                    raise HarnessError("QEMU's stream socket has the default send buffer")
        # QEMU holds the tap open by its file descriptor: it follows the tap into the namespace.
        system.ip("link", "set", tap, "netns", guest.netns)
        system.ip("link", "set", "lo", "up", netns=guest.netns)
        if ipv6_enabled:
            ipv6.enable(guest.netns, tap)
        else:
            ipv6.disable(guest.netns, tap)
        system.ip("link", "set", tap, "up", netns=guest.netns)
        if lease:
            guest.lease = await _dhcp(guest, apply_mtu)
        if ipv6_enabled:
            try:
                guest.slaac = await ipv6.wait_for_slaac(guest.netns, tap)
            except ipv6.SlaacError as error:
                raise HarnessError(f"{error}\n{guest.logs()}") from None
        yield guest


def _stream_connected(path: Path) -> bool:
    """Does a socket connected to the unix stream listener at ``path`` exist?"""
    listing = system.run("ss", "-x", "-n", "-H", "state", "connected", "src", str(path))
    return bool(listing.strip())


def _send_buffer(pid: int) -> int:
    """The send buffer of process ``pid``'s unix stream socket (``ss``'s ``tb``)."""
    listing = system.run("ss", "-x", "-m", "-p", "-n", "-H", "state", "connected")
    owner = re.search(rf"pid={pid},.*?skmem:\(.*?tb(\d+)", listing.replace("\n", " "))
    return int(owner.group(1)) if owner else 0


def _dgram_netdev(name: str, path: Path, local: Path | None = None) -> str:
    """QEMU's side of a unix datagram link to ``path``, bound at ``local`` (``path.qemu``)."""
    return (
        f"dgram,id={name},local.type=unix,local.path={local or f'{path}.qemu'},"
        f"remote.type=unix,remote.path={path}"
    )


async def _start(
    nursery: trio.Nursery,
    log: Path,
    argv: list[str],
    ready: Callable[[], bool],
    env: Mapping[str, str] | None = None,
) -> trio.Process:
    """Start ``argv`` (stopped when the nursery is cancelled) and wait until ``ready()``."""
    with log.open("ab") as out:
        process: trio.Process = await nursery.start(
            lambda task_status: trio.run_process(
                argv,
                check=False,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                cwd=REPO,
                env={**os.environ, **(env or {}), "PYTHONPATH": str(REPO)},
                task_status=task_status,
            )
        )
    await _wait_for(ready, process, log.name)
    return process


async def _wait_for(ready: Callable[[], bool], process: trio.Process, what: str) -> None:
    with trio.move_on_after(STARTUP_TIMEOUT):
        while not ready():
            if process.returncode is not None:
                raise HarnessError(f"{what}: the process exited with {process.returncode}")
            await trio.sleep(0.02)
        return
    raise HarnessError(f"{what}: not ready after {STARTUP_TIMEOUT} s")


async def _dhcp(guest: LinuxGuest, apply_mtu: bool) -> dict[str, str]:
    argv = guest.command(
        *("busybox", "udhcpc", "-i", guest.interface, "-s", str(_UDHCPC_SCRIPT)),
        *("-n", "-q", "-f", "-t", "10", "-T", "1", "-O", "mtu"),
    )
    with trio.move_on_after(STARTUP_TIMEOUT):
        result = await trio.run_process(
            argv,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env={**os.environ, "UDHCPC_APPLY_MTU": "yes" if apply_mtu else "no"},
        )
        for line in result.stdout.decode().splitlines():
            if line.startswith("LEASE "):
                return dict(item.partition("=")[::2] for item in line.split()[1:])
    raise HarnessError(f"no DHCP lease in {guest.netns}\n{guest.logs()}")


def _remove_links(netns: str, tap: str) -> None:
    # Deleting the namespace deletes the tap in it; a tap never moved is deleted here.
    system.ip("netns", "delete", netns, check=False)
    system.ip("link", "delete", tap, check=False)
