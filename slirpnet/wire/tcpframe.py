"""Whole TCP frames from raw fields: the pure-Python twins of ``slirpnet._native``'s builders.

A frame is the link header the caller gives, an IPv4 header (RFC 791 §3.1: IHL 5,
TTL 64, not fragmented) or an IPv6 header (RFC 8200 §3: traffic class and flow label
0, hop limit 64), and a TCP segment (RFC 9293 §3.1) whose options arrive already
encoded.  Both checksums are filled in; the TCP one covers the IPv4 (RFC 9293 §3.1)
or IPv6 (RFC 8200 §8.1) pseudo-header.  ``tcp_frames`` and ``tcp6_frames`` are
software segmentation: a payload cut into ``mss``-byte segments.

The native twins give the same bytes and raise the same exception types, checking
the arguments in the same order: the integers in argument order (``TypeError`` for
a non-int, ``OverflowError`` out of range, ``ValueError`` for an ``mss`` below 1),
then the IPv6 addresses (16 bytes), the options (a multiple of 4 bytes, at most 40)
and whether the segment fits one IP packet, each a ``ValueError``.
"""

from __future__ import annotations

import struct

from slirpnet.wire.buffer import Bytes
from slirpnet.wire.checksum import fold, ones_sum

PROTOCOL = 6
TTL = 64
MAX_FLAGS = 0xFFF  # the 12 bits beside the data offset
MAX_OPTIONS_LEN = 40
IP_LIMIT = 0xFFFF  # IPv4 total length; IPv6 payload length without jumbograms
_OPTION_LENGTHS = frozenset(range(0, MAX_OPTIONS_LEN + 1, 4))
_U16 = 0xFFFF
_U32 = 0xFFFFFFFF

# IPv4 header (no options) and the TCP header, the checksums zero.
_IPV4_TCP = struct.Struct("!BBHHHBBHIIHHIIHHHH")
# IPv6 header and the TCP header.
_IPV6_TCP = struct.Struct("!IHBB16s16sHHIIHHHH")

Fields = tuple[tuple[str, object, int], ...]  # (name, value, maximum) in argument order


def _check_ints(fields: Fields) -> None:
    """Raise as the native twin does for the first bad ``(name, value, max)``."""
    for name, value, top in fields:
        if not isinstance(value, int):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
        if name == "mss":
            if value < 1:
                raise ValueError("mss must be at least 1")
        elif not 0 <= value <= top:
            raise OverflowError(f"{name} is out of range 0..{top}")


def _tcp_fields(
    sport: int, dport: int, seq: int, ack: int, flags: int, window: int, urgent: int
) -> Fields:
    return (
        ("sport", sport, _U16),
        ("dport", dport, _U16),
        ("seq", seq, _U32),
        ("ack", ack, _U32),
        ("flags", flags, MAX_FLAGS),
        ("window", window, _U16),
        ("urgent", urgent, _U16),
    )


def _v4_fields(
    src: int,
    dst: int,
    ident: int,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    urgent: int,
) -> Fields:
    addresses = (("src", src, _U32), ("dst", dst, _U32), ("ident", ident, _U16))
    return addresses + _tcp_fields(sport, dport, seq, ack, flags, window, urgent)


def _check_buffers(
    head: Bytes,
    addresses: tuple[Bytes, ...],
    options: Bytes,
    payload: Bytes,
    overhead: int,
    mss: int | None = None,
) -> None:
    """Raise as the native twin does for the buffers: each must be one (``TypeError``),
    the IPv6 addresses 16 bytes, the options a multiple of 4 up to 40 bytes and the
    segment (of at most ``mss`` payload bytes) must fit one IP packet (``ValueError``)."""
    views = [memoryview(address) for address in addresses]
    if any(len(view) != 16 for view in views):
        raise ValueError("an IPv6 address is 16 bytes")
    size = len(memoryview(options))
    if size not in _OPTION_LENGTHS:
        raise ValueError(f"TCP options of {size} bytes: not a multiple of 4 up to 40")
    memoryview(head)
    length = len(memoryview(payload))
    if overhead + size + (length if mss is None else min(length, mss)) > IP_LIMIT:
        raise ValueError("the payload does not fit one IP packet")


def header_words(
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    offset_flags: int,
    window: int,
    urgent: int,
    options: Bytes,
) -> int:
    """The TCP header's words summed from its fields, checksum aside: congruent modulo
    0xFFFF to their ones'-complement sum (RFC 1071; a 32-bit field is congruent to the sum
    of its halves, and the options, a multiple of 4 bytes, count as one integer)."""
    words = sport + dport + seq + ack + offset_flags + window + urgent
    return words + int.from_bytes(options, "big")


def tcp_frame(
    head: Bytes,
    src: int,
    dst: int,
    ident: int,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    urgent: int,
    options: Bytes,
    payload: Bytes,
    /,
) -> bytes:
    """``head``, an IPv4 header from ``src`` to ``dst`` (addresses as integers) and a
    TCP segment: the bytes of ``TcpSegment.encode`` under ``IPv4Packet.encode_header``."""
    header_len = 20 + len(options)
    length = header_len + len(payload)
    if not (
        0 <= src <= _U32
        and 0 <= dst <= _U32
        and 0 <= ident <= _U16
        and 0 <= sport <= _U16
        and 0 <= dport <= _U16
        and 0 <= seq <= _U32
        and 0 <= ack <= _U32
        and 0 <= flags <= MAX_FLAGS
        and 0 <= window <= _U16
        and 0 <= urgent <= _U16
        and header_len - 20 in _OPTION_LENGTHS
        and length <= IP_LIMIT - 20
    ):
        _check_ints(_v4_fields(src, dst, ident, sport, dport, seq, ack, flags, window, urgent))
        _check_buffers(head, (), options, payload, 40)
    total_len = 20 + length
    try:
        offset_flags = (header_len >> 2) << 12 | flags
        # RFC 1071: a 32-bit field is congruent to the sum of its halves modulo 0xFFFF.
        addresses = src + dst
        ip_words = 0x4500 + total_len + ident + (TTL << 8 | PROTOCOL) + addresses
        start = header_words(sport, dport, seq, ack, offset_flags, window, urgent, options)
        start += addresses + PROTOCOL + length
        headers = _IPV4_TCP.pack(
            0x45,
            0,
            total_len,
            ident,
            0,
            TTL,
            PROTOCOL,
            ~fold(ip_words) & 0xFFFF,
            src,
            dst,
            sport,
            dport,
            seq,
            ack,
            offset_flags,
            window,
            ~ones_sum(payload, start) & 0xFFFF,
            urgent,
        )
    except (struct.error, TypeError, AttributeError, OverflowError):
        # A float, say, within the ranges: the native twin's TypeError.
        _check_ints(_v4_fields(src, dst, ident, sport, dport, seq, ack, flags, window, urgent))
        raise
    return b"".join((head, headers, options, payload))


def tcp6_frame(
    head: Bytes,
    src: Bytes,
    dst: Bytes,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    urgent: int,
    options: Bytes,
    payload: Bytes,
    /,
) -> bytes:
    """``head``, an IPv6 header from ``src`` to ``dst`` (16 bytes each) and a TCP segment."""
    header_len = 20 + len(options)
    length = header_len + len(payload)
    if not (
        0 <= sport <= _U16
        and 0 <= dport <= _U16
        and 0 <= seq <= _U32
        and 0 <= ack <= _U32
        and 0 <= flags <= MAX_FLAGS
        and 0 <= window <= _U16
        and 0 <= urgent <= _U16
        and len(src) == 16
        and len(dst) == 16
        and header_len - 20 in _OPTION_LENGTHS
        and length <= IP_LIMIT
    ):
        _check_ints(_tcp_fields(sport, dport, seq, ack, flags, window, urgent))
        _check_buffers(head, (src, dst), options, payload, 20)
    try:
        offset_flags = (header_len >> 2) << 12 | flags
        # RFC 8200 §8.1: the pseudo-header is both addresses, the length and next header.
        start = header_words(sport, dport, seq, ack, offset_flags, window, urgent, options)
        start += length + PROTOCOL + int.from_bytes(src, "big") + int.from_bytes(dst, "big")
        headers = _IPV6_TCP.pack(
            0x60000000,
            length,
            PROTOCOL,
            TTL,
            bytes(src),
            bytes(dst),
            sport,
            dport,
            seq,
            ack,
            offset_flags,
            window,
            ~ones_sum(payload, start) & 0xFFFF,
            urgent,
        )
    except (struct.error, TypeError, AttributeError, OverflowError):
        _check_ints(_tcp_fields(sport, dport, seq, ack, flags, window, urgent))
        raise
    return b"".join((head, headers, options, payload))


def _pieces(payload: Bytes, mss: int) -> list[memoryview]:
    """``payload`` cut into ``mss``-byte slices; one empty slice for an empty payload."""
    view = memoryview(payload)
    size = len(view)
    if size == 0:
        return [view]
    return [view[offset : offset + mss] for offset in range(0, size, mss)]


def tcp_frames(
    head: Bytes,
    src: int,
    dst: int,
    ident: int,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    options: Bytes,
    payload: Bytes,
    mss: int,
    last_flags: int,
    /,
) -> list[bytes]:
    """Software segmentation over IPv4: segment i at ``seq + i*mss`` with IP ident
    ``ident + i``, each carrying ``flags`` and the last also ``last_flags``; urgent 0."""
    _check_ints(
        (
            ("src", src, _U32),
            ("dst", dst, _U32),
            ("ident", ident, _U16),
            ("sport", sport, _U16),
            ("dport", dport, _U16),
            ("seq", seq, _U32),
            ("ack", ack, _U32),
            ("flags", flags, MAX_FLAGS),
            ("window", window, _U16),
            ("mss", mss, 0),
            ("last_flags", last_flags, MAX_FLAGS),
        )
    )
    _check_buffers(head, (), options, payload, 40, mss)
    pieces = _pieces(payload, mss)
    last = len(pieces) - 1
    return [
        tcp_frame(
            head,
            src,
            dst,
            (ident + i) & _U16,
            sport,
            dport,
            (seq + i * mss) & _U32,
            ack,
            flags | last_flags if i == last else flags,
            window,
            0,
            options,
            piece,
        )
        for i, piece in enumerate(pieces)
    ]


def tcp6_frames(
    head: Bytes,
    src: Bytes,
    dst: Bytes,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    options: Bytes,
    payload: Bytes,
    mss: int,
    last_flags: int,
    /,
) -> list[bytes]:
    """``tcp_frames`` over IPv6."""
    _check_ints(
        (
            ("sport", sport, _U16),
            ("dport", dport, _U16),
            ("seq", seq, _U32),
            ("ack", ack, _U32),
            ("flags", flags, MAX_FLAGS),
            ("window", window, _U16),
            ("mss", mss, 0),
            ("last_flags", last_flags, MAX_FLAGS),
        )
    )
    _check_buffers(head, (src, dst), options, payload, 20, mss)
    pieces = _pieces(payload, mss)
    last = len(pieces) - 1
    return [
        tcp6_frame(
            head,
            src,
            dst,
            sport,
            dport,
            (seq + i * mss) & _U32,
            ack,
            flags | last_flags if i == last else flags,
            window,
            0,
            options,
            piece,
        )
        for i, piece in enumerate(pieces)
    ]
