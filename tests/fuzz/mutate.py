"""Damage frames the way a hostile or broken guest does.

A mutation is a ``(kind, where, value)`` triple, so hypothesis can draw and shrink
it: bit flips, overwritten, inserted and deleted bytes, truncation, trailing junk,
and the header lies that found bugs in libslirp: IPv4 total lengths and IHLs, UDP
lengths and TCP data offsets that do not fit, TCP options whose length loops or
overruns.  ``fix_checksums`` then makes the checksums right again, so that the
damage reaches past the checksum checks into the parsers and the core behind them.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address

from slirpnet.wire.checksum import internet_checksum, pseudo_header_sum

KINDS = (
    "flip",
    "set",
    "insert",
    "delete",
    "truncate",
    "extend",
    "ipv4_total_length",
    "ipv4_ihl",
    "udp_length",
    "tcp_data_offset",
    "tcp_option_loop",
)
Mutation = tuple[str, int, int]  # kind, where (taken modulo the frame), value

_ETH = 14
_U16 = struct.Struct("!H")


def mutate(frame: bytes, mutations: list[Mutation], *, fix: bool) -> bytes:
    data = bytearray(frame)
    for kind, where, value in mutations:
        _apply(data, kind, where, value)
    if fix:
        fix_checksums(data)
    return bytes(data)


def _apply(data: bytearray, kind: str, where: int, value: int) -> None:
    size = len(data)
    at = where % size if size else 0
    if kind == "flip" and size:
        data[at] ^= 1 << (value % 8)
    elif kind == "set" and size:
        data[at] = value & 0xFF
    elif kind == "insert":
        data[at:at] = bytes([value & 0xFF]) * (1 + value % 7)
    elif kind == "delete":
        del data[at : at + 1 + value % 7]
    elif kind == "truncate":
        del data[at:]
    elif kind == "extend":
        data += bytes([value & 0xFF]) * (1 + value % 64)
    else:
        _lie(data, kind, value)


def _lie(data: bytearray, kind: str, value: int) -> None:
    """A header field that no longer fits the bytes around it (IPv4 frames only)."""
    ip = _ipv4_header_len(data)
    if ip is None:
        return
    if kind == "ipv4_total_length":
        _U16.pack_into(data, _ETH + 2, value & 0xFFFF)
    elif kind == "ipv4_ihl":
        data[_ETH] = 0x40 | (value & 0x0F)
    elif len(data) >= _ETH + ip + 20:
        transport = _ETH + ip
        if kind == "udp_length" and data[_ETH + 9] == 17:
            _U16.pack_into(data, transport + 4, value & 0xFFFF)
        elif kind == "tcp_data_offset" and data[_ETH + 9] == 6:
            data[transport + 12] = (value & 0x0F) << 4 | (data[transport + 12] & 0x0F)
        elif kind == "tcp_option_loop" and data[_ETH + 9] == 6:
            # An option with a length of 0 or 1 where the options start: walking
            # it naively never advances.
            loop = bytes((2 + value % 253, value % 2))
            data[transport + 20 : transport + 20] = loop + b"\x00\x00"
            data[transport + 12] = (data[transport + 12] & 0x0F) | 0x60
            total = _U16.unpack_from(data, _ETH + 2)[0]
            _U16.pack_into(data, _ETH + 2, min(total + 4, 0xFFFF))


def _ipv4_header_len(data: bytearray) -> int | None:
    if len(data) < _ETH + 20 or data[12:14] != b"\x08\x00":
        return None
    return (data[_ETH] & 0x0F) * 4


def fix_checksums(data: bytearray) -> None:
    """Correct the IPv4 header checksum and the transport's, as far as the lengths allow."""
    ip = _ipv4_header_len(data)
    if ip is None or ip < 20 or len(data) < _ETH + ip:
        return
    data[_ETH + 10 : _ETH + 12] = b"\x00\x00"
    _U16.pack_into(data, _ETH + 10, internet_checksum(data[_ETH : _ETH + ip]))
    total = _U16.unpack_from(data, _ETH + 2)[0]
    start, end = _ETH + ip, min(_ETH + total, len(data))
    if end <= start:
        return
    protocol = data[_ETH + 9]
    src = IPv4Address(bytes(data[_ETH + 12 : _ETH + 16]))
    dst = IPv4Address(bytes(data[_ETH + 16 : _ETH + 20]))
    if protocol == 1 and end - start >= 4:
        data[start + 2 : start + 4] = b"\x00\x00"
        _U16.pack_into(data, start + 2, internet_checksum(data[start:end]))
    elif protocol == 6 and end - start >= 20:
        data[start + 16 : start + 18] = b"\x00\x00"
        pseudo = pseudo_header_sum(src, dst, 6, end - start)
        _U16.pack_into(data, start + 16, internet_checksum(data[start:end], pseudo))
    elif protocol == 17 and end - start >= 8:
        length = _U16.unpack_from(data, start + 4)[0]
        data[start + 6 : start + 8] = b"\x00\x00"
        if 8 <= length <= end - start:
            pseudo = pseudo_header_sum(src, dst, 17, length)
            checksum = internet_checksum(data[start : start + length], pseudo) or 0xFFFF
            _U16.pack_into(data, start + 6, checksum)
