"""A lossy link: drops, duplicates and reorders whole frames between a NIC and its backend.

This kernel has no netem, and netem would sit on the wrong side anyway: the frames that
matter travel on the socket between the guest's QEMU hub and the backend.  The relay
takes them apart and decides each frame's fate from a seeded random generator per
direction, so a run is reproducible given the same frames.

Its guest side is a unix datagram socket for QEMU's ``-netdev dgram``.  (Not a stream:
QEMU 7.2 corrupts frames that a hub sends to ``-netdev stream`` when the socket is
full; see harness.py.)  Its backend side is either a unix stream listener, framed with
``slirpnet.framing``, for ``slirpnet serve --connect``, or another datagram socket for
a second QEMU hub in front of ``-netdev user`` (libslirp).

A reordered frame is held back until one to three later frames have passed, or for
``HOLD_SECONDS`` when the link goes quiet; a duplicate follows its original at once.

Run it as ``python -m integration.linux.relay --guest G --backend B --loss 0.02 ...``;
it serves one guest and one backend and prints its counters as JSON when the backend's
stream closes or it is terminated (and keeps them in ``--stats FILE`` as it goes).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import signal
import socket
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Protocol

import trio
from attrs import asdict, define, field, frozen

from slirpnet.framing import QEMU_STREAM

HOLD_SECONDS = 0.01  # a held frame is let go when no later frame comes within this
MAX_HOLD_FRAMES = 3
READ_SIZE = 256 * 1024
DGRAM_SIZE = 65536
STATS_INTERVAL = 0.1


@frozen
class Faults:
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    seed: int = 0

    def __attrs_post_init__(self) -> None:
        if min(self.loss, self.duplicate, self.reorder) < 0 or (
            self.loss + self.duplicate + self.reorder > 1
        ):
            raise ValueError(f"rates must be non-negative and sum to at most 1: {self}")


@define
class Counters:
    frames: int = 0  # frames that came in
    passed: int = 0  # frames sent on, duplicates included
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0


@define
class _Held:
    frame: bytes
    after: int  # frames still to pass before this one
    deadline: float


@define
class FaultyDirection:
    """One direction's fate-deciding, fed frames and the time; no I/O."""

    faults: Faults
    rng: random.Random
    counters: Counters = field(factory=Counters)
    _held: list[_Held] = field(factory=list)

    def push(self, frame: bytes, now: float) -> list[bytes]:
        """The frames to send on now that ``frame`` arrived (maybe none, maybe held ones)."""
        self.counters.frames += 1
        draw = self.rng.random()
        faults = self.faults
        out: list[bytes] = []
        if draw < faults.loss:
            self.counters.dropped += 1
        elif draw < faults.loss + faults.duplicate:
            self.counters.duplicated += 1
            out += (frame, frame)
        elif draw < faults.loss + faults.duplicate + faults.reorder:
            self.counters.reordered += 1
            after = self.rng.randint(1, MAX_HOLD_FRAMES)
            self._held.append(_Held(frame, after, now + HOLD_SECONDS))
            return []
        else:
            out.append(frame)
        # Every frame that got through counts towards the held frames' release.
        passed = len(out)
        for held in self._held:
            held.after -= passed
        out += self._release(lambda held: held.after <= 0)
        self.counters.passed += len(out)
        return out

    def due(self, now: float) -> list[bytes]:
        """Held frames whose time is up."""
        out = self._release(lambda held: held.deadline <= now)
        self.counters.passed += len(out)
        return out

    def next_deadline(self) -> float:
        return min((held.deadline for held in self._held), default=math.inf)

    def _release(self, ready: Callable[[_Held], bool]) -> list[bytes]:
        going = [held for held in self._held if ready(held)]
        self._held = [held for held in self._held if not ready(held)]
        return [held.frame for held in going]


def directions(faults: Faults) -> tuple[FaultyDirection, FaultyDirection]:
    """Guest-to-backend and backend-to-guest, each with its own generator from the seed."""
    return (
        FaultyDirection(faults, random.Random(faults.seed * 2)),
        FaultyDirection(faults, random.Random(faults.seed * 2 + 1)),
    )


class FrameLink(Protocol):
    async def receive(self) -> list[bytes] | None:
        """The frames completed by the next read (maybe none); None at the end."""

    async def send(self, frames: list[bytes]) -> None: ...


class StreamLink:
    """Frames in QEMU's 4-byte framing on a byte stream."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.decoder = QEMU_STREAM.decoder()

    async def receive(self) -> list[bytes] | None:
        data = await self.stream.receive_some(READ_SIZE)
        return self.decoder.feed(data) if data else None

    async def send(self, frames: list[bytes]) -> None:
        await self.stream.send_all(QEMU_STREAM.encode_batch(frames))


class DgramLink:
    """One frame per datagram, to QEMU's ``local=`` address."""

    def __init__(self, sock: trio.socket.SocketType, peer: str) -> None:
        self.sock = sock
        self.peer = peer

    async def receive(self) -> list[bytes] | None:
        return [await self.sock.recv(DGRAM_SIZE)]

    async def send(self, frames: list[bytes]) -> None:
        for frame in frames:
            try:
                await self.sock.sendto(frame, self.peer)
            except (FileNotFoundError, ConnectionRefusedError):
                return  # QEMU is not there (yet, or any more): the link is down


async def pump(source: FrameLink, sink: FrameLink, direction: FaultyDirection) -> None:
    """Move frames from ``source`` to ``sink`` through ``direction`` until ``source`` ends."""
    while True:
        frames: list[bytes] | None = []
        with trio.move_on_at(direction.next_deadline()):
            frames = await source.receive()
            if frames is None:
                return
        now = trio.current_time()
        out = direction.due(now)
        for frame in frames:
            out += direction.push(frame, now)
        if out:
            await sink.send(out)


async def relay(
    guest: FrameLink, backend: FrameLink, to_backend: FaultyDirection, to_guest: FaultyDirection
) -> None:
    """Relay until either side ends."""
    async with trio.open_nursery() as nursery:

        async def one_way(source: FrameLink, sink: FrameLink, direction: FaultyDirection) -> None:
            with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await pump(source, sink, direction)
            nursery.cancel_scope.cancel()  # one side gone: the link is down

        nursery.start_soon(one_way, guest, backend, to_backend)
        nursery.start_soon(one_way, backend, guest, to_guest)


async def _open_link(path: Path, kind: str) -> FrameLink:
    """Bind ``path``; for a stream, wait for the one connection.

    A datagram peer is QEMU bound at ``path.qemu``, as the harness's ``-netdev dgram`` is.
    """
    sock = trio.socket.socket(
        socket.AF_UNIX, socket.SOCK_DGRAM if kind == "dgram" else socket.SOCK_STREAM
    )
    await sock.bind(str(path))
    if kind == "dgram":
        return DgramLink(sock, f"{path}.qemu")
    sock.listen(1)
    with sock:
        connection, _ = await sock.accept()
    return StreamLink(trio.SocketStream(connection))


async def serve(
    guest_path: Path,
    backend_path: Path,
    faults: Faults,
    backend_kind: str = "stream",
    stats: Path | None = None,
) -> dict[str, Counters]:
    """Relay between a guest's datagram socket and a backend; the counters, by direction.

    With ``stats``, the counters are also written there as JSON every ``STATS_INTERVAL``
    and at the end, for a test to check that the link really was lossy.
    """
    to_backend, to_guest = directions(faults)
    counters = {"to_backend": to_backend.counters, "to_guest": to_guest.counters}

    async def write_stats() -> None:
        while stats is not None:
            _write_stats(stats, counters)
            await trio.sleep(STATS_INTERVAL)

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        try:
            async with trio.open_nursery() as nursery:

                async def stop_on_signal() -> None:
                    async for _ in signals:
                        nursery.cancel_scope.cancel()

                nursery.start_soon(stop_on_signal)
                nursery.start_soon(write_stats)
                guest = await _open_link(guest_path, "dgram")
                backend = await _open_link(backend_path, backend_kind)
                await relay(guest, backend, to_backend, to_guest)
                nursery.cancel_scope.cancel()
        finally:
            if stats is not None:
                _write_stats(stats, counters)
    return counters


def _write_stats(path: Path, counters: dict[str, Counters]) -> None:
    staging = path.with_suffix(".tmp")
    staging.write_text(json.dumps({name: asdict(c) for name, c in counters.items()}))
    staging.replace(path)


def read_stats(path: Path) -> dict[str, Counters]:
    """The counters a relay wrote with ``stats=path``."""
    return {name: Counters(**c) for name, c in json.loads(path.read_text()).items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guest", type=Path, required=True, help="unix datagram socket for QEMU")
    parser.add_argument("--backend", type=Path, required=True, help="unix socket for the backend")
    parser.add_argument("--backend-kind", choices=("stream", "dgram"), default="stream")
    parser.add_argument("--loss", type=float, default=0.0)
    parser.add_argument("--duplicate", type=float, default=0.0)
    parser.add_argument("--reorder", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stats", type=Path, help="keep the counters in this JSON file")
    args = parser.parse_args(argv)
    faults = Faults(args.loss, args.duplicate, args.reorder, args.seed)
    counters = trio.run(serve, args.guest, args.backend, faults, args.backend_kind, args.stats)
    print(json.dumps({name: asdict(c) for name, c in counters.items()}), flush=True)


if __name__ == "__main__":
    main()
