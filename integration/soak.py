"""A long run: a guest opens and closes connections without pause, and slirpnet's file
descriptors, memory and flow table must end as flat as they began.

    python -m integration.soak --minutes 10 [--workdir DIR]

The guest is the Linux stack in a namespace (``integration/linux``), behind
``slirpnet serve``.  Workers in it, each in a loop: TCP connections that move a
random amount both ways, byte-checked, and close (some with a RST half way);
connects to a closed port (refused); UDP exchanges, each from a new socket (a new
flow); DNS queries through the loopback upstream.  Meanwhile a raw-frame VM
(``integration/hostile.py``) connects, takes a lease, opens flows and leaves, again
and again.  Every ``--sample`` seconds a line: slirpnet's fds, RSS and flows.

At the end the workers stop, flows are given time to expire (UDP idle timeout 5 s,
TIME_WAIT 2 s), and the end is compared with the start: the same fds, no flows,
RSS within ``RSS_GROWTH_MIB`` of what it was once warm.  ``integration/
test_hardening_soak.py`` runs a short one in CI; the exit status says whether it held.
"""

from __future__ import annotations

import argparse
import random
import socket
import struct
import sys
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import trio
from scapy.layers.dns import DNS, DNSQR

from integration.hostile import Frames, hostile_vm
from integration.linux import system
from integration.linux.harness import LinuxGuest, open_linux_guest
from integration.linux.traffic import echo, loopback_server
from integration.probe import flow_count, process_stats, vms
from integration.services import dns_upstream

GATEWAY = "10.0.2.2"
UDP_IDLE = 5.0  # slirpnet's --udp-idle-timeout here, so that flows expire soon after
SETTLE = UDP_IDLE + 5.0  # after the load: every flow has had time to go
WARM_UP = 0.2  # of the run: when RSS is taken as the start
RSS_GROWTH_MIB = 16.0  # allowed from warm to end: the allocator's noise, not a leak
TCP_WORKERS, UDP_WORKERS = 4, 2
SIZES = (0, 1, 1000, 64_000, 1_000_000)
_LINGER_ABORT = struct.pack("ii", 1, 0)


@dataclass(frozen=True)
class Sample:
    seconds: float
    fds: int
    rss_mib: float
    flows: int
    vms: int

    def __str__(self) -> str:
        return (
            f"{self.seconds:7.0f} s  {self.fds:5d} fds  {self.rss_mib:6.1f} MiB  "
            f"{self.flows:5d} flows  {self.vms} VMs"
        )


@dataclass
class Soak:
    samples: list[Sample] = field(default_factory=list)
    operations: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    start: Sample | None = None  # before the load
    warm: Sample | None = None  # a fifth of the way in
    end: Sample | None = None  # after the load and SETTLE

    def problems(self) -> list[str]:
        found = [f"{count} x {error}" for error, count in self.errors.items()]
        start, warm, end = self.start, self.warm, self.end
        if start is None or warm is None or end is None:
            return [*found, "the run did not finish"]
        if end.fds != start.fds:
            found.append(f"fds: {start.fds} at the start, {end.fds} at the end")
        if end.flows != 0:
            found.append(f"{end.flows} flows left at the end")
        if end.rss_mib > warm.rss_mib + RSS_GROWTH_MIB:
            found.append(f"RSS grew from {warm.rss_mib:.1f} to {end.rss_mib:.1f} MiB")
        return found

    def summary(self) -> str:
        lines = [f"operations: {dict(self.operations)}", f"errors: {dict(self.errors)}"]
        for name in ("start", "warm", "end"):
            lines.append(f"{name:5}: {getattr(self, name)}")
        return "\n".join(lines)


async def echo_until_reset(stream: trio.SocketStream) -> None:
    """The loopback echo server: some clients reset half way."""
    with suppress(trio.BrokenResourceError):
        await echo(stream)


async def sample(pid: int, control: Path, seconds: float) -> Sample:
    stats = process_stats(pid)
    shown = await vms(control)
    flows = sum(flow_count(vm) for vm in shown)
    return Sample(seconds, stats.fds, stats.rss_kib / 1024, flows, len(shown))


# -- the workers ------------------------------------------------------------------------


async def tcp_round(guest: LinuxGuest, port: int, rng: random.Random, soak: Soak) -> None:
    """A connection to the echo server: data both ways, checked, then a close or a RST."""
    data = rng.randbytes(rng.choice(SIZES))
    stream = await guest.connect(GATEWAY, port)
    async with stream:
        if rng.random() < 0.1:
            await stream.send_all(data[: len(data) // 2])
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ABORT)
            soak.operations["tcp reset"] += 1
            return
        received = bytearray()

        async def send() -> None:
            await stream.send_all(data)
            await stream.send_eof()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            while chunk := await stream.receive_some(1 << 20):
                received += chunk
    if received != data:
        soak.errors["tcp data differs"] += 1
    soak.operations["tcp"] += 1


async def refused_round(guest: LinuxGuest, closed_port: int, soak: Soak) -> None:
    try:
        stream = await guest.connect(GATEWAY, closed_port)
    except ConnectionRefusedError:
        soak.operations["tcp refused"] += 1
    else:
        await stream.aclose()
        soak.errors["a closed port accepted"] += 1


async def udp_round(guest: LinuxGuest, port: int, rng: random.Random, soak: Soak) -> None:
    """An exchange from a new socket: a new flow each time, left to expire."""
    payload = rng.randbytes(rng.randint(1, 1400))
    sock = trio.socket.from_stdlib_socket(system.netns_socket(guest.netns, socket.SOCK_DGRAM))
    with sock:
        await sock.connect((GATEWAY, port))
        await sock.send(payload)
        if await sock.recv(2048) != payload:
            soak.errors["udp echo differs"] += 1
    soak.operations["udp"] += 1


async def dns_round(guest: LinuxGuest, rng: random.Random, soak: Soak) -> None:
    query = DNS(id=rng.getrandbits(16), rd=1, qd=DNSQR(qname="www.slirpnet.test"))
    sock = trio.socket.from_stdlib_socket(system.netns_socket(guest.netns, socket.SOCK_DGRAM))
    with sock:
        await sock.sendto(bytes(query), ("10.0.2.3", 53))
        answer = DNS(await sock.recv(2048))
    if answer.id != query.id or answer.rcode != 0:
        soak.errors["dns answer wrong"] += 1
    soak.operations["dns"] += 1


async def vm_round(path: Path, closed_port: int, udp_port: int, soak: Soak) -> None:
    """A VM comes (with the MAC it always has), takes a lease, opens flows and goes."""
    async with hostile_vm(path) as vm:
        frames = Frames(bytes.fromhex("525400cc0001"), "10.0.2.90")
        await vm.send([frames.dhcp_discover(frames.mac, 1)])
        await vm.send(frames.syn(GATEWAY, closed_port, 20000 + n) for n in range(20))
        await vm.send(frames.udp(GATEWAY, udp_port, 30000 + n, b"vm") for n in range(20))
        with trio.fail_after(10):
            while vm.replies["tcp_rst"] < 20 or vm.replies["udp"] < 20 or not vm.offers:
                await trio.sleep(0.05)
    soak.operations["vm"] += 1


async def repeat(
    stop: trio.Event, pause: float, soak: Soak, name: str, round_: Callable[[], Awaitable[None]]
) -> None:
    while not stop.is_set():
        try:
            with trio.fail_after(30):
                await round_()
        except (OSError, trio.TooSlowError, trio.BrokenResourceError) as error:
            soak.errors[f"{name}: {type(error).__name__}"] += 1
        await trio.sleep(pause)


# -- the run ----------------------------------------------------------------------------


async def run_soak(
    workdir: Path, seconds: float, every: float, report: Callable[[str], None] = print
) -> Soak:
    soak = Soak()
    raw, ctl = workdir / "raw.sock", workdir / "ctl.sock"
    args = [
        *("--listen", f"unix:{raw}", "--control", f"unix:{ctl}"),
        *("--udp-idle-timeout", str(UDP_IDLE)),
    ]
    closed = socket.socket()  # bound, never listening: connects to it are refused
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    udp_echo = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await udp_echo.bind(("127.0.0.1", 0))
    udp_port = udp_echo.getsockname()[1]

    async def serve_udp() -> None:
        while True:
            data, peer = await udp_echo.recvfrom(65535)
            await udp_echo.sendto(data, peer)

    with closed, udp_echo:
        async with (
            dns_upstream({"www.slirpnet.test": "192.0.2.10"}) as dns,
            open_linux_guest(
                workdir, slirpnet_args=[*args, "--dns-upstream", f"127.0.0.1:{dns.port}"]
            ) as guest,
            loopback_server(echo_until_reset) as tcp_port,
            trio.open_nursery() as nursery,
        ):
            pid = guest.slirpnet_pid
            assert pid is not None
            nursery.start_soon(serve_udp)
            started = trio.current_time()
            soak.start = await sample(pid, ctl, 0.0)
            report(f"start  {soak.start}")
            stop = trio.Event()
            rng = random.Random(1)
            async with trio.open_nursery() as load:
                for n in range(TCP_WORKERS):
                    worker_rng = random.Random(n)
                    load.start_soon(
                        repeat,
                        stop,
                        0.02,
                        soak,
                        "tcp",
                        lambda r=worker_rng: tcp_round(guest, tcp_port, r, soak),
                    )
                for n in range(UDP_WORKERS):
                    worker_rng = random.Random(100 + n)
                    load.start_soon(
                        repeat,
                        stop,
                        0.02,
                        soak,
                        "udp",
                        lambda r=worker_rng: udp_round(guest, udp_port, r, soak),
                    )
                load.start_soon(
                    repeat,
                    stop,
                    0.2,
                    soak,
                    "refused",
                    lambda: refused_round(guest, closed_port, soak),
                )
                load.start_soon(repeat, stop, 0.1, soak, "dns", lambda: dns_round(guest, rng, soak))
                load.start_soon(
                    repeat,
                    stop,
                    2.0,
                    soak,
                    "vm",
                    lambda: vm_round(raw, closed_port, udp_port, soak),
                )
                while (elapsed := trio.current_time() - started) < seconds:
                    await trio.sleep(min(every, seconds - elapsed))
                    now = await sample(pid, ctl, trio.current_time() - started)
                    soak.samples.append(now)
                    if soak.warm is None and now.seconds >= WARM_UP * seconds:
                        soak.warm = now
                    report(f"load   {now}")
                stop.set()
            await trio.sleep(SETTLE)
            soak.end = await sample(pid, ctl, trio.current_time() - started)
            report(f"end    {soak.end}")
            nursery.cancel_scope.cancel()
    if "Traceback" in (workdir / "slirpnet.log").read_text():
        soak.errors["slirpnet logged a traceback"] += 1
    return soak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--sample", type=float, default=30.0, help="seconds between samples")
    parser.add_argument("--workdir", type=Path, help="for slirpnet's and QEMU's logs")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="slirpnet-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"logs in {workdir}", flush=True)
    soak = trio.run(
        lambda: run_soak(workdir, args.minutes * 60, args.sample, lambda s: print(s, flush=True))
    )
    print(soak.summary())
    problems = soak.problems()
    print("\n".join(problems) if problems else "flat: nothing grew, nothing failed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
