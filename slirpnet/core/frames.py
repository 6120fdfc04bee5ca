"""Frames from the gateway: the Ethernet header, then IP of either family.

Everything the gateway sends that is not an established flow's TCP segment (those take
``fastpath.py``'s one-call builders) is made here, so that the family of the addresses
decides the IP header in one place.
"""

from __future__ import annotations

import enum
import struct
from ipaddress import IPv4Address, IPv6Address

from slirpnet.core.addr import IPAddress
from slirpnet.core.flows import Endpoint
from slirpnet.core.fragments import split
from slirpnet.core.vm import Vm
from slirpnet.wire import ethernet, icmp, icmpv6, ipv4, ipv6, udp

_ETHERNET = struct.Struct("!6s6sH")


class Unreachable(enum.Enum):
    """Destination unreachable, in what both families' ICMP can say."""

    PORT = "port"  # the host refused the port
    HOST = "host"  # no host was reached
    ADMIN = "admin"  # policy or a limit said no


_ICMP6_CODES = {
    Unreachable.PORT: icmpv6.CODE_PORT_UNREACHABLE,  # RFC 4443 §3.1
    Unreachable.HOST: icmpv6.CODE_ADDRESS_UNREACHABLE,
    Unreachable.ADMIN: icmpv6.CODE_ADMIN_PROHIBITED,
}
_ICMP4_CODES = {
    Unreachable.PORT: icmp.CODE_PORT_UNREACHABLE,  # RFC 792
    Unreachable.HOST: icmp.CODE_HOST_UNREACHABLE,
    Unreachable.ADMIN: icmp.CODE_ADMIN_PROHIBITED,  # RFC 1812 §5.2.7.1
}


class Frames:
    def __init__(self, gateway_mac: bytes, mtu: int) -> None:
        self.gateway_mac = gateway_mac
        self.mtu = mtu
        self._ip_ident = 0

    def ethernet(self, dst_mac: bytes, ethertype: int) -> bytes:
        return _ETHERNET.pack(dst_mac, self.gateway_mac, ethertype)

    def next_ident(self) -> int:
        """The next IPv4 identification (RFC 6864: unique enough for our rare fragments)."""
        self._ip_ident = ident = (self._ip_ident + 1) & 0xFFFF
        return ident

    def next_idents(self, count: int) -> int:
        """The first of ``count`` consecutive identifications (modulo 2**16)."""
        first = (self._ip_ident + 1) & 0xFFFF
        self._ip_ident = (self._ip_ident + count) & 0xFFFF
        return first

    def ip(
        self,
        vm: Vm,
        dst_mac: bytes,
        src: IPAddress,
        dst: IPAddress,
        protocol: int,
        payload: bytes,
        *,
        hop_limit: int = ipv6.DEFAULT_HOP_LIMIT,
    ) -> None:
        """Send ``payload`` of ``protocol`` from ``src`` to ``dst`` (one family) to ``vm``."""
        if isinstance(src, IPv6Address) and isinstance(dst, IPv6Address):
            header = ipv6.IPv6Packet(src, dst, protocol, payload, hop_limit).encode_header()
            vm.send(b"".join((self.ethernet(dst_mac, ethernet.ETHERTYPE_IPV6), header, payload)))
        elif isinstance(src, IPv4Address) and isinstance(dst, IPv4Address):
            packet = ipv4.IPv4Packet(src, dst, protocol, payload, ident=self.next_ident())
            head = self.ethernet(dst_mac, ethernet.ETHERTYPE_IPV4)
            for header, data in split(packet, self.mtu):  # past the MTU: fragments
                vm.send(b"".join((head, header, data)))
        else:
            raise ValueError(f"{src} to {dst}: one family, please")

    def icmpv6(
        self,
        vm: Vm,
        dst_mac: bytes,
        src: IPv6Address,
        dst: IPv6Address,
        message: icmpv6.Icmpv6Message,
        *,
        hop_limit: int = ipv6.DEFAULT_HOP_LIMIT,
    ) -> None:
        payload = message.encode(src, dst)
        self.ip(vm, dst_mac, src, dst, icmpv6.PROTOCOL, payload, hop_limit=hop_limit)

    def udp(self, vm: Vm, dst: Endpoint, src: IPAddress, src_port: int, payload: bytes) -> None:
        datagram = udp.UdpDatagram(src_port, dst.port, payload).encode(src, dst.address)
        self.ip(vm, dst.mac, src, dst.address, ipv4.PROTO_UDP, datagram)

    def original(self, src: IPAddress, dst: IPAddress, protocol: int, transport: bytes) -> bytes:
        """A packet as the guest sent it (its transport header at least), for quoting."""
        if isinstance(src, IPv6Address) and isinstance(dst, IPv6Address):
            return ipv6.IPv6Packet(src, dst, protocol, transport).encode()
        assert isinstance(src, IPv4Address) and isinstance(dst, IPv4Address)
        return ipv4.IPv4Packet(src, dst, protocol, transport).encode()

    def unreachable(
        self,
        vm: Vm,
        dst_mac: bytes,
        src: IPAddress,
        dst: IPAddress,
        kind: Unreachable,
        original: bytes,
    ) -> None:
        """ICMP destination unreachable from ``src`` to the guest at ``dst``, about
        ``original`` (an IP packet it sent, as much as the message quotes)."""
        if isinstance(src, IPv6Address) and isinstance(dst, IPv6Address):
            message6 = icmpv6.Icmpv6Message.destination_unreachable(_ICMP6_CODES[kind], original)
            self.icmpv6(vm, dst_mac, src, dst, message6)
            return
        message = icmp.IcmpMessage.error(icmp.TYPE_DEST_UNREACHABLE, _ICMP4_CODES[kind], original)
        self.ip(vm, dst_mac, src, dst, ipv4.PROTO_ICMP, message.encode())
