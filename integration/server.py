"""slirpnet as its users run it, for the integration tests, and what the guest scripts share.

``async with serving(["--listen", f"unix:{path}", ...], log) as server`` runs
``python -m slirpnet serve ...`` in a subprocess and enters once it has printed its QEMU
arguments, which it does only after every listener is bound; leaving stops it with SIGTERM.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

SLIRPNET = (sys.executable, "-m", "slirpnet")
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
_LINE = re.compile(r"^(\S+): qemu-system-x86_64 \.\.\. (.*)$")

# Shell functions for guest scripts.  ``check NAME COMMAND...`` runs the command and prints
# ``CHECK NAME ok`` or ``CHECK NAME failed RC``; checks() reads them back on the host.
GUEST_FUNCTIONS = """
check() {
    name=$1; shift
    if "$@"; then echo "CHECK $name ok"; else echo "CHECK $name failed $?"; fi
}
"""
_CHECK = re.compile(r"^CHECK (\S+) (ok|failed \d+)$", re.MULTILINE)


def checks(output: str) -> dict[str, str]:
    """The guest's ``check`` results by name: "ok" or "failed RC"."""
    return dict(_CHECK.findall(output))


# What every transport must carry, checked against integration/services.py's servers.
RECORDS = {"www.slirpnet.test": "192.0.2.10"}  # an answer only: nobody ever sends there
BLOB = bytes(range(256)) * 80  # 20480 bytes: 41 TFTP blocks of 512, 2 of 16384


def network_script(tftp_port: int, *, large_udp: bool = True) -> str:
    """Ping the gateway, resolve names, fetch BLOB over UDP; each step prints a CHECK line.

    ``large_udp`` fetches it again in 16 KiB datagrams, which needs an MTU above that.
    """
    script = GUEST_FUNCTIONS + (
        "check ping-gateway ping -c 2 -W 5 10.0.2.2\n"
        "check resolve nslookup www.slirpnet.test\n"
        # NXDOMAIN makes nslookup fail; the test reads its message.
        "nslookup missing.slirpnet.test\n"
        "check host-name nslookup host.slirpnet.internal\n"
        f"check udp tftp -g -r blob -l /tmp/blob 10.0.2.2 {tftp_port}\n"
        "md5sum /tmp/blob\n"
    )
    if large_udp:
        script += (
            f"check udp-large tftp -b 16384 -g -r blob -l /tmp/blob16 10.0.2.2 {tftp_port}\n"
            "md5sum /tmp/blob16\n"
        )
    return script


def assert_network_works(output: str, *, large_udp: bool = True) -> None:
    names = ["ping-gateway", "resolve", "host-name", "udp"] + ["udp-large"] * large_udp
    assert {name: checks(output).get(name) for name in names} == dict.fromkeys(names, "ok"), output
    assert "Name:\twww.slirpnet.test\nAddress: 192.0.2.10\n" in output
    assert "** server can't find missing.slirpnet.test: NXDOMAIN" in output
    assert "Name:\thost.slirpnet.internal\nAddress: 10.0.2.2\n" in output
    digest = hashlib.md5(BLOB).hexdigest()
    assert f"{digest}  /tmp/blob\n" in output
    if large_udp:
        assert f"{digest}  /tmp/blob16\n" in output


def pacing(tftp_port: int) -> str:
    """Shell functions: ``mark NAME`` leaves a mark on the loopback TFTP server of the test;
    ``wait_for NAME`` waits (up to a minute) until someone has left it."""
    return GUEST_FUNCTIONS + (
        f'mark() {{ tftp -g -r "mark:$1" -l /tmp/marks 10.0.2.2 {tftp_port}; }}\n'
        "wait_for() {\n"
        "    for i in $(seq 120); do\n"
        '        mark "" && grep -qx "$1" /tmp/marks && return 0\n'
        "        sleep 0.5\n"
        "    done\n"
        "    return 1\n"
        "}\n"
    )


@dataclass
class Served:
    process: trio.Process
    lines: list[str]  # what slirpnet printed: "NAMESPACE: qemu-system-x86_64 ... ARGS"
    log: Path  # its stderr

    def qemu_args(self, line: int = 0) -> list[str]:
        """The arguments printed on ``line``, split as a shell would."""
        match = _LINE.match(self.lines[line])
        assert match, self.lines[line]
        return shlex.split(match.group(2))

    def netdev(self, line: int = 0) -> list[str]:
        """The printed ``-netdev``, named ``n0`` for the guest harness's NIC."""
        option, value = self.qemu_args(line)[:2]
        assert option == "-netdev"
        return [option, value.replace("id=net0,", "id=n0,", 1)]

    def namespace(self, line: int = 0) -> str:
        match = _LINE.match(self.lines[line])
        assert match
        return match.group(1)

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def assert_clean_exit(self) -> None:
        """After ``serving``: SIGTERM stopped it with status 0 and nothing went wrong on the way."""
        assert self.process.returncode == 0, self.stderr()
        assert "Traceback" not in self.stderr(), self.stderr()

    async def stop(self, signum: int = signal.SIGTERM) -> int:
        """Send ``signum`` and return the exit status."""
        self.process.send_signal(signum)
        with trio.fail_after(STOP_TIMEOUT):
            return await self.process.wait()


@asynccontextmanager
async def serving(
    args: Sequence[str],
    log: Path,
    *,
    lines: int = 1,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    wrapper: Sequence[str] = (),
) -> AsyncIterator[Served]:
    """``slirpnet serve ARGS``, entered once it has printed ``lines`` lines of QEMU arguments.

    ``wrapper`` runs it, as ``prlimit --nofile=64`` does (it must exec the command, so
    that the process is slirpnet's).
    """
    with log.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [*wrapper, *SLIRPNET, "serve", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
            cwd=cwd,
        )
    assert process.stdout is not None
    server = Served(process, [], log)
    try:
        received = b""
        with trio.move_on_after(READY_TIMEOUT):
            while received.count(b"\n") < lines:
                chunk = await process.stdout.receive_some()
                if not chunk:
                    break
                received += chunk
        server.lines = received.decode().splitlines()
        if len(server.lines) < lines:
            raise AssertionError(
                f"slirpnet printed {server.lines} and exited {process.returncode}:\n"
                + server.stderr()
            )
        yield server
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            with trio.move_on_after(STOP_TIMEOUT):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
        await process.stdout.aclose()


def free_tcp_port() -> int:
    """A port of 127.0.0.1 that nobody listened on a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def free_udp_port() -> int:
    """A port of 127.0.0.1 where nobody received UDP a moment ago: the kernel refuses there."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
