"""Small requests through the backend: connection setup rate and round-trip latency.

The guest's side is ``probe.py`` in its own process in the guest's namespace; the host's
is an echo server on 127.0.0.1 in this one, reached through the gateway.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import trio

from integration.linux.harness import REPO, LinuxGuest
from integration.linux.traffic import Handler, loopback_server

BACKLOG = 4096  # 10,000 connects in a burst must not overflow the accept queue
REQUEST_SIZE = 64  # probe.REQUEST's
_READ_SIZE = 65536


class ProbeError(RuntimeError):
    """The guest's probe failed; the message holds its output."""


async def echo(stream: trio.SocketStream) -> None:
    """Send back whatever arrives, until EOF."""
    try:
        while data := await stream.receive_some(_READ_SIZE):
            await stream.send_all(data)
    except trio.BrokenResourceError:
        pass  # the guest gave up on this one; the probe counts it


async def answer_once(stream: trio.SocketStream) -> None:
    """Echo one 64-byte request, then close: the server closes first, as HTTP/1.0 does,
    so TIME_WAIT stays on this side and the ephemeral ports of the backend's host
    sockets are not used up at thousands of connections a second."""
    request = b""
    with suppress(trio.BrokenResourceError):
        while len(request) < REQUEST_SIZE and (data := await stream.receive_some(REQUEST_SIZE)):
            request += data
        await stream.send_all(request)


@asynccontextmanager
async def echo_server(handler: Handler = echo) -> AsyncIterator[int]:
    """An echo server on 127.0.0.1 (``answer_once``: one answer each); yields its port."""
    async with loopback_server(handler, backlog=BACKLOG) as port:
        yield port


def probe_command(guest: LinuxGuest, mode: str, port: int, *options: str) -> list[str]:
    return guest.command(
        *(sys.executable, "-m", "integration.bench.probe", mode, "--port", str(port), *options)
    )


async def run_probe(guest: LinuxGuest, mode: str, port: int, *options: str) -> Any:
    """Run the probe to its end; its JSON answer."""
    with trio.fail_after(300):
        result = await trio.run_process(
            probe_command(guest, mode, port, *options),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=REPO,
            env=probe_env(),
        )
    if result.returncode != 0:
        raise ProbeError(f"probe {mode}: {result.stderr.decode(errors='replace')[-2000:]}")
    return json.loads(result.stdout.splitlines()[-1])


def probe_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


async def connection_rate(guest: LinuxGuest, port: int, seconds: float) -> Any:
    """Connections per second to ``answer_once``: connect, a 64-byte request, its answer,
    the server's close and ours; 4 at once."""
    answer = await run_probe(guest, "connects", port, "--seconds", str(seconds))
    answer["per_second"] = answer["connections"] / answer["seconds"]
    return answer


async def round_trip(guest: LinuxGuest, port: int, count: int) -> Any:
    """64-byte request/response round trips on one connection: median and p99 in µs."""
    return await run_probe(guest, "round-trips", port, "--count", str(count))
