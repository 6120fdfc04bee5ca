"""Every frame the gateway sends must be one a guest's stack takes.

``check`` parses it with our own codecs, checksums verified, and checks the
fields no valid frame gets wrong: from the gateway's MAC, ARP replies for its own
addresses and requests from them for a guest's (a leased address not heard from), IPv4
with nothing after its total length, within the MTU, DHCP replies within 576 bytes
that parse as OFFER, ACK or NAK.  A fragment (of a datagram longer than the MTU) is
checked as one (8-byte units, never DF, never TCP, whose segments fit the MTU), and
``reassembled`` puts a batch's fragments back together with scapy and checks each
whole datagram as above.  IPv6 frames are ``emitted6``'s to check.
``check_with_scapy`` dissects a frame again with scapy, as an oracle we did not write.
"""

from __future__ import annotations

import struct

from attrs import frozen
from scapy.layers.inet import ICMP, IP, TCP, UDP, defrag, in4_chksum
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Padding
from scapy.utils import checksum

from slirpnet.core.dhcp import MAX_REPLY_LEN
from slirpnet.core.settings import NetworkSettings
from slirpnet.wire import arp, dhcp, ethernet, icmp, ipv4, ipv6, tcp, udp
from tests.fuzz import emitted6


@frozen
class Emitted:
    eth: ethernet.EthernetFrame
    ip: ipv4.IPv4Packet | ipv6.IPv6Packet | None = None
    tcp: tcp.TcpSegment | None = None

    @property
    def fragment(self) -> bool:
        """A piece of an IPv4 datagram longer than the MTU (the gateway never fragments
        IPv6: RFC 8200 §5 leaves that to the source, and it answers within the MTU)."""
        return isinstance(self.ip, ipv4.IPv4Packet) and self.ip.is_fragment


def check(frame: bytes, settings: NetworkSettings, gateway_mac: bytes) -> Emitted:
    eth = ethernet.EthernetFrame.parse(frame)
    # The destination is the guest's to choose (an ARP sender or DHCP client address).
    assert eth.src == gateway_mac, "not from the gateway"
    if eth.ethertype == ethernet.ETHERTYPE_ARP:
        packet = arp.ArpPacket.parse(eth.payload)
        assert len(frame) == ethernet.HEADER_LEN + arp.PACKET_LEN
        assert packet.sender_mac == gateway_mac
        if packet.op == arp.OP_REQUEST:
            assert packet.sender_ip == settings.gateway and packet.target_mac == bytes(6)
            assert packet.target_ip in settings.network, "a request for a stranger's address"
            assert packet.target_ip not in (settings.gateway, settings.dns)
            assert not ethernet.is_multicast(eth.dst), "a request to everyone"
        else:
            assert packet.op == arp.OP_REPLY
            assert packet.sender_ip in (settings.gateway, settings.dns)
        return Emitted(eth)
    if eth.ethertype == ethernet.ETHERTYPE_IPV6:
        return Emitted(eth, *emitted6.check(eth, settings, gateway_mac))
    assert eth.ethertype == ethernet.ETHERTYPE_IPV4, f"ethertype {eth.ethertype:#06x}"
    packet = ipv4.IPv4Packet.parse(eth.payload)
    size = len(eth.payload)
    assert packet.header_len + len(packet.payload) == size, "bytes after the total length"
    assert size <= settings.mtu, f"a {size}-byte packet on an MTU of {settings.mtu}"
    assert packet.ttl > 0
    if packet.is_fragment:
        assert not packet.dont_fragment and packet.protocol != ipv4.PROTO_TCP
        assert len(packet.payload) % 8 == 0 or not packet.more_fragments, "not in 8-byte units"
        assert packet.payload and packet.fragment_offset + size <= 65535
        return Emitted(eth, packet)
    return Emitted(eth, packet, _check_body(packet))


def reassembled(frames: list[bytes]) -> int:
    """The datagrams whose fragments ``frames`` hold, every piece of each among them (we
    send them all at once), put back together by scapy and checked; how many."""
    whole, rebuilt, missing = defrag([Ether(frame)[IP] for frame in frames])
    assert not whole and not missing, "a fragment without the rest of its datagram"
    for datagram in rebuilt:
        _check_body(ipv4.IPv4Packet.parse(bytes(datagram)))
    return len(rebuilt)


def _check_body(packet: ipv4.IPv4Packet) -> tcp.TcpSegment | None:
    """The transport of a whole datagram, checksums and all; its TCP segment if any."""
    size = packet.header_len + len(packet.payload)
    segment = None
    if packet.protocol == ipv4.PROTO_UDP:
        datagram = udp.UdpDatagram.parse(packet.payload, packet.src, packet.dst)
        assert packet.payload[6:8] != b"\x00\x00", "a UDP checksum left out"
        if datagram.src_port == dhcp.SERVER_PORT:
            assert size <= MAX_REPLY_LEN, "a DHCP reply longer than every client takes"
            reply = dhcp.DhcpMessage.parse(datagram.payload)
            assert reply.op == dhcp.OP_REPLY
            assert reply.message_type in (
                dhcp.MessageType.OFFER,
                dhcp.MessageType.ACK,
                dhcp.MessageType.NAK,
            )
    elif packet.protocol == ipv4.PROTO_TCP:
        segment = tcp.TcpSegment.parse(packet.payload, packet.src, packet.dst)
    else:
        assert packet.protocol == ipv4.PROTO_ICMP, f"protocol {packet.protocol}"
        message = icmp.IcmpMessage.parse(packet.payload)
        assert message.type in (
            icmp.TYPE_ECHO_REPLY,
            icmp.TYPE_DEST_UNREACHABLE,
            icmp.TYPE_TIME_EXCEEDED,
        )
        if message.is_error:
            message.quoted()
    return segment


def check_with_scapy(frame: bytes) -> None:
    if frame[12:14] == b"\x86\xdd":
        emitted6.check_with_scapy(frame)
        return
    pkt = Ether(frame)
    assert not pkt.haslayer(Padding), "scapy finds bytes past the end"
    if pkt.type == ethernet.ETHERTYPE_ARP:
        assert pkt.haslayer(ARP) and pkt[ARP].op in (arp.OP_REQUEST, arp.OP_REPLY)
        return
    assert pkt.haslayer(IP)
    raw_ip = frame[ethernet.HEADER_LEN :]
    header_len = pkt[IP].ihl * 4
    assert checksum(raw_ip[:header_len]) == 0, "IPv4 header checksum"
    assert struct.unpack_from("!H", raw_ip, 2)[0] == len(raw_ip), "IPv4 total length"
    if pkt[IP].flags.MF or pkt[IP].frag:
        return  # its transport's checksum covers the whole datagram: see ``reassembled``
    body = raw_ip[header_len:]
    layer = {ipv4.PROTO_UDP: UDP, ipv4.PROTO_TCP: TCP, ipv4.PROTO_ICMP: ICMP}[pkt[IP].proto]
    assert pkt.haslayer(layer)
    if layer is ICMP:
        assert checksum(body) == 0, "ICMP checksum"
    else:
        assert in4_chksum(pkt[IP].proto, pkt[IP], body) == 0, f"{layer.__name__} checksum"
    if layer is UDP:
        assert pkt[UDP].len == len(body)
