"""Real DHCP clients one after another on one MAC: one address, and a forward follows it.

A VM's DHCP client changes as it boots: ISC dhclient in an initramfs (no client
identifier), then dhcpcd or systemd-networkd with a DUID (RFC 4361).  Here the guest is
the Linux stack in a namespace (``integration/linux``) with no lease of the harness's:
dhclient takes one and dies without releasing it, as the initramfs's does when the root
switches, then dhcpcd takes over.  The machine must keep its address, and a forward with
no guest address must go on reaching a server in the namespace.

Each client keeps its lease and pid files in the test's directory and changes nothing
of the host's: dhclient runs ``integration/linux/dhclient.sh`` as its hook; dhcpcd runs
no hook at all and sees the test's directories over /run and /var/lib/dhcpcd (``ip netns
exec`` gives it a mount namespace of its own).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import trio

from integration.conftest import skip_unless_linux_guest
from integration.linux import system
from integration.linux.harness import LinuxGuest, open_linux_guest
from integration.server import free_tcp_port

DHCLIENT_HOOK = Path(__file__).resolve().parent / "linux" / "dhclient.sh"
TIMEOUT = 30.0


def skip_unless_clients() -> None:
    skip_unless_linux_guest()
    for tool, package in (("dhclient", "isc-dhcp-client"), ("dhcpcd", "dhcpcd-base")):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed ({package}: see integration/install-deps.sh)")


async def start(nursery: trio.Nursery, argv: list[str], log: Path) -> trio.Process:
    """``argv`` running until killed or the nursery ends, its output in ``log``."""
    with log.open("ab") as out:
        process: trio.Process = await nursery.start(
            lambda task_status: trio.run_process(
                argv, check=False, stdout=out, stderr=out, task_status=task_status
            )
        )
    return process


async def serve_own_address(listener: trio.socket.SocketType) -> None:
    """Answer each connection with the address it reached: where the forward went."""
    while True:
        connection, _ = await listener.accept()
        with connection:
            await connection.send(connection.getsockname()[0].encode())


async def through_forward(port: int) -> str:
    """What the guest's server says through the forward: the address it was reached at."""
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            heard = b""
            while chunk := await stream.receive_some(100):
                heard += chunk
    return heard.decode()


async def address_of(guest: LinuxGuest) -> str:
    """The IPv4 address a DHCP client put on the guest's interface, once it has."""
    with trio.fail_after(TIMEOUT):
        while True:
            shown = system.ip("-4", "-o", "addr", "show", "dev", guest.interface, netns=guest.netns)
            if "inet " in shown:
                return shown.split("inet ")[1].split("/")[0]
            await trio.sleep(0.1)


async def saved_leases(guest: LinuxGuest, client: bytes) -> list[dict[str, str]]:
    """slirpnet's lease file, once ``client`` is in it (it is written within a second)."""
    path = guest.workdir / "state" / "default.leases.json"
    with trio.fail_after(TIMEOUT):
        while True:
            if path.exists():
                records: list[dict[str, str]] = json.loads(path.read_text())["leases"]
                if any(bytes.fromhex(r["client"]).startswith(client) for r in records):
                    return records
            await trio.sleep(0.1)


async def test_dhclient_then_dhcpcd_keep_one_address_and_the_forward(tmp_path: Path) -> None:
    skip_unless_clients()
    port = free_tcp_port()
    forward = ["--forward", f"tcp:127.0.0.1:{port}-:{port}"]  # no guest address
    run, db = tmp_path / "dhcpcd-run", tmp_path / "dhcpcd-db"
    run.mkdir()
    db.mkdir()
    resolv_conf = Path("/etc/resolv.conf").read_bytes()
    async with (
        open_linux_guest(tmp_path / "guest", slirpnet_args=forward, lease=False) as guest,
        trio.open_nursery() as nursery,
    ):
        listener = trio.socket.from_stdlib_socket(system.netns_socket(guest.netns))
        await listener.bind(("0.0.0.0", port))
        listener.listen()
        nursery.start_soon(serve_own_address, listener)

        dhclient = await start(
            nursery,
            guest.command(
                *("dhclient", "-4", "-d", "-v", "-cf", "/dev/null"),
                *("-lf", str(tmp_path / "dhclient.leases"), "-pf", str(tmp_path / "dhclient.pid")),
                *("-sf", str(DHCLIENT_HOOK), guest.interface),
            ),
            tmp_path / "dhclient.log",
        )
        first = await address_of(guest)
        assert await through_forward(port) == first, guest.logs()
        # The root switches: the initramfs's client is gone, lease unreleased.
        dhclient.kill()
        system.ip("addr", "flush", "dev", guest.interface, netns=guest.netns)

        mounts = 'mount --bind "$1" /run && mount --bind "$2" /var/lib/dhcpcd && shift 2'
        dhcpcd = await start(
            nursery,
            guest.command(
                *("sh", "-c", f'{mounts} && exec "$@"', "sh", str(run), str(db)),
                *("dhcpcd", "-4", "-B", "-A", "-L", "--duid=ll", "-f", "/dev/null"),
                *("-c", "/bin/true", "-t", str(int(TIMEOUT)), guest.interface),
            ),
            tmp_path / "dhcpcd.log",
        )
        assert await address_of(guest) == first, (tmp_path / "dhcpcd.log").read_text()
        assert await through_forward(port) == first, guest.logs()
        # One record for the machine, dhcpcd's now (type 255: a DUID, RFC 4361).
        records = await saved_leases(guest, b"id:\xff")
        assert [r["address"] for r in records] == [first], records
        dhcpcd.terminate()
        nursery.cancel_scope.cancel()
    assert Path("/etc/resolv.conf").read_bytes() == resolv_conf
