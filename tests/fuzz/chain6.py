"""An IPv6 header chain walked the way a receiving host walks it, written apart from
``slirpnet/wire/ipv6.py`` so that it can judge the core's RA guard.

``upper_layer`` follows every extension header a host processes before the upper
layer (RFC 8200 §4: Hop-by-Hop, Routing, Destination Options, a first fragment's
Fragment header, and AH, RFC 4302 §2.2), in any order and any number: where the
core refuses a chain, this one still finds what a lenient host would read.
``guard_violation`` says whether a frame from a guest is what RA guard keeps from
other VMs: a router advertisement or redirect (RFC 6105, RFC 7113 §3, which asks
for the whole chain to be walked, a first fragment's included) or a DHCPv6 message
from a server or relay to a client (RFC 7610 §5: UDP from port 547 or to port 546).
"""

from __future__ import annotations

import struct

from attrs import frozen

HEADER_LEN = 40
ETHERTYPE_IPV6 = b"\x86\xdd"
HOP_BY_HOP, ROUTING, FRAGMENT, AH, DESTINATION = 0, 43, 44, 51, 60
TCP, UDP, ICMPV6 = 6, 17, 58
ROUTER_ADVERTISEMENT, REDIRECT = 134, 137
DHCPV6_CLIENT, DHCPV6_SERVER = 546, 547
_PORTS = struct.Struct("!HH")


@frozen
class UpperLayer:
    protocol: int
    start: int  # offset of its header in the IPv6 packet
    end: int  # the payload length's end
    first_fragment: bool  # behind a Fragment header with offset 0 (the rest is elsewhere)


def upper_layer(packet: bytes) -> UpperLayer | None:
    """The upper layer of an IPv6 packet (no Ethernet header), or None when a host
    would find none: truncated, a header past the payload, a fragment after the first."""
    if len(packet) < HEADER_LEN or packet[0] >> 4 != 6:
        return None
    end = HEADER_LEN + (packet[4] << 8 | packet[5])
    if end > len(packet):
        return None
    protocol, offset, fragment = packet[6], HEADER_LEN, False
    while protocol in (HOP_BY_HOP, ROUTING, FRAGMENT, AH, DESTINATION):
        if offset + 8 > end:
            return None
        if protocol == FRAGMENT:
            if (packet[offset + 2] << 8 | packet[offset + 3]) >> 3:
                return None  # a later fragment: its bytes are no header
            fragment = True
            size = 8
        elif protocol == AH:
            size = (packet[offset + 1] + 2) * 4  # RFC 4302 §2.2: in 32-bit words, less 2
        else:
            size = (packet[offset + 1] + 1) * 8
        protocol, offset = packet[offset], offset + size
    if offset > end:
        return None
    return UpperLayer(protocol, offset, end, fragment)


def guard_violation(frame: bytes) -> str | None:
    """What ``frame``, switched from one guest to another, carries that only a router or a
    DHCPv6 server may send; None when it carries none of that."""
    if frame[12:14] != ETHERTYPE_IPV6:
        return None
    found = upper_layer(frame[14:])
    if found is None:
        return None
    body = frame[14 + found.start : 14 + found.end]
    if found.protocol == ICMPV6 and body[:1] in (b"\x86", b"\x89"):
        return "a redirect" if body[0] == REDIRECT else "a router advertisement"
    if found.protocol == UDP and len(body) >= 4:
        src, dst = _PORTS.unpack_from(body)
        if src == DHCPV6_SERVER or dst == DHCPV6_CLIENT:
            return f"a DHCPv6 message from port {src} to port {dst}"
    return None
