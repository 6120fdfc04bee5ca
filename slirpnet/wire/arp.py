"""ARP for IPv4 over Ethernet (RFC 826; probes and announcements per RFC 5227 §1.1)."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address

from attrs import frozen

from slirpnet.wire.buffer import Bytes, require
from slirpnet.wire.errors import SanityError

OP_REQUEST = 1
OP_REPLY = 2

PACKET_LEN = 28
_HTYPE_ETHERNET = 1
_PTYPE_IPV4 = 0x0800

_PACKET = struct.Struct("!HHBBH6s4s6s4s")


@frozen
class ArpPacket:
    op: int
    sender_mac: bytes
    sender_ip: IPv4Address
    target_mac: bytes
    target_ip: IPv4Address

    @property
    def is_probe(self) -> bool:
        """An RFC 5227 probe: a request whose sender address is 0.0.0.0."""
        return self.op == OP_REQUEST and int(self.sender_ip) == 0

    @classmethod
    def parse(cls, data: Bytes) -> ArpPacket:
        view = memoryview(data)
        # Anything past 28 bytes is Ethernet padding, not part of the packet.
        require(view, PACKET_LEN, "arp_truncated", "ARP packet")
        htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _PACKET.unpack_from(view)
        if (htype, ptype, hlen, plen) != (_HTYPE_ETHERNET, _PTYPE_IPV4, 6, 4):
            raise SanityError(
                "arp_not_ipv4_ethernet", f"htype {htype} ptype {ptype:#06x} hlen {hlen} plen {plen}"
            )
        if op not in (OP_REQUEST, OP_REPLY):
            raise SanityError("arp_bad_op", f"operation {op}")
        return cls(op, sha, IPv4Address(spa), tha, IPv4Address(tpa))

    def encode(self) -> bytes:
        return _PACKET.pack(
            _HTYPE_ETHERNET,
            _PTYPE_IPV4,
            6,
            4,
            self.op,
            self.sender_mac,
            self.sender_ip.packed,
            self.target_mac,
            self.target_ip.packed,
        )

    def reply(self, mac: bytes) -> ArpPacket:
        """The reply that says ``self.target_ip`` is at ``mac``, addressed to the asker."""
        return ArpPacket(OP_REPLY, mac, self.target_ip, self.sender_mac, self.sender_ip)
