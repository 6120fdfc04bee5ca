"""What the corpus is made of: a guest's identity, a sample frame, the gateway's MAC.

A guest has a MAC, its IPv4 address (a lease) and its IPv6 address (the network's
prefix and the MAC's interface identifier, as SLAAC makes it, RFC 4862 §5.5.3), and
the link-local address of the same identifier.
"""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network

from attrs import frozen

from slirpnet.core.settings import NetworkSettings

_LINK_LOCAL = IPv6Network("fe80::/64")


@frozen
class Guest:
    mac: str
    address: str
    address6: str = ""

    @property
    def mac_bytes(self) -> bytes:
        return bytes.fromhex(self.mac.replace(":", ""))

    @property
    def link_local(self) -> str:
        return slaac(_LINK_LOCAL, self.mac_bytes)


@frozen
class Sample:
    name: str
    frame: bytes
    reason: str | None = None  # the one drop reason it is counted under, in any state


def gateway_mac(settings: NetworkSettings) -> str:
    """libslirp's convention, as the segment uses it: 52:55 then the gateway's address."""
    return (b"\x52\x55" + settings.gateway.packed).hex(":")


def slaac(prefix: IPv6Network, mac: bytes) -> str:
    """``prefix`` and the modified EUI-64 identifier of ``mac`` (RFC 4291 App. A): ff:fe
    in the middle, the universal/local bit flipped."""
    identifier = bytes((mac[0] ^ 0x02, *mac[1:3], 0xFF, 0xFE, *mac[3:6]))
    return str(IPv6Address(int(prefix.network_address) | int.from_bytes(identifier, "big")))
