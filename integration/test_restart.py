"""Many VMs and restarts with real guests: each VM a network of its own, one MAC on a
shared network reported, and slirpnet killed and started again under a running guest.

The restart tests drive the guest only through a forward: each connection to it runs
``/fetch.sh`` in the guest, which downloads a blob from the host through the NAT and
answers with its SHA-256.  Between connections the guest says nothing, as a quiet VM
would, so after a restart only the saved lease and the gateway's ARP request for it
let the forward find the VM.  QEMU comes back two ways: 7.2 with ``server=on``, which
slirpnet reconnects to (``--connect``), and QEMU 9.2+ (10 from bookworm-backports,
``integration/guest/newqemu.py``) reconnecting on its own with ``reconnect-ms``.
"""

from __future__ import annotations

import hashlib
import random
import signal
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio
from scapy.layers.l2 import ARP
from scapy.utils import rdpcap

from integration.guest import GuestImage, GuestRun, boot_async
from integration.guest.build import GuestUnavailableError
from integration.guest.newqemu import reconnecting_qemu
from integration.linux.traffic import loopback_server
from integration.probe import control
from integration.server import free_tcp_port, serving

BLOB = random.Random(15).randbytes(1 << 20)
BLOB_SHA = hashlib.sha256(BLOB).hexdigest()
NO_DNS = ("--dns-upstream", "127.0.0.1:9")  # nothing here resolves names
RECONNECTED_WITHIN = 15.0  # seconds from the new server's start to a forward that works


async def http_blob(stream: trio.SocketStream) -> None:
    """Answer one GET with BLOB."""
    request = b""
    while b"\r\n\r\n" not in request:
        chunk = await stream.receive_some(4096)
        if not chunk:
            return
        request += chunk
    await stream.send_all(f"HTTP/1.0 200 OK\r\nContent-Length: {len(BLOB)}\r\n\r\n".encode() + BLOB)


def downloads(run: GuestRun) -> list[str]:
    return [line.split()[0] for line in run.output.splitlines() if line.endswith("/tmp/blob")]


# -- many VMs, one MAC ------------------------------------------------------------------


async def test_two_guests_with_one_mac_each_get_10_0_2_15_on_isolate_and_download_intact(
    guest_image: GuestImage, tmp_path: Path
) -> None:
    sock = tmp_path / "vm.sock"
    args = ["--listen", f"unix:{sock}", "--isolate", "--control", f"unix:{tmp_path / 'c'}"]
    async with (
        loopback_server(http_blob) as http_port,
        serving([*args, *NO_DNS], tmp_path / "slirpnet.log") as server,
    ):
        script = (
            f"wget -q -O /tmp/blob http://10.0.2.2:{http_port}/ && sha256sum /tmp/blob\n"
            "sleep 3\n"  # both are up at once, each on its own network
        )
        runs: list[GuestRun] = []
        networks: list[list[str]] = []

        async def guest() -> None:
            # Exactly the printed arguments: QEMU's default MAC for both.
            runs.append(await boot_async(guest_image, server.qemu_args(), script, 120, nic=False))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(guest)
            nursery.start_soon(guest)
            with trio.fail_after(120):
                while len(networks) < 1 or len(networks[-1]) < 2:
                    listed = await control(tmp_path / "c", "/namespaces")
                    networks.append(sorted(ns["name"] for ns in listed))
                    await trio.sleep(0.2)
    assert networks[-1] == ["default.vm1", "default.vm2"]
    assert len(runs) == 2
    for run in runs:
        assert run.lease["ip"] == "10.0.2.15", run.output
        assert downloads(run) == [BLOB_SHA], run.output + server.stderr()
    assert "eth_mac_in_use" not in server.stderr()
    server.assert_clean_exit()


async def test_a_second_guest_with_a_mac_in_use_on_a_shared_network_is_reported(
    guest_image: GuestImage, tmp_path: Path
) -> None:
    sock = tmp_path / "vm.sock"
    args = ["--listen", f"unix:{sock}", *NO_DNS]
    async with serving(args, tmp_path / "slirpnet.log") as server, trio.open_nursery() as nursery:
        # The first holds the MAC (and 10.0.2.15) until the second has tried; then
        # cancelling the nursery stops its QEMU.
        nursery.start_soon(boot_async, guest_image, server.netdev(), "sleep 300\n", 300)
        with trio.fail_after(90):
            while "lease 10.0.2.15 to 52:54:00:12:34:56" not in server.stderr():
                await trio.sleep(0.2)
        second = await boot_async(guest_image, server.netdev(), "", 120)
        nursery.cancel_scope.cancel()
    assert "DHCP-FAILED" in second.output and not second.lease, second.output
    log = server.stderr()
    (line,) = [line for line in log.splitlines() if "eth_mac_in_use" in line]
    assert "52:54:00:12:34:56" in line and "mac=" in line, log
    server.assert_clean_exit()


# -- slirpnet restarted under a running guest -------------------------------------------------

FETCH = (
    "#!/bin/sh\n"
    "# One forwarded connection: download the host's blob through the NAT, say its hash.\n"
    "# (No wget -T: it makes busybox 1.35 wget crash.)\n"
    "read command\n"
    'if [ "$command" = stop ]; then touch /tmp/stop; echo bye; exit 0; fi\n'
    "rm -f /tmp/blob\n"
    "wget -q -O /tmp/blob http://10.0.2.2:$(cat /tmp/http_port)/ 2>&1\n"
    "sha256sum /tmp/blob | cut -c1-64\n"
)


def guest_script(http_port: int) -> str:
    return (
        f"echo {http_port} > /tmp/http_port\n"
        "nc -ll -p 8080 -e /fetch.sh &\n"
        "while [ ! -e /tmp/stop ]; do sleep 1; done\n"
    )


async def fetch_through(port: int, command: str = "fetch", timeout: float = 30.0) -> str:
    """Ask the guest, through the forward on ``port``, for a download; its answer."""
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(command.encode() + b"\n")
            answer = b""
            while chunk := await stream.receive_some(4096):
                answer += chunk
    return answer.decode(errors="replace").strip()


async def until_fetched(port: int, within: float) -> float:
    """Retry until a fetch through the forward answers the blob's hash; the time it took."""
    start = trio.current_time()
    answers = []
    with trio.move_on_after(within):
        while True:
            try:
                answers.append(await fetch_through(port, timeout=5))
            except (OSError, trio.BrokenResourceError, trio.TooSlowError) as error:
                answers.append(repr(error))
            if answers[-1] == BLOB_SHA:
                return trio.current_time() - start
            await trio.sleep(0.2)
    raise AssertionError(f"no fetch through the forward in {within} s: {answers[-3:]}")


async def lease_of(control_path: Path) -> list[tuple[str, str, str]]:
    leases = await control(control_path, "/namespaces/default/leases")
    return [(entry["address"], entry["mac"], entry["state"]) for entry in leases]


async def restart_under_a_guest(
    guest_image: GuestImage,
    tmp_path: Path,
    slirpnet_args: Sequence[str],
    netdev: Sequence[str],
    qemu: Sequence[str] = (),
) -> None:
    forward_port = free_tcp_port()
    control_path = tmp_path / "control.sock"
    args = [
        *slirpnet_args,
        *NO_DNS,
        *("--forward", f"tcp::{forward_port}-:8080"),
        *("--control", f"unix:{control_path}"),
    ]
    async with loopback_server(http_blob) as http_port, trio.open_nursery() as nursery:
        runs: list[GuestRun] = []

        async def guest() -> None:
            runs.append(
                await boot_async(
                    guest_image,
                    netdev,
                    guest_script(http_port),
                    300,
                    files={"/fetch.sh": FETCH.encode()},
                    qemu=qemu,
                )
            )

        captures = tmp_path / "second-pcap"
        captures.mkdir()
        async with serving(args, tmp_path / "first.log") as first:
            nursery.start_soon(guest)
            assert await until_fetched(forward_port, within=150) >= 0
            before = await lease_of(control_path)
            assert before == [("10.0.2.15", "52:54:00:12:34:56", "bound")]
            first.process.send_signal(signal.SIGKILL)  # no goodbye: nothing saved on the way out
            await first.process.wait()
        await trio.sleep(1.0)  # the guest's link is down a moment, as in a real restart

        async with serving([*args, "--pcap", str(captures)], tmp_path / "second.log") as second:
            took = await until_fetched(forward_port, within=60)
            after = await lease_of(control_path)
            assert await fetch_through(forward_port) == BLOB_SHA  # and again
            assert await fetch_through(forward_port, "stop") == "bye"
            with trio.fail_after(60):
                while not runs:
                    await trio.sleep(0.2)
        logs = first.stderr() + second.stderr()
    (run,) = runs
    assert run.rc == 0, run.output + logs
    assert run.lease["ip"] == "10.0.2.15"
    assert after == before, logs  # the lease as it was, restored, not taken anew
    assert "lease 10.0.2.15" not in second.stderr(), second.stderr()  # no DHCP since
    assert took < RECONNECTED_WITHIN, f"a forward reached the guest after {took:.1f} s\n{logs}"
    second.assert_clean_exit()
    # The new server asked for the leased address at once, and the guest answered.
    (capture,) = captures.glob("*.pcap")
    arp = [
        (p[ARP].op, p[ARP].hwsrc, p[ARP].psrc, p[ARP].pdst)
        for p in rdpcap(str(capture))
        if ARP in p
    ]
    assert arp[0] == (1, "52:55:0a:00:02:02", "10.0.2.2", "10.0.2.15"), arp
    assert (2, "52:54:00:12:34:56", "10.0.2.15", "10.0.2.2") in arp, arp


async def test_killed_and_restarted_with_connect_to_qemu_7_listening(
    guest_image: GuestImage, tmp_path: Path
) -> None:
    qemu_sock = tmp_path / "qemu.sock"
    netdev = ["-netdev", f"stream,id=n0,server=on,addr.type=unix,addr.path={qemu_sock}"]
    await restart_under_a_guest(guest_image, tmp_path, ["--connect", f"unix:{qemu_sock}"], netdev)


async def test_killed_and_restarted_under_a_qemu_that_reconnects(
    guest_image: GuestImage, tmp_path: Path
) -> None:
    try:
        qemu = await trio.to_thread.run_sync(reconnecting_qemu)
    except GuestUnavailableError as missing:
        pytest.skip(f"no QEMU with reconnect-ms here: {missing}")
    sock = tmp_path / "vm.sock"
    netdev = [
        "-netdev",
        f"stream,id=n0,server=off,addr.type=unix,addr.path={sock},reconnect-ms=200",
    ]
    await restart_under_a_guest(guest_image, tmp_path, ["--listen", f"unix:{sock}"], netdev, qemu)
