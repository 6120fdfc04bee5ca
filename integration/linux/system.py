"""Root-namespace plumbing for the Linux-stack guest: names, namespaces, taps, veths, netns sockets.

Everything made here is named ``<PREFIX><pid>...`` so that parallel runs never collide and
what a killed run left behind can be told apart from what a live run owns
(``sweep_stale``).  The commands are short and run synchronously, so cleanup works the
same from a ``finally`` in a cancelled task.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PREFIX = "sn"  # interface names are at most 15 characters: "sn" + pid + kind + counter
NETNS_PREFIX = "slirpnet-"
_CLONE_NEWNET = 0x40000000
_STALE_NETNS = re.compile(rf"^{NETNS_PREFIX}(\d+)-")
_STALE_LINK = re.compile(rf"^{PREFIX}(\d+)[a-z]\d+$")
_counter = itertools.count()


class PlumbingError(RuntimeError):
    """A command that sets up the guest's network failed."""


def missing() -> str | None:
    """Why the Linux-stack guest cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces and tap devices)"
    for tool in ("ip", "busybox", "qemu-system-x86_64"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (see integration/install-deps.sh)"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is absent (no tap devices)"
    return None


def unique_name(kind: str) -> str:
    """A fresh name for a link (``kind`` one letter) or, with ``kind="ns"``, a namespace."""
    number = next(_counter)
    if kind == "ns":
        return f"{NETNS_PREFIX}{os.getpid()}-{number}"
    return f"{PREFIX}{os.getpid()}{kind}{number}"


def run(*argv: str, check: bool = True, input: str | None = None) -> str:
    result = subprocess.run(
        argv, capture_output=True, text=True, check=False, timeout=30, input=input
    )
    if check and result.returncode != 0:
        raise PlumbingError(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result.stdout


def ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    return run("ip", *(("-n", netns) if netns else ()), *args, check=check)


_SEND_BUFFER_SYSCTLS = ("/proc/sys/net/core/wmem_default", "/proc/sys/net/core/wmem_max")


@contextmanager
def default_send_buffer(size: int) -> Iterator[None]:
    """Sockets made meanwhile, by any process, get ``size`` bytes of send buffer
    (net.core.wmem_default, and wmem_max if lower); both are put back after."""
    saved = [Path(path).read_text() for path in _SEND_BUFFER_SYSCTLS]
    try:
        for path, old in zip(_SEND_BUFFER_SYSCTLS, saved, strict=True):
            Path(path).write_text(str(max(size, int(old))))
        yield
    finally:
        for path, old in zip(_SEND_BUFFER_SYSCTLS, saved, strict=True):
            Path(path).write_text(old)


def sweep_stale() -> None:
    """Delete the namespaces and links of test runs whose process is gone."""
    for line in ip("netns", "list").splitlines():
        name = line.split()[0] if line.strip() else ""
        match = _STALE_NETNS.match(name)
        if match and not _alive(int(match.group(1))):
            ip("netns", "delete", name, check=False)
    for line in ip("-o", "link", "show").splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        match = _STALE_LINK.match(name)
        if match and not _alive(int(match.group(1))):
            ip("link", "delete", name, check=False)


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def tap_attached(pid: int, tap: str) -> bool:
    """Whether process ``pid`` holds ``tap`` open (its tun fd's fdinfo names the interface)."""
    fds = Path(f"/proc/{pid}/fd")
    try:
        for fd in fds.iterdir():
            if os.readlink(fd) == "/dev/net/tun":
                info = (Path(f"/proc/{pid}/fdinfo") / fd.name).read_text()
                if f"iff:\t{tap}\n" in info:
                    return True
    except OSError:
        return False  # the process went away
    return False


@contextmanager
def in_netns(netns: str) -> Iterator[None]:
    """Run the body with this thread in ``netns``: sockets made there stay in it for good.

    The body must not block: the thread (trio's, in tests) is back in its own namespace
    before anything else runs.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    with open("/proc/thread-self/ns/net") as home, open(f"/run/netns/{netns}") as target:
        if libc.setns(target.fileno(), _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {netns}")
        try:
            yield
        finally:
            if libc.setns(home.fileno(), _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back home")


def netns_socket(
    netns: str,
    kind: socket.SocketKind = socket.SOCK_STREAM,
    family: socket.AddressFamily = socket.AF_INET,
) -> socket.socket:
    """A socket (IPv4 unless told) that lives in ``netns``: it connects with its routes."""
    with in_netns(netns):
        return socket.socket(family, kind)
