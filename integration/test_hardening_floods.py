"""Floods from hostile VMs hit their own per-VM caps; another VM of the server keeps going.

One ``slirpnet serve`` with its default limits (but ``--max-flows`` at ``FLOOD_MAX_FLOWS``,
so that the UDP flood fills the table within seconds and within the descriptors a CI
machine allows) carries a Linux-stack guest (the VM
whose transfer must go on, on a stream as QEMU's ``-netdev stream`` is: through the
relay of ``integration/linux`` with no faults) and five hostile VMs that write raw
frames as fast as slirpnet reads them (``integration/hostile.py``):

* SYNs to thousands of ports of a blackhole (a namespace host of the test that drops
  SYNs: the connects hang) and of another namespace host (whose kernel refuses them),
  and datagrams to thousands of that host's ports: ``--max-connecting`` and
  ``--max-flows`` answer with RSTs and ICMP.  (Never the host's loopback: other
  programs' services live there.)
* ARP requests, and ARP from thousands of made-up MACs (the MAC limit);
* DHCP DISCOVERs from thousands of made-up client addresses (``--max-leases``);
* hundreds of connections to a loopback server of the test that sends without pause,
  each opened with a 1 GiB window and never acknowledged: the VM's TCP buffer budget
  and its frame queue.

The guest's hash-checked transfer is timed without the floods and then during them,
in the same run; slirpnet's peak RSS is read from the kernel (VmHWM).
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
import trio

from integration.conftest import skip_unless_linux_guest
from integration.hostile import Frames, HostileVm, hostile_vm, made_up_macs
from integration.linux.harness import open_linux_guest
from integration.linux.nshost import namespace_host
from integration.linux.relay import Faults
from integration.linux.traffic import TransferServer, loopback_server, parallel_transfers
from integration.probe import process_stats, vms, wait_until
from slirpnet.core.budget import VM_TCP_BUFFER
from slirpnet.core.settings import DEFAULT_MAX_CONNECTING, DEFAULT_MAX_FLOWS, DEFAULT_MAX_LEASES
from slirpnet.core.switch import MAX_MACS_PER_VM
from slirpnet.core.tcp import SEND_RESERVE

GATEWAY = "10.0.2.2"
MB = 1 << 20
CONNECTIONS, SIZE = 2, 24 * MB  # the guest's transfer: each way, per connection
PEAK_RSS_LIMIT_MIB = 600  # generous: the caps, not the machine, must bound it
STALLED = 300  # connections that never acknowledge: 64 MiB of budget and 16 KiB each
# The flow cap the server runs with: below the default (a socket per flow), above the
# stalled connections, so the UDP flood is what reaches it.
FLOOD_MAX_FLOWS = 4096
assert STALLED < FLOOD_MAX_FLOWS <= DEFAULT_MAX_FLOWS


def syn_flood(frames: Frames, blackhole: str, refusing: str) -> Iterator[bytes]:
    """SYNs to every port of the blackhole and of the refusing host, interleaved."""
    port = 0
    while True:
        port = port % 60000 + 1
        yield frames.syn(blackhole, port, 1024 + port)
        yield frames.syn(refusing, port, 1024 + port)


def udp_flood(frames: Frames, refusing: str) -> Iterator[bytes]:
    """A datagram to each of thousands of ports: a flow each, until the cap."""
    while True:
        for port in range(10000, 10000 + 2 * FLOOD_MAX_FLOWS):
            yield frames.udp(refusing, port, 5000, b"flood")


def arp_flood(frames: Frames) -> Iterator[bytes]:
    macs = list(made_up_macs(4 * MAX_MACS_PER_VM))
    while True:
        yield frames.arp_request(GATEWAY)
        for mac in macs:
            yield frames.arp_request(GATEWAY, sender_mac=mac)


async def stall(vm: HostileVm, frames: Frames, port: int) -> None:
    """Connections that take all they are sent and acknowledge none of it (the VM
    answers only the SYN-ACKs, with ``handshake_ack``)."""
    await vm.send(frames.syn(GATEWAY, port, 20000 + n, window_scale=14) for n in range(STALLED))


async def blast(stream: trio.SocketStream) -> None:
    """A loopback server that sends until the connection breaks."""
    chunk = bytes(1 << 16)
    with suppress(trio.BrokenResourceError):
        while True:
            await stream.send_all(chunk)


def dhcp_flood(frames: Frames) -> Iterator[bytes]:
    rng = random.Random(5)
    for chaddr in made_up_macs(10**9):
        yield frames.dhcp_discover(chaddr, rng.getrandbits(32))


async def keep_sending(vm: HostileVm, frames: Iterator[bytes]) -> None:
    while True:
        await vm.send(next(frames) for _ in range(1024))


async def test_floods_hit_per_vm_caps_while_another_vm_keeps_going(tmp_path: Path) -> None:
    skip_unless_linux_guest()
    if shutil.which("nft") is None:
        pytest.skip("nft is not installed (Debian package nftables)")
    hostile, ctl = tmp_path / "hostile.sock", tmp_path / "ctl.sock"
    args = ["--listen", f"unix:{hostile}", "--control", f"unix:{ctl}"]
    args += ["--max-flows", str(FLOOD_MAX_FLOWS)]
    transfers = TransferServer()
    async with (
        open_linux_guest(tmp_path, faults=Faults(), slirpnet_args=args) as guest,
        loopback_server(transfers.handle) as port,
        loopback_server(blast) as blast_port,
    ):
        pid = guest.slirpnet_pid
        assert pid is not None

        async def measure(first_seed: int) -> float:
            with trio.fail_after(180):
                result = await parallel_transfers(
                    lambda: guest.connect(GATEWAY, port),
                    transfers,
                    CONNECTIONS,
                    SIZE,
                    SIZE,
                    first_seed,
                )
            assert result.problems() == []
            return sum(result.goodput()) * 8 / 1e6  # Mbit/s, both ways together

        alone = await measure(100)
        before = process_stats(pid)
        with namespace_host(drop_syns=True) as blackhole, namespace_host() as refusing:
            floods: list[tuple[str, Callable[[Frames], Iterator[bytes]]]] = [
                ("10.0.2.66", lambda f: syn_flood(f, blackhole.address, refusing.address)),
                ("10.0.2.67", lambda f: udp_flood(f, refusing.address)),
                ("10.0.2.68", arp_flood),
                ("10.0.2.69", dhcp_flood),
            ]
            hostiles: list[HostileVm] = []
            started = trio.current_time()
            async with trio.open_nursery() as nursery:
                for n, (address, flood) in enumerate(floods):
                    frames = Frames(bytes.fromhex(f"5254006600{n:02x}"), address)
                    vm = await nursery_vm(nursery, hostile)
                    hostiles.append(vm)
                    nursery.start_soon(keep_sending, vm, flood(frames))
                frames = Frames(bytes.fromhex("525400660004"), "10.0.2.70")
                vm = await nursery_vm(nursery, hostile, frames.handshake_ack)
                hostiles.append(vm)
                nursery.start_soon(stall, vm, frames, blast_port)
                await trio.sleep(2)  # the caps are reached before the measurement starts
                during = await measure(200)
                shown = {vm["id"]: vm for vm in await vms(ctl)}
                flooding = process_stats(pid)
                nursery.cancel_scope.cancel()
            flooded_for = trio.current_time() - started
        # The hostile VMs are gone, and every socket of theirs with them.
        await wait_until(lambda: process_stats(pid).fds <= before.fds, 30)
        after = process_stats(pid)
    log = (tmp_path / "slirpnet.log").read_text()
    assert "Traceback" not in log, log[-5000:]

    print(f"guest transfer: {alone:.0f} Mbit/s alone, {during:.0f} Mbit/s during the floods")
    print(f"slirpnet: before the floods {before}; during {flooding}; after {after}")
    for vm in hostiles:
        print(f"hostile VM: {vm.sent} frames sent, replies {dict(vm.replies)}")
    for number, vm in shown.items():
        print(f"VM {number} {vm['name']}: drops {vm['drops']}, flows {vm['flows']}")

    syn, udp, arp, dhcp, stalled = (shown_of(shown, f"52:54:00:66:00:{n:02x}") for n in range(5))
    (own,) = [vm for vm in shown.values() if vm["name"] != f"unix:{hostile}"]
    assert set(own["drops"]) <= {"eth_multicast"}, own  # nothing of the guest's was lost
    # Each hostile VM hit its cap, and was told so (RST, ICMP admin-prohibited, no offer).
    assert syn["drops"]["connect_limit"] > 0 and hostiles[0].replies["tcp_rst"] > 0
    assert syn["tcp_connecting"] <= DEFAULT_MAX_CONNECTING
    assert udp["drops"]["flow_limit"] > 0 and hostiles[1].replies["icmp_3_13"] > 0
    assert sum(udp["flows"].values()) == FLOOD_MAX_FLOWS
    assert arp["drops"]["eth_mac_limit"] > 0 and hostiles[2].replies["arp_reply"] > 0
    assert dhcp["drops"]["dhcp_lease_limit"] > 0
    assert hostiles[3].replies["dhcp_offer"] == DEFAULT_MAX_LEASES
    # The unacknowledged connections hold what the budget allows, and no more.
    assert stalled["flows"]["tcp"] == STALLED
    assert 0.9 * VM_TCP_BUFFER < stalled["tcp_buffered"] <= VM_TCP_BUFFER + STALLED * SEND_RESERVE
    # ... logged once a minute each, not once per frame.
    for reason in ("connect_limit", "flow_limit", "eth_mac_limit", "dhcp_lease_limit"):
        assert 1 <= log.count(f"refused ({reason})") <= 1 + flooded_for // 60, log[-3000:]
    # The guest's transfer went on, byte-exact, at a share of its speed alone: the four
    # floods take their shares of the one CPU slirpnet runs on, not the guest's (seen
    # here: a third to a tenth; a flooding VM whose reads were handled whole stalled it).
    assert during > alone / 20, (alone, during)
    assert flooding.fds > before.fds + FLOOD_MAX_FLOWS  # the floods' sockets were there
    assert after.peak_rss_kib / 1024 < PEAK_RSS_LIMIT_MIB


async def nursery_vm(
    nursery: trio.Nursery, path: Path, answer: Callable[[bytes], bytes | None] | None = None
) -> HostileVm:
    """A hostile VM that lives as long as ``nursery``."""

    async def run(task_status: trio.TaskStatus[HostileVm] = trio.TASK_STATUS_IGNORED) -> None:
        async with hostile_vm(path, answer) as vm:
            task_status.started(vm)
            await trio.sleep_forever()

    vm: HostileVm = await nursery.start(run)
    return vm


def shown_of(shown: dict[int, dict[str, Any]], mac: str) -> dict[str, Any]:
    """The hostile VM whose NIC is ``mac``."""
    (vm,) = [vm for vm in shown.values() if mac in vm["macs"]]
    return vm
