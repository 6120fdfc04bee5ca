"""Boot the Debian guest under QEMU (TCG) with a test script, and read what it reported.

The script goes in on a second disk made for the run (``/dev/vdb``, ext4 from
``mkfs.ext4 -d``), so the cached root image is never rebuilt for it and never written (QEMU's
``snapshot=on``).  The guest's slirpnet-test.service runs it once the network is online,
with its output on the second serial port, which QEMU writes to a file; the first serial
port, the console (kernel, systemd, the login prompt), is QEMU's stdout.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio

from integration.debian.build import DebianImage, make_ext4
from integration.guest.build import GuestUnavailableError

QEMU = "qemu-system-x86_64"
DEFAULT_MAC = "52:54:00:12:34:56"
# After SLIRPNET-DONE the guest powers off at once (sysrq); QEMU is killed if it does not.
_POWEROFF_GRACE = 5.0
_POLL = 0.25
_DONE = re.compile(rb"^SLIRPNET-DONE rc=(\d+)", re.MULTILINE)
_START = re.compile(r"^SLIRPNET-START uptime=([\d.]+)$", re.MULTILINE)
_RESULT = re.compile(r"^RESULT (\S+) (ok|fail) ?(.*)$", re.MULTILINE)

# Shell functions every script can use (it runs under Debian's sh, dash, as root).
SCRIPT_FUNCTIONS = r"""
# result NAME ok|fail DETAIL...: one line for the host.
result() {
    name=$1; status=$2; shift 2
    echo "RESULT $name $status $*"
}
# check NAME COMMAND...: run COMMAND and show its output ("| " before each line, so that it
# cannot pass for a result); report ok with its last line as the detail, or fail with its
# exit status and last line.
check() {
    name=$1; shift
    out=$("$@" 2>&1)
    rc=$?
    [ -n "$out" ] && printf '%s\n' "$out" | sed 's/^/| /'
    last=$(printf '%s\n' "$out" | grep -v '^[[:space:]]*$' | tail -n 1)
    if [ "$rc" -eq 0 ]; then result "$name" ok "$last"; else result "$name" fail "rc=$rc $last"; fi
}
"""


@dataclass(frozen=True)
class Result:
    ok: bool
    detail: str  # check's: the command's last line of output (after "rc=N " on a failure)


@dataclass(frozen=True)
class DebianRun:
    results: dict[str, Result]  # by name; a name reported twice keeps its last result
    output: str  # everything the script printed (the second serial port)
    console: str  # the serial console: kernel, systemd, getty; carriage returns removed
    rc: int | None  # the script's exit status; None when it never finished
    timed_out: bool  # QEMU was killed at the deadline
    seconds: float  # from starting QEMU to its exit
    boot_seconds: float | None  # the guest's uptime when the script started

    def report(self) -> str:
        """The script's output and the console, for an assertion's message."""
        return f"--- script output ---\n{self.output}\n--- console ---\n{self.console}"


def qemu_command(
    image: DebianImage,
    script_disk: Path,
    report: Path,
    netdev_args: Sequence[str],
    mac: str = DEFAULT_MAC,
    extra_qemu_args: Sequence[str] = (),
    *,
    memory_mib: int = 512,
) -> list[str]:
    """The QEMU command line; `netdev_args` must define the netdev ``n0`` the NIC plugs into."""
    qemu = shutil.which(QEMU)
    if qemu is None:
        raise GuestUnavailableError(f"{QEMU} is not on PATH (Debian package qemu-system-x86)")
    return [
        qemu,
        # KVM hangs on these machines (docs: the guest recipes in DESIGN.md).
        *("-accel", "tcg", "-m", str(memory_mib), "-nodefaults", "-display", "none"),
        "-no-reboot",
        *("-kernel", str(image.kernel), "-initrd", str(image.initramfs)),
        # panic=-1 turns a crashed init into a reboot, which -no-reboot makes an exit.
        *("-append", "console=ttyS0 panic=-1 quiet"),
        # vda, then vdb: virtio disks are named in the order their devices are probed.
        *("-drive", f"file={image.rootfs},format=raw,if=virtio,snapshot=on"),
        *("-drive", f"file={script_disk},format=raw,if=virtio,readonly=on"),
        # romfile= skips the iPXE option ROM, which only slows the boot down.
        *("-device", f"virtio-net-pci,netdev=n0,mac={mac},romfile="),
        *("-serial", "stdio", "-serial", f"file:{report}"),
        *netdev_args,
        *extra_qemu_args,
    ]


async def boot_async(
    image: DebianImage,
    netdev_args: Sequence[str],
    script: str,
    timeout: float = 180.0,
    *,
    mac: str = DEFAULT_MAC,
    files: Mapping[str, bytes] | None = None,
    extra_qemu_args: Sequence[str] = (),
) -> DebianRun:
    """Boot the guest, run `script` (after SCRIPT_FUNCTIONS) with sh once its network is
    online, and return when it powers off.

    ``files`` go beside the script (in its working directory), by relative path.  QEMU is
    killed once `timeout` seconds have passed, or when this task is cancelled.
    """
    with tempfile.TemporaryDirectory(prefix="slirpnet-debian-") as tmp:
        work = Path(tmp)
        content = work / "script"
        content.mkdir()
        (content / "test.sh").write_text(SCRIPT_FUNCTIONS + script)
        for name, data in (files or {}).items():
            path = content / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            path.chmod(0o755)
        disk = work / "script.ext4"
        make_ext4(content, disk, spare=4 << 20)
        report = work / "report.log"
        report.touch()
        command = qemu_command(image, disk, report, netdev_args, mac, extra_qemu_args)
        started = trio.current_time()
        console = bytearray()
        async with trio.open_nursery() as nursery:
            run_qemu = partial(
                trio.run_process,
                command,
                check=False,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            process: trio.Process = await nursery.start(run_qemu)
            assert process.stdout is not None
            nursery.start_soon(_collect, process.stdout, console)
            with trio.move_on_after(timeout) as deadline:
                while process.returncode is None and not _DONE.search(report.read_bytes()):
                    await trio.sleep(_POLL)
                with trio.move_on_after(_POWEROFF_GRACE):
                    await process.wait()
            # run_process stops QEMU if it is still running (SIGTERM, then SIGKILL).
            nursery.cancel_scope.cancel()
        return _parse(
            report.read_bytes(),
            bytes(console),
            deadline.cancelled_caught,
            trio.current_time() - started,
        )


def boot(
    image: DebianImage,
    netdev_args: Sequence[str],
    script: str,
    timeout: float = 180.0,
    *,
    mac: str = DEFAULT_MAC,
    files: Mapping[str, bytes] | None = None,
    extra_qemu_args: Sequence[str] = (),
) -> DebianRun:
    """boot_async() for code that is not running under trio."""
    return trio.run(
        lambda: boot_async(
            image,
            netdev_args,
            script,
            timeout,
            mac=mac,
            files=files,
            extra_qemu_args=extra_qemu_args,
        )
    )


async def _collect(stream: trio.abc.ReceiveStream, into: bytearray) -> None:
    while chunk := await stream.receive_some():
        into += chunk


def _parse(report: bytes, console: bytes, timed_out: bool, seconds: float) -> DebianRun:
    done = _DONE.search(report)
    output = report.decode(errors="replace").replace("\r", "")
    start = _START.search(output)
    return DebianRun(
        results={
            name: Result(status == "ok", detail.strip())
            for name, status, detail in _RESULT.findall(output)
        },
        output=output,
        console=console.decode(errors="replace").replace("\r", ""),
        rc=int(done[1]) if done else None,
        timed_out=timed_out,
        seconds=seconds,
        boot_seconds=float(start[1]) if start else None,
    )
