"""Build the Debian guest: a debootstrapped bookworm in an ext4 image, Debian's kernel, and a
busybox initramfs that mounts the image and starts its systemd.

The tree comes from the host's Debian mirror (the one apt uses) and goes into the image with
``mkfs.ext4 -d``: no loop device, no mount.  It gets no kernel modules: the initramfs loads
the disk, NIC and ext4 drivers (and what they depend on) from the kernel package, which is
the one the busybox guest boots (integration/guest/build.py), fetched with ``apt-get
download``.  Both are cached under the busybox guest's cache directory, in ``debian/``,
named by a digest of their inputs, so a second run builds nothing.

What makes the tree this guest is in tree/, copied over it: the hostname (debguest), the
systemd-networkd .network file (DHCP, defaults otherwise), the test unit and its runner.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from integration.containers import debian_mirror
from integration.guest.build import (
    CpioEntry,
    GuestBuildError,
    GuestUnavailableError,
    debian_kernel_package,
    decompressed_module,
    default_cache_dir,
    newc_archive,
    pvh_kernel,
)

SUITE = "bookworm"
# What the tests use, and what a stock Debian guest boots with: udev (systemd-networkd
# manages only links udev has seen) and dbus (resolvectl, hostnamectl and networkd's
# hostname go through it).
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "systemd-resolved",
    "udev",
    "dbus",
    "openssh-server",
    "curl",
    "iproute2",
    "bind9-dnsutils",
    "iputils-ping",
)
# The drivers the initramfs loads; their dependencies are found in the modules themselves.
# crc32c_generic: ext4 needs a crc32c for its checksums, a soft dependency (no depends=);
# autofs4: systemd's automount points (binfmt_misc), or it warns at every boot.
MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "crc32c_generic", "ext4", "autofs4")
# Bumped when the image is made differently in a way the hashed inputs do not show.
BUILDER_VERSION = "1"

_HERE = Path(__file__).resolve().parent
_TREE = _HERE / "tree"  # copied over the debootstrapped root as it is
_INIT = _HERE / "init"
_UNITS = ("systemd-networkd.service", "systemd-resolved.service", "slirpnet-test.service")
_DEBOOTSTRAP_TIMEOUT = 1800.0
_DEPENDS = re.compile(rb"(?:^|\0)depends=([^\0]*)\0")


@dataclass(frozen=True)
class DebianImage:
    kernel: Path  # an uncompressed ELF kernel where it can boot by PVH, else the bzImage
    initramfs: Path
    rootfs: Path  # raw ext4; boots use it read-only (QEMU's snapshot=on)


def default_debian_cache_dir() -> Path:
    return default_cache_dir() / "debian"


def build_image(cache_dir: Path | None = None) -> DebianImage:
    """Return the guest's kernel, initramfs and root image, building what is not cached.

    Raises GuestUnavailableError when a tool, root or apt's packages are missing, and
    GuestBuildError when building failed.
    """
    cache = cache_dir or default_debian_cache_dir()
    _require_tools("apt-cache", "apt-get", "dpkg-deb", "debootstrap", "mkfs.ext4", "chroot")
    if os.geteuid() != 0:
        raise GuestUnavailableError("debootstrap needs root to build the Debian guest")
    cache.mkdir(parents=True, exist_ok=True)
    package = debian_kernel_package(cache)
    version = _show(package, "Version")
    modules = hashlib.sha256(" ".join(MODULES).encode()).hexdigest()[:8]
    boot = cache / f"boot-{package}-{version}-{modules}"
    rootfs = cache / f"rootfs-{SUITE}-{rootfs_key()}.ext4"
    with _locked(cache / ".lock"):
        if not (boot / "kernel").is_file():
            _fetch_kernel(package, cache, boot)
            _remove_others(cache, "boot-*", boot)
        initramfs = _initramfs(boot)
        if not rootfs.is_file():
            _build_rootfs(rootfs)
            # Each image is a few hundred MB: the one of an earlier tree goes.
            _remove_others(cache, "rootfs-*.ext4", rootfs)
    return DebianImage(kernel=boot / "kernel", initramfs=initramfs, rootfs=rootfs)


def rootfs_key() -> str:
    """The digest of everything the root image is made from."""
    digest = hashlib.sha256(f"{BUILDER_VERSION}\n{SUITE}\n{debian_mirror()}\n".encode())
    digest.update(" ".join(PACKAGES).encode() + b"\n")
    for path in sorted(_TREE.rglob("*")):
        if path.is_file():
            mode = path.stat().st_mode & 0o777
            digest.update(f"{path.relative_to(_TREE)} {mode:o}\n".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def _require_tools(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise GuestUnavailableError(
            f"not on PATH: {', '.join(missing)} (integration/install-deps.sh installs them)"
        )


def _run(argv: list[str], cwd: Path | None = None, timeout: float = 300.0) -> str:
    try:
        result = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as expired:
        raise GuestBuildError(f"{' '.join(argv)} took over {timeout:g} s") from expired
    if result.returncode != 0:
        tail = (result.stderr.strip() or result.stdout.strip())[-3000:]
        raise GuestBuildError(f"{' '.join(argv)} failed: {tail}")
    return result.stdout


def _show(package: str, field: str) -> str:
    out = _run(["apt-cache", "show", "--no-all-versions", package])
    match = re.search(rf"^{field}: (\S+)$", out, re.MULTILINE)
    if match is None:
        raise GuestUnavailableError(f"apt shows no {field} for {package} (run apt-get update?)")
    return match[1]


def _remove_others(cache: Path, pattern: str, keep: Path) -> None:
    for path in cache.glob(pattern):
        if path == keep:
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One builder at a time per cache: a second test process waits, then finds it built."""
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# -- kernel and initramfs -------------------------------------------------------------------


def _fetch_kernel(package: str, cache: Path, boot: Path) -> None:
    """Download and unpack the kernel and busybox-static; keep the kernel, busybox and MODULES
    with their dependencies in `boot`."""
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        work = Path(tmp)
        work.chmod(0o777)  # apt's download sandbox user writes here when we are root
        _run(["apt-get", "download", package, "busybox-static"], cwd=work)
        root = work / "root"
        for deb in work.glob("*.deb"):
            _run(["dpkg-deb", "-x", str(deb), str(root)])
        staged = work / "boot"
        (staged / "modules").mkdir(parents=True)
        bzimage = _one(root, "boot/vmlinuz-*").read_bytes()
        config = _one(root, "boot/config-*").read_text()
        (staged / "kernel").write_bytes(pvh_kernel(bzimage, config) or bzimage)
        shutil.copyfile(root / "bin" / "busybox", staged / "busybox")
        moddir = _one(root, "**/lib/modules/*/modules.builtin").parent
        for index, module in enumerate(_load_order(moddir, MODULES)):
            # busybox's insmod reads plain .ko only.
            (staged / "modules" / f"{index:02d}-{module.name.split('.ko')[0]}.ko").write_bytes(
                decompressed_module(module)
            )
        staged.rename(boot)


def _load_order(moddir: Path, wanted: tuple[str, ...]) -> list[Path]:
    """The module files of `wanted` and of every module they depend on, dependencies first;
    modules built into the kernel are left out.  The kernel package has no modules.dep
    (depmod writes it on install), so the dependencies come from each module's
    ``depends=`` in its .modinfo."""
    builtin = {Path(line).name.split(".ko")[0] for line in (moddir / "modules.builtin").open()}
    # Module names use "_" where file names may use "-" (crc32c-intel.ko is crc32c_intel).
    files = {path.name.split(".ko")[0].replace("-", "_"): path for path in moddir.rglob("*.ko*")}
    order: list[Path] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        name = name.replace("-", "_")
        if name in seen or name in builtin:
            return
        seen.add(name)
        if name not in files:
            raise GuestBuildError(f"module {name} is neither in {moddir} nor built in")
        module = files[name]
        match = _DEPENDS.search(decompressed_module(module))
        for dependency in match[1].decode().split(",") if match else []:
            if dependency:
                visit(dependency)
        order.append(module)

    for name in wanted:
        visit(name)
    return order


def _one(root: Path, pattern: str) -> Path:
    matches = list(root.glob(pattern))
    if len(matches) != 1:
        raise GuestBuildError(f"expected one {pattern} in the unpacked packages, got {matches}")
    return matches[0]


def _initramfs(boot: Path) -> Path:
    """busybox, the modules and /init, named by a digest of them so that edits rebuild it."""
    files = [
        (f"/modules/{module.name}", module.read_bytes(), 0o644)
        for module in sorted((boot / "modules").iterdir())
    ]
    files += [
        ("/bin/busybox", (boot / "busybox").read_bytes(), 0o755),
        ("/init", _INIT.read_bytes(), 0o755),
    ]
    digest = hashlib.sha256()
    for name, data, _ in files:
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    path = boot / f"initramfs-{digest.hexdigest()[:16]}.cpio"
    if path.is_file():
        return path
    dirs = ["/bin", "/dev", "/proc", "/sys", "/root", "/modules"]
    entries = [CpioEntry(name, stat.S_IFDIR | 0o755) for name in dirs]
    entries.append(CpioEntry("/bin/sh", stat.S_IFLNK | 0o777, b"busybox"))
    # The kernel opens /dev/console for init before init can mount devtmpfs.
    entries.append(CpioEntry("/dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)))
    entries += [CpioEntry(name, stat.S_IFREG | perm, data) for name, data, perm in files]
    staging = path.with_suffix(f".{os.getpid()}.tmp")
    staging.write_bytes(newc_archive(entries))
    staging.replace(path)
    return path


# -- the root file system -------------------------------------------------------------------


def _build_rootfs(image: Path) -> None:
    with tempfile.TemporaryDirectory(dir=image.parent) as tmp:
        root = Path(tmp) / "root"
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(PACKAGES)}",
                SUITE,
                str(root),
                debian_mirror(),
            ],
            timeout=_DEBOOTSTRAP_TIMEOUT,
        )
        _configure(root)
        staging = Path(tmp) / "rootfs.ext4"
        make_ext4(root, staging, spare=256 << 20)
        staging.rename(image)


def _configure(root: Path) -> None:
    """Make the debootstrapped tree the guest: this package's tree/ on top, the units enabled,
    the stub resolver, root without a password on the serial console."""
    shutil.copytree(_TREE, root, dirs_exist_ok=True)
    _run(["chroot", str(root), "systemctl", "enable", *_UNITS])
    _run(["chroot", str(root), "passwd", "--delete", "root"])
    resolv = root / "etc" / "resolv.conf"
    resolv.unlink(missing_ok=True)  # debootstrap copies the host's
    resolv.symlink_to("../run/systemd/resolve/stub-resolv.conf")
    # What apt downloaded and its lists: the image needs neither.
    for leftover in [
        *(root / "var/cache/apt/archives").glob("*.deb"),
        *(root / "var/lib/apt/lists").glob("*_*"),
    ]:
        leftover.unlink()


def make_ext4(source: Path, image: Path, *, spare: int) -> None:
    """An ext4 image of `source`'s files, `spare` bytes more than they need (mkfs.ext4 -d
    needs neither root nor a loop device)."""
    used = int(_run(["du", "-sxk", str(source)]).split()[0]) * 1024
    with image.open("wb") as file:
        file.truncate(used * 5 // 4 + spare)
    _run(["mkfs.ext4", "-q", "-F", "-d", str(source), str(image)])
