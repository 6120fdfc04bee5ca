"""Network boot, as ``-netdev user,tftp=...,bootfile=...`` users do it, with QEMU's own iPXE.

No ``-kernel``: SeaBIOS runs the virtio NIC's iPXE ROM (``-boot n``), which takes slirpnet's
lease, reads the boot file DHCP names and boots what it says: the test guest's kernel and
initramfs, over TFTP from slirpnet's root, or over HTTP from a loopback server of the
test's own, reached through the gateway address.  The guest then runs its script and
reports on the serial console as every guest test does (integration/guest/init).
slirpnet runs as ``slirpnet serve --tftp DIR --bootfile FILE`` (integration/server.py).
UEFI's own HTTP boot (OVMF) is the third client.
"""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trio
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import UDP
from scapy.utils import rdpcap

from integration.guest import GuestImage
from integration.guest.build import CpioEntry, newc_archive
from integration.guest.qemu import DEFAULT_MAC, QEMU
from integration.server import GUEST_FUNCTIONS, Served, checks, serving

IPXE_ROM = Path("/usr/lib/ipxe/qemu/pxe-virtio.rom")  # Debian's ipxe-qemu
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")  # Debian's ovmf
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
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


def slirpnet_serving(tmp_path: Path, *flags: str) -> AbstractAsyncContextManager[Served]:
    """``slirpnet serve FLAGS`` as a user runs it, on a unix stream socket at
    tmp_path/vm.sock, capturing to tmp_path/default-vm1.pcap; its log at tmp_path/log."""
    listen = ("--listen", f"unix:{tmp_path}/vm.sock", "--pcap", str(tmp_path))
    return serving([*listen, "--control", "none", *flags], tmp_path / "log")


def guest_done(console: str) -> bool:
    return _DONE.search(console) is not None


async def netboot(
    tmp_path: Path,
    *,
    firmware: Sequence[str] = ("-boot", "n"),
    nic: str = "",
    until: Callable[[str], bool] = guest_done,
    timeout: float = 240.0,
) -> tuple[str, float | None]:
    """QEMU booting from its NIC on slirpnet's socket until ``until(console)`` holds: the
    serial console, and the seconds from start until it held (None if it never did).

    ``firmware`` is SeaBIOS's network boot unless said; ``nic`` adds to the NIC's options.
    """
    command = [
        QEMU,
        *("-accel", "tcg", "-m", "256", "-nographic", "-no-reboot", *firmware),
        *("-device", f"virtio-net-pci,netdev=n0,mac={DEFAULT_MAC}{nic}"),
        *("-netdev", f"stream,id=n0,server=off,addr.type=unix,addr.path={tmp_path}/vm.sock"),
    ]
    output = bytearray()
    started = trio.current_time()
    held_at = None

    def console() -> str:
        return output.decode(errors="replace").replace("\r", "")

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
            while not until(console()):
                with trio.move_on_after(0.5):  # ``until`` may hold with nothing printed
                    chunk = await process.stdout.receive_some()
                    if not chunk:
                        break  # QEMU is gone
                    output += chunk
            else:
                held_at = trio.current_time() - started
        nursery.cancel_scope.cancel()
    (tmp_path / "console.txt").write_text(console())
    return console(), held_at


def configuring_seconds(capture: Path) -> tuple[float, float]:
    """From iPXE's first DHCP message to the ACK that ended its DHCP, and to its first
    TFTP request (the end of "Configuring net0"), in the capture."""
    packets = list(rdpcap(str(capture)))
    dhcp = [packet for packet in packets if packet.haslayer(DHCP)]
    kinds: list[int] = [
        next(o[1] for o in packet[DHCP].options if o[0] == "message-type") for packet in dhcp
    ]
    # DISCOVER, OFFER, REQUEST, ACK: one exchange each, nothing waited for in between.
    assert kinds[:4] == [1, 2, 3, 5], kinds
    request = next(p for p in packets if p.haslayer(UDP) and p[UDP].dport == 69)
    start = float(dhcp[0].time)
    return float(dhcp[3].time) - start, float(request.time) - start


def assert_booted(console: str, done: float | None) -> None:
    assert done is not None, console
    assert guest_done(console)
    assert "netboot: script running" in console
    assert checks(console) == {"cmdline": "ok", "ping-gateway": "ok"}, console


async def test_ipxe_boots_a_kernel_over_tftp(guest_image: GuestImage, tmp_path: Path) -> None:
    ipxe_or_skip()
    root = tmp_path / "tftp"
    boot_files(guest_image, root / "guest", SCRIPT)
    (root / "boot.ipxe").write_text(ipxe_script("tftp://10.0.2.2/guest"))
    async with slirpnet_serving(tmp_path, "--tftp", str(root), "--bootfile", "boot.ipxe") as server:
        console, done = await netboot(tmp_path)
    assert_booted(console, done)
    assert "Next server: 10.0.2.2\nFilename: boot.ipxe\n" in console
    sent = re.findall(r"TFTP: sent (\S+), (\d+) bytes", server.stderr())
    files = ["boot.ipxe", "guest/bzImage", "guest/initrd"]
    assert sent == [(name, str((root / name).stat().st_size)) for name in files]
    # iPXE was told not to wait for ProxyDHCP (option 175.176): no 3 s of DHCP; and its
    # IPv6 router solicitation is answered (core/ra.py): no 16 s waiting for one.
    dhcp, configured = configuring_seconds(tmp_path / "default-vm1.pcap")
    assert dhcp < 1.0 and configured < 2.0, (dhcp, configured)


@asynccontextmanager
async def http_server(directory: Path) -> AsyncIterator[tuple[int, list[str]]]:
    """A loopback HTTP server of the test's own on ``directory``: its port, and what it was
    asked for so far (each a path, then the client's User-Agent after a space)."""
    requested: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            # Instead of a line on stderr.
            requested.append(f"{self.path} {self.headers.get('User-Agent')}")

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
        async with slirpnet_serving(tmp_path, "--bootfile", f"{base}/boot.ipxe") as server:
            console, done = await netboot(tmp_path)
    assert_booted(console, done)
    assert f"Filename: {base}/boot.ipxe\n" in console
    assert [line.split()[0] for line in requested] == [
        "/boot.ipxe",
        "/guest/bzImage",
        "/guest/initrd",
    ]
    assert all(line.split()[1].startswith("iPXE/") for line in requested)
    assert "TFTP" not in server.stderr()


async def test_uefi_http_boot_takes_the_offer(tmp_path: Path) -> None:
    """OVMF's own HTTP boot (EDK2's HttpBootDxe, no iPXE) takes only an offer that answers
    its vendor class with option 60 ``HTTPClient`` (UEFI 2.10 §24.7.2), and then fetches the
    boot file.  An offer without it is passed over: the client asks again and again (seen
    while this was built).  Its PXE and IPv6 attempts are switched off through fw_cfg so that
    HTTP over IPv4 comes first; the file fetched is no EFI program, so no further."""
    if shutil.which(QEMU) is None:
        pytest.skip(f"{QEMU} is not installed (Debian package qemu-system-x86)")
    if not (OVMF_CODE.is_file() and OVMF_VARS.is_file()):
        pytest.skip(f"no {OVMF_CODE}: UEFI for QEMU (Debian package ovmf)")
    variables = tmp_path / "vars.fd"
    shutil.copyfile(OVMF_VARS, variables)
    web = tmp_path / "web"
    web.mkdir()
    (web / "boot.efi").write_bytes(b"not a program")
    firmware = [
        *("-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}"),
        *("-drive", f"if=pflash,format=raw,file={variables}"),
        *(
            arg
            for name in ("IPv4PXESupport", "IPv6PXESupport", "IPv6Support")
            for arg in ("-fw_cfg", f"name=opt/org.tianocore/{name},string=n")
        ),
    ]
    async with http_server(web) as (port, requested):
        url = f"http://10.0.2.2:{port}/boot.efi"
        async with slirpnet_serving(tmp_path, "--bootfile", url):
            console, fetched = await netboot(
                tmp_path,
                firmware=firmware,
                nic=",romfile=,bootindex=1",  # OVMF's own virtio-net driver and HTTP boot
                until=lambda _: bool(requested),
                timeout=180,
            )
    assert fetched is not None, console
    assert requested[0] == "/boot.efi UefiHttpBoot/1.0"
    offers = [
        packet[DHCP]
        for packet in rdpcap(str(tmp_path / "default-vm1.pcap"))
        if packet.haslayer(DHCP) and packet[BOOTP].op == 2
    ]
    assert offers
    for offer in offers:
        options: dict[str, object] = dict(o for o in offer.options if isinstance(o, tuple))
        assert options["vendor_class_id"] == b"HTTPClient"
        assert options["boot-file-name"] == url.encode()
