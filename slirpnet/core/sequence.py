"""TCP sequence numbers: 32-bit counters compared modulo 2**32 (RFC 9293 §3.4).

Two sequence numbers are compared by their signed distance, which is right as
long as they lie within 2**31 of each other: always true of the numbers one
connection holds at a time (windows are at most 2**30, RFC 7323 §2.3).
"""

from __future__ import annotations

from typing import Final

MASK: Final = 0xFFFFFFFF


def seq_diff(a: int, b: int) -> int:
    """``a - b`` in sequence space: negative when ``a`` is before ``b``."""
    return ((a - b + 0x80000000) & MASK) - 0x80000000


def seq_add(a: int, n: int) -> int:
    return (a + n) & MASK


def seq_lt(a: int, b: int) -> bool:
    return seq_diff(a, b) < 0


def seq_le(a: int, b: int) -> bool:
    return seq_diff(a, b) <= 0
