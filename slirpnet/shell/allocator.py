"""glibc's allocator, told to keep the memory that socket reads and frames reuse.

Every read from a host socket is a new bytes object of up to 256 KiB, and a frame of
a 64 KiB MTU another of 64 KiB. glibc serves a block above its mmap threshold with a
fresh mapping, and gives free memory at the top of its heap back to the kernel once
it exceeds the trim threshold; both start at 128 KiB and follow the largest mapped
block freed so far (trim at twice it). With several flows reading at once the heap's
top rises and falls by megabytes, so it is trimmed and touched anew again and again:
70 to 100 page faults per MB carried to the guest, 4 to 5% of the server's CPU, and
four streams slower together than one.

Fixed thresholds keep blocks of a read's size in the heap and up to
``TRIM_THRESHOLD`` of free memory in the process: a little more RSS after a burst,
for no faults in a steady one.  Other C libraries are left as they are.
"""

from __future__ import annotations

import ctypes
import platform

# mallopt(3) parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 1 << 20  # above any one read (256 KiB) or frame (64 KiB)
TRIM_THRESHOLD = 16 << 20


def keep_freed_memory() -> bool:
    """Fix glibc's thresholds for this process; False where the C library is not glibc."""
    if platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    # mallopt returns 1 on success.
    return bool(
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
