"""Ethernet II frames (IEEE 802.3 clause 3.2.6, as carried by QEMU and VDE: no preamble, no FCS).

802.1Q and 802.1ad tags are recognised and refused: a virtio NIC on a slirpnet
segment has no VLANs, so a tagged frame is a guest misconfiguration to count,
not to forward.  Lengths below 0x0600 are 802.3 length fields (LLC), refused too.
"""

from __future__ import annotations

import struct
from typing import Final

from attrs import frozen

from slirpnet.wire.buffer import Bytes, require
from slirpnet.wire.errors import SanityError

ETHERTYPE_IPV4: Final = 0x0800
ETHERTYPE_ARP: Final = 0x0806
ETHERTYPE_VLAN: Final = 0x8100
ETHERTYPE_QINQ: Final = 0x88A8
ETHERTYPE_IPV6: Final = 0x86DD

HEADER_LEN: Final = 14
BROADCAST = b"\xff" * 6

_HEADER = struct.Struct("!6s6sH")


def format_mac(mac: bytes) -> str:
    """``52:54:00:12:34:56`` from six bytes."""
    return mac.hex(":")


def parse_mac(text: str) -> bytes:
    """Six bytes from ``52:54:00:12:34:56`` (``-`` also accepted); raises ``ValueError``."""
    parts = text.replace("-", ":").split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise ValueError(f"not a MAC address: {text!r}")
    return bytes(int(p, 16) for p in parts)


def is_multicast(mac: bytes) -> bool:
    """True for group addresses, broadcast included (the I/G bit)."""
    return bool(mac[0] & 1)


@frozen
class EthernetFrame:
    dst: bytes
    src: bytes
    ethertype: int
    payload: Bytes

    @classmethod
    def parse(cls, data: Bytes) -> EthernetFrame:
        view = memoryview(data)
        require(view, HEADER_LEN, "eth_truncated", "Ethernet header")
        dst, src, ethertype = _HEADER.unpack_from(view)
        if ethertype in (ETHERTYPE_VLAN, ETHERTYPE_QINQ):
            raise SanityError("eth_vlan_tagged", f"802.1Q tag {ethertype:#06x}")
        if ethertype < 0x0600:
            raise SanityError("eth_not_ethernet_ii", f"802.3 length field {ethertype}")
        return cls(dst, src, ethertype, view[HEADER_LEN:])

    def encode(self) -> bytes:
        return _HEADER.pack(self.dst, self.src, self.ethertype) + self.payload
