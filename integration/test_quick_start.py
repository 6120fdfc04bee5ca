"""The README's quick start, run as printed in a fresh clone with Debian's own python3.

The install command is run for real: ``sudo apt-get install``, a virtual environment
under a fresh ``$HOME``, ``pip install .`` from PyPI, and the server it starts, which a
VM then reaches and ``slirpnet ctl`` (the README's own lines) talks to.  The test
command would run this test again, so it is only held equal to what ``.ci/run`` runs.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from scapy.layers.l2 import ARP, Ether
from scapy.utils import rdpcap

from integration.readme import (
    ROOT,
    ctl_example,
    quick_start_install,
    quick_start_test,
    section,
)
from integration.server import free_tcp_port
from slirpnet.framing import QEMU_STREAM

DEBIAN_PYTHON = Path("/usr/bin/python3")
# pip downloads, the build, and the server's start; slow only on a slow mirror.
INSTALL_TIMEOUT = 900
# Debian's own directories only: python3 is /usr/bin/python3, not a pyenv or /usr/local one.
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def test_the_test_command_is_what_ci_runs() -> None:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert quick_start_test() in lines
    # ... after the packages the integration tests need, which the README names.
    assert lines.index("integration/install-deps.sh") < lines.index(quick_start_test())
    assert "integration/install-deps.sh" in section("Quick start")


def fresh_clone(where: Path) -> Path:
    """A clone of this repository, with the tracked files' uncommitted changes (if any)."""
    clone = where / "slirpnet"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    diff = subprocess.run(
        ["git", "-C", str(ROOT), "diff", "HEAD", "--binary"], capture_output=True, check=True
    ).stdout
    if diff:
        subprocess.run(["git", "-C", str(clone), "apply"], input=diff, check=True)
    return clone


def needs_a_debian_machine() -> None:
    if not DEBIAN_PYTHON.exists():
        pytest.skip("no /usr/bin/python3: the quick start is for Debian and Ubuntu")
    for tool in ("sudo", "git", "apt-get"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (integration/install-deps.sh installs it)")
    if subprocess.run(["sudo", "-n", "true"], capture_output=True, check=False).returncode:
        pytest.skip("the quick start's apt-get needs root or sudo without a password")


@contextmanager
def quick_start_server(clone: Path, home: Path, runtime: Path) -> Iterator[subprocess.Popen[str]]:
    """The install command, run by bash as printed, until its server stops."""
    env = {
        "HOME": str(home),
        "PATH": SYSTEM_PATH,
        "XDG_RUNTIME_DIR": str(runtime),
        "LANG": "C.UTF-8",
        # How this machine reaches PyPI (a proxy, a certificate), nothing else of ours.
        **{k: v for k, v in os.environ.items() if k.startswith("PIP_") or "proxy" in k.lower()},
    }
    process = subprocess.Popen(
        ["bash", "-c", quick_start_install()],
        cwd=clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # the server is bash's child: stopped with its group
    )
    # The install takes what it takes; past INSTALL_TIMEOUT, stopping it ends the test's reads.
    watchdog = threading.Timer(INSTALL_TIMEOUT, os.killpg, (process.pid, signal.SIGKILL))
    watchdog.start()
    try:
        yield process
    finally:
        watchdog.cancel()
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_the_quick_start_installs_and_serves_as_printed(tmp_path: Path) -> None:
    needs_a_debian_machine()
    clone, home, runtime = fresh_clone(tmp_path), tmp_path / "home", tmp_path / "run"
    home.mkdir()
    runtime.mkdir(mode=0o700)
    with quick_start_server(clone, home, runtime) as process:
        assert process.stdout is not None
        output = []
        for line in process.stdout:  # bounded by the watchdog
            output.append(line)
            if line.startswith("default: qemu-system-x86_64 ... "):
                break
        else:
            pytest.fail("the quick start ended before serving:\n" + "".join(output))
        installed = home / ".local" / "slirpnet" / "bin"
        interpreter = (installed / "python").resolve()
        assert interpreter == DEBIAN_PYTHON.resolve(), interpreter
        vm_socket = runtime / "slirpnet.sock"
        assert f"addr.path={vm_socket} " in line

        # A VM plugs in where it said, and is answered.
        with socket.socket(socket.AF_UNIX) as vm:
            vm.settimeout(30)
            vm.connect(str(vm_socket))
            who_has = Ether(src="52:54:00:12:34:56", dst="ff:ff:ff:ff:ff:ff") / ARP(
                hwsrc="52:54:00:12:34:56", psrc="10.0.2.15", pdst="10.0.2.2"
            )
            decoder = QEMU_STREAM.decoder()

            def ask_the_gateway() -> None:
                """Until its answer: the gateway may ask a question of its own first
                (who has the addresses it leased, when a VM plugs in)."""
                vm.sendall(QEMU_STREAM.encode(bytes(who_has)))
                while True:
                    data = vm.recv(65536)
                    assert data
                    for frame in decoder.feed(data):
                        arp = Ether(frame)[ARP]
                        if arp.op == 2 and arp.pdst == "10.0.2.15":  # is-at, to us
                            assert arp.psrc == "10.0.2.2"
                            return

            ask_the_gateway()

            # The README's ctl lines, with slirpnet on the PATH as it suggests; the forward's
            # port is one free here, the capture in this test's directory.
            port = str(free_tcp_port())
            for line in ctl_example():
                argv = [
                    str(tmp_path / "vm1.pcap") if w.endswith(".pcap") else w.replace("8080", port)
                    for w in line
                ]
                shown = subprocess.run(
                    ["slirpnet", "ctl", *argv],
                    env={"PATH": f"{installed}:{SYSTEM_PATH}", "XDG_RUNTIME_DIR": str(runtime)},
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
                assert (shown.returncode, shown.stderr) == (0, ""), argv
                assert all(len(line) <= 100 for line in shown.stdout.splitlines()), shown.stdout
                if line == ["vms"]:
                    header, row = shown.stdout.splitlines()
                    assert header.split()[:4] == ["ID", "NAME", "MAC", "ADDRESS"]
                    assert row.split()[0] == "1" and "52:54:00:12:34:56" in row
            ask_the_gateway()  # captured: the question and the answer, as they pass
            captured = [Ether(bytes(frame))[ARP] for frame in rdpcap(str(tmp_path / "vm1.pcap"))]
            assert [(arp.op, arp.psrc, arp.pdst) for arp in captured[-2:]] == [
                (1, "10.0.2.15", "10.0.2.2"),
                (2, "10.0.2.2", "10.0.2.15"),
            ]

        # The systemd unit's program is the one the quick start installed.
        unit = (ROOT / "docs" / "systemd" / "slirpnet.service").read_text()
        (exec_start,) = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
        program = Path(exec_start.removeprefix("ExecStart=").split()[0].replace("%h", str(home)))
        version = subprocess.run(
            [str(program), "--version"], capture_output=True, text=True, check=True
        )
        # The quick start's apt packages (gcc, python3-dev) give the native build.
    assert version.stdout.startswith("slirpnet ") and "(native: C module and " in version.stdout
