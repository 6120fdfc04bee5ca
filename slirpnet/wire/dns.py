"""Just enough DNS (RFC 1035 §4) to answer local records and to say SERVFAIL.

slirpnet forwards queries to the upstream resolvers byte for byte; it reads a
message only to find the question and the EDNS OPT record (to answer names it
owns, to size and match replies) and writes only three kinds of reply: an
answer from its local records, an error (SERVFAIL, BADVERS, NOTIMP, or FORMERR
for what it cannot read), and an empty answer with TC set where an upstream's
is too long for the guest.  Each carries an OPT record when the query had one
(RFC 6891 §7), so a resolver keeps using EDNS with us.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

from attrs import frozen

from slirpnet.wire.buffer import Bytes, require
from slirpnet.wire.errors import IntegrityError, SanityError

HEADER_LEN = 12
TYPE_A = 1
TYPE_AAAA = 28
TYPE_OPT = 41
TYPE_ANY = 255
CLASS_IN = 1
CLASS_ANY = 255
OPCODE_QUERY = 0

RCODE_NOERROR = 0
RCODE_FORMERR = 1
RCODE_SERVFAIL = 2
RCODE_NXDOMAIN = 3
RCODE_NOTIMP = 4
RCODE_BADVERS = 16  # RFC 6891 §9: extended, its upper 8 bits in the OPT record

EDNS_VERSION = 0  # the only one there is (RFC 6891 §6.1.3)
# RFC 1035 §4.2.1: a message over UDP without EDNS is at most 512 octets; an EDNS
# requestor's size below that means 512 too (RFC 6891 §6.2.5).
MAX_PLAIN_UDP = 512

_FLAG_QR = 0x8000
_FLAG_AA = 0x0400
_FLAG_TC = 0x0200
_FLAG_RD = 0x0100
_FLAG_RA = 0x0080
_OPCODE_MASK = 0x7800
_EDNS_DO = 0x8000  # RFC 3225 §3: "DNSSEC OK", the first bit of the OPT's flags

_HEADER = struct.Struct("!HHHHHH")
_QUESTION_TAIL = struct.Struct("!HH")
_RR_TAIL = struct.Struct("!HHIH")  # type, class, TTL, data length
_ANSWER = struct.Struct("!HHHIH")  # name pointer, type, class, TTL, data length
# RFC 6891 §6.1.2: the root name, TYPE 41, CLASS the UDP payload size, TTL the extended
# RCODE, version and flags, no options.
_OPT = struct.Struct("!BHHBBHH")

_MAX_NAME = 255  # RFC 1035 §2.3.4, in wire octets
_MAX_POINTERS = 16  # a name cannot need more jumps than that honestly


@frozen
class Question:
    name: str  # as sent (case kept for RFC 1035 §2.3.3 case echoing), no trailing dot
    qtype: int
    qclass: int


@frozen
class Edns:
    """A query's OPT record (RFC 6891 §6.1.2): what the requestor takes and speaks."""

    udp_size: int  # the largest UDP payload it reassembles (the OPT's CLASS)
    version: int
    dnssec_ok: bool  # DO: it wants DNSSEC records (RFC 3225 §3)


@frozen
class DnsQuery:
    ident: int
    flags: int
    question: Question
    question_wire: bytes  # the question as sent, echoed verbatim in our replies
    edns: Edns | None

    @property
    def is_response(self) -> bool:
        return bool(self.flags & _FLAG_QR)

    @property
    def opcode(self) -> int:
        return (self.flags & _OPCODE_MASK) >> 11

    @property
    def udp_limit(self) -> int:
        """The largest reply the requestor takes over UDP (RFC 1035 §4.2.1, RFC 6891 §6.2.5)."""
        if self.edns is None:
            return MAX_PLAIN_UDP
        return max(self.edns.udp_size, MAX_PLAIN_UDP)

    @classmethod
    def parse(cls, data: Bytes) -> DnsQuery:
        """The header, first question and OPT record of a message; raises ``WireError``
        when any record the header counts is not all there."""
        view = memoryview(data)
        require(view, HEADER_LEN, "dns_truncated", "DNS header")
        ident, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(view)
        if qdcount == 0:
            raise SanityError("dns_no_question")
        name, offset, compressed = read_name(view, HEADER_LEN)
        if compressed:
            # The first name of a message has nothing earlier to point at.
            raise SanityError("dns_bad_pointer", "compressed first question")
        require(view, offset + 4, "dns_truncated", "DNS question")
        qtype, qclass = _QUESTION_TAIL.unpack_from(view, offset)
        question_end = offset + 4
        offset = question_end
        for _ in range(qdcount - 1):
            offset = read_name(view, offset)[1] + 4
        require(view, offset, "dns_truncated", "DNS question")
        for _ in range(ancount + nscount):
            offset = _skip_record(view, offset)[0]
        edns = None
        for _ in range(arcount):
            offset, rtype, rclass, ttl = _skip_record(view, offset)
            if rtype == TYPE_OPT:
                if edns is not None:
                    raise SanityError("dns_opt_twice")  # RFC 6891 §6.1.1: FORMERR
                edns = Edns(rclass, (ttl >> 16) & 0xFF, bool(ttl & _EDNS_DO))
        return cls(
            ident,
            flags,
            Question(name, qtype, qclass),
            bytes(view[HEADER_LEN:question_end]),
            edns,
        )


def _skip_record(view: memoryview, offset: int) -> tuple[int, int, int, int]:
    """The offset after the resource record at ``offset``, and its type, class and TTL."""
    offset = read_name(view, offset)[1]
    require(view, offset + _RR_TAIL.size, "dns_truncated", "DNS record")
    rtype, rclass, ttl, length = _RR_TAIL.unpack_from(view, offset)
    offset += _RR_TAIL.size + length
    require(view, offset, "dns_truncated", "DNS record data")
    return offset, rtype, rclass, ttl


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
    addresses: tuple[IPv4Address | IPv6Address, ...] = (),
    ttl: int = 0,
    *,
    udp_size: int,
    authoritative: bool = False,
    truncated: bool = False,
) -> bytes:
    """A reply to ``query``: its question echoed, then an A or AAAA record per address,
    then, when the query had an OPT record, ours (RFC 6891 §7).

    Our OPT says we take ``udp_size`` octets, speaks version 0, carries the upper bits
    of ``rcode`` (BADVERS) and echoes the query's DO bit (RFC 3225 §3).  ``truncated``
    sets TC (RFC 1035 §4.1.1): the answer did not fit, ask again over TCP.
    """
    flags = _FLAG_QR | (query.flags & (_OPCODE_MASK | _FLAG_RD)) | _FLAG_RA | (rcode & 0xF)
    if authoritative:
        flags |= _FLAG_AA
    if truncated:
        flags |= _FLAG_TC
    edns = query.edns
    header = _HEADER.pack(query.ident, flags, 1, len(addresses), 0, 0 if edns is None else 1)
    parts = [header, query.question_wire]
    for address in addresses:
        # 0xC00C: the name is the question's, at offset 12 (RFC 1035 §4.1.4).
        rtype = TYPE_A if address.version == 4 else TYPE_AAAA
        parts.append(_ANSWER.pack(0xC00C, rtype, CLASS_IN, ttl, len(address.packed)))
        parts.append(address.packed)
    if edns is not None:
        do = _EDNS_DO if edns.dnssec_ok else 0
        parts.append(_OPT.pack(0, TYPE_OPT, udp_size, rcode >> 4, EDNS_VERSION, do, 0))
    return b"".join(parts)


def error_for_unparsed(data: Bytes, rcode: int) -> bytes | None:
    """An error reply echoing only the ID of a query we could not read; None without one.

    No OPT record: where the message could not be read, neither could its OPT."""
    view = memoryview(data)
    if len(view) < 4:
        return None
    ident, flags = struct.unpack_from("!HH", view)
    flags = _FLAG_QR | (flags & (_OPCODE_MASK | _FLAG_RD)) | _FLAG_RA | rcode
    return _HEADER.pack(ident, flags, 0, 0, 0, 0)
