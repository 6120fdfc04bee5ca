"""slirpnet's TCP NAT with the real Linux TCP stack as the guest, on a perfect link.

Servers bind to 127.0.0.1 and the guest reaches them through the gateway 10.0.2.2;
every byte that crosses is checked by its SHA-256.
"""

from __future__ import annotations

import socket

import pytest
import trio

from integration.linux.harness import LinuxGuest
from integration.linux.traffic import (
    Received,
    TransferServer,
    digest,
    loopback_server,
    parallel_transfers,
    receive_all,
    send_pattern,
    transfer,
)

GATEWAY = "10.0.2.2"
MB = 1 << 20


async def test_one_connection_carries_50_mb_each_way_at_once(linux_guest: LinuxGuest) -> None:
    server = TransferServer()
    async with loopback_server(server.handle) as port:
        stream = await linux_guest.connect(GATEWAY, port)
        with trio.fail_after(120):
            received = await transfer(stream, 1, 50 * MB, 2, 50 * MB)
            await server.wait_for([1])

    assert (received.size, received.digest) == (50 * MB, digest(1, 50 * MB))
    uploaded = server.uploads[1]
    assert (uploaded.size, uploaded.digest) == (50 * MB, digest(2, 50 * MB))


async def test_eight_connections_carry_64_mb_each_way_at_once(linux_guest: LinuxGuest) -> None:
    server = TransferServer()
    async with loopback_server(server.handle) as port:
        with trio.fail_after(180):
            transfers = await parallel_transfers(
                lambda: linux_guest.connect(GATEWAY, port), server, 8, 8 * MB, 8 * MB, 100
            )

    assert transfers.problems() == []
    assert len(transfers.seeds) == 8


async def test_a_server_that_speaks_first_is_heard(linux_guest: LinuxGuest) -> None:
    banner = b"220 loopback.test ESMTP ready\r\n"

    async def smtp_like(stream: trio.SocketStream) -> None:
        await stream.send_all(banner)
        if await receive_exactly(stream, 6) == b"QUIT\r\n":
            await stream.send_all(b"221 bye\r\n")

    async with loopback_server(smtp_like) as port:
        with trio.fail_after(10):
            stream = await linux_guest.connect(GATEWAY, port)
            heard = await receive_exactly(stream, len(banner))  # before the guest says anything
            await stream.send_all(b"QUIT\r\n")
            rest = await receive_all_bytes(stream)

    assert heard == banner
    assert rest == b"221 bye\r\n"


async def test_a_refused_port_is_refused_at_once(linux_guest: LinuxGuest) -> None:
    # Bound but not listening: the host refuses, and no other process can take the port.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        for _ in range(5):
            sock = linux_guest.socket()
            started = trio.current_time()
            with sock, trio.fail_after(30), pytest.raises(ConnectionRefusedError):
                await sock.connect((GATEWAY, port))
            # A lost or unanswered SYN would be sent again only after Linux's 1 s initial RTO.
            assert trio.current_time() - started < 1.0


async def test_half_close_by_the_guest(linux_guest: LinuxGuest) -> None:
    """The guest sends and shuts down its side; the host still answers in full after EOF."""
    received: list[Received] = []

    async def answer_after_eof(stream: trio.SocketStream) -> None:
        received.append(await receive_all(stream))
        await send_pattern(stream, 12, 3 * MB)

    async with loopback_server(answer_after_eof) as port:
        with trio.fail_after(60):
            stream = await linux_guest.connect(GATEWAY, port)
            await send_pattern(stream, 11, 3 * MB)  # ends with shutdown(SHUT_WR)
            answer = await receive_all(stream)

    assert (received[0].size, received[0].digest) == (3 * MB, digest(11, 3 * MB))
    assert (answer.size, answer.digest) == (3 * MB, digest(12, 3 * MB))


async def test_half_close_by_the_host(linux_guest: LinuxGuest) -> None:
    """The host sends and shuts down its side; the guest still answers in full after EOF."""
    received: list[Received] = []

    async def speak_then_listen(stream: trio.SocketStream) -> None:
        await send_pattern(stream, 21, 3 * MB)
        received.append(await receive_all(stream))

    async with loopback_server(speak_then_listen) as port:
        with trio.fail_after(60):
            stream = await linux_guest.connect(GATEWAY, port)
            heard = await receive_all(stream)
            await send_pattern(stream, 22, 3 * MB)
            with trio.fail_after(30):
                while not received:
                    await trio.sleep(0.01)

    assert (heard.size, heard.digest) == (3 * MB, digest(21, 3 * MB))
    assert (received[0].size, received[0].digest) == (3 * MB, digest(22, 3 * MB))


async def receive_exactly(stream: trio.SocketStream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


async def receive_all_bytes(stream: trio.SocketStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    return data
