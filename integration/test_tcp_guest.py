"""A real QEMU guest (busybox) moves files through slirpnet's TCP NAT, hashes intact.

slirpnet runs as the command users run, listening on a unix socket that QEMU's
virtio NIC connects to with ``-netdev stream``.  The guest fetches a file with wget from
a loopback HTTP server through the gateway 10.0.2.2, and uploads one with nc to a
loopback sink; both sides hash what they have.
"""

from __future__ import annotations

import hashlib
import random
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio

from integration.guest import GuestImage, boot_async
from integration.guest.skip import image_or_skip
from integration.linux.traffic import loopback_server

MB = 1 << 20
DOWNLOAD = random.Random(5).randbytes(8 * MB)
UPLOAD_KB = 6 * 1024
_SHA = re.compile(r"^([0-9a-f]{64})  /tmp/(down|up)$", re.MULTILINE)


@pytest.fixture(scope="session")
def guest_image() -> GuestImage:
    return image_or_skip()


@asynccontextmanager
async def slirpnet_on(path: Path, log: Path) -> AsyncIterator[None]:
    """``slirpnet serve --listen unix:PATH`` for the body of the ``async with``."""
    argv = [sys.executable, "-m", "slirpnet", "serve", "--listen", f"unix:{path}"]
    argv += ["--dns-upstream", "127.0.0.1:9"]  # never the machine's own resolver
    async with trio.open_nursery() as nursery:
        with log.open("wb") as out:
            await nursery.start(
                partial(trio.run_process, argv, stdout=out, stderr=out, check=False)
            )
        with trio.fail_after(30):
            while not path.exists():
                await trio.sleep(0.02)
        yield
        nursery.cancel_scope.cancel()


async def http_get(stream: trio.SocketStream) -> None:
    """Answer one GET with DOWNLOAD, whatever the path."""
    request = b""
    while b"\r\n\r\n" not in request:
        chunk = await stream.receive_some(4096)
        if not chunk:
            return
        request += chunk
    header = f"HTTP/1.0 200 OK\r\nContent-Length: {len(DOWNLOAD)}\r\n\r\n".encode()
    await stream.send_all(header + DOWNLOAD)


async def test_busybox_guest_downloads_and_uploads_through_slirpnet(
    guest_image: GuestImage, tmp_path: Path
) -> None:
    uploads: list[tuple[int, str]] = []

    async def sink(stream: trio.SocketStream) -> None:
        hasher = hashlib.sha256()
        size = 0
        while chunk := await stream.receive_some(1 << 16):
            hasher.update(chunk)
            size += len(chunk)
        uploads.append((size, hasher.hexdigest()))

    socket_path = tmp_path / "slirpnet.sock"
    async with (
        loopback_server(http_get) as http_port,
        loopback_server(sink) as sink_port,
        slirpnet_on(socket_path, tmp_path / "slirpnet.log"),
    ):
        script = (
            f"wget -q -O /tmp/down http://10.0.2.2:{http_port}/blob || exit 1\n"
            f"dd if=/dev/urandom of=/tmp/up bs=1024 count={UPLOAD_KB} 2>/dev/null\n"
            "sha256sum /tmp/down /tmp/up\n"
            f"nc 10.0.2.2 {sink_port} < /tmp/up || exit 2\n"
        )
        netdev = ["-netdev", f"stream,id=n0,server=off,addr.type=unix,addr.path={socket_path}"]
        run = await boot_async(guest_image, netdev, script, timeout=180)

    assert run.rc == 0, run.output + (tmp_path / "slirpnet.log").read_text()
    hashes = {name: digest for digest, name in _SHA.findall(run.output)}
    assert hashes["down"] == hashlib.sha256(DOWNLOAD).hexdigest()
    assert uploads == [(UPLOAD_KB * 1024, hashes["up"])]
