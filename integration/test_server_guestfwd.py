"""Guest forwards with a real guest: a virtual address whose ports lead to host services.

``slirpnet serve`` runs as users run it, with libslirp's ``--guestfwd`` specs: port 4321
of 10.0.2.100 leads to a loopback TCP service, 4322 to a unix socket, 4323 to ``cat``
run for the connection, and 4324 of the default address (10.0.2.4) to ``sha256sum``.
The busybox guest pings the address, fetches and sends data there with nc and hashes
what it has; a port with no guestfwd is refused.  Afterwards the server has no command
left, running or unreaped.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from integration.guest import GuestImage, boot_async
from integration.linux.traffic import loopback_server
from integration.server import GUEST_FUNCTIONS, checks, serving

FROM_TCP = random.Random(21).randbytes(1 << 20)
FROM_UNIX = random.Random(22).randbytes(256 << 10)
UPLOAD_KB = 512
_SHA = re.compile(r"^([0-9a-f]{64})  (/tmp/\w+|-)$", re.MULTILINE)


async def send_blob(blob: bytes, stream: trio.SocketStream) -> None:
    await stream.send_all(blob)


@asynccontextmanager
async def unix_server(path: Path, blob: bytes) -> AsyncIterator[None]:
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await listener.bind(str(path))
    listener.listen()

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            await send_blob(blob, stream)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, handle, [trio.SocketListener(listener)])
        yield
        nursery.cancel_scope.cancel()


def children(pid: int) -> set[int]:
    """A process's children, zombies included."""
    found: set[int] = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        found |= {int(p) for p in Path(f"/proc/{pid}/task/{task}/children").read_text().split()}
    return found


async def test_a_guest_reaches_a_tcp_service_a_unix_socket_and_commands(
    guest_image: GuestImage, tmp_path: Path
) -> None:
    service = tmp_path / "service.sock"
    async with (
        loopback_server(lambda stream: send_blob(FROM_TCP, stream)) as tcp_port,
        unix_server(service, FROM_UNIX),
    ):
        args = [
            "--listen",
            f"unix:{tmp_path}/vm.sock",
            "--dns-upstream",
            "127.0.0.1:9",
            "--guestfwd",
            f"tcp:10.0.2.100:4321-tcp:127.0.0.1:{tcp_port}",
            "--guestfwd",
            f"tcp:10.0.2.100:4322-unix:{service}",
            "--guestfwd",
            "tcp:10.0.2.100:4323-cmd:cat",
            "--guestfwd",
            "tcp::4324-cmd:sha256sum",
        ]
        script = GUEST_FUNCTIONS + (
            "check ping-service ping -c 1 -W 5 10.0.2.100\n"
            "check from-tcp sh -c 'nc 10.0.2.100 4321 </dev/null >/tmp/tcp'\n"
            "check from-unix sh -c 'nc 10.0.2.100 4322 </dev/null >/tmp/unix'\n"
            f"dd if=/dev/urandom of=/tmp/up bs=1024 count={UPLOAD_KB} 2>/dev/null\n"
            "check cmd-echo sh -c 'nc 10.0.2.100 4323 </tmp/up >/tmp/echoed'\n"
            "check cmd-hash nc 10.0.2.4 4324 </tmp/up\n"
            "sha256sum /tmp/tcp /tmp/unix /tmp/up /tmp/echoed\n"
            # No guestfwd on that port: refused (busybox nc fails on a refused connect).
            "if nc 10.0.2.100 4399 </dev/null; then echo CLOSED-PORT-OPEN; fi\n"
        )
        async with serving(args, tmp_path / "log") as server:
            run = await boot_async(guest_image, server.netdev(), script, timeout=180)
            with trio.fail_after(10):  # the VM has gone: its flows, and their commands, too
                while children(server.process.pid):
                    await trio.sleep(0.05)
    assert run.rc == 0, run.output + server.stderr()
    names = ["ping-service", "from-tcp", "from-unix", "cmd-echo", "cmd-hash"]
    assert {name: checks(run.output).get(name) for name in names} == dict.fromkeys(names, "ok"), (
        run.output + server.stderr()
    )
    hashes = {name: digest for digest, name in _SHA.findall(run.output)}
    assert hashes["/tmp/tcp"] == hashlib.sha256(FROM_TCP).hexdigest()
    assert hashes["/tmp/unix"] == hashlib.sha256(FROM_UNIX).hexdigest()
    assert hashes["/tmp/echoed"] == hashes["/tmp/up"]
    assert hashes["-"] == hashes["/tmp/up"]  # sha256sum ran on the host, over the upload
    assert "CLOSED-PORT-OPEN" not in run.output
    assert "Connection refused" in run.output
    server.assert_clean_exit()
