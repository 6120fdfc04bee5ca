"""Looking at a running slirpnet from outside: its descriptors and memory, and its control API."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from slirpnet.control.client import request


@dataclass(frozen=True)
class ProcessStats:
    fds: int  # open file descriptors
    rss_kib: int  # resident memory now
    peak_rss_kib: int  # the most it has ever been (VmHWM)

    def __str__(self) -> str:
        rss, peak = self.rss_kib / 1024, self.peak_rss_kib / 1024
        return f"{self.fds} fds, RSS {rss:.1f} MiB (peak {peak:.1f})"


def process_stats(pid: int) -> ProcessStats:
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return ProcessStats(
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        rss_kib=int(status["VmRSS"].split()[0]),
        peak_rss_kib=int(status["VmHWM"].split()[0]),
    )


async def control(socket_path: Path, path: str) -> Any:
    """GET ``/v1`` + ``path`` from the control API (the client blocks: in a thread)."""
    return await trio.to_thread.run_sync(request, str(socket_path), "GET", path)


async def vms(socket_path: Path, namespace: str = "default") -> list[dict[str, Any]]:
    """The namespace's VMs as the control API shows them (drops, events, flows)."""
    found: list[dict[str, Any]] = await control(socket_path, f"/namespaces/{namespace}/vms")
    return found


def flow_count(vm: dict[str, Any]) -> int:
    return sum(vm["flows"].values())


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``condition()`` until it holds; ``trio.TooSlowError`` after ``timeout`` s."""
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.05)
