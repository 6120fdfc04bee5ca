"""The server's allocator settings: reads of a steady transfer reuse the heap's pages."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from slirpnet.shell import allocator

# A transfer's reads in miniature: 10 MiB of 256 KiB blocks, written, freed, again.
CHURN = """
import resource, sys
from slirpnet.shell.allocator import keep_freed_memory
if sys.argv[1] == "kept":
    assert keep_freed_memory()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    held = [b"x" * (256 * 1024) for _ in range(40)]
    del held
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> int:
    # glibc's own settings only: no tunables inherited from whoever runs the tests
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    run = subprocess.run(
        [sys.executable, "-c", CHURN, mode], capture_output=True, text=True, check=True, env=env
    )
    return int(run.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_kept_memory_is_reused_rather_than_faulted_in_anew() -> None:
    first_round = 10 * 1024 * 1024 // 4096  # pages touched once, either way
    default, kept = page_faults("default"), page_faults("kept")
    assert kept < 2 * first_round  # the first round's pages, reused by the other 49
    # glibc's own thresholds fault again in many rounds (how many varies by machine: 10 to 50
    # of the 50 seen), which is what the setting is for
    assert default > 4 * kept


def test_other_c_libraries_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "libc_ver", lambda: ("musl", "1.2"))
    assert allocator.keep_freed_memory() is False
