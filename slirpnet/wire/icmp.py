"""ICMP for IPv4 (RFC 792): echo, destination unreachable, time exceeded.

Error messages quote the offending datagram's IP header and the first 8 bytes
of its payload (RFC 792; RFC 1122 §3.2.2), which is enough for the receiver to
find the ports, and so the flow, the error belongs to.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address

from attrs import frozen

from slirpnet import native
from slirpnet.wire.buffer import Bytes, require
from slirpnet.wire.errors import IntegrityError, SanityError
from slirpnet.wire.ipv4 import MIN_HEADER_LEN

TYPE_ECHO_REPLY = 0
TYPE_DEST_UNREACHABLE = 3
TYPE_ECHO_REQUEST = 8
TYPE_TIME_EXCEEDED = 11

# Destination-unreachable codes (RFC 792, RFC 1812 §5.2.7.1).
CODE_NET_UNREACHABLE = 0
CODE_HOST_UNREACHABLE = 1
CODE_PROTOCOL_UNREACHABLE = 2
CODE_PORT_UNREACHABLE = 3
CODE_FRAGMENTATION_NEEDED = 4
CODE_ADMIN_PROHIBITED = 13

# Time-exceeded codes.
CODE_TTL_EXCEEDED = 0
CODE_REASSEMBLY_TIMEOUT = 1  # fragments not all come in time (RFC 1122 §3.3.2)

HEADER_LEN = 8
_QUOTED_PAYLOAD_LEN = 8

_HEADER = struct.Struct("!BBHI")
_ECHO = struct.Struct("!HH")
_QUOTED = struct.Struct("!BBHHHBBH4s4s")


@frozen
class Quoted:
    """The part of an offending datagram that an ICMP error carries."""

    src: IPv4Address
    dst: IPv4Address
    protocol: int
    transport: Bytes  # up to the first 8 bytes of its payload: the ports live here


@frozen
class IcmpMessage:
    type: int
    code: int
    rest: int  # the 32 bits after the checksum: ident and sequence, or next-hop MTU
    payload: Bytes

    @property
    def ident(self) -> int:
        return self.rest >> 16

    @property
    def seq(self) -> int:
        return self.rest & 0xFFFF

    @property
    def is_error(self) -> bool:
        return self.type in (TYPE_DEST_UNREACHABLE, TYPE_TIME_EXCEEDED)

    @classmethod
    def echo(cls, type_: int, ident: int, seq: int, data: Bytes) -> IcmpMessage:
        return cls(type_, 0, (ident << 16) | seq, data)

    @classmethod
    def error(cls, type_: int, code: int, original: Bytes, mtu: int = 0) -> IcmpMessage:
        """An error about ``original`` (an encoded IPv4 packet), quoting its header and 8 bytes.

        ``mtu`` is the next-hop MTU for fragmentation-needed (RFC 1191 §4).
        """
        view = memoryview(original)
        header_len = (view[0] & 0x0F) * 4 if view else 0
        return cls(type_, code, mtu & 0xFFFF, bytes(view[: header_len + _QUOTED_PAYLOAD_LEN]))

    @classmethod
    def parse(cls, data: Bytes, *, verify_checksum: bool = True) -> IcmpMessage:
        view = memoryview(data)
        require(view, HEADER_LEN, "icmp_truncated", "ICMP header")
        if verify_checksum and native.ones_sum(view) != 0xFFFF:
            raise IntegrityError("icmp_bad_checksum")
        type_, code, _csum, rest = _HEADER.unpack_from(view)
        return cls(type_, code, rest, view[HEADER_LEN:])

    def encode(self) -> bytes:
        message = bytearray(_HEADER.pack(self.type, self.code, 0, self.rest))
        message += self.payload
        struct.pack_into("!H", message, 2, native.internet_checksum(message))
        return bytes(message)

    def quoted(self) -> Quoted:
        """The offending datagram of an error message; raises unless this is an error."""
        if not self.is_error:
            raise SanityError("icmp_not_an_error", f"type {self.type} quotes nothing")
        view = memoryview(self.payload)
        require(view, MIN_HEADER_LEN, "icmp_quote_truncated", "quoted IPv4 header")
        ver_ihl, *_, protocol, _csum, src, dst = _QUOTED.unpack_from(view)
        header_len = (ver_ihl & 0x0F) * 4
        if ver_ihl >> 4 != 4 or header_len < MIN_HEADER_LEN:
            raise SanityError("icmp_quote_not_ipv4", f"version/IHL byte {ver_ihl:#04x}")
        require(view, header_len, "icmp_quote_truncated", "quoted IPv4 options")
        transport = view[header_len : header_len + _QUOTED_PAYLOAD_LEN]
        return Quoted(IPv4Address(src), IPv4Address(dst), protocol, transport)
