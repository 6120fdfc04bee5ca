"""A VM's attachment to a running namespace: frames in, frames out.

This is also the embedding API: whatever carries a VM's frames (a QEMU socket,
a VDE plug, the user's own code) feeds them to ``Port.feed`` and sends what
``Port.receive`` returns, like the Go library's ``HandleOutboundIPv4`` plus a
writer callback.  Both are called from the namespace's trio run; neither
raises on a bad frame, which is dropped and counted in ``stats.drops``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from slirpnet.core.stats import Stats
from slirpnet.core.vm import Vm
from slirpnet.shell.pcap import PcapWriter

if TYPE_CHECKING:
    from slirpnet.shell.runtime import NamespaceRuntime

# Frames for a VM that has stopped reading are dropped past this much: a stalled
# guest must not grow the server's memory.  TCP recovers by retransmission.
MAX_QUEUED_BYTES = 8 * 1024 * 1024
# At most this much goes out at once from a flush (``send_now``); the rest waits for
# the transport's writer, which also takes in what the VM sent meanwhile.
SEND_NOW_BYTES = 16 * 1024


class Port:
    def __init__(self, runtime: NamespaceRuntime, vm: Vm, nursery: trio.Nursery) -> None:
        self.runtime = runtime
        self.vm = vm
        self.nursery = nursery  # the VM's own: tasks of its flows that must wait live here
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        self._wakeup = trio.Event()
        self.closed = False
        self.connected_at = time.time()
        self.pcap: PcapWriter | None = None
        # The transport's way to send one frame at once, without blocking: False when it
        # cannot now (busy with earlier frames, or the VM's queue is full).
        self.send_now: Callable[[bytes], bool] | None = None

    @property
    def name(self) -> str:
        return self.vm.name

    @property
    def stats(self) -> Stats:
        """This VM's counters: frames and bytes each way, drops by reason."""
        return self.vm.stats

    def feed(self, frame: bytes) -> None:
        """One Ethernet frame from the VM."""
        self.feed_many((frame,))

    def feed_many(self, frames: Iterable[bytes]) -> None:
        """Frames from the VM, handled in order before any output is flushed."""
        self.take(frames)
        self.runtime.flush()

    def take(self, frames: Iterable[bytes]) -> None:
        """Frames from the VM, handled in order; their output waits for the flush."""
        if self.closed:
            return
        batch = list(frames)
        pcap = self.pcap
        if pcap is not None:
            for frame in batch:
                pcap.write(frame, time.time())
            pcap.flush()  # readable by tcpdump as the frames pass, not when the VM leaves
        self.runtime.segment.receive_many(self.vm, batch, trio.current_time())

    async def receive(self) -> list[bytes]:
        """Every frame waiting for the VM, at least one; waits while there are none.

        Raises ``trio.ClosedResourceError`` once the port is closed and drained.
        """
        while not self._queue:
            if self.closed:
                raise trio.ClosedResourceError("port closed")
            await self._wakeup.wait()
            self._wakeup = trio.Event()
        frames = list(self._queue)
        self._queue.clear()
        self._queued_bytes = 0
        return frames

    def enqueue(self, frames: list[bytes]) -> None:
        """Called by the runtime with the frames the core produced for this VM."""
        if self.pcap is not None:
            stamp = time.time()
            for frame in frames:
                self.pcap.write(frame, stamp)
            self.pcap.flush()
        if not self._queue and self.send_now is not None:
            # Nothing waits ahead of these: the first go out now, sparing an answer the
            # wait for the writer's turn.
            sent = size = 0
            while sent < len(frames) and size < SEND_NOW_BYTES and self.send_now(frames[sent]):
                size += len(frames[sent])
                sent += 1
            if sent == len(frames):
                return
            frames = frames[sent:]
        for frame in frames:
            if self._queued_bytes + len(frame) > MAX_QUEUED_BYTES:
                self.vm.stats.drop("vm_queue_full")
                continue
            self._queue.append(frame)
            self._queued_bytes += len(frame)
        self._wakeup.set()

    def start_capture(self, path: Path) -> None:
        """Write this VM's frames, both ways, to a pcap file at ``path``."""
        self.stop_capture()
        self.pcap = PcapWriter(path)

    def stop_capture(self) -> None:
        if self.pcap is not None:
            self.pcap.close()
            self.pcap = None

    def close(self) -> None:
        self.closed = True
        self.stop_capture()
        self._wakeup.set()
