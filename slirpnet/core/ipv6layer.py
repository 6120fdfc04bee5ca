"""IPv6 at the gateway: Neighbour Discovery, the checks on a guest's packets, dispatch.

The gateway owns three IPv6 addresses behind its one MAC: its link-local address (what
router advertisements come from, RFC 4861 §6.1.2), ``gateway6`` (the host, as the
gateway address is in IPv4) and ``dns6``.  Neighbour solicitations for them are
answered (§7.2.4; one from the unspecified address, a guest about to use one of ours,
is answered to all nodes to defend it, RFC 4862 §5.4.3); router solicitations go to
``RouterAdvertiser`` (ra.py); DHCPv6 to ``Dhcp6Server`` (dhcp6.py).  A guest's packet
to elsewhere must come from an address of the prefix (its SLAAC address, or one set by
hand) and is handed to the same NAT and DNS relay as IPv4's.  Refusals are answered with
ICMPv6 destination unreachable (RFC 4443 §3.1).

RA guard (RFC 6105): router advertisements, redirects and DHCPv6 server messages from
guests are dropped and counted, here and before the switch passes a frame to another
VM (``guarded``), their extension headers walked so none hides behind one (RFC 7113).
"""

from __future__ import annotations

import logging
from ipaddress import IPv6Address

from slirpnet.core.dhcp6 import ALL_SERVERS, CLIENT_PORT, SERVER_PORT, Dhcp6Server
from slirpnet.core.flows import Endpoint
from slirpnet.core.frames import Frames, Unreachable
from slirpnet.core.gatewayudp import GatewayUdp
from slirpnet.core.nat_echo import EchoNat
from slirpnet.core.nat_tcp import TcpNat
from slirpnet.core.neighbours import Neighbours
from slirpnet.core.policy import Refusal, refused
from slirpnet.core.ra import RouterAdvertiser
from slirpnet.core.settings import NetworkSettings
from slirpnet.core.vm import Vm
from slirpnet.wire import ethernet, icmpv6, ipv6, ndp, tcp, udp
from slirpnet.wire.errors import WireError

log = logging.getLogger(__name__)

# Multicast Listener Discovery (RFC 2710, RFC 3810): reports the gateway need not hear.
_MLD_TYPES = frozenset((130, 131, 132, 143))
_ROUTER_ONLY = frozenset((icmpv6.TYPE_ROUTER_ADVERTISEMENT, icmpv6.TYPE_REDIRECT))


def guarded(frame: bytes) -> str | None:
    """Why ``frame``, from a guest to other VMs, must not reach them (RA guard), or None.

    Only IPv6 frames are looked at.  The header chain is walked to the upper layer
    (RFC 7113 §3), AH included, and into a first fragment, which holds the whole chain
    (RFC 7112); a later fragment carries no upper-layer header to judge.  One whose
    chain cannot be walked is not passed either (RFC 7113 §5).
    """
    if len(frame) < ethernet.HEADER_LEN or frame[12:14] != b"\x86\xdd":
        return None
    try:  # the codec's own checks first (lengths, header order and options)
        ipv6.IPv6Packet.parse(memoryview(frame)[ethernet.HEADER_LEN :])
    except WireError as error:
        if error.reason != "ipv6_fragment":
            return "ra_guard_unparsable"
    found = _upper_layer(memoryview(frame)[ethernet.HEADER_LEN :])
    if found is None:
        return "ra_guard_unparsable"
    protocol, payload = found
    if protocol == icmpv6.PROTOCOL:
        if len(payload) and payload[0] in _ROUTER_ONLY:
            return "ra_guard"
    elif protocol == udp.PROTOCOL and (
        (len(payload) >= 2 and payload[0] << 8 | payload[1] == SERVER_PORT)
        or (len(payload) >= 4 and payload[2] << 8 | payload[3] == CLIENT_PORT)
    ):
        # A DHCPv6 server's message (RFC 7610): from the server port, or to the client
        # port from any other (RFC 8415 §7.2 names only the port a client listens on).
        return "ra_guard"
    return None


_CHAINED = frozenset((0, 43, 60))  # hop-by-hop, routing, destination options (RFC 8200 §4)
_FRAGMENT = 44
_AH = 51  # RFC 4302 §2.2: its length counts 4-byte units, less 2
_MAX_HEADERS = 8


def _upper_layer(packet: memoryview) -> tuple[int, memoryview] | None:
    """The protocol and data after ``packet``'s header chain, or None: the chain runs out
    of the packet or is too long; a fragment other than the first has no upper layer to
    show (then ``(_FRAGMENT, empty)``)."""
    protocol, offset = packet[6], ipv6.HEADER_LEN
    for _ in range(_MAX_HEADERS):
        if protocol not in _CHAINED and protocol not in (_FRAGMENT, _AH):
            return protocol, packet[offset:]
        if offset + 8 > len(packet):
            return None
        if protocol == _FRAGMENT:
            if (packet[offset + 2] << 8 | packet[offset + 3]) >> 3:
                return _FRAGMENT, packet[:0]
            length = 8
        elif protocol == _AH:
            length = (packet[offset + 1] + 2) * 4
        else:
            length = (packet[offset + 1] + 1) * 8
        protocol, offset = packet[offset], offset + length
    return None


class Ipv6Layer:
    def __init__(
        self,
        settings: NetworkSettings,
        frames: Frames,
        neighbours: Neighbours,
        gateway_udp: GatewayUdp,
        tcp_nat: TcpNat,
        echo_nat: EchoNat,
        ra: RouterAdvertiser,
        dhcp6: Dhcp6Server,
    ) -> None:
        self.settings = settings
        self.frames = frames
        self.neighbours = neighbours
        self.udp = gateway_udp
        self.tcp = tcp_nat
        self.echo = echo_nat
        self.ra = ra
        self.dhcp6 = dhcp6
        self.link_local = ra.address
        self.own = frozenset((settings.gateway6, settings.dns6, self.link_local))
        # Multicast groups the gateway listens to: all nodes, all routers, DHCPv6 servers,
        # and the solicited-node group of each of its addresses (RFC 4291 §2.7.1).
        self.groups = frozenset(
            (
                ipv6.ALL_NODES,
                ipv6.ALL_ROUTERS,
                ALL_SERVERS,
                *(ipv6.solicited_node(address) for address in self.own),
            )
        )
        self._not_guests = frozenset(
            (settings.gateway6, settings.dns6, settings.network6.network_address)
        )

    def is_guest_address(self, address: IPv6Address) -> bool:
        return address in self.settings.network6 and address not in self._not_guests

    def packet(self, vm: Vm, eth: ethernet.EthernetFrame, now: float) -> None:
        if not self.settings.ipv6:
            vm.drop("ipv6_disabled")
            return
        try:
            packet = ipv6.IPv6Packet.parse(eth.payload)
        except WireError as error:
            vm.drop(error.reason)
            return
        if len(eth.payload) > self.settings.mtu:
            self._too_big(vm, eth, packet)
            return
        dst = packet.dst
        if dst.is_multicast and dst not in self.groups:
            if not ethernet.is_multicast(eth.dst):
                vm.drop("no_route")  # to our MAC, yet to a group we are not in
            return  # else other VMs' business: the switch has flooded it
        if packet.next_header == icmpv6.PROTOCOL:
            self._icmpv6(vm, eth, packet, now)
        elif packet.next_header == udp.PROTOCOL:
            self._udp(vm, eth, packet, now)
        elif packet.next_header == tcp.PROTOCOL:
            self._tcp(vm, eth, packet, now)
        else:
            vm.drop("ipv6_unsupported_protocol")

    def _guest_source(self, vm: Vm, packet: ipv6.IPv6Packet) -> bool:
        """A NAT source must be a guest address of the prefix: not link-local, not ours."""
        if self.is_guest_address(packet.src):
            self.neighbours.heard(vm, packet.src)
            return True
        vm.drop("ipv6_bad_source")
        return False

    def _refused(
        self,
        vm: Vm,
        mac: bytes,
        packet: ipv6.IPv6Packet,
        refusal: Refusal | str | None,
        now: float,
    ) -> None:
        """Answer what the NAT refused, as ``Ipv4Layer._refused`` does, in ICMPv6."""
        if refused(vm, packet.dst, refusal, now):
            self._unreachable(vm, mac, packet, Unreachable.ADMIN)

    def _too_big(self, vm: Vm, eth: ethernet.EthernetFrame, packet: ipv6.IPv6Packet) -> None:
        """A packet larger than the link's MTU (a guest that ignored the RA's): dropped,
        and the sender told the MTU with Packet Too Big (RFC 4443 §3.2), as a router
        on its path would, so its path MTU discovery adapts (RFC 8201)."""
        vm.drop("ipv6_packet_too_big")
        src = packet.src
        if src.is_multicast or src.is_unspecified:
            return  # §2.4(e): no error to a packet that names no one to answer
        message = icmpv6.Icmpv6Message.packet_too_big(self.settings.mtu, eth.payload)
        self.frames.icmpv6(vm, eth.src, self.settings.gateway6, src, message)

    def _unreachable(self, vm: Vm, mac: bytes, packet: ipv6.IPv6Packet, kind: Unreachable) -> None:
        original = packet.encode()
        self.frames.unreachable(vm, mac, self.settings.gateway6, packet.src, kind, original)

    def solicit(self, vm: Vm, target: IPv6Address) -> None:
        """Ask on ``vm``'s port who has ``target`` (§7.2.2), as a forward to an address no
        guest has been heard from does: the advertisement in answer teaches us its VM."""
        group = ipv6.solicited_node(target)
        message = ndp.NeighborSolicitation(
            target, (ndp.SourceLinkLayerAddress(self.frames.gateway_mac),)
        ).to_icmpv6()
        mac = ipv6.multicast_mac(group)
        self.frames.icmpv6(vm, mac, self.link_local, group, message, hop_limit=ndp.HOP_LIMIT)

    # -- ICMPv6: Neighbour Discovery and echo ---------------------------------------------

    def _icmpv6(
        self, vm: Vm, eth: ethernet.EthernetFrame, packet: ipv6.IPv6Packet, now: float
    ) -> None:
        try:
            message = icmpv6.Icmpv6Message.parse(packet.payload, packet.src, packet.dst)
        except WireError as error:
            vm.drop(error.reason)
            return
        kind = message.type
        if kind == icmpv6.TYPE_ECHO_REQUEST:
            self._echo(vm, eth, packet, message, now)
        elif kind in _MLD_TYPES:
            vm.stats.count("icmpv6_mld")
        elif kind in _ROUTER_ONLY:
            vm.drop("ra_guard")
        elif icmpv6.TYPE_ROUTER_SOLICITATION <= kind <= icmpv6.TYPE_NEIGHBOR_ADVERTISEMENT:
            self._ndp(vm, eth, packet, message)
        else:
            vm.drop("icmpv6_unsupported_type")

    def _ndp(
        self,
        vm: Vm,
        eth: ethernet.EthernetFrame,
        packet: ipv6.IPv6Packet,
        message: icmpv6.Icmpv6Message,
    ) -> None:
        try:
            parsed = ndp.parse(message)
            ndp.check_ip(packet, parsed)
        except WireError as error:
            vm.drop(error.reason)
            return
        if isinstance(parsed, ndp.RouterSolicitation):
            self.ra.solicited(vm, packet.src, parsed.source_mac or eth.src)
        elif isinstance(parsed, ndp.NeighborSolicitation):
            if self.is_guest_address(packet.src):
                self.neighbours.heard(vm, packet.src)  # RFC 4861 §7.2.3: the sender is here
            if parsed.target in self.own:
                self._advertise(vm, eth, packet, parsed)
        elif isinstance(parsed, ndp.NeighborAdvertisement) and self.is_guest_address(parsed.target):
            self.neighbours.heard(vm, parsed.target)  # a guest announcing its address

    def _advertise(
        self,
        vm: Vm,
        eth: ethernet.EthernetFrame,
        packet: ipv6.IPv6Packet,
        solicitation: ndp.NeighborSolicitation,
    ) -> None:
        """§7.2.4: the target, one of ours, is at the gateway's MAC."""
        dad = packet.src.is_unspecified
        answer = solicitation.advertise(self.frames.gateway_mac, router=True, solicited=not dad)
        if dad:  # a guest testing one of our addresses: defend it (RFC 4862 §5.4.3)
            vm.stats.count("ipv6_dad_for_gateway")
            dst, mac = ipv6.ALL_NODES, ipv6.multicast_mac(ipv6.ALL_NODES)
        else:
            dst, mac = packet.src, solicitation.source_mac or eth.src
        self.frames.icmpv6(
            vm, mac, solicitation.target, dst, answer.to_icmpv6(), hop_limit=ndp.HOP_LIMIT
        )

    def _echo(
        self,
        vm: Vm,
        eth: ethernet.EthernetFrame,
        packet: ipv6.IPv6Packet,
        message: icmpv6.Icmpv6Message,
        now: float,
    ) -> None:
        src, dst = packet.src, packet.dst
        if dst in self.own or dst in self.groups:
            # Ours, from any guest unicast address (link-local included): answered here.
            if src.is_multicast or src.is_unspecified or dst.is_multicast:
                vm.drop("icmpv6_echo_not_unicast")
                return
            self.frames.icmpv6(vm, eth.src, dst, src, message.echo_reply())
            return
        if not self._guest_source(vm, packet):
            return
        guest = Endpoint(eth.src, src, message.ident)
        refusal = self.echo.guest_echo(vm, guest, dst, bytes(packet.payload), now)
        self._refused(vm, eth.src, packet, refusal, now)

    # -- UDP: DHCPv6, DNS, NAT -------------------------------------------------------------

    def _udp(
        self, vm: Vm, eth: ethernet.EthernetFrame, packet: ipv6.IPv6Packet, now: float
    ) -> None:
        try:
            datagram = udp.UdpDatagram.parse(packet.payload, packet.src, packet.dst)
        except WireError as error:
            vm.drop(error.reason)
            return
        dst = packet.dst
        if datagram.dst_port == SERVER_PORT and dst in (ALL_SERVERS, self.link_local):
            reply = self.dhcp6.handle(vm, bytes(datagram.payload))
            if reply is not None:
                client = Endpoint(eth.src, packet.src, CLIENT_PORT)
                self.frames.udp(vm, client, self.link_local, SERVER_PORT, reply)
            return
        if dst.is_multicast:
            vm.drop("udp_multicast")
            return
        if not self._guest_source(vm, packet):
            return
        guest = Endpoint(eth.src, packet.src, datagram.src_port)
        payload = bytes(datagram.payload)
        owed = self.udp.datagram(vm, guest, dst, datagram.dst_port, payload, now)
        if owed is not None:
            self._unreachable(vm, eth.src, packet, owed)

    def _tcp(
        self, vm: Vm, eth: ethernet.EthernetFrame, packet: ipv6.IPv6Packet, now: float
    ) -> None:
        try:
            segment = tcp.TcpSegment.parse(packet.payload, packet.src, packet.dst)
        except WireError as error:
            vm.drop(error.reason)
            return
        if not self._guest_source(vm, packet):
            return
        refusal = self.tcp.guest_segment(vm, eth.src, packet.src, packet.dst, segment, now)
        self._refused(vm, eth.src, packet, refusal, now)
