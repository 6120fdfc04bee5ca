"""Damage frames the way a hostile or broken guest does.

A mutation is a ``(kind, where, value)`` triple, so hypothesis can draw and shrink
it: bit flips, overwritten, inserted and deleted bytes, truncation, trailing junk,
and the header lies that found bugs in libslirp: IPv4 total lengths and IHLs, UDP
lengths and TCP data offsets that do not fit, TCP options whose length loops or
overruns; for IPv6, payload lengths that lie, next headers and hop limits of any
value, extension header chains that repeat, overrun or hold what must be refused
(``EXTENSION_CHAINS``), and Neighbour Discovery options of any length.
``fix_checksums`` then makes the checksums right again (IPv6's upper layer found
behind its extension headers, ``chain6``), so that the damage reaches past the
checksum checks into the parsers and the core behind them.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

from slirpnet.wire.checksum import internet_checksum, pseudo_header_sum
from tests.fuzz import chain6

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
    "ipv6_payload_length",
    "ipv6_next_header",
    "ipv6_hop_limit",
    "ipv6_extension_chain",
    "ndp_option",
)
# Extension headers put in front of an IPv6 packet's first header: what the core walks,
# what it refuses (repeats past §4.1's order, Hop-by-Hop out of place, a routing header
# with segments left, a fragment, a jumbogram, an option that says discard, an option or
# a header past its end) and AH, which it does not know.  Each is (next header, body
# after the next-header byte); the next-header byte is filled in when the chain is laid.
_DEST, _HBH, _ROUTING, _FRAGMENT, _AH = 60, 0, 43, 44, 51
EXTENSION_CHAINS: tuple[tuple[tuple[int, bytes], ...], ...] = (
    ((_DEST, bytes(7)),),
    ((_HBH, b"\x00\x05\x02\x00\x00\x01\x00"),),  # router alert, PadN
    ((_DEST, bytes(7)),) * 3,
    ((_DEST, bytes(7)),) * 9,
    ((_DEST, bytes(7)), (_HBH, bytes(7))),
    ((_ROUTING, b"\x00\x00\x00" + bytes(4)),) * 2,
    ((_ROUTING, b"\x02\x00\x01" + bytes(4) + bytes(16)),),  # type 0 and a segment left
    ((_FRAGMENT, b"\x00\x00\x00\x00\x00\x00\x01"),),  # atomic (RFC 6946)
    ((_FRAGMENT, b"\x00\x00\x01\x00\x00\x00\x02"),),  # the first, more to come
    ((_FRAGMENT, b"\x00\x00\x09\x00\x00\x00\x03"),),  # the second
    ((_HBH, b"\x00\xc2\x04\x00\x01\x11\x70"),),  # a jumbo payload option
    ((_DEST, b"\x00\x80\x04" + bytes(4)),),  # an unknown option: discard
    ((_DEST, b"\x00\x01\x09" + bytes(4)),),  # a PadN past its header
    ((_DEST, b"\xff" + bytes(6)),),  # 2048 bytes claimed
    ((_AH, b"\x02\x00\x00" + bytes(12)),),
    ((_HBH, bytes(7)), (_DEST, bytes(7)), (_ROUTING, bytes(7)), (_DEST, bytes(7))),
)
_NEXT_HEADERS = (0, 6, 17, 43, 44, 50, 51, 58, 59, 60, 132, 135)
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
    elif kind.startswith(("ipv6", "ndp")):
        _lie6(data, kind, value)
    else:
        _lie(data, kind, value)


def _lie6(data: bytearray, kind: str, value: int) -> None:
    """An IPv6 header field, or a header chain, that no longer fits (IPv6 frames only)."""
    if len(data) < _ETH + chain6.HEADER_LEN or data[12:14] != b"\x86\xdd":
        return
    if kind == "ipv6_payload_length":
        _U16.pack_into(data, _ETH + 4, value & 0xFFFF)
    elif kind == "ipv6_next_header":
        data[_ETH + 6] = _NEXT_HEADERS[value % len(_NEXT_HEADERS)]
    elif kind == "ipv6_hop_limit":
        data[_ETH + 7] = (255, 254, 64, 1, 0)[value % 5]
    elif kind == "ipv6_extension_chain":
        laid = bytearray()
        first = data[_ETH + 6]
        for protocol, body in reversed(EXTENSION_CHAINS[value % len(EXTENSION_CHAINS)]):
            laid[0:0] = bytes((first,)) + body
            first = protocol
        data[_ETH + 6] = first
        data[_ETH + 40 : _ETH + 40] = laid
        _grow_payload_length(data, len(laid))
    elif kind == "ndp_option":
        found = chain6.upper_layer(bytes(data[_ETH:]))
        if (
            found is not None
            and found.protocol == chain6.ICMPV6
            and len(data) > _ETH + found.start
            and 133 <= data[_ETH + found.start] <= 137
        ):
            # An option of any type and of 0 to 3 units, holding 8 bytes.
            option = bytes((value & 0xFF, (value >> 8) % 4)) + bytes(6)
            data[_ETH + found.end : _ETH + found.end] = option
            _grow_payload_length(data, len(option))


def _grow_payload_length(data: bytearray, grown: int) -> None:
    length = _U16.unpack_from(data, _ETH + 4)[0]
    _U16.pack_into(data, _ETH + 4, min(length + grown, 0xFFFF))


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
    """Correct the IPv4 header checksum and the transport's (or IPv6's upper layer's), as
    far as the lengths allow."""
    if data[12:14] == b"\x86\xdd":
        _fix_ipv6(data)
        return
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


def _fix_ipv6(data: bytearray) -> None:
    """The upper layer's checksum over IPv6's pseudo-header (RFC 8200 §8.1), behind any
    extension headers: ICMPv6, TCP, and UDP whose length field fits."""
    found = chain6.upper_layer(bytes(data[_ETH:]))
    if found is None:
        return
    start, end = _ETH + found.start, _ETH + found.end
    src = IPv6Address(bytes(data[_ETH + 8 : _ETH + 24]))
    dst = IPv6Address(bytes(data[_ETH + 24 : _ETH + 40]))
    at = {chain6.ICMPV6: 2, chain6.TCP: 16, chain6.UDP: 6}.get(found.protocol)
    if at is None or end - start < at + 2:
        return
    length = end - start
    if found.protocol == chain6.UDP:
        length = _U16.unpack_from(data, start + 4)[0]
        if not 8 <= length <= end - start:
            return
    data[start + at : start + at + 2] = b"\x00\x00"
    pseudo = pseudo_header_sum(src, dst, found.protocol, length)
    checksum = internet_checksum(data[start : start + length], pseudo)
    if found.protocol == chain6.UDP:
        checksum = checksum or 0xFFFF  # zero would say "none", which IPv6 refuses
    _U16.pack_into(data, start + at, checksum)
