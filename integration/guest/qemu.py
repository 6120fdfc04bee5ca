"""Boot the test guest under QEMU (TCG) with a script of the test's, and read what it printed.

The guest's /init takes a DHCP lease, prints it as a ``LEASE key=value ...`` line, runs the
script as /test.sh, prints ``GUEST-DONE rc=N`` and powers off; see init and udhcpc.sh here.
"""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio

from integration.guest.build import CpioEntry, GuestImage, GuestUnavailableError, newc_archive

QEMU = "qemu-system-x86_64"
DEFAULT_MAC = "52:54:00:12:34:56"
_DONE = re.compile(rb"^GUEST-DONE rc=(\d+)\r?$", re.MULTILINE)
_LEASE = re.compile(r"^LEASE (.*)$", re.MULTILINE)
# After GUEST-DONE the guest only has to power off; QEMU is killed if that takes longer.
_POWEROFF_GRACE = 10.0


@dataclass(frozen=True)
class GuestRun:
    output: str  # the serial console, carriage returns removed
    rc: int | None  # the script's exit status; None when the guest never said GUEST-DONE
    timed_out: bool  # QEMU was killed at the deadline
    seconds: float  # from starting QEMU to its exit
    # udhcpc's names (ip subnet mask router dns mtu domain search ...); lists comma-separated
    lease: dict[str, str] = field(default_factory=dict)


def qemu_command(
    image: GuestImage,
    initrd: Path,
    netdev_args: Sequence[str],
    mac: str = DEFAULT_MAC,
    extra_qemu_args: Sequence[str] = (),
    *,
    nic: bool = True,
    qemu: Sequence[str] = (),
) -> list[str]:
    """The QEMU command line; `netdev_args` must define the netdev ``n0`` the NIC plugs into.

    With ``nic=False`` the harness adds no NIC: `netdev_args` bring their own ``-device``
    (and QEMU's default MAC), as with arguments copied from slirpnet's output.  ``qemu``
    runs another QEMU than the system's (``newqemu.reconnecting_qemu``).
    """
    if not qemu:
        system = shutil.which(QEMU)
        if system is None:
            raise GuestUnavailableError(f"{QEMU} is not on PATH (Debian package qemu-system-x86)")
        qemu = [system]
    return [
        *qemu,
        # KVM hangs on these machines, and TCG boots this guest in a few seconds anyway.
        *("-accel", "tcg", "-m", "256"),
        *("-nographic", "-no-reboot"),
        *("-kernel", str(image.kernel), "-initrd", str(initrd)),
        # panic=-1 turns a crashed or exited /init into a reboot, which -no-reboot makes an exit.
        *("-append", "console=ttyS0 quiet panic=-1"),
        # romfile= skips the iPXE option ROM, which only slows the boot down.
        *(
            ("-device", f"virtio-net-pci,netdev=n0,mac={mac},romfile=")
            if nic
            else ("-global", "virtio-net-pci.romfile=")
        ),
        *netdev_args,
        *extra_qemu_args,
    ]


async def boot_async(
    image: GuestImage,
    netdev_args: Sequence[str],
    script: str = "",
    timeout: float = 60.0,
    *,
    mac: str = DEFAULT_MAC,
    extra_qemu_args: Sequence[str] = (),
    nic: bool = True,
    files: Mapping[str, bytes] | None = None,
    qemu: Sequence[str] = (),
) -> GuestRun:
    """Boot the guest, run `script` in it with busybox sh, and return when it powers off.

    ``files`` are more executables for the guest, by absolute path.  QEMU is killed once
    `timeout` seconds have passed, or when this task is cancelled.
    """
    with tempfile.TemporaryDirectory(prefix="slirpnet-guest-") as tmp:
        initrd = Path(tmp) / "initrd.cpio"
        # The kernel unpacks concatenated archives in turn, so /test.sh lands on top of the base.
        extra = [CpioEntry("/test.sh", stat.S_IFREG | 0o755, script.encode())]
        extra += [CpioEntry(p, stat.S_IFREG | 0o755, data) for p, data in (files or {}).items()]
        initrd.write_bytes(image.initramfs.read_bytes() + newc_archive(extra))
        command = qemu_command(image, initrd, netdev_args, mac, extra_qemu_args, nic=nic, qemu=qemu)
        started = trio.current_time()
        output = bytearray()
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
            with trio.move_on_after(timeout) as deadline:
                while not _DONE.search(output):
                    chunk = await process.stdout.receive_some()
                    if not chunk:
                        break
                    output += chunk
                with trio.move_on_after(_POWEROFF_GRACE):
                    await process.wait()
            # run_process stops QEMU if it is still running (SIGTERM, then SIGKILL).
            nursery.cancel_scope.cancel()
    return _parse(bytes(output), deadline.cancelled_caught, trio.current_time() - started)


def boot(
    image: GuestImage,
    netdev_args: Sequence[str],
    script: str = "",
    timeout: float = 60.0,
    *,
    mac: str = DEFAULT_MAC,
    extra_qemu_args: Sequence[str] = (),
) -> GuestRun:
    """boot_async() for code that is not running under trio."""
    return trio.run(
        lambda: boot_async(
            image, netdev_args, script, timeout, mac=mac, extra_qemu_args=extra_qemu_args
        )
    )


def _parse(raw: bytes, timed_out: bool, seconds: float) -> GuestRun:
    done = _DONE.search(raw)
    text = raw.decode(errors="replace").replace("\r", "")
    leases = _LEASE.findall(text)
    # A script that runs udhcpc again prints another LEASE line; the last one is in force.
    pairs = [item.partition("=") for item in leases[-1].split()] if leases else []
    return GuestRun(
        output=text,
        rc=int(done.group(1)) if done else None,
        timed_out=timed_out,
        seconds=seconds,
        lease={key: value for key, _, value in pairs},
    )
