"""Throughput of slirpnet's Internet checksum against a naive word-by-word loop.

Run: python integration/bench/checksum.py
Prints MB/s for 64 B, 1500 B and 64 KiB inputs and the speed-up over the naive version.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from slirpnet.wire.checksum import internet_checksum

SIZES = (64, 1500, 65536)
SECONDS = 0.5


def naive_checksum(data: bytes) -> int:
    """RFC 1071 as usually first written: one 16-bit word at a time."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def megabytes_per_second(function: Callable[[bytes], int], data: bytes) -> float:
    calls = 0
    start = time.perf_counter()
    deadline = start + SECONDS
    while (now := time.perf_counter()) < deadline:
        for _ in range(10):
            function(data)
        calls += 10
    return calls * len(data) / (now - start) / 1e6


def main() -> None:
    print(f"{'size':>8} {'slirpnet MB/s':>14} {'naive MB/s':>11} {'ratio':>7}")
    for size in SIZES:
        data = os.urandom(size)
        assert internet_checksum(data) == naive_checksum(data)
        fast = megabytes_per_second(internet_checksum, data)
        slow = megabytes_per_second(naive_checksum, data)
        print(f"{size:>8} {fast:>14.1f} {slow:>11.1f} {fast / slow:>6.0f}x")


if __name__ == "__main__":
    main()
