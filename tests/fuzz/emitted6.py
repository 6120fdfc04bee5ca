"""Every IPv6 frame the gateway sends must be one a guest's stack takes (see ``emitted``).

``check`` parses it with our own codecs, checksums verified, and checks what no valid
frame gets wrong: no extension headers and nothing after the payload length, within
the MTU; from one of the gateway's addresses or the one a flow's guest addressed, to
a guest's unicast address, all nodes or a guest address's solicited-node group (at
the group's MAC, RFC 2464 §7); ICMPv6 only echo replies, destination unreachables
within the minimum MTU (RFC 4443 §2.4(c)), router advertisements from the gateway's
link-local address with hop limit 255 for the network's prefix, MTU and DNS server
(RFC 4861 §6.1.2, RFC 8106), neighbour advertisements for the gateway's own addresses
(§7.2.4), and neighbour solicitations for a guest's address, to its group, with our
MAC (§7.2.2, a forward looking for its guest); DHCPv6 only Advertise or Reply, from
the gateway's link-local address and DUID (RFC 8415 §18.3).
``check_with_scapy`` dissects it again with scapy.
"""

from __future__ import annotations

import struct
from ipaddress import IPv6Address

from scapy.layers.inet6 import IPv6, in6_chksum
from scapy.layers.l2 import Ether
from scapy.packet import Padding

from slirpnet.core.settings import NetworkSettings
from slirpnet.wire import dhcpv6, ethernet, icmpv6, ipv6, ndp, tcp, udp

_TRANSPORTS = (ipv6.PROTO_TCP, ipv6.PROTO_UDP, ipv6.PROTO_ICMPV6)
_ICMPV6_SENT = (
    icmpv6.TYPE_ECHO_REPLY,
    icmpv6.TYPE_DEST_UNREACHABLE,
    icmpv6.TYPE_PACKET_TOO_BIG,  # to a guest whose packet outgrew the MTU
    icmpv6.TYPE_ROUTER_ADVERTISEMENT,
    icmpv6.TYPE_NEIGHBOR_SOLICITATION,
    icmpv6.TYPE_NEIGHBOR_ADVERTISEMENT,
)


def check(
    eth: ethernet.EthernetFrame, settings: NetworkSettings, gateway_mac: bytes
) -> tuple[ipv6.IPv6Packet, tcp.TcpSegment | None]:
    """The packet of ``eth``, from the gateway, checked; its TCP segment if any."""
    raw = memoryview(eth.payload)
    assert raw[6] in _TRANSPORTS, f"next header {raw[6]}: the gateway writes no other"
    packet = ipv6.IPv6Packet.parse(raw)
    assert ipv6.HEADER_LEN + len(packet.payload) == len(raw), "bytes after the payload length"
    assert len(raw) <= settings.mtu, f"a {len(raw)}-byte packet on an MTU of {settings.mtu}"
    assert packet.hop_limit > 0
    router = ipv6.link_local(gateway_mac)
    own = (settings.gateway6, settings.dns6, router)
    src, dst = packet.src, packet.dst
    assert not (src.is_multicast or src.is_unspecified), f"from {src}"
    if dst.is_multicast:
        group = dst == ipv6.ALL_NODES or dst == ipv6.solicited_node(dst)
        assert group and eth.dst == ipv6.multicast_mac(dst), f"to {dst} at {eth.dst.hex()}"
    else:
        # Its MAC is the guest's to choose (the link-layer address its solicitation
        # carried, as an ARP request's sender MAC is in IPv4).
        assert dst not in own and not dst.is_unspecified, f"to {dst}"
    if packet.next_header == ipv6.PROTO_ICMPV6:
        _icmpv6(packet, settings, gateway_mac, len(raw))
        return packet, None
    if packet.next_header == ipv6.PROTO_UDP:
        datagram = udp.UdpDatagram.parse(packet.payload, src, dst)
        if datagram.src_port == 547:
            _dhcpv6(packet, datagram, router, gateway_mac)
        return packet, None
    return packet, tcp.TcpSegment.parse(packet.payload, src, dst)


def _icmpv6(
    packet: ipv6.IPv6Packet, settings: NetworkSettings, gateway_mac: bytes, size: int
) -> None:
    message = icmpv6.Icmpv6Message.parse(packet.payload, packet.src, packet.dst)
    assert message.type in _ICMPV6_SENT, f"ICMPv6 type {message.type}"
    router = ipv6.link_local(gateway_mac)
    if packet.dst.is_multicast and packet.dst != ipv6.ALL_NODES:
        assert message.type == icmpv6.TYPE_NEIGHBOR_SOLICITATION, "to a solicited-node group"
    if message.is_error:
        assert size <= ipv6.MIN_MTU, "an ICMPv6 error past the minimum MTU"
        message.quoted()
        return
    if message.type == icmpv6.TYPE_ECHO_REPLY:
        return
    assert packet.hop_limit == ndp.HOP_LIMIT, "Neighbour Discovery with hop limit below 255"
    parsed = ndp.parse(message)
    ndp.check_ip(packet, parsed)
    if isinstance(parsed, ndp.RouterAdvertisement):
        assert packet.src == router, "an RA not from the gateway's link-local address"
        options = {type(option): option for option in parsed.options}
        prefix = options[ndp.PrefixInformation]
        assert isinstance(prefix, ndp.PrefixInformation)
        assert prefix.prefix == settings.network6 and prefix.on_link and prefix.autonomous
        assert options[ndp.Mtu] == ndp.Mtu(settings.mtu)
        servers = options[ndp.RecursiveDnsServers]
        assert isinstance(servers, ndp.RecursiveDnsServers)
        assert servers.servers == (settings.dns6,)
        return
    if isinstance(parsed, ndp.NeighborSolicitation):
        assert packet.src == router and packet.dst == ipv6.solicited_node(parsed.target)
        assert parsed.target in settings.network6, "a solicitation for a stranger"
        assert parsed.target not in (settings.gateway6, settings.dns6)
        assert parsed.source_mac == gateway_mac
        return
    assert isinstance(parsed, ndp.NeighborAdvertisement)
    assert packet.src == parsed.target and parsed.router
    assert parsed.target in (settings.gateway6, settings.dns6, router), "an NA for a stranger"
    # Solicited, but for a guest testing the address (RFC 4862 §5.4.3), to all nodes.
    assert parsed.solicited == (packet.dst != ipv6.ALL_NODES)


def _dhcpv6(
    packet: ipv6.IPv6Packet, datagram: udp.UdpDatagram, router: IPv6Address, gateway_mac: bytes
) -> None:
    assert packet.src == router and datagram.dst_port == 546
    reply = dhcpv6.Dhcpv6Message.parse(datagram.payload)
    assert reply.msg_type in (dhcpv6.MessageType.ADVERTISE, dhcpv6.MessageType.REPLY)
    assert reply.server_id == dhcpv6.duid_ll(gateway_mac)


def check_with_scapy(frame: bytes) -> None:
    pkt = Ether(frame)
    assert pkt.haslayer(IPv6) and not pkt.haslayer(Padding), "scapy finds bytes past the end"
    raw = frame[ethernet.HEADER_LEN :]
    assert struct.unpack_from("!H", raw, 4)[0] == len(raw) - ipv6.HEADER_LEN, "payload length"
    assert in6_chksum(raw[6], pkt[IPv6], raw[ipv6.HEADER_LEN :]) == 0, "upper-layer checksum"
