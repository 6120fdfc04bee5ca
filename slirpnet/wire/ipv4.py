"""IPv4 packets (RFC 791 §3.1).

Parsing honours the header's own lengths: options are skipped by IHL and the
payload ends at the total length, so the padding QEMU and real NICs add to short
Ethernet frames is never taken as data.  Fragments are recognised (``is_fragment``,
the offset in bytes) and parsed like any packet: putting them back together, and
cutting ours to the MTU, is ``core/fragments.py``'s business.
"""

from __future__ import annotations

import struct
from functools import lru_cache
from ipaddress import IPv4Address
from typing import Final

from attrs import frozen

from slirpnet.wire.buffer import Bytes, require
from slirpnet.wire.checksum import fold
from slirpnet.wire.errors import IntegrityError, SanityError

PROTO_ICMP: Final = 1
PROTO_TCP: Final = 6
PROTO_UDP: Final = 17

MIN_HEADER_LEN: Final = 20
DEFAULT_TTL: Final = 64

FLAG_DF: Final = 0x4000
FLAG_MF: Final = 0x2000
_OFFSET_MASK: Final = 0x1FFF

# Addresses as 32-bit integers: summed whole, each is congruent to the sum of its halves.
_HEADER = struct.Struct("!BBHHHBBHII")


@lru_cache(maxsize=1024)
def _address(value: int) -> IPv4Address:
    """A guest's few addresses come again and again: build each one once."""
    return IPv4Address(value)


@frozen
class IPv4Packet:
    src: IPv4Address
    dst: IPv4Address
    protocol: int
    payload: Bytes
    ttl: int = DEFAULT_TTL
    ident: int = 0
    dont_fragment: bool = False
    more_fragments: bool = False
    fragment_offset: int = 0  # in bytes (the header field counts 8-byte units)
    tos: int = 0
    options: bytes = b""

    @property
    def is_fragment(self) -> bool:
        return self.more_fragments or self.fragment_offset != 0

    @property
    def header_len(self) -> int:
        return MIN_HEADER_LEN + len(self.options)

    @classmethod
    def parse(cls, data: Bytes, *, verify_checksum: bool = True) -> IPv4Packet:
        view = memoryview(data)
        require(view, MIN_HEADER_LEN, "ipv4_truncated", "IPv4 header")
        (ver_ihl, tos, total_len, ident, flags_frag, ttl, protocol, checksum, src, dst) = (
            _HEADER.unpack_from(view)
        )
        if ver_ihl >> 4 != 4:
            raise SanityError("ipv4_bad_version", f"version {ver_ihl >> 4}")
        header_len = (ver_ihl & 0x0F) * 4
        if header_len < MIN_HEADER_LEN:
            raise IntegrityError("ipv4_bad_ihl", f"IHL {header_len // 4}")
        if total_len < header_len:
            raise IntegrityError("ipv4_bad_length", f"total length {total_len} < IHL")
        require(view, total_len, "ipv4_truncated", "IPv4 total length")
        # RFC 1071: a header whose ones'-complement sum, checksum included, is not
        # negative zero has been corrupted.  The words are summed from the fields.
        if verify_checksum:
            words = (ver_ihl << 8 | tos) + total_len + ident + flags_frag + (ttl << 8 | protocol)
            options = int.from_bytes(view[MIN_HEADER_LEN:header_len], "big")
            if fold(words + checksum + src + dst + options) != 0xFFFF:
                raise IntegrityError("ipv4_bad_checksum")
        if flags_frag & 0x8000:
            raise SanityError("ipv4_reserved_flag", "evil bit set (RFC 791 reserved flag)")
        return cls(
            src=_address(src),
            dst=_address(dst),
            protocol=protocol,
            payload=view[header_len:total_len],
            ttl=ttl,
            ident=ident,
            dont_fragment=bool(flags_frag & FLAG_DF),
            more_fragments=bool(flags_frag & FLAG_MF),
            fragment_offset=(flags_frag & _OFFSET_MASK) * 8,
            tos=tos,
            options=bytes(view[MIN_HEADER_LEN:header_len]),
        )

    def encode_header(self) -> bytes:
        """The header alone, checksum filled in, for a payload of ``len(self.payload)``."""
        if len(self.options) % 4 or len(self.options) > 40:
            raise ValueError("IPv4 options must be padded to 4 bytes, at most 40")
        flags_frag = (
            (FLAG_DF if self.dont_fragment else 0)
            | (FLAG_MF if self.more_fragments else 0)
            | (self.fragment_offset // 8)
        )
        header_len = self.header_len
        total_len = header_len + len(self.payload)
        first, third = 0x40 | header_len // 4, self.ttl << 8 | self.protocol
        src, dst = int(self.src), int(self.dst)
        # RFC 1071: the words summed from the fields, options as one even-length integer.
        words = (first << 8 | self.tos) + total_len + self.ident + flags_frag + third
        checksum = ~fold(words + src + dst + int.from_bytes(self.options, "big")) & 0xFFFF
        fields = (first, self.tos, total_len, self.ident, flags_frag, self.ttl, self.protocol)
        header = _HEADER.pack(*fields, checksum, src, dst)
        return header + self.options if self.options else header

    def encode(self) -> bytes:
        return self.encode_header() + self.payload
