"""A QEMU that reconnects on its own (``reconnect-ms``, QEMU 9.2+), beside the system's.

Debian bookworm ships QEMU 7.2; bookworm-backports has QEMU 10.  Installing it would
replace the 7.2 the other tests run, so its packages are fetched with ``apt-get
download`` through a private apt configuration (its own sources list and lists, under
the cache) from the system's Debian mirror, unpacked with ``dpkg-deb -x`` into a
directory keyed by the version, and run from there: the firmware with ``-L`` and the
modules with ``QEMU_MODULE_DIR``.  Its libraries are bookworm's, which the system QEMU
has installed.  Where the system's own QEMU is new enough, that is used instead.

``python -m integration.guest.newqemu`` prepares it and prints the command.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from integration.guest.build import GuestBuildError, GuestUnavailableError, default_cache_dir
from integration.guest.qemu import QEMU

MINIMUM = (9, 2)  # the first QEMU with reconnect-ms on -netdev stream
PACKAGES = ("qemu-system-x86", "qemu-system-common", "qemu-system-data", "seabios")
_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
_DEFAULT_MIRROR = "http://deb.debian.org/debian"
_LISTS_FRESH = 24 * 3600.0  # seconds the private package lists are used before an update
_VERSION = re.compile(rb"QEMU emulator version (\d+)\.(\d+)")


def reconnecting_qemu(cache_dir: Path | None = None) -> list[str]:
    """The command that runs a QEMU with ``reconnect-ms``; raises GuestUnavailableError."""
    system = shutil.which(QEMU)
    if system is not None and _version([system]) >= MINIMUM:
        return [system]
    cache = (cache_dir or default_cache_dir()) / "qemu-backports"
    codename = _codename()
    apt = _private_apt(cache, codename)
    version = _candidate(apt, codename)
    root = cache / version.replace(":", "_")
    command = _command(root)
    if not (root / "usr/bin" / QEMU).is_file():
        _unpack(apt, codename, cache, root)
    if _version(command) < MINIMUM:
        raise GuestBuildError(f"{root}: not a QEMU {MINIMUM} or newer")
    return command


def _command(root: Path) -> list[str]:
    return [
        "env",
        f"QEMU_MODULE_DIR={root}/usr/lib/x86_64-linux-gnu/qemu",
        str(root / "usr/bin" / QEMU),
        *("-L", str(root / "usr/share/qemu"), "-L", str(root / "usr/share/seabios")),
    ]


def _version(command: list[str]) -> tuple[int, int]:
    try:
        out = subprocess.run([*command, "--version"], capture_output=True, check=False).stdout
    except OSError:
        return (0, 0)
    match = _VERSION.search(out)
    return (int(match[1]), int(match[2])) if match else (0, 0)


def _codename() -> str:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        text = ""
    match = re.search(r"^VERSION_CODENAME=(\w+)$", text, re.MULTILINE)
    if match is None:
        raise GuestUnavailableError("not a Debian release with a codename (/etc/os-release)")
    return match[1]


def _mirror() -> str:
    """The system's Debian mirror (the first URIs of debian.sources), else deb.debian.org."""
    try:
        match = re.search(r"^URIs:\s*(\S+)", _SOURCES.read_text(), re.MULTILINE)
    except OSError:
        match = None
    return match[1] if match else _DEFAULT_MIRROR


def _private_apt(cache: Path, codename: str) -> list[str]:
    """apt options for our own sources list and package lists; updated once a day."""
    state = cache / "apt"
    (state / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (state / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    sources = state / "sources.list"
    sources.write_text(f"deb {_mirror()} {codename}-backports main\n")
    options = [
        f"-oDir::Etc::SourceList={sources}",
        "-oDir::Etc::SourceParts=/dev/null",
        f"-oDir::State::Lists={state / 'lists'}",
        f"-oDir::Cache={state / 'cache'}",
        "-oDir::Etc::Preferences=/dev/null",
        f"-oDir::Etc::PreferencesParts={state}",
        "-oDebug::NoLocking=1",
    ]
    stamp = state / "updated"
    if not stamp.is_file() or time.time() - stamp.stat().st_mtime > _LISTS_FRESH:
        _apt(["apt-get", *options, "-q", "update"])
        stamp.touch()
    return options


def _candidate(apt: list[str], codename: str) -> str:
    out = _apt(["apt-cache", *apt, "show", f"qemu-system-x86/{codename}-backports"])
    match = re.search(r"^Version: (\S+)$", out, re.MULTILINE)
    if match is None:
        raise GuestUnavailableError(f"{codename}-backports has no qemu-system-x86")
    return match[1]


def _unpack(apt: list[str], codename: str, cache: Path, root: Path) -> None:
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        work = Path(tmp)
        work.chmod(0o777)  # apt's download sandbox user writes here when we are root
        names = [f"{package}/{codename}-backports" for package in PACKAGES]
        _apt(["apt-get", *apt, "-q", "download", *names], cwd=work)
        unpacked = work / "root"
        for deb in sorted(work.glob("*.deb")):
            _apt(["dpkg-deb", "-x", str(deb), str(unpacked)])
        shutil.rmtree(root, ignore_errors=True)
        unpacked.rename(root)  # whole or not at all: the version's directory is the key


def _apt(argv: list[str], cwd: Path | None = None) -> str:
    if shutil.which(argv[0]) is None:
        raise GuestUnavailableError(f"{argv[0]} is not on PATH (QEMU 10 comes from Debian)")
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise GuestBuildError(f"{' '.join(argv[:1] + argv[-2:])}: {result.stderr.strip()}")
    return result.stdout


if __name__ == "__main__":
    print(" ".join(reconnecting_qemu()))
