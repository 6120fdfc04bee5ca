"""systemd socket activation, with the example units of docs/systemd, systemd played by the test.

The test binds the sockets the .socket unit lists, then starts the .service's
command with them as fds 3 and 4 and LISTEN_PID/LISTEN_FDS set, as systemd does.
"""

from __future__ import annotations

import configparser
import json
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

from scapy.layers.l2 import ARP, Ether

from integration.readme import quick_start_install
from slirpnet.control import client
from slirpnet.framing import QEMU_STREAM

UNITS = Path(__file__).resolve().parent.parent / "docs" / "systemd"


def unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((UNITS / name).read_text())
    return parser


def listen_streams() -> list[str]:
    # configparser keeps the last of repeated keys; systemd takes them all.
    text = (UNITS / "slirpnet.socket").read_text()
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith("ListenStream=")]


def test_the_example_units_serve_vms_and_the_control_api(tmp_path: Path) -> None:
    runtime_dir = tmp_path
    (runtime_dir / "slirpnet").mkdir()
    sockets = []
    for path in listen_streams():
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path.replace("%t", str(runtime_dir)))
        sock.listen()
        sockets.append(sock)
    vm_path, control_path = (s.getsockname() for s in sockets)
    # The program by its full path, where the README's quick start installs it.
    program, *_ = unit("slirpnet.service")["Service"]["ExecStart"].split()
    assert program == "%h/.local/slirpnet/bin/slirpnet"
    assert program.replace("%h", "~") in quick_start_install()
    command = shlex.split(
        unit("slirpnet.service")["Service"]["ExecStart"].replace("%t", str(runtime_dir))
    )
    originals = [s.fileno() for s in sockets]

    def as_systemd_does() -> None:  # in the child, between fork and exec
        for target, fd in enumerate(originals, start=3):
            os.dup2(fd, target)

    # The shell keeps the child's pid for the server, which LISTEN_PID must name.
    shell = 'LISTEN_PID=$$ LISTEN_FDS=2 exec "$0" "$@"'
    argv = [sys.executable, "-m", "slirpnet", *command[1:], "--dns-upstream", "127.0.0.1:9"]
    server = subprocess.Popen(
        ["sh", "-c", shell, *argv],
        pass_fds=(3, 4),
        preexec_fn=as_systemd_does,  # noqa: PLW1509 (no threads run here)
        stderr=subprocess.PIPE,
        text=True,
    )
    for sock in sockets:
        sock.close()  # the server holds them now
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as vm:
            vm.settimeout(10)
            vm.connect(vm_path)
            who_has = Ether(src="52:54:00:12:34:56", dst="ff:ff:ff:ff:ff:ff") / ARP(
                hwsrc="52:54:00:12:34:56", psrc="10.0.2.15", pdst="10.0.2.2"
            )
            vm.sendall(QEMU_STREAM.encode(bytes(who_has)))
            decoder = QEMU_STREAM.decoder()
            frames: list[bytes] = []
            while not frames:
                data = vm.recv(65536)
                assert data, server.stderr.read() if server.stderr else ""
                frames += decoder.feed(data)
            reply = Ether(frames[0])
            assert reply[ARP].op == 2 and reply[ARP].psrc == "10.0.2.2"

            (namespace,) = client.request(control_path, "GET", "/namespaces")
            assert namespace["vms"] == 1
            # ... and the control socket is where `slirpnet ctl` looks by default.
            shown = subprocess.run(
                [sys.executable, "-m", "slirpnet", "ctl", "vms", "--json"],
                env={**os.environ, "XDG_RUNTIME_DIR": str(runtime_dir)},
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
            (vm_shown,) = json.loads(shown.stdout)
            assert vm_shown["id"] == 1
    finally:
        server.terminate()
        _, errors = server.communicate(timeout=10)
    assert server.returncode == 0, errors
    # The socket files are systemd's: slirpnet leaves them in place.
    assert Path(vm_path).is_socket() and Path(control_path).is_socket()


def test_without_systemd_nothing_is_inherited(tmp_path: Path) -> None:
    path = tmp_path / "vm.sock"
    server = subprocess.Popen(
        [sys.executable, "-m", "slirpnet", "serve", "--listen", f"unix:{path}"],
        env={"LISTEN_PID": "1", "LISTEN_FDS": "1", "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not path.exists():
            assert server.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert server.returncode == 0
    assert not path.exists()  # bound by slirpnet itself, so removed on the way out
