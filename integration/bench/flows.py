"""Many idle TCP flows in one VM: are they all held, and what does each one weigh?

The guest's probe opens the flows to an echo server on the host's loopback and keeps
them; after an idle while, every one must still echo a byte.  Weight is measured on
the backend's process, before the flows and while they are held, divided by the
flows opened:

- resident memory (RSS): every user-space page, slirpnet's Python heap and malloc's
  slack, or QEMU's for libslirp; never the kernel's socket buffers, which RSS does
  not count;
- for slirpnet started with ``SLIRPNET_HEAP_REPORT`` (see slirpnet/heapreport.py),
  the Python heap that tracemalloc traces, after a garbage collection.  Tracing
  inflates RSS, so the two come from different runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from integration.bench.procstat import open_files, rss_bytes
from integration.bench.requests import echo_server, probe_command, probe_env
from integration.linux.harness import REPO, LinuxGuest

SETTLE = 1.0  # for the last handshakes and timers to finish before memory is read


@dataclass(frozen=True)
class HeldFlows:
    wanted: int
    opened: int
    alive: int  # still echoing after the idle hold
    errors: dict[str, int]  # failed connects, by exception
    open_seconds: float
    rss_per_flow: float  # bytes
    heap_per_flow: float | None  # bytes of traced Python heap, when traced
    files_per_flow: float  # the backend's descriptors per flow


async def hold_flows(
    guest: LinuxGuest, pid: int, flows: int, idle: float, heap_report: Path | None = None
) -> HeldFlows:
    """Open ``flows`` flows from ``guest``, hold them ``idle`` seconds, check and weigh them.

    ``pid`` is the backend's process; ``heap_report`` its heap report file, if traced.
    """
    async with echo_server() as port:
        await trio.sleep(SETTLE)
        rss, files, heap = rss_bytes(pid), open_files(pid), await _heap(pid, heap_report)
        process = await trio.lowlevel.open_process(
            probe_command(guest, "hold", port, "--flows", str(flows)),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=REPO,
            env=probe_env(),
        )
        try:
            assert process.stdin is not None and process.stdout is not None
            lines = _Lines(process.stdout)
            with trio.fail_after(600):
                opened = await lines.next()
            await trio.sleep(max(idle, SETTLE))
            count = opened["opened"]
            rss_held, files_held = rss_bytes(pid), open_files(pid)
            heap_held = await _heap(pid, heap_report)
            await process.stdin.send_all(b"verify\n")
            with trio.fail_after(600):
                alive = (await lines.next())["alive"]
            await process.stdin.send_all(b"close\n")
            with trio.fail_after(60):
                await process.wait()
        finally:
            process.kill()
    per = max(count, 1)
    return HeldFlows(
        wanted=flows,
        opened=count,
        alive=alive,
        errors=opened["errors"],
        open_seconds=opened["seconds"],
        rss_per_flow=(rss_held - rss) / per,
        heap_per_flow=None if heap is None or heap_held is None else (heap_held - heap) / per,
        files_per_flow=(files_held - files) / per,
    )


async def _heap(pid: int, report: Path | None) -> int | None:
    """The traced heap of ``pid``, asked for with SIGUSR1; None when it is not traced."""
    if report is None:
        return None
    report.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR1)
    with trio.fail_after(30):
        while not report.exists():
            await trio.sleep(0.05)
    traced: int = json.loads(report.read_text())["traced"]
    return traced


class _Lines:
    """JSON lines from a stream, one at a time."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = b""

    async def next(self) -> Any:
        while b"\n" not in self._buffer:
            data = await self._stream.receive_some(65536)
            if not data:
                raise EOFError("the probe ended early")
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)
