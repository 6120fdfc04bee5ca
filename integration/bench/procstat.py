"""What a process has used and loaded, from /proc (CPU, memory, descriptors, native code),
and our own file limit."""

from __future__ import annotations

import os
import resource
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User and system time of all the process's threads so far."""
    # The command name may hold spaces and parentheses: fields count from the last ")".
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_bytes(pid: int) -> int:
    """Resident memory: what the process's pages hold, not the kernel's socket buffers."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for process {pid}")


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def raise_file_limit(needed: int) -> int:
    """Room for ``needed`` descriptors here and in the processes started after, as far
    as the hard limit allows (raising that needs CAP_SYS_RESOURCE); the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = max(soft, needed if hard == resource.RLIM_INFINITY else min(needed, hard))
    if limit > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    return limit


def native_code(pid: int, package: Path) -> list[str]:
    """The compiled code of ``package`` (a directory) that the process has mapped: its
    extension modules by dotted name (``core.tcp``, ``_native``), and ``mypyc`` for the
    shared library of mypyc's modules beside it.  None when it runs the pure Python code.
    (mypyc's modules import each other inside that library, so of its per-module stubs
    only the ones imported from outside are mapped: the library is the sure sign.)"""
    found = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or not fields[5].endswith(".so"):
            continue
        path = Path(fields[5])
        if path.is_relative_to(package):  # core/tcp.cpython-311-x86_64-linux-gnu.so
            module = path.relative_to(package).with_name(path.name.split(".")[0])
            found.add(".".join(module.parts))
        elif path.parent == package.parent and "__mypyc." in path.name:
            found.add("mypyc")
    return sorted(found)
