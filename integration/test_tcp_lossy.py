"""slirpnet's TCP NAT with the Linux TCP stack behind a lossy link: 2% loss, 5% reordering
and 1% duplication of frames each way (``conftest.LOSSY``), reproducible from its seed.

The relay's counters are checked too: a test that passed because the link was not
lossy after all would prove nothing.
"""

from __future__ import annotations

import trio

from integration.linux.harness import LinuxGuest
from integration.linux.relay import Counters, read_stats
from integration.linux.traffic import (
    Received,
    TransferServer,
    digest,
    loopback_server,
    parallel_transfers,
    receive_all,
    send_pattern,
)

GATEWAY = "10.0.2.2"
MB = 1 << 20


async def test_eight_connections_carry_64_mb_each_way_at_once(lossy_guest: LinuxGuest) -> None:
    server = TransferServer()
    async with loopback_server(server.handle) as port:
        with trio.fail_after(300):
            transfers = await parallel_transfers(
                lambda: lossy_guest.connect(GATEWAY, port), server, 8, 8 * MB, 8 * MB, 200
            )

    assert transfers.problems() == []
    assert_the_link_was_lossy(await relay_counters(lossy_guest))


async def test_one_connection_carries_50_mb_each_way_at_once(lossy_guest: LinuxGuest) -> None:
    server = TransferServer()
    async with loopback_server(server.handle) as port:
        with trio.fail_after(300):
            transfers = await parallel_transfers(
                lambda: lossy_guest.connect(GATEWAY, port), server, 1, 50 * MB, 50 * MB, 300
            )

    assert transfers.problems() == []
    assert_the_link_was_lossy(await relay_counters(lossy_guest))


async def test_eight_connections_at_mtu_1500_carry_16_mb_each_way_at_once(
    lossy_guest_mtu_1500: LinuxGuest,
) -> None:
    guest = lossy_guest_mtu_1500
    assert guest.mtu == 1500
    server = TransferServer()
    async with loopback_server(server.handle) as port:
        with trio.fail_after(300):
            transfers = await parallel_transfers(
                lambda: guest.connect(GATEWAY, port), server, 8, 2 * MB, 2 * MB, 400
            )

    assert transfers.problems() == []
    counters = await relay_counters(guest)
    assert_the_link_was_lossy(counters)
    assert min(direction.dropped for direction in counters.values()) > 100


async def test_half_close_both_ways_in_turn(lossy_guest: LinuxGuest) -> None:
    """The guest sends and half-closes, the host answers after EOF and closes: both whole."""
    received: list[Received] = []

    async def answer_after_eof(stream: trio.SocketStream) -> None:
        received.append(await receive_all(stream))
        await send_pattern(stream, 32, 2 * MB)

    async with loopback_server(answer_after_eof) as port:
        with trio.fail_after(120):
            stream = await lossy_guest.connect(GATEWAY, port)
            await send_pattern(stream, 31, 2 * MB)
            answer = await receive_all(stream)

    assert (received[0].size, received[0].digest) == (2 * MB, digest(31, 2 * MB))
    assert (answer.size, answer.digest) == (2 * MB, digest(32, 2 * MB))


async def relay_counters(guest: LinuxGuest) -> dict[str, Counters]:
    await trio.sleep(0.3)  # the relay writes its counters every 0.1 s
    return read_stats(guest.relay_stats)


def assert_the_link_was_lossy(counters: dict[str, Counters]) -> None:
    for direction in counters.values():
        assert direction.frames > 100
        assert direction.dropped > 0
        assert direction.duplicated > 0
        assert direction.reordered > 0
