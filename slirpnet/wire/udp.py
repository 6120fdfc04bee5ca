"""UDP datagrams (RFC 768), checksummed over the IPv4 or IPv6 pseudo-header.

RFC 768 "Fields": the length field counts the header and the data, so anything
the IP layer hands us beyond it is padding and is ignored; a length below the
8-byte header or beyond the data we hold is a lie.  A transmitted checksum of
zero means the sender computed none, which IPv4 allows, so it is accepted
unverified; a computed checksum of zero is therefore sent as all ones.  Over
IPv6 the checksum is mandatory (RFC 8200 §8.1): a zero one is refused, and the
addresses passed say which rule applies.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address
from typing import Final

from attrs import frozen

from slirpnet import native
from slirpnet.wire.buffer import Bytes, require
from slirpnet.wire.checksum import pseudo_header_sum
from slirpnet.wire.errors import IntegrityError

PROTOCOL: Final = 17
HEADER_LEN: Final = 8
MAX_LEN: Final = 0xFFFF

_HEADER = struct.Struct("!HHHH")  # source port, destination port, length, checksum


@frozen
class UdpDatagram:
    src_port: int
    dst_port: int
    payload: Bytes

    @classmethod
    def parse(
        cls,
        data: Bytes,
        src: IPv4Address | IPv6Address,
        dst: IPv4Address | IPv6Address,
        *,
        verify_checksum: bool = True,
    ) -> UdpDatagram:
        view = memoryview(data)
        require(view, HEADER_LEN, "udp_truncated", "UDP header")
        src_port, dst_port, length, checksum = _HEADER.unpack_from(view)
        if length < HEADER_LEN or length > len(view):
            raise IntegrityError("udp_bad_length", f"length field {length}, {len(view)} bytes held")
        view = view[:length]
        if verify_checksum:
            # A correct checksum makes the sum over everything ones'-complement -0.
            if checksum:
                if native.ones_sum(view, pseudo_header_sum(src, dst, PROTOCOL, length)) != 0xFFFF:
                    raise IntegrityError("udp_bad_checksum", f"checksum field {checksum:#06x}")
            elif src.version == 6:
                raise IntegrityError("udp_zero_checksum", "no checksum over IPv6 (RFC 8200 §8.1)")
        return cls(src_port, dst_port, view[HEADER_LEN:])

    def encode(self, src: IPv4Address | IPv6Address, dst: IPv4Address | IPv6Address) -> bytes:
        payload = memoryview(self.payload)
        length = HEADER_LEN + payload.nbytes
        if length > MAX_LEN:
            raise ValueError(f"UDP datagram of {length} bytes exceeds the 16-bit length field")
        # The header is even-sized, so its words can be summed as plain integers
        # ahead of the payload (checksum field taken as zero).
        start = pseudo_header_sum(src, dst, PROTOCOL, length)
        start += self.src_port + self.dst_port + length
        checksum = native.internet_checksum(payload, start) or 0xFFFF
        return b"".join((_HEADER.pack(self.src_port, self.dst_port, length, checksum), payload))
