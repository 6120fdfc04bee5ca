"""A guest of either address family, for tests parametrised over both (``family``).

``Guest(4)`` and ``Guest(6)`` build the same frames in their family with scapy, and
``checked`` verifies every checksum of what the core sends back before dissecting it.
This is smoltcp's ``IpvX`` and gVisor's ``ip_test.go`` in pytest form.
"""

from __future__ import annotations

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet

from tests.test_core_segment import GATEWAY_MAC, GUEST_MAC, checked

# Values inside frames only: documentation prefixes (RFC 5737, RFC 3849); nothing is sent.
REMOTE = {4: "192.0.2.1", 6: "2001:db8::1"}
GATEWAY = {4: "10.0.2.2", 6: "fec0::2"}
DNS = {4: "10.0.2.3", 6: "fec0::3"}
GUEST = {4: "10.0.2.15", 6: "fec0::15"}
LOOPBACK = {4: "127.0.0.1", 6: "::1"}


class Guest:
    """Frames from the guest at ``GUEST[family]``."""

    def __init__(self, family: int, mac: str = GUEST_MAC) -> None:
        self.family = family
        self.mac = mac
        self.address = GUEST[family]

    def ip(self, dst: str, *, src: str | None = None) -> Packet:
        src = src or self.address
        return IP(src=src, dst=dst) if self.family == 4 else IPv6(src=src, dst=dst)

    def frame(self, layers: Packet) -> bytes:
        return bytes(Ether(src=self.mac, dst=GATEWAY_MAC) / layers)

    def udp(self, dst: str, dport: int, payload: bytes = b"data", sport: int = 40000) -> bytes:
        return self.frame(self.ip(dst) / UDP(sport=sport, dport=dport) / payload)

    def tcp(
        self, dst: str, dport: int, flags: str = "S", seq: int = 1000, **fields: object
    ) -> bytes:
        return self.frame(
            self.ip(dst) / TCP(sport=41000, dport=dport, flags=flags, seq=seq, **fields)
        )

    def echo(self, dst: str, ident: int = 0x1234, seq: int = 1, data: bytes = b"ping!") -> bytes:
        if self.family == 4:
            return self.frame(self.ip(dst) / ICMP(type=8, id=ident, seq=seq) / data)
        return self.frame(self.ip(dst) / ICMPv6EchoRequest(id=ident, seq=seq, data=data))

    def ip_layer(self) -> type[Packet]:
        return IP if self.family == 4 else IPv6


__all__ = ["DNS", "GATEWAY", "GUEST", "LOOPBACK", "REMOTE", "Guest", "checked"]
