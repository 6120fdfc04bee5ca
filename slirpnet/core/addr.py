"""What the two address families share, and the little in which they differ.

The core names addresses as ``IPAddress`` (either family) wherever the family does not
matter: the TCP endpoint, the flow table, the NAT.  What does differ (header sizes,
the loopback a gateway address stands for, ICMP's protocol number) is asked of
``Family``, so that no ``mtu - 40`` hides in family-free code.

Flow keys put both families in one integer space, as passt's ``inany`` does: an IPv4
address is keyed as its IPv4-mapped IPv6 address (RFC 4291 §2.5.5.2), which no guest
may use as a source, so ``::10.0.2.15`` and ``10.0.2.15`` never collide.
"""

from __future__ import annotations

import enum
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Final, TypeAlias

IPAddress: TypeAlias = IPv4Address | IPv6Address
IPNetwork: TypeAlias = IPv4Network | IPv6Network

V4_MAPPED: Final = 0xFFFF << 32
TCP_HEADER_LEN: Final = 20  # without options (RFC 9293 §3.1)
UDP_HEADER_LEN: Final = 8
# Made once: parsing the text again for each connection to the gateway showed in profiles.
V4_LOOPBACK: Final = IPv4Address("127.0.0.1")
V6_LOOPBACK: Final = IPv6Address("::1")


class Family(enum.Enum):
    V4 = 4
    V6 = 6

    @property
    def ip_header_len(self) -> int:
        """The fixed header: IPv4 without options (RFC 791), IPv6 (RFC 8200 §3)."""
        return 20 if self is Family.V4 else 40

    @property
    def loopback(self) -> IPAddress:
        """What the gateway address stands for: the host itself."""
        return V4_LOOPBACK if self is Family.V4 else V6_LOOPBACK

    def mss(self, mtu: int) -> int:
        """The TCP MSS an MTU carries (RFC 9293 §3.7.1)."""
        return mtu - self.ip_header_len - TCP_HEADER_LEN

    def udp_room(self, mtu: int) -> int:
        """The largest UDP payload one unfragmented datagram carries."""
        return mtu - self.ip_header_len - UDP_HEADER_LEN


def family_of(address: IPAddress) -> Family:
    return Family.V4 if address.version == 4 else Family.V6


def key_int(address: IPAddress) -> int:
    """``address`` in the one integer space of flow keys and the neighbour table."""
    value = int(address)
    return value | V4_MAPPED if address.version == 4 else value
