"""Hash-checked bulk transfers and small probes between a guest and loopback servers.

Data is a pseudo-random stream named by a seed, so each end makes or checks its bytes
without the other's help: a receiver hashes what arrived and the test compares with
``digest(seed, size)``.  One connection of ``TransferServer`` carries both directions at
once: the client names the server's seed and size in a header, both send their stream
and half-close, and both hash what they receive until EOF.
"""

from __future__ import annotations

import hashlib
import random
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

CHUNK = 1 << 20
READ_SIZE = 1 << 20
_HEADER = struct.Struct("!QQ")  # the seed and size of what the server sends


def pattern(seed: int, size: int) -> Iterator[bytes]:
    """``size`` pseudo-random bytes determined by ``seed``, in chunks."""
    rng = random.Random(seed)
    while size > 0:
        chunk = rng.randbytes(min(CHUNK, size))
        size -= len(chunk)
        yield chunk


def digest(seed: int, size: int) -> str:
    hasher = hashlib.sha256()
    for chunk in pattern(seed, size):
        hasher.update(chunk)
    return hasher.hexdigest()


@dataclass(frozen=True)
class Received:
    size: int
    digest: str
    seconds: float  # from the first byte asked for to EOF


async def send_pattern(stream: trio.abc.HalfCloseableStream, seed: int, size: int) -> None:
    """Send the stream of ``seed``, then half-close."""
    for chunk in pattern(seed, size):
        await stream.send_all(chunk)
    await stream.send_eof()


async def receive_all(stream: trio.abc.ReceiveStream) -> Received:
    """Everything until EOF, hashed."""
    hasher = hashlib.sha256()
    size = 0
    started = trio.current_time()
    while data := await stream.receive_some(READ_SIZE):
        hasher.update(data)
        size += len(data)
    return Received(size, hasher.hexdigest(), trio.current_time() - started)


async def exchange(
    stream: trio.SocketStream, send_seed: int, send_size: int, header: bytes = b""
) -> Received:
    """Send a header and a pattern while receiving the peer's: both directions at once."""
    received: list[Received] = []

    async def send() -> None:
        if header:
            await stream.send_all(header)
        await send_pattern(stream, send_seed, send_size)

    async def receive() -> None:
        received.append(await receive_all(stream))

    async with stream, trio.open_nursery() as nursery:
        nursery.start_soon(send)
        nursery.start_soon(receive)
    return received[0]


Handler = Callable[[trio.SocketStream], Awaitable[None]]


@asynccontextmanager
async def loopback_server(
    handler: Handler, backlog: int = 128, host: str = "127.0.0.1"
) -> AsyncIterator[int]:
    """Serve ``handler`` per connection on ``host`` (127.0.0.1 or ::1) at an ephemeral
    port, yielded."""
    listener = trio.socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    await listener.bind((host, 0))
    listener.listen(backlog)
    port: int = listener.getsockname()[1]

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            await handler(stream)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, handle, [trio.SocketListener(listener)])
        yield port
        nursery.cancel_scope.cancel()


class TransferServer:
    """Host side of ``transfer``: what each connection uploaded, by the seed it asked for."""

    def __init__(self) -> None:
        self.uploads: dict[int, Received] = {}
        self._changed = trio.Event()

    async def wait_for(self, seeds: Iterable[int]) -> None:
        """Until the connections that asked for ``seeds`` have finished both ways."""
        wanted = set(seeds)
        while not self.uploads.keys() >= wanted:
            await self._changed.wait()
            self._changed = trio.Event()

    async def handle(self, stream: trio.SocketStream) -> None:
        header = b""
        while len(header) < _HEADER.size:
            data = await stream.receive_some(_HEADER.size - len(header))
            if not data:
                return
            header += data
        seed, size = _HEADER.unpack(header)
        self.uploads[seed] = await exchange(stream, seed, size)
        self._changed.set()


async def transfer(
    stream: trio.SocketStream, down_seed: int, down_size: int, up_seed: int, up_size: int
) -> Received:
    """Client side: ask ``TransferServer`` for ``down_*`` while uploading ``up_*``."""
    return await exchange(stream, up_seed, up_size, _HEADER.pack(down_seed, down_size))


async def echo(stream: trio.SocketStream) -> None:
    """Send back whatever arrives, until EOF."""
    while data := await stream.receive_some(READ_SIZE):
        await stream.send_all(data)


async def round_trips(stream: trio.SocketStream, count: int, interval: float) -> list[float]:
    """Times of ``count`` one-byte round trips through an ``echo`` server."""
    times = []
    for _ in range(count):
        started = trio.current_time()
        await stream.send_all(b"?")
        if await stream.receive_some(1) != b"?":
            raise ConnectionError("the echo server went away")
        times.append(trio.current_time() - started)
        await trio.sleep(interval)
    return times


@dataclass(frozen=True)
class Transfers:
    """``count`` connections of ``transfer``, all at once, and what each side received."""

    down_size: int
    up_size: int
    seeds: list[tuple[int, int]]  # (down, up) per connection
    downloads: dict[int, Received]  # by down seed: what the guest received
    uploads: dict[int, Received]  # by down seed: what the host received
    seconds: float  # wall time from the first connect to the last byte

    def problems(self) -> list[str]:
        """What went wrong with each transfer (missing, short, bad hash); empty when all is well."""
        found = []
        for down, up in self.seeds:
            for what, got, seed, size in (
                ("download", self.downloads.get(down), down, self.down_size),
                ("upload", self.uploads.get(down), up, self.up_size),
            ):
                if got is None:
                    found.append(f"{what} of connection {down} never finished")
                elif got.size != size or got.digest != digest(seed, size):
                    found.append(
                        f"{what} of connection {down}: {got.size} of {size} bytes, bad hash"
                    )
        return found

    def goodput(self) -> tuple[float, float]:
        """Bytes per second down and up, over the wall time of the whole run."""
        count = len(self.seeds)
        return count * self.down_size / self.seconds, count * self.up_size / self.seconds


async def parallel_transfers(
    connect: Callable[[], Awaitable[trio.SocketStream]],
    server: TransferServer,
    count: int,
    down_size: int,
    up_size: int,
    first_seed: int,
) -> Transfers:
    """Run ``count`` transfers at once, each downloading and uploading at the same time."""
    seeds = [(first_seed + 2 * i, first_seed + 2 * i + 1) for i in range(count)]
    downloads: dict[int, Received] = {}

    async def one(down: int, up: int) -> None:
        downloads[down] = await transfer(await connect(), down, down_size, up, up_size)

    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        for down, up in seeds:
            nursery.start_soon(one, down, up)
    await server.wait_for(down for down, _ in seeds)
    seconds = trio.current_time() - started
    uploads = {down: server.uploads[down] for down, _ in seeds}
    return Transfers(down_size, up_size, seeds, downloads, uploads, seconds)
