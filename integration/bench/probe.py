"""The guest's side of the request benchmarks, run in the guest's namespace.

    ip netns exec NS python -m integration.bench.probe connects --port P --seconds 3
    ip netns exec NS python -m integration.bench.probe round-trips --port P --count 2000
    ip netns exec NS python -m integration.bench.probe hold --port P --flows 10000

Every mode talks to an echo server on the host through the gateway and prints one JSON
line.  ``hold`` then keeps its connections open and obeys commands on stdin, a line
each: ``verify`` (one echoed byte on every connection, printing how many answered)
and ``close``.  Running in its own process keeps the client's costs apart from the
benchmark's and gives 10,000 sockets a file table of their own.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import time
from collections import Counter
from typing import Any

import trio

from integration.bench.procstat import raise_file_limit

REQUEST = b"x" * 64  # also the response: the server echoes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("connects", "round-trips", "hold"))
    parser.add_argument("--host", default="10.0.2.2")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=3.0, help="connects: how long")
    parser.add_argument("--workers", type=int, default=4, help="connects: at once")
    parser.add_argument("--count", type=int, default=2000, help="round-trips: how many")
    parser.add_argument("--flows", type=int, default=10000, help="hold: how many")
    parser.add_argument("--concurrency", type=int, default=128, help="hold: connects at once")
    args = parser.parse_args()
    address = (args.host, args.port)
    if args.mode == "connects":
        result = trio.run(connects, address, args.seconds, args.workers)
    elif args.mode == "round-trips":
        result = trio.run(round_trips, address, args.count)
    else:
        raise_file_limit(args.flows + 64)
        result = trio.run(hold, address, args.flows, args.concurrency)
    _emit(result)


def _emit(result: dict[str, Any]) -> None:
    print(json.dumps(result), flush=True)


async def _exchange(stream: trio.SocketStream, data: bytes) -> None:
    """Send ``data`` and read its echo."""
    await stream.send_all(data)
    got = 0
    while got < len(data):
        chunk = await stream.receive_some(len(data) - got)
        if not chunk:
            raise ConnectionError("the echo server closed early")
        got += len(chunk)


async def _connect(address: tuple[str, int]) -> trio.SocketStream:
    sock = trio.socket.socket()
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def connects(address: tuple[str, int], seconds: float, workers: int) -> dict[str, Any]:
    """Connect, one request and its answer, the server's close, ours: as many as fit in
    ``seconds``."""
    done = 0
    errors: Counter[str] = Counter()

    async def worker() -> None:
        nonlocal done
        while True:
            try:
                async with await _connect(address) as stream:
                    await _exchange(stream, REQUEST)
                    if await stream.receive_some(1):
                        raise ConnectionError("the server said more than its answer")
                done += 1
            except (OSError, trio.BrokenResourceError) as error:
                errors[type(error).__name__] += 1

    started = time.perf_counter()
    with trio.move_on_after(seconds):
        async with trio.open_nursery() as nursery:
            for _ in range(workers):
                nursery.start_soon(worker)
    elapsed = time.perf_counter() - started
    return {"connections": done, "seconds": elapsed, "errors": dict(errors)}


async def round_trips(address: tuple[str, int], count: int) -> dict[str, Any]:
    """``count`` 64-byte requests and echoes in turn on one connection, each timed."""
    times = []
    async with await _connect(address) as stream:
        await _exchange(stream, REQUEST)  # the first pays for the handshake's leftovers
        for _ in range(count):
            started = time.perf_counter()
            await _exchange(stream, REQUEST)
            times.append(time.perf_counter() - started)
    times.sort()
    return {
        "count": count,
        "median_us": statistics.median(times) * 1e6,
        "p99_us": times[int(len(times) * 0.99) - 1] * 1e6,
        "mean_us": statistics.fmean(times) * 1e6,
    }


async def hold(address: tuple[str, int], flows: int, concurrency: int) -> dict[str, Any]:
    """Open ``flows`` connections and keep them, obeying stdin's commands."""
    streams: list[trio.SocketStream] = []
    errors: Counter[str] = Counter()
    limit = trio.Semaphore(concurrency)

    async def open_one() -> None:
        async with limit:
            try:
                streams.append(await _connect(address))
            except OSError as error:
                errors[type(error).__name__] += 1

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(flows):
            nursery.start_soon(open_one)
    _emit(
        {"opened": len(streams), "errors": dict(errors), "seconds": time.perf_counter() - started}
    )
    stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
    lines = b""
    while True:
        data = await stdin.receive_some(4096)
        if not data:
            break
        lines += data
        while b"\n" in lines:
            line, lines = lines.split(b"\n", 1)
            if line == b"verify":
                _emit({"alive": await _verify(streams, limit)})
            elif line == b"close":
                for stream in streams:
                    await stream.aclose()
                return {"closed": len(streams)}
    return {"closed": 0}


async def _verify(streams: list[trio.SocketStream], limit: trio.Semaphore) -> int:
    """How many of ``streams`` still echo a byte."""
    alive = 0

    async def check(stream: trio.SocketStream) -> None:
        nonlocal alive
        async with limit:
            try:
                with trio.fail_after(10):
                    await _exchange(stream, b"?")
                alive += 1
            except (OSError, trio.BrokenResourceError, trio.TooSlowError):
                pass

    async with trio.open_nursery() as nursery:
        for stream in streams:
            nursery.start_soon(check, stream)
    return alive


if __name__ == "__main__":
    main()
