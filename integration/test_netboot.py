"""Network boot, as ``-netdev user,tftp=...,bootfile=...`` users do it, with QEMU's own iPXE.

No ``-kernel``: SeaBIOS runs the virtio NIC's iPXE ROM (``-boot n``), which takes slirpnet's
lease, reads the boot file DHCP names and boots what it says: the test guest's kernel and
initramfs, over TFTP from slirpnet's root, or over HTTP from a loopback server of the
test's own, reached through the gateway address.  The guest then runs its script and
reports on the serial console as every guest test does (integration/guest/init).
"""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trio
from scapy.layers.dhcp import DHCP
from scapy.utils import rdpcap

from integration.guest import GuestImage
from integration.guest.build import CpioEntry, newc_archive
from integration.guest.qemu import DEFAULT_MAC, QEMU
from integration.server import GUEST_FUNCTIONS, checks
from slirpnet.config import Address, NamespaceConfig, ServerConfig
from slirpnet.core.settings import NetworkSettings
from slirpnet.shell.runtime import NamespaceRuntime
from slirpnet.shell.server import run_server

IPXE_ROM = Path("/usr/lib/ipxe/qemu/pxe-virtio.rom")  # Debian's ipxe-qemu
_DONE = re.compile(r"^GUEST-DONE rc=(\d+)$", re.MULTILINE)
# What the netbooted guest runs: it got here over the network, and says so.
SCRIPT = GUEST_FUNCTIONS + (
    "check cmdline grep -q netbooted /proc/cmdline\ncheck ping-gateway ping -c 1 -W 5 10.0.2.2\n"
)


def ipxe_or_skip() -> None:
    if shutil.which(QEMU) is None:
        pytest.skip(f"{QEMU} is not installed (Debian package qemu-system-x86)")
    if not IPXE_ROM.is_file():
        pytest.skip(f"no {IPXE_ROM}: QEMU's iPXE ROMs (Debian package ipxe-qemu)")


def boot_files(image: GuestImage, directory: Path, script: str) -> None:
    """The guest's kernel, and its initramfs with ``script`` as /test.sh, into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(image.bzimage, directory / "bzImage")
    test = newc_archive([CpioEntry("/test.sh", stat.S_IFREG | 0o755, script.encode())])
    (directory / "initrd").write_bytes(image.initramfs.read_bytes() + test)


def ipxe_script(base: str) -> str:
    """An iPXE script that boots the kernel and initramfs found at ``base``."""
    return (
        "#!ipxe\n"
        "echo netboot: script running\n"
        f"kernel {base}/bzImage console=ttyS0 quiet panic=-1 netbooted\n"
        f"initrd {base}/initrd\n"
        "boot\n"
    )


@asynccontextmanager
async def slirpnet_serving(
    tmp_path: Path, settings: NetworkSettings
) -> AsyncIterator[list[NamespaceRuntime]]:
    """slirpnet's server, in this process, on a unix stream socket at tmp_path/vm.sock."""
    listen = Address("unix", path=str(tmp_path / "vm.sock"))
    config = ServerConfig(
        (NamespaceConfig("default", settings, listen=(listen,)),), pcap_dir=tmp_path
    )
    async with trio.open_nursery() as nursery:
        runtimes: list[NamespaceRuntime] = await nursery.start(run_server, config)
        yield runtimes
        nursery.cancel_scope.cancel()


async def netboot(tmp_path: Path, timeout: float = 240.0) -> tuple[str, float | None]:
    """QEMU booting from its NIC on slirpnet's socket: the serial console, and when
    (seconds after start) the guest's /init said GUEST-DONE, if it did."""
    command = [
        QEMU,
        *("-accel", "tcg", "-m", "256", "-nographic", "-no-reboot", "-boot", "n"),
        *("-device", f"virtio-net-pci,netdev=n0,mac={DEFAULT_MAC}"),
        *("-netdev", f"stream,id=n0,server=off,addr.type=unix,addr.path={tmp_path}/vm.sock"),
    ]
    output = bytearray()
    started = trio.current_time()
    done_at = None
    async with trio.open_nursery() as nursery:
        run = partial(
            trio.run_process,
            command,
            check=False,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        process: trio.Process = await nursery.start(run)
        assert process.stdout is not None
        with trio.move_on_after(timeout):
            while not _DONE.search(output.decode(errors="replace").replace("\r", "")):
                chunk = await process.stdout.receive_some()
                if not chunk:
                    break
                output += chunk
            done_at = trio.current_time() - started
        nursery.cancel_scope.cancel()
    text = output.decode(errors="replace").replace("\r", "")
    (tmp_path / "console.txt").write_text(text)
    return text, done_at if _DONE.search(text) else None


def dhcp_seconds(capture: Path) -> float:
    """From iPXE's first DHCP message to the ACK that ended its DHCP, in the capture."""
    packets = [packet for packet in rdpcap(str(capture)) if packet.haslayer(DHCP)]
    kinds: list[int] = [
        next(o[1] for o in packet[DHCP].options if o[0] == "message-type") for packet in packets
    ]
    # DISCOVER, OFFER, REQUEST, ACK: one exchange each, nothing waited for in between.
    assert kinds[:4] == [1, 2, 3, 5], kinds
    return float(packets[3].time) - float(packets[0].time)


def assert_booted(console: str, done: float | None) -> None:
    assert done is not None, console
    assert "netboot: script running" in console
    assert checks(console) == {"cmdline": "ok", "ping-gateway": "ok"}, console


async def test_ipxe_boots_a_kernel_over_tftp(guest_image: GuestImage, tmp_path: Path) -> None:
    ipxe_or_skip()
    root = tmp_path / "tftp"
    boot_files(guest_image, root / "guest", SCRIPT)
    (root / "boot.ipxe").write_text(ipxe_script("tftp://10.0.2.2/guest"))
    settings = NetworkSettings(tftp_root=str(root), bootfile="boot.ipxe")
    async with slirpnet_serving(tmp_path, settings) as runtimes:
        console, done = await netboot(tmp_path)
        stats = runtimes[0].segment.totals()
    assert_booted(console, done)
    assert "Next server: 10.0.2.2\nFilename: boot.ipxe\n" in console
    assert stats.events["tftp_transfer_done"] == 3  # the script, the kernel, the initramfs
    # iPXE was told not to wait for ProxyDHCP (option 175.176): no 3 s of DHCP.
    assert dhcp_seconds(tmp_path / "default-vm1.pcap") < 1.0


@asynccontextmanager
async def http_server(directory: Path) -> AsyncIterator[tuple[int, list[str]]]:
    """A loopback HTTP server of the test's own on ``directory``: its port, and the paths
    asked for so far."""
    requested: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            requested.append(self.path)  # instead of a line on stderr

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], requested
    finally:
        server.shutdown()
        server.server_close()


async def test_ipxe_chains_a_script_over_http(guest_image: GuestImage, tmp_path: Path) -> None:
    """The boot file is a URL (as ``bootfile=http://...`` with libslirp): iPXE fetches it,
    and the kernel and initramfs it names, over HTTP from the host through the gateway."""
    ipxe_or_skip()
    web = tmp_path / "web"
    boot_files(guest_image, web / "guest", SCRIPT)
    async with http_server(web) as (port, requested):
        base = f"http://10.0.2.2:{port}"
        (web / "boot.ipxe").write_text(ipxe_script(f"{base}/guest"))
        settings = NetworkSettings(bootfile=f"{base}/boot.ipxe")
        async with slirpnet_serving(tmp_path, settings) as runtimes:
            console, done = await netboot(tmp_path)
            stats = runtimes[0].segment.totals()
    assert_booted(console, done)
    assert f"Filename: {base}/boot.ipxe\n" in console
    assert requested == ["/boot.ipxe", "/guest/bzImage", "/guest/initrd"]
    assert stats.events["tftp_transfer"] == 0
