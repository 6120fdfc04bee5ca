"""Build the test guest: Debian's kernel plus a busybox initramfs, cached per kernel package.

The kernel and busybox-static are fetched with `apt-get download` and unpacked with dpkg-deb:
nothing is installed on the host and no root is needed.  The initramfs is a newc cpio written
here in Python, holding busybox, the virtio-net modules, /init and /udhcpc.sh.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import shutil
import stat
import struct
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# The virtio-net driver stack of Debian's kernel, in insmod (dependency) order.
MODULES = (
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
)

_HERE = Path(__file__).resolve().parent
_INIT = _HERE / "init"
_UDHCPC_SCRIPT = _HERE / "udhcpc.sh"
_APT_LISTS = Path("/var/lib/apt/lists")
# Bumped when the archive's layout changes in a way the hashed inputs do not show.
_LAYOUT = b"1"


class GuestUnavailableError(RuntimeError):
    """A tool or package the guest needs is absent from this machine; tests skip on it."""


class GuestBuildError(RuntimeError):
    """The tools are present but building the guest failed; tests error on it."""


@dataclass(frozen=True)
class GuestImage:
    kernel: Path  # an uncompressed ELF kernel where it can boot by PVH, else the bzImage
    initramfs: Path


@dataclass(frozen=True)
class CpioEntry:
    name: str
    mode: int  # st_mode, type bits included
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def default_cache_dir() -> Path:
    override = os.environ.get("SLIRPNET_GUEST_CACHE")
    return Path(override) if override else Path.home() / ".cache" / "slirpnet-guest"


def build_image(cache_dir: Path) -> GuestImage:
    """Return the guest's kernel and base initramfs, building them on the first call.

    Raises GuestUnavailableError when apt or the packages are missing, GuestBuildError otherwise.
    """
    _require_tools("apt-cache", "apt-get", "dpkg-deb")
    kernel_package = debian_kernel_package(cache_dir)
    parts = cache_dir / kernel_package
    if not (parts / "kernel").is_file():
        _fetch_parts(kernel_package, cache_dir, parts)
    return GuestImage(kernel=parts / "kernel", initramfs=_initramfs(parts))


def newc_archive(entries: Iterable[CpioEntry]) -> bytes:
    """A newc ("070701") cpio archive with its trailer, as the kernel unpacks it."""
    out = bytearray()
    for ino, entry in enumerate([*entries, CpioEntry("TRAILER!!!", 0)], start=1):
        # Member names are relative to the root the kernel unpacks into.
        name = entry.name.lstrip("/").encode() + b"\0"
        nlink = 2 if stat.S_ISDIR(entry.mode) else 1
        fields = (ino, entry.mode, 0, 0, nlink, 0, len(entry.data), 0, 0, *entry.rdev, len(name), 0)
        out += b"070701" + b"".join(b"%08X" % field for field in fields) + name
        out += bytes(-len(out) % 4) + entry.data
        out += bytes(-len(out) % 4)
    return bytes(out)


def _require_tools(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise GuestUnavailableError(
            f"not on PATH: {', '.join(missing)} (the guest needs Debian's apt)"
        )


def _run(argv: list[str], cwd: Path | None = None) -> str:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise GuestBuildError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result.stdout


def debian_kernel_package(cache_dir: Path) -> str:
    """The package linux-image-amd64 depends on, remembered until apt's lists change.

    apt-cache takes a second or two where apt keeps no binary cache (Debian's container images),
    which would make every cached build_image() call slow.
    """
    lists = sorted((path.name, path.stat().st_mtime_ns) for path in _APT_LISTS.glob("*Packages*"))
    memo = cache_dir / f"kernel-package-{hashlib.sha256(repr(lists).encode()).hexdigest()[:16]}"
    if memo.is_file():
        return memo.read_text()
    for line in _run(["apt-cache", "depends", "linux-image-amd64"]).splitlines():
        kind, _, name = line.strip().partition(": ")
        if kind == "Depends" and name.startswith("linux-image-"):
            cache_dir.mkdir(parents=True, exist_ok=True)
            memo.write_text(name)
            return name
    raise GuestUnavailableError("apt knows no linux-image-amd64 kernel (run apt-get update?)")


def _fetch_parts(kernel_package: str, cache_dir: Path, parts: Path) -> None:
    """Download and unpack the packages, keep the kernel, modules and busybox in `parts`."""
    if subprocess.run(
        ["apt-cache", "show", "busybox-static"], capture_output=True, check=False
    ).returncode:
        raise GuestUnavailableError("apt knows no busybox-static package")
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        work = Path(tmp)
        # apt's download sandbox user must be able to write here when we run as root.
        work.chmod(0o777)
        _run(["apt-get", "download", kernel_package, "busybox-static"], cwd=work)
        root = work / "root"
        for deb in work.glob("*.deb"):
            _run(["dpkg-deb", "-x", str(deb), str(root)])
        staged = work / "parts"
        (staged / "modules").mkdir(parents=True)
        bzimage = _one(root, "boot/vmlinuz-*").read_bytes()
        config = _one(root, "boot/config-*").read_text()
        (staged / "kernel").write_bytes(pvh_kernel(bzimage, config) or bzimage)
        shutil.copyfile(root / "bin" / "busybox", staged / "busybox")
        _stage_modules(root, staged / "modules")
        try:
            staged.rename(parts)
        except OSError:
            # Another process finished the same build first; its copy is as good as ours.
            if not (parts / "kernel").is_file():
                raise


def pvh_kernel(bzimage: bytes, config: str) -> bytes | None:
    """The bzImage's ELF kernel, which QEMU starts at its PVH entry; None where that won't do.

    Under TCG the bzImage decompressing itself takes half the boot (about 3.5 of 6.5 s).
    """
    if "\nCONFIG_PVH=y\n" not in config:
        return None
    # The x86 boot protocol header locates the compressed payload.
    setup_sectors = bzimage[0x1F1] or 4
    offset, length = struct.unpack_from("<II", bzimage, 0x248)
    start = (setup_sectors + 1) * 512 + offset
    payload = bzimage[start : start + length]
    if not payload.startswith(b"\xfd7zXZ\x00"):
        return None
    return lzma.LZMADecompressor().decompress(payload)


def _stage_modules(root: Path, dest: Path) -> None:
    # bookworm ships modules in /lib/modules, later releases in /usr/lib/modules.
    moddir = _one(root, "**/lib/modules/*/modules.builtin").parent
    builtin = {Path(line).name.split(".ko")[0] for line in (moddir / "modules.builtin").open()}
    found = {path.name.split(".ko")[0]: path for path in moddir.rglob("*.ko*")}
    for index, name in enumerate(MODULES):
        if name in builtin:
            continue
        if name not in found:
            raise GuestBuildError(f"module {name} is neither in {moddir} nor built in")
        # busybox 1.35's insmod reads no .ko.zst (and .xz/.gz only after a noisy failed
        # finit_module), so every module goes in plain.
        (dest / f"{index:02d}-{name}.ko").write_bytes(decompressed_module(found[name]))


def _one(root: Path, pattern: str) -> Path:
    matches = list(root.glob(pattern))
    if len(matches) != 1:
        raise GuestBuildError(f"expected one {pattern} in the unpacked packages, got {matches}")
    return matches[0]


def decompressed_module(module: Path) -> bytes:
    if module.suffix == ".xz":
        return lzma.decompress(module.read_bytes())
    if module.suffix == ".gz":
        return gzip.decompress(module.read_bytes())
    if module.suffix == ".zst":
        _require_tools("zstd")
        return subprocess.run(["zstd", "-dc", str(module)], capture_output=True, check=True).stdout
    return module.read_bytes()


def _initramfs(parts: Path) -> Path:
    """The base initramfs for `parts`, named by a digest of its inputs so edits rebuild it."""
    files = [
        (f"/modules/{module.name}", module.read_bytes(), 0o644)
        for module in sorted((parts / "modules").iterdir())
    ]
    files += [
        ("/bin/busybox", (parts / "busybox").read_bytes(), 0o755),
        ("/init", _INIT.read_bytes(), 0o755),
        ("/udhcpc.sh", _UDHCPC_SCRIPT.read_bytes(), 0o755),
    ]
    digest = hashlib.sha256(_LAYOUT)
    for name, data, _ in files:
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    path = parts / f"initramfs-{digest.hexdigest()[:16]}.cpio"
    if path.is_file():
        return path

    dirs = ["/bin", "/sbin", "/usr", "/usr/bin", "/usr/sbin", "/dev", "/proc", "/sys", "/etc"]
    dirs += ["/tmp", "/modules"]
    entries = [CpioEntry(name, stat.S_IFDIR | 0o755) for name in dirs]
    entries.append(CpioEntry("/bin/sh", stat.S_IFLNK | 0o777, b"busybox"))
    # The kernel opens /dev/console for init before init can mount devtmpfs.
    entries.append(CpioEntry("/dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)))
    entries += [CpioEntry(name, stat.S_IFREG | perm, data) for name, data, perm in files]
    staging = path.with_suffix(f".{os.getpid()}.tmp")
    staging.write_bytes(newc_archive(entries))
    staging.replace(path)
    return path
