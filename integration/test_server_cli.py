"""``slirpnet serve`` as a user meets it: the default socket, the arguments it prints, signals,
sockets left behind, and ``--connect`` to a QEMU that listens."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest
import trio

from integration.guest import GuestImage, boot_async
from integration.server import SLIRPNET, free_tcp_port, serving
from slirpnet.config import Address
from slirpnet.server import suggested_mac

PING_GATEWAY = "ping -c 1 -W 5 10.0.2.2\n"
# No test here resolves names: the upstream named only keeps /etc/resolv.conf out of it.
NO_DNS = ("--dns-upstream", "127.0.0.1:9")


def environment(**changes: str | None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "XDG_RUNTIME_DIR"}
    env.update({key: value for key, value in changes.items() if value is not None})
    return env


async def test_no_flags_listens_in_xdg_runtime_dir_and_the_printed_arguments_work(
    guest_image: GuestImage, tmp_path: Path
) -> None:
    # A comma and a space in the path: QEMU needs the comma doubled, the shell the quotes.
    runtime_dir = tmp_path / "run, user"
    runtime_dir.mkdir()
    socket_path = runtime_dir / "slirpnet.sock"
    env = environment(XDG_RUNTIME_DIR=str(runtime_dir))
    async with serving([], tmp_path / "slirpnet.log", env=env) as server:
        assert socket_path.is_socket()
        assert server.namespace() == "default"
        assert server.qemu_args() == [
            "-netdev",
            "stream,id=net0,server=off,addr.type=unix,addr.path="
            + str(socket_path).replace(",", ",,"),
            "-device",
            # A MAC of its own for each VM of a shared network: the line shows where.
            "virtio-net-pci,netdev=net0,mac="
            + suggested_mac("default", Address("unix", path=str(socket_path))),
        ]
        # Exactly what was printed, with no NIC of the harness's own.
        run = await boot_async(guest_image, server.qemu_args(), PING_GATEWAY, timeout=60, nic=False)
    assert run.rc == 0, run.output + server.stderr()
    assert run.lease["ip"] == "10.0.2.15"
    assert not socket_path.exists()
    server.assert_clean_exit()


async def test_no_flags_and_no_xdg_runtime_dir_listens_in_the_current_directory(
    tmp_path: Path,
) -> None:
    async with serving([], tmp_path / "slirpnet.log", env=environment(), cwd=tmp_path) as server:
        assert (tmp_path / "slirpnet.sock").is_socket()
        assert f"addr.path={tmp_path}/slirpnet.sock" in server.qemu_args()[1]
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(tmp_path / "slirpnet.sock"))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_a_signal_stops_the_server_cleanly_with_a_vm_connected(
    tmp_path: Path, signum: int
) -> None:
    path = tmp_path / "vm.sock"
    async with serving(["--listen", f"unix:{path}", *NO_DNS], tmp_path / "log") as server:
        vm = await trio.open_unix_socket(str(path))
        with trio.fail_after(5):
            while "VM connected" not in server.stderr():
                await trio.sleep(0.05)
        assert await server.stop(signum) == 0, server.stderr()
        assert not path.exists()
        with trio.fail_after(5):
            assert await vm.receive_some() == b""  # the VM's connection was closed
        await vm.aclose()
    assert "Traceback" not in server.stderr()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_a_signal_stops_a_server_on_stdin_and_stdout(tmp_path: Path, signum: int) -> None:
    log = tmp_path / "log"
    with log.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [*SLIRPNET, "serve", "--stdio", "vde", *NO_DNS],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    with trio.fail_after(20):
        while "VM connected" not in log.read_text():
            await trio.sleep(0.05)
        process.send_signal(signum)
        assert await process.wait() == 0, log.read_text()
    assert process.stdin is not None and process.stdout is not None
    await process.stdin.aclose()
    await process.stdout.aclose()
    assert "Traceback" not in log.read_text()


async def test_a_socket_left_by_a_killed_server_is_replaced(
    guest_image: GuestImage, tmp_path: Path
) -> None:
    path = tmp_path / "vm.sock"
    args = ["--listen", f"unix:{path}", *NO_DNS]
    async with serving(args, tmp_path / "first.log") as first:
        first.process.kill()  # no chance to clean up
        await first.process.wait()
    assert path.is_socket()
    async with serving(args, tmp_path / "second.log") as second:
        run = await boot_async(guest_image, second.netdev(), PING_GATEWAY, timeout=60)
    assert run.rc == 0, run.output + second.stderr()


async def test_a_socket_held_by_a_live_server_is_an_error_naming_listen(tmp_path: Path) -> None:
    path = tmp_path / "vm.sock"
    args = ["serve", "--listen", f"unix:{path}", *NO_DNS]
    async with serving(args[1:], tmp_path / "log"):
        second = await trio.run_process(
            [*SLIRPNET, *args], capture_stdout=True, check=False, capture_stderr=True
        )
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(path))  # the live server still listens there
    assert second.returncode == 2
    assert second.stdout == b""
    *_, last = second.stderr.decode().strip().splitlines()
    assert last == f"slirpnet: error: listen: {path} is in use by a running server"
    assert b"Traceback" not in second.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mtu = 9\n", "mtu: 9 is outside 576..65520"),
        ("[namespace.a]\nlisten = 'udp:x'\n", "namespace.a.listen: 'udp:x' is not one of"),
    ],
)
def test_a_bad_config_file_is_one_line_naming_the_key_and_exit_2(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    result = subprocess.run(
        [*SLIRPNET, "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    *_, last = result.stderr.strip().splitlines()
    assert last.startswith(f"slirpnet: error: {message}"), result.stderr


async def test_connect_to_a_listening_qemu_and_again_after_it_restarts(
    guest_image: GuestImage, tmp_path: Path
) -> None:
    path = tmp_path / "qemu.sock"
    # slirpnet starts first: it keeps trying, with backoff, until QEMU listens.
    async with serving(["--connect", f"unix:{path}", *NO_DNS], tmp_path / "log") as server:
        assert server.qemu_args()[1] == (
            f"stream,id=net0,server=on,addr.type=unix,addr.path={path}"
        )
        await trio.sleep(1.0)  # a few failed attempts first
        for _ in range(2):
            run = await boot_async(
                guest_image, server.qemu_args(), PING_GATEWAY, timeout=60, nic=False
            )
            assert run.rc == 0, run.output + server.stderr()
            assert run.lease["router"] == "10.0.2.2"
    assert server.stderr().count("VM connected") == 2
    server.assert_clean_exit()


async def test_connect_over_tcp(guest_image: GuestImage, tmp_path: Path) -> None:
    port = free_tcp_port()
    async with serving(["--connect", f"tcp:127.0.0.1:{port}", *NO_DNS], tmp_path / "log") as server:
        assert server.qemu_args()[1] == (
            f"stream,id=net0,server=on,addr.type=inet,addr.host=127.0.0.1,addr.port={port}"
        )
        run = await boot_async(guest_image, server.netdev(), PING_GATEWAY, timeout=60)
    assert run.rc == 0, run.output + server.stderr()
    assert run.lease["ip"] == "10.0.2.15"
    server.assert_clean_exit()
