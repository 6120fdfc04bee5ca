"""Just enough DNS (RFC 1035 §4) to answer local records and to say SERVFAIL.

slirpnet forwards queries to the upstream resolvers byte for byte; it reads a
message only to find the question (to answer names it owns and to match
replies) and writes only three kinds of reply: an answer from its local records,
an error (SERVFAIL, or FORMERR for what it cannot read), and an empty answer with
TC set where an upstream's is too long for the guest's link.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address

from attrs import frozen

from slirpnet.wire.buffer import Bytes, require
from slirpnet.wire.errors import IntegrityError, SanityError

HEADER_LEN = 12
TYPE_A = 1
TYPE_AAAA = 28
TYPE_ANY = 255
CLASS_IN = 1

RCODE_NOERROR = 0
RCODE_FORMERR = 1
RCODE_SERVFAIL = 2
RCODE_NXDOMAIN = 3
RCODE_NOTIMP = 4

_FLAG_QR = 0x8000
_FLAG_AA = 0x0400
_FLAG_TC = 0x0200
_FLAG_RD = 0x0100
_FLAG_RA = 0x0080
_OPCODE_MASK = 0x7800

_HEADER = struct.Struct("!HHHHHH")
_QUESTION_TAIL = struct.Struct("!HH")
_ANSWER_A = struct.Struct("!HHHIH4s")  # name pointer, type, class, TTL, length, address

_MAX_NAME = 255  # RFC 1035 §2.3.4, in wire octets
_MAX_POINTERS = 16  # a name cannot need more jumps than that honestly


@frozen
class Question:
    name: str  # as sent (case kept for RFC 1035 §2.3.3 case echoing), no trailing dot
    qtype: int
    qclass: int


@frozen
class DnsQuery:
    ident: int
    flags: int
    question: Question
    question_wire: bytes  # the question as sent, echoed verbatim in our replies

    @property
    def is_response(self) -> bool:
        return bool(self.flags & _FLAG_QR)

    @property
    def opcode(self) -> int:
        return (self.flags & _OPCODE_MASK) >> 11

    @classmethod
    def parse(cls, data: Bytes) -> DnsQuery:
        """The header and first question of a message; raises ``WireError`` otherwise."""
        view = memoryview(data)
        require(view, HEADER_LEN, "dns_truncated", "DNS header")
        ident, flags, qdcount, _an, _ns, _ar = _HEADER.unpack_from(view)
        if qdcount == 0:
            raise SanityError("dns_no_question")
        name, offset, compressed = read_name(view, HEADER_LEN)
        if compressed:
            # The first name of a message has nothing earlier to point at.
            raise SanityError("dns_bad_pointer", "compressed first question")
        require(view, offset + 4, "dns_truncated", "DNS question")
        qtype, qclass = _QUESTION_TAIL.unpack_from(view, offset)
        return cls(
            ident, flags, Question(name, qtype, qclass), bytes(view[HEADER_LEN : offset + 4])
        )


def read_name(view: memoryview, offset: int) -> tuple[str, int, bool]:
    """The name at ``offset``, the offset after it, and whether it used compression.

    RFC 1035 §4.1.4 pointers are followed, but at most ``_MAX_POINTERS`` of them,
    and the name is at most 255 octets (§2.3.4), so no message can make us loop.
    """
    labels: list[str] = []
    end = -1
    jumps = 0
    wire_len = 1
    while True:
        require(view, offset + 1, "dns_truncated", "DNS name")
        length = view[offset]
        if length >= 0xC0:
            require(view, offset + 2, "dns_truncated", "DNS name pointer")
            if end < 0:
                end = offset + 2
            jumps += 1
            if jumps > _MAX_POINTERS:
                raise IntegrityError("dns_pointer_loop")
            offset = ((length & 0x3F) << 8) | view[offset + 1]
            continue
        if length > 63:
            raise SanityError("dns_bad_label", f"label length byte {length:#04x}")
        if length == 0:
            return ".".join(labels), (end if end >= 0 else offset + 1), end >= 0
        require(view, offset + 1 + length, "dns_truncated", "DNS label")
        wire_len += length + 1
        if wire_len > _MAX_NAME:
            raise IntegrityError("dns_name_too_long")
        labels.append(bytes(view[offset + 1 : offset + 1 + length]).decode("latin-1"))
        offset += 1 + length


def reply(
    query: DnsQuery,
    rcode: int,
    addresses: tuple[IPv4Address, ...] = (),
    ttl: int = 0,
    *,
    authoritative: bool = False,
    truncated: bool = False,
) -> bytes:
    """A reply to ``query``: its question echoed, then one A record per address.

    ``truncated`` sets TC (RFC 1035 §4.1.1): the answer did not fit, ask again over TCP.
    """
    flags = _FLAG_QR | (query.flags & (_OPCODE_MASK | _FLAG_RD)) | _FLAG_RA | rcode
    if authoritative:
        flags |= _FLAG_AA
    if truncated:
        flags |= _FLAG_TC
    header = _HEADER.pack(query.ident, flags, 1, len(addresses), 0, 0)
    answers = b"".join(
        # 0xC00C: the name is the question's, at offset 12 (RFC 1035 §4.1.4).
        _ANSWER_A.pack(0xC00C, TYPE_A, CLASS_IN, ttl, 4, address.packed)
        for address in addresses
    )
    return header + query.question_wire + answers


def error_for_unparsed(data: Bytes, rcode: int) -> bytes | None:
    """An error reply echoing only the ID of a query we could not read; None without one."""
    view = memoryview(data)
    if len(view) < 4:
        return None
    ident, flags = struct.unpack_from("!HH", view)
    flags = _FLAG_QR | (flags & (_OPCODE_MASK | _FLAG_RD)) | _FLAG_RA | rcode
    return _HEADER.pack(ident, flags, 0, 0, 0, 0)
