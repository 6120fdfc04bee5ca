"""ICMPv6 (RFC 4443): echo and the error messages, checksummed over the IPv6 pseudo-header.

A message is its type, code, the 32 bits after the checksum (``rest``: identifier
and sequence, an MTU, a pointer, or the first fields of a Neighbor Discovery
message) and the body after them; ``wire/ndp.py`` reads and writes the Neighbor
Discovery messages (RFC 4861) on top of this shape.  The checksum covers the
pseudo-header (RFC 4443 §2.3, RFC 8200 §8.1), so parse and encode take the
addresses.

An error quotes as much of the offending packet as fits without the error
exceeding the minimum MTU (RFC 4443 §2.4(c)): 1232 bytes after the IPv6 and
ICMPv6 headers.
"""

from __future__ import annotations

import struct
from ipaddress import IPv6Address
from typing import Final

from attrs import frozen

from slirpnet import native
from slirpnet.wire import ipv6
from slirpnet.wire.buffer import Bytes, require
from slirpnet.wire.checksum import pseudo_header_sum
from slirpnet.wire.errors import IntegrityError, SanityError

PROTOCOL: Final = ipv6.PROTO_ICMPV6

# Types (RFC 4443 §2.1; 133-137 are Neighbor Discovery's, RFC 4861 §4).
TYPE_DEST_UNREACHABLE: Final = 1
TYPE_PACKET_TOO_BIG: Final = 2
TYPE_TIME_EXCEEDED: Final = 3
TYPE_PARAMETER_PROBLEM: Final = 4
TYPE_ECHO_REQUEST: Final = 128
TYPE_ECHO_REPLY: Final = 129
TYPE_ROUTER_SOLICITATION: Final = 133
TYPE_ROUTER_ADVERTISEMENT: Final = 134
TYPE_NEIGHBOR_SOLICITATION: Final = 135
TYPE_NEIGHBOR_ADVERTISEMENT: Final = 136
TYPE_REDIRECT: Final = 137

# Destination-unreachable codes (RFC 4443 §3.1).
CODE_NO_ROUTE: Final = 0
CODE_ADMIN_PROHIBITED: Final = 1
CODE_BEYOND_SCOPE: Final = 2
CODE_ADDRESS_UNREACHABLE: Final = 3
CODE_PORT_UNREACHABLE: Final = 4

# Time-exceeded codes (§3.3) and parameter-problem codes (§3.4).
CODE_HOP_LIMIT_EXCEEDED: Final = 0
CODE_REASSEMBLY_TIME_EXCEEDED: Final = 1
CODE_ERRONEOUS_HEADER: Final = 0
CODE_UNRECOGNIZED_NEXT_HEADER: Final = 1
CODE_UNRECOGNIZED_OPTION: Final = 2

HEADER_LEN: Final = 8
# §2.4(c): the error, IPv6 header included, fits the minimum MTU.
MAX_QUOTE_LEN: Final = ipv6.MIN_MTU - ipv6.HEADER_LEN - HEADER_LEN
_ERROR_TYPES_BELOW: Final = 128  # §2.1: types 0-127 are errors
_QUOTED_TRANSPORT_LEN: Final = 8

_HEADER = struct.Struct("!BBHI")


@frozen
class Quoted:
    """The part of an offending packet that an ICMPv6 error carries."""

    src: IPv6Address
    dst: IPv6Address
    next_header: int  # the upper-layer protocol, after the extension headers quoted
    transport: Bytes  # up to the first 8 bytes of its data: the ports live here


@frozen
class Icmpv6Message:
    type: int
    code: int
    rest: int  # the 32 bits after the checksum
    payload: Bytes  # the body after them

    @property
    def ident(self) -> int:
        return self.rest >> 16

    @property
    def seq(self) -> int:
        return self.rest & 0xFFFF

    @property
    def mtu(self) -> int:
        """A packet-too-big message's MTU (§3.2)."""
        return self.rest

    @property
    def is_error(self) -> bool:
        return self.type < _ERROR_TYPES_BELOW

    @classmethod
    def echo(cls, type_: int, ident: int, seq: int, data: Bytes) -> Icmpv6Message:
        """An echo request or reply (§4.1, §4.2)."""
        return cls(type_, 0, (ident << 16) | seq, data)

    def echo_reply(self) -> Icmpv6Message:
        """The reply to this echo request: its identifier, sequence and data (§4.2)."""
        return Icmpv6Message(TYPE_ECHO_REPLY, 0, self.rest, self.payload)

    @classmethod
    def error(cls, type_: int, code: int, original: Bytes, rest: int = 0) -> Icmpv6Message:
        """An error about ``original``, an IPv6 packet, quoting as much as fits (§2.4(c)).

        Bytes past the packet's own payload length (Ethernet padding) are not quoted.
        """
        view = memoryview(original)
        if len(view) >= ipv6.HEADER_LEN and view[0] >> 4 == 6:
            view = view[: ipv6.HEADER_LEN + (view[4] << 8 | view[5])]
        return cls(type_, code, rest, bytes(view[:MAX_QUOTE_LEN]))

    @classmethod
    def destination_unreachable(cls, code: int, original: Bytes) -> Icmpv6Message:
        """§3.1: ``code`` is one of the ``CODE_*`` above, ``CODE_PORT_UNREACHABLE`` say."""
        return cls.error(TYPE_DEST_UNREACHABLE, code, original)

    @classmethod
    def packet_too_big(cls, mtu: int, original: Bytes) -> Icmpv6Message:
        """§3.2: the next hop takes packets of at most ``mtu`` bytes."""
        return cls.error(TYPE_PACKET_TOO_BIG, 0, original, mtu)

    @classmethod
    def time_exceeded(cls, code: int, original: Bytes) -> Icmpv6Message:
        """§3.3."""
        return cls.error(TYPE_TIME_EXCEEDED, code, original)

    @classmethod
    def parameter_problem(cls, code: int, pointer: int, original: Bytes) -> Icmpv6Message:
        """§3.4: ``pointer`` is the offset in ``original`` of the field at fault."""
        return cls.error(TYPE_PARAMETER_PROBLEM, code, original, pointer)

    @classmethod
    def parse(
        cls, data: Bytes, src: IPv6Address, dst: IPv6Address, *, verify_checksum: bool = True
    ) -> Icmpv6Message:
        """The message in an IPv6 packet's payload from ``src`` to ``dst``."""
        view = memoryview(data)
        require(view, HEADER_LEN, "icmpv6_truncated", "ICMPv6 header")
        if (
            verify_checksum
            and native.ones_sum(view, pseudo_header_sum(src, dst, PROTOCOL, len(view))) != 0xFFFF
        ):
            raise IntegrityError("icmpv6_bad_checksum")
        type_, code, _checksum, rest = _HEADER.unpack_from(view)
        return cls(type_, code, rest, view[HEADER_LEN:])

    def encode(self, src: IPv6Address, dst: IPv6Address) -> bytes:
        """The message with its checksum, for an IPv6 packet from ``src`` to ``dst``."""
        payload = memoryview(self.payload)
        length = HEADER_LEN + payload.nbytes
        # The header's words summed from the fields, the checksum taken as zero.
        start = pseudo_header_sum(src, dst, PROTOCOL, length)
        start += (self.type << 8 | self.code) + self.rest
        checksum = native.internet_checksum(payload, start)
        return b"".join((_HEADER.pack(self.type, self.code, checksum, self.rest), payload))

    def quoted(self) -> Quoted:
        """The offending packet of an error message; raises unless this is an error.

        Its extension headers are walked as far as the quote goes, never past it.
        """
        if not self.is_error:
            raise SanityError("icmpv6_not_an_error", f"type {self.type} quotes nothing")
        view = memoryview(self.payload)
        require(view, ipv6.HEADER_LEN, "icmpv6_quote_truncated", "quoted IPv6 header")
        if view[0] >> 4 != 6:
            raise SanityError("icmpv6_quote_not_ipv6", f"version {view[0] >> 4}")
        protocol, start = ipv6.upper_layer(view, view[6], ipv6.HEADER_LEN, len(view))
        return Quoted(
            IPv6Address(bytes(view[8:24])),
            IPv6Address(bytes(view[24:40])),
            protocol,
            view[start : start + _QUOTED_TRANSPORT_LEN],
        )
