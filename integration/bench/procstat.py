"""What a process has used, from /proc (CPU, memory, descriptors), and our own file limit."""

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
