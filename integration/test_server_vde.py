"""VDE, the way slirpvde is used: ``dpipe vde_plug SWITCH = slirpnet serve --stdio vde``.

Two guests on a vde_switch get their leases from slirpnet (MTU 1500: VDE's), reach each
other through the switch, and the loopback services through slirpnet.  When the switch goes,
so does slirpnet, cleanly.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import trio

from integration.guest import GuestImage, GuestRun, boot_async
from integration.server import (
    BLOB,
    RECORDS,
    SLIRPNET,
    assert_network_works,
    checks,
    network_script,
    pacing,
)
from integration.services import dns_upstream, tftp_server

GUESTS = {"v1": ("52:54:00:00:0d:01", "10.0.2.31"), "v2": ("52:54:00:00:0d:02", "10.0.2.32")}


@pytest.fixture
def vde_tools() -> None:
    missing = [tool for tool in ("vde_switch", "vde_plug", "dpipe") if not shutil.which(tool)]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (Debian package vde2)")


def script(me: str, peer: str, tftp_port: int) -> str:
    peer_address = GUESTS[peer][1]
    return (
        pacing(tftp_port)
        + network_script(tftp_port, large_udp=False)
        + (
            "check sees-peer sh -c 'for i in $(seq 60); do "
            f"ping -c 1 -W 1 {peer_address} && exit 0; done; exit 1'\n"
            f"mark {me}-saw-{peer}\n"
            # Stay up until the peer has seen us too.
            f"check peer-saw-me wait_for {peer}-saw-{me}\n"
        )
    )


async def test_two_guests_on_a_vde_switch_with_slirpnet_plugged_in(
    guest_image: GuestImage, tmp_path: Path, vde_tools: None
) -> None:
    switch_dir = tmp_path / "switch"
    log = tmp_path / "slirpnet.log"
    runs: dict[str, GuestRun] = {}
    async with (
        dns_upstream(RECORDS) as dns,
        tftp_server({"blob": BLOB}) as tftp,
        trio.open_nursery() as nursery,
    ):
        # vde_switch reads commands from stdin and exits at its end: the pipe keeps it up.
        switch: trio.Process = await nursery.start(
            lambda task_status: trio.run_process(
                ["vde_switch", "-s", str(switch_dir)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                check=False,
                task_status=task_status,
            )
        )
        with trio.fail_after(10):
            while not (switch_dir / "ctl").exists():
                await trio.sleep(0.05)
        leases = [f"--static-lease={mac}={address}" for mac, address in GUESTS.values()]
        slirpnet = [*SLIRPNET, "serve", "--stdio", "vde", f"--dns-upstream=127.0.0.1:{dns.port}"]
        with log.open("wb") as stderr:
            plug: trio.Process = await nursery.start(
                lambda task_status: trio.run_process(
                    ["dpipe", "vde_plug", str(switch_dir), "=", *slirpnet, *leases],
                    stderr=stderr,
                    check=False,
                    task_status=task_status,
                )
            )

        async def boot(name: str, peer: str) -> None:
            runs[name] = await boot_async(
                guest_image,
                ["-netdev", f"vde,id=n0,sock={switch_dir}"],
                script(name, peer, tftp.port),
                timeout=120,
                mac=GUESTS[name][0],
            )

        async with trio.open_nursery() as guests:
            guests.start_soon(boot, "v1", "v2")
            guests.start_soon(boot, "v2", "v1")
        assert switch.stdin is not None
        await switch.stdin.aclose()  # the switch exits, vde_plug with it, slirpnet sees EOF
        with trio.fail_after(15):
            await plug.wait()
    text = log.read_text()
    for name, (_, address) in GUESTS.items():
        run = runs[name]
        assert run.rc == 0, f"{run.output}\n{text}"
        assert (run.lease["ip"], run.lease["mtu"]) == (address, "1500"), run.output
        assert_network_works(run.output, large_udp=False)
        assert (checks(run.output)["sees-peer"], checks(run.output)["peer-saw-me"]) == (
            "ok",
            "ok",
        ), run.output
    assert "VM disconnected" in text
    assert "Traceback" not in text
    assert plug.returncode == 0, text
