"""iperf3 from the guest to a server on the host's loopback, with what it cost each process.

The server listens on 127.0.0.1 and the guest reaches it through the gateway 10.0.2.2
(over IPv6: ::1 and fec0::2); ``-R`` turns the data around (host to guest).  Around
each run we read the CPU time of the backend's processes and the guest tap's counters,
whose bytes per frame in the data's direction show that the frames really are as large
as the MTU allows.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

from integration.bench.procstat import cpu_seconds
from integration.linux.harness import LinuxGuest
from integration.linux.system import ip

GATEWAY = "10.0.2.2"


class IperfError(RuntimeError):
    """iperf3 failed; the message holds its complaint."""


@dataclass(frozen=True)
class IperfRun:
    bits_per_second: float  # as the receiver counted
    received: int  # bytes the receiver counted
    sent: int  # bytes the sender counted
    seconds: float
    cpu: dict[str, float]  # CPU seconds each process used during the run, by role
    frame_bytes: float  # mean size of the tap's frames in the data's direction


def free_port(host: str = "127.0.0.1") -> int:
    """A loopback TCP port nobody holds right now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


@asynccontextmanager
async def iperf_server(host: str = "127.0.0.1") -> AsyncIterator[int]:
    """An iperf3 server on ``host`` (127.0.0.1 or ::1), serving one test after another;
    yields its port."""
    port = free_port(host)
    argv = ["iperf3", "-s", "-B", host, "-p", str(port), "--forceflush"]
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            lambda task_status: trio.run_process(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                check=False,
                task_status=task_status,
            )
        )
        assert process.stdout is not None
        heard = b""
        with trio.fail_after(10):
            while b"Server listening" not in heard:
                data = await process.stdout.receive_some(4096)
                if not data:
                    raise IperfError(f"iperf3 -s exited: {heard.decode(errors='replace')}")
                heard += data
        nursery.start_soon(_discard, process.stdout)
        yield port
        nursery.cancel_scope.cancel()


async def _discard(stream: trio.abc.ReceiveStream) -> None:
    while await stream.receive_some(65536):
        pass


async def run_iperf(
    guest: LinuxGuest,
    port: int,
    pids: Mapping[str, int],
    *,
    reverse: bool,
    streams: int = 1,
    seconds: float = 5.0,
    gateway: str = GATEWAY,
) -> IperfRun:
    """One iperf3 test from ``guest`` to ``gateway`` (fec0::2: over IPv6); ``pids`` are
    the processes whose CPU time is read."""
    argv = guest.command(
        *("iperf3", "-c", gateway, "-p", str(port), "-t", str(seconds), "-J"),
        *("-P", str(streams)),
        *(("-R",) if reverse else ()),
    )
    cpu_before = {role: cpu_seconds(pid) for role, pid in pids.items()}
    tap_before = _tap_counters(guest)
    with trio.fail_after(seconds + 60):
        result = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
    cpu = {role: cpu_seconds(pid) - cpu_before[role] for role, pid in pids.items()}
    tap_after = _tap_counters(guest)
    report = _report(result)
    end = report["end"]
    # The guest's tap transmits what the guest sends: its data when not reversed.
    direction = "rx" if reverse else "tx"
    frames = tap_after[direction]["packets"] - tap_before[direction]["packets"]
    data = tap_after[direction]["bytes"] - tap_before[direction]["bytes"]
    return IperfRun(
        bits_per_second=end["sum_received"]["bits_per_second"],
        received=end["sum_received"]["bytes"],
        sent=end["sum_sent"]["bytes"],
        seconds=end["sum_received"]["seconds"],
        cpu=cpu,
        frame_bytes=data / frames if frames else 0.0,
    )


def _report(result: subprocess.CompletedProcess[bytes]) -> Any:
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        report = {"error": result.stdout.decode(errors="replace")[-500:]}
    if result.returncode != 0 or "error" in report:
        detail = report.get("error") or result.stderr.decode(errors="replace")[-500:]
        raise IperfError(f"iperf3 exited {result.returncode}: {detail}")
    return report


def _tap_counters(guest: LinuxGuest) -> Any:
    link = json.loads(ip("-s", "-j", "link", "show", "dev", guest.interface, netns=guest.netns))
    return link[0]["stats64"]


def guest_mtu(guest: LinuxGuest) -> int:
    """The MTU the guest's interface really has (not merely what the lease said)."""
    link = json.loads(ip("-j", "link", "show", "dev", guest.interface, netns=guest.netns))
    mtu: int = link[0]["mtu"]
    return mtu
