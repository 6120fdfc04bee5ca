"""The Internet checksum (RFC 1071) and the TCP/UDP pseudo-headers of IPv4 (RFC 9293 §3.1,
RFC 768) and IPv6 (RFC 8200 §8.1).

Theory: the ones'-complement sum of 16-bit big-endian words is congruent to the
whole buffer read as one big-endian integer, modulo 0xFFFF, because
2**16 ≡ 1 (mod 0xFFFF).  ``int.from_bytes`` and ``%`` on a big integer run in C,
so a 64 KiB frame is summed in one pass without a Python-level loop.

The one subtlety is ones'-complement zero: an end-around-carry sum is 0 only for
all-zero input and 0xFFFF ("negative zero") for any other input congruent to 0.
``ones_sum`` reproduces that exactly, so our checksums match other stacks bit for
bit (RFC 1624 §3).
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from slirpnet.wire.buffer import Bytes

_MOD = 0xFFFF
_CHUNK = 8192
_FOLD_ABOVE = 1024  # bits: below this, one ``%`` is cheaper than a fold


def ones_sum(data: Bytes, start: int = 0) -> int:
    """The 16-bit ones'-complement sum of ``data`` (zero-padded to even length), plus ``start``.

    ``start`` is an earlier sum (for example of a pseudo-header); only the last
    buffer of a chain may have odd length.
    """
    size = len(data)
    if size & 1:
        # RFC 1071 §4.1: the odd last byte is the high half of a zero-padded word.
        view = memoryview(data)
        size -= 1
        start += view[size] << 8
        data = view[:size]
    if size <= _CHUNK:
        return fold(start + int.from_bytes(data, "big"))
    # Any even-length chunk is congruent to its own sum of words, so chunks add up.
    # Summing 8 KiB chunks beats one huge integer: reducing it costs more than the
    # extra ``from_bytes`` calls.
    view = memoryview(data)
    value = start
    for offset in range(0, size, _CHUNK):
        value += int.from_bytes(view[offset : min(offset + _CHUNK, size)], "big")
    return fold(value)


def fold(value: int) -> int:
    """The 16-bit ones'-complement sum congruent to ``value`` modulo 0xFFFF.

    ``value`` is a sum of 16-bit words, of 32-bit fields, or of even-length buffers
    read as big-endian integers: all congruent to their sums of words.  It is 0 only
    when every term is, which is when the ones'-complement sum is +0 rather than -0.
    """
    # Halving a large value first is cheaper than ``%`` on all of it: splitting at a
    # multiple of 16 bits keeps it congruent, since 2**16 ≡ 1 (mod 0xFFFF).
    while (half := (value.bit_length() >> 5) << 4) >= _FOLD_ABOVE:
        value = (value >> half) + (value & ((1 << half) - 1))
    folded = value % _MOD
    if folded == 0 and value:
        return 0xFFFF
    return folded


def internet_checksum(data: Bytes, start: int = 0) -> int:
    """The value to place in a checksum field: the complement of ``ones_sum``."""
    return ~ones_sum(data, start) & 0xFFFF


def pseudo_header_sum(
    src: IPv4Address | IPv6Address, dst: IPv4Address | IPv6Address, protocol: int, length: int
) -> int:
    """The pseudo-header as a ``start`` sum: IPv4's (source, destination, zero, protocol,
    16-bit length) or IPv6's (source, destination, 32-bit length, zeros, next header).

    An address of 32 or 128 bits may be added whole, and IPv6's 32-bit length too:
    each is congruent to the sum of its 16-bit words modulo 0xFFFF, so one formula
    serves both versions.
    """
    return int(src) + int(dst) + protocol + length
