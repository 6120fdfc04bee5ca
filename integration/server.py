"""slirpnet as its users run it, for the integration tests, and what the guest scripts share.

``async with serving(["--listen", f"unix:{path}", ...], log) as server`` runs
``python -m slirpnet serve ...`` in a subprocess and enters once it has printed its QEMU
arguments, which it does only after every listener is bound; leaving stops it with SIGTERM.
"""

from __future__ import annotations

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
) -> AsyncIterator[Served]:
    """``slirpnet serve ARGS``, entered once it has printed ``lines`` lines of QEMU arguments."""
    with log.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [*SLIRPNET, "serve", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
            cwd=cwd,
        )
    server = Served(process, [], log)
    try:
        assert process.stdout is not None
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


def free_tcp_port() -> int:
    """A port of 127.0.0.1 that nobody listened on a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
