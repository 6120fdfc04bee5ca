"""A destination that never answers a SYN must not hold up anyone else.

The blackhole is a namespace host of the test's own, on a veth pair from the root
namespace (where slirpnet's host sockets live), that drops every SYN.  While the guest's
connections to it hang, the guest's other flows go on as fast as they did before.
"""

from __future__ import annotations

import shutil
import statistics

import pytest
import trio

from integration.linux.harness import LinuxGuest
from integration.linux.nshost import namespace_host
from integration.linux.traffic import (
    Transfers,
    TransferServer,
    echo,
    loopback_server,
    parallel_transfers,
    round_trips,
)

GATEWAY = "10.0.2.2"
MB = 1 << 20
HANGING = 16  # connections to the blackhole, all pending at once


async def test_a_blackholed_destination_does_not_slow_other_flows(
    linux_guest: LinuxGuest,
) -> None:
    if shutil.which("nft") is None:
        pytest.skip("nft is not installed (Debian package nftables)")
    server = TransferServer()
    async with loopback_server(server.handle) as port, loopback_server(echo) as echo_port:

        async def measure(first_seed: int) -> tuple[Transfers, list[float]]:
            """8 transfers at once, and round trips on another connection meanwhile."""
            times: list[float] = []
            async with trio.open_nursery() as nursery:

                async def probe() -> None:
                    stream = await linux_guest.connect(GATEWAY, echo_port)
                    async with stream:
                        times.extend(await round_trips(stream, 40, 0.02))

                nursery.start_soon(probe)
                transfers = await parallel_transfers(
                    lambda: linux_guest.connect(GATEWAY, port),
                    server,
                    8,
                    4 * MB,
                    4 * MB,
                    first_seed,
                )
            return transfers, times

        with trio.fail_after(120):
            before, rtt_before = await measure(100)
        with namespace_host(drop_syns=True) as blackhole:
            outcomes: list[BaseException | None] = []
            async with trio.open_nursery() as nursery:
                for _ in range(HANGING):
                    nursery.start_soon(connect_to, linux_guest, blackhole.address, outcomes)
                with trio.fail_after(30):
                    while blackhole.dropped_syns() < HANGING:
                        await trio.sleep(0.05)
                with trio.fail_after(120):
                    during, rtt_during = await measure(200)
                still_hanging = HANGING - len(outcomes)
                nursery.cancel_scope.cancel()

    assert before.problems() == during.problems() == []
    # The blackhole really held its connections for the whole measurement.
    assert still_hanging == HANGING
    # Generous margins against a noisy machine; a stalled event loop or a connect that
    # blocks others would take the full connect timeout (seconds) instead.
    assert max(rtt_during) < 2.0
    assert statistics.median(rtt_during) < max(0.1, 10 * statistics.median(rtt_before))
    assert during.seconds < max(10.0, 4 * before.seconds)


async def connect_to(guest: LinuxGuest, address: str, outcomes: list[BaseException | None]) -> None:
    sock = guest.socket()
    with sock:
        try:
            await sock.connect((address, 80))
        except OSError as error:
            outcomes.append(error)
        else:
            outcomes.append(None)
