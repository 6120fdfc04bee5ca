"""The guest harness itself, proven against QEMU's built-in libslirp (``-netdev user``)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from integration.guest import GuestImage, boot, boot_async
from integration.guest.skip import image_or_skip

REPO = Path(__file__).resolve().parent.parent
USER_NET = ["-netdev", "user,id=n0,domainname=corp.test,dnssearch=a.test,dnssearch=b.test"]


@pytest.fixture(scope="session")
def guest_image() -> GuestImage:
    return image_or_skip()


async def test_lease_is_applied_and_the_gateway_answers(guest_image: GuestImage) -> None:
    script = "cat /etc/resolv.conf\nip route\nping -c 1 -W 5 10.0.2.2\n"
    run = await boot_async(guest_image, USER_NET, script, timeout=90)

    assert run.rc == 0, run.output
    assert run.lease["ip"] == "10.0.2.15"
    assert run.lease["subnet"] == "255.255.255.0"
    assert run.lease["router"] == "10.0.2.2"
    assert run.lease["dns"] == "10.0.2.3"
    assert run.lease["domain"] == "corp.test"
    assert run.lease["search"] == "a.test,b.test"
    assert "search a.test b.test\nnameserver 10.0.2.3\n" in run.output
    assert "default via 10.0.2.2 dev eth0" in run.output


def test_script_exit_status_and_mac_from_a_plain_sync_caller(guest_image: GuestImage) -> None:
    script = "cat /sys/class/net/eth0/address\nexit 3\n"
    run = boot(guest_image, ["-netdev", "user,id=n0"], script, timeout=90, mac="52:54:00:aa:bb:02")

    assert run.rc == 3, run.output
    assert not run.timed_out
    assert "\n52:54:00:aa:bb:02\n" in run.output


async def test_qemu_is_killed_at_the_deadline(guest_image: GuestImage) -> None:
    run = await boot_async(guest_image, ["-netdev", "user,id=n0"], "sleep 600", timeout=3)

    assert run.timed_out
    assert run.rc is None
    assert run.seconds < 15


async def test_stream_netdev_connects_to_a_trio_socket_in_this_process(
    guest_image: GuestImage, tmp_path: Path
) -> None:
    path = tmp_path / "net.sock"
    netdev = ["-netdev", f"stream,id=n0,server=off,addr.type=unix,addr.path={path}"]
    with trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener, trio.fail_after(60):
        await listener.bind(str(path))
        listener.listen()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(boot_async, guest_image, netdev, "", 60.0)
            connection, _ = await listener.accept()
            stream = trio.SocketStream(connection)
            # QEMU's stream framing: a 4-byte big-endian length, then the Ethernet frame.
            received = b""
            while len(received) < 4 or len(received) < 4 + int.from_bytes(received[:4], "big"):
                received += await stream.receive_some()
            # Cancelling boot_async must stop QEMU on the way out, or this nursery never exits.
            nursery.cancel_scope.cancel()
    assert received[4 + 6 : 4 + 12] == bytes.fromhex("525400123456")  # the frame's source MAC


def run_command(*args: str) -> list[str]:
    """``python -m integration.guest run ...``, as docker/Dockerfile.vm's entry point runs it."""
    return [sys.executable, "-m", "integration.guest", "run", *args]


def test_run_waits_for_the_server_to_listen(guest_image: GuestImage, tmp_path: Path) -> None:
    path = tmp_path / "vm.sock"
    # A socket file that nobody listens on, as a server that died leaves it.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(path))
    netdev = f"stream,id=n0,server=off,addr.type=unix,addr.path={path}"
    vm = subprocess.Popen(
        run_command(netdev, "--wait", "60", "--script", "ping -c 1 10.0.2.2 && echo WAITED"),
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    time.sleep(2)
    assert vm.poll() is None, "run gave up on a stale socket"
    server = subprocess.Popen(
        [sys.executable, "-m", "slirpnet", "serve", "--listen", f"unix:{path}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        out, _ = vm.communicate(timeout=120)
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert vm.returncode == 0, out
    assert "\nWAITED\n" in out


def test_run_gives_up_when_nothing_listens(tmp_path: Path) -> None:
    netdev = f"stream,id=n0,server=off,addr.type=unix,addr.path={tmp_path}/none.sock"
    started = time.monotonic()
    run = subprocess.run(
        run_command(netdev, "--wait", "1"), capture_output=True, text=True, cwd=REPO, check=False
    )
    assert run.returncode == 125
    assert "nothing listens on" in run.stderr
    assert time.monotonic() - started < 30


def test_sigterm_stops_run_and_its_qemu(guest_image: GuestImage) -> None:
    vm = subprocess.Popen(run_command("user,id=n0", "--script", "sleep 600"), cwd=REPO)
    children = Path(f"/proc/{vm.pid}/task/{vm.pid}/children")
    deadline = time.monotonic() + 30
    while not children.read_text().split():
        assert time.monotonic() < deadline, "QEMU never started"
        time.sleep(0.1)
    (qemu,) = map(int, children.read_text().split())
    vm.send_signal(signal.SIGTERM)
    assert vm.wait(timeout=20) == 128 + signal.SIGTERM
    assert not Path(f"/proc/{qemu}").exists(), "QEMU outlived run"
