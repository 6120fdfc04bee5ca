"""IPv4 at the gateway: ARP, the checks on a guest's packets, and dispatch.

ARP (RFC 826) is answered for the gateway's two addresses and the guestfwds' (probes
per RFC 5227 get a reply too: the address is taken).  A guest's IPv4 packet is parsed,
its source checked (a guest address of the network: no spoofing the gateway) and handed
on: DHCP to ``DhcpServer``, DNS to ``DnsRelay``, TFTP to ``TftpService``, echo to the
gateway (or a guestfwd's address) answered here, the rest to the NAT of its protocol,
which is the same for both families.  Refusals are answered with ICMP (RFC 1812
§5.2.7.1) rather than left to time out.
"""

from __future__ import annotations

import logging
from ipaddress import IPv4Address

from slirpnet.core.dhcp import DhcpServer
from slirpnet.core.flows import Endpoint
from slirpnet.core.fragments import Reassembly
from slirpnet.core.frames import Frames, Unreachable
from slirpnet.core.gatewayudp import GatewayUdp
from slirpnet.core.guestfwd import GuestForwards
from slirpnet.core.nat_echo import EchoNat
from slirpnet.core.nat_tcp import TcpNat
from slirpnet.core.neighbours import Neighbours
from slirpnet.core.policy import Refusal, refused
from slirpnet.core.settings import NetworkSettings
from slirpnet.core.vm import Vm
from slirpnet.wire import arp, dhcp, ethernet, icmp, ipv4, tcp, udp
from slirpnet.wire.errors import WireError

log = logging.getLogger(__name__)


class Ipv4Layer:
    def __init__(
        self,
        settings: NetworkSettings,
        frames: Frames,
        neighbours: Neighbours,
        dhcp_server: DhcpServer,
        gateway_udp: GatewayUdp,
        tcp_nat: TcpNat,
        echo_nat: EchoNat,
        guest_forwards: GuestForwards,
    ) -> None:
        self.settings = settings
        self.frames = frames
        self.neighbours = neighbours
        self.dhcp = dhcp_server
        self.udp = gateway_udp
        self.tcp = tcp_nat
        self.echo = echo_nat
        self.guest_forwards = guest_forwards  # addresses answered for too (core/guestfwd.py)
        self.fragments = Reassembly()  # guests' fragments (core/fragments.py)
        network = settings.network
        self.own = frozenset((settings.gateway, settings.dns))
        self._not_guests = frozenset(
            (settings.gateway, settings.dns, network.network_address, network.broadcast_address)
        )

    def is_guest_address(self, address: IPv4Address) -> bool:
        return address in self.settings.network and address not in self._not_guests

    # -- ARP (RFC 826, probes per RFC 5227) ----------------------------------------------

    def arp(self, vm: Vm, eth: ethernet.EthernetFrame) -> None:
        try:
            packet = arp.ArpPacket.parse(eth.payload)
        except WireError as error:
            vm.drop(error.reason)
            return
        if packet.target_ip not in self.own and packet.target_ip not in self.guest_forwards:
            return  # another VM's business
        if packet.sender_ip == packet.target_ip:
            vm.drop("arp_claims_gateway")  # an announcement of an address we own
            return
        if self.is_guest_address(packet.sender_ip):
            self.neighbours.heard(vm, packet.sender_ip)  # a probe's answer, or a guest asking
        if packet.op != arp.OP_REQUEST:
            return
        # A probe (sender 0.0.0.0) gets a reply too: its target is ours, so it is taken.
        reply = packet.reply(self.frames.gateway_mac)
        frame = self.frames.ethernet(packet.sender_mac, ethernet.ETHERTYPE_ARP) + reply.encode()
        vm.send(frame)

    # -- IPv4 ----------------------------------------------------------------------------

    def packet(self, vm: Vm, eth: ethernet.EthernetFrame, now: float) -> None:
        try:
            packet = ipv4.IPv4Packet.parse(eth.payload)
        except WireError as error:
            vm.drop(error.reason)
            return
        if packet.is_fragment:
            whole = self.fragments.add(vm, packet, now)  # counted there if refused
            if whole is None:
                return
            packet = whole
        if packet.protocol == ipv4.PROTO_UDP:
            self._udp(vm, eth, packet, now)
        elif packet.protocol == ipv4.PROTO_ICMP:
            self._icmp(vm, eth, packet, now)
        elif packet.protocol == ipv4.PROTO_TCP:
            self._tcp(vm, eth, packet, now)
        else:
            vm.drop("ipv4_unsupported_protocol")

    def expire_fragments(self, now: float) -> None:
        """Give up datagrams not reassembled in time; RFC 1122 §3.3.2: the guest that
        sent fragment zero hears ICMP time exceeded (reassembly)."""
        for vm, zero in self.fragments.expire(now):
            mac = self._mac_of(vm, zero.src)
            if mac is None or not self.is_guest_address(zero.src):
                continue
            quoted = zero.encode_header() + bytes(zero.payload[:8])
            code = icmp.CODE_REASSEMBLY_TIMEOUT
            message = icmp.IcmpMessage.error(icmp.TYPE_TIME_EXCEEDED, code, quoted).encode()
            self.frames.ip(vm, mac, self.settings.gateway, zero.src, ipv4.PROTO_ICMP, message)

    def _guest_source(self, vm: Vm, packet: ipv4.IPv4Packet) -> bool:
        """The source must be a guest address of our network: no spoofing the gateway."""
        if self.is_guest_address(packet.src):
            self.neighbours.heard(vm, packet.src)
            return True
        vm.drop("ipv4_bad_source")
        return False

    def _refused(
        self, vm: Vm, packet: ipv4.IPv4Packet, refusal: Refusal | str | None, now: float
    ) -> None:
        """Answer what the NAT refused (``policy.refused``): ICMP administratively
        prohibited for a policy or a limit."""
        if refused(vm, packet.dst, refusal, now):
            self._icmp_error(vm, packet, Unreachable.ADMIN)

    def _icmp_error(self, vm: Vm, packet: ipv4.IPv4Packet, kind: Unreachable) -> None:
        """ICMP destination unreachable about ``packet`` to its sender, from the gateway."""
        mac = self._mac_of(vm, packet.src)
        if mac is None:
            return
        quoted = packet.encode_header() + bytes(packet.payload[:8])
        self.frames.unreachable(vm, mac, self.settings.gateway, packet.src, kind, quoted)

    def _mac_of(self, vm: Vm, address: IPv4Address) -> bytes | None:
        lease = self.dhcp.mac_of(address)
        if lease is not None and lease in vm.macs:
            return lease
        # Without a lease (a static guest address) the VM's one MAC will do.
        return next(iter(vm.macs)) if len(vm.macs) == 1 else None

    # -- UDP: DHCP, DNS, NAT ---------------------------------------------------------------

    def _udp(
        self, vm: Vm, eth: ethernet.EthernetFrame, packet: ipv4.IPv4Packet, now: float
    ) -> None:
        try:
            datagram = udp.UdpDatagram.parse(packet.payload, packet.src, packet.dst)
        except WireError as error:
            vm.drop(error.reason)
            return
        dst = packet.dst
        if datagram.dst_port == dhcp.SERVER_PORT and (
            dst.packed == b"\xff\xff\xff\xff" or dst == self.settings.gateway
        ):
            self._dhcp(vm, datagram, now)
            return
        if dst.packed == b"\xff\xff\xff\xff" or dst == self.settings.network.broadcast_address:
            vm.drop("udp_broadcast")
            return
        if dst.is_multicast:
            vm.drop("udp_multicast")
            return
        if not self._guest_source(vm, packet):
            return
        if dst in self.guest_forwards:  # a guestfwd is TCP only
            vm.drop("no_service")
            self._icmp_error(vm, packet, Unreachable.PORT)
            return
        guest = Endpoint(eth.src, packet.src, datagram.src_port)
        payload = bytes(datagram.payload)
        owed = self.udp.datagram(vm, guest, dst, datagram.dst_port, payload, now)
        if owed is not None:
            self._icmp_error(vm, packet, owed)

    def _dhcp(self, vm: Vm, datagram: udp.UdpDatagram, now: float) -> None:
        try:
            message = dhcp.DhcpMessage.parse(datagram.payload)
        except WireError as error:
            vm.drop(error.reason)
            return
        reply = self.dhcp.handle(message, vm, now)
        if reply is None:
            return
        if (
            reply.message.message_type == dhcp.MessageType.ACK
            and reply.message.yiaddr != dhcp.UNSPECIFIED
        ):
            log.info(
                "lease %s to %s",
                reply.message.yiaddr,
                ethernet.format_mac(message.chaddr),
                extra=vm.log_context,
            )
        client = Endpoint(reply.dst_mac, reply.dst_address, dhcp.CLIENT_PORT)
        self.frames.udp(vm, client, self.settings.gateway, dhcp.SERVER_PORT, reply.message.encode())

    # -- ICMP and TCP ----------------------------------------------------------------------

    def _icmp(
        self, vm: Vm, eth: ethernet.EthernetFrame, packet: ipv4.IPv4Packet, now: float
    ) -> None:
        try:
            message = icmp.IcmpMessage.parse(packet.payload)
        except WireError as error:
            vm.drop(error.reason)
            return
        if message.type != icmp.TYPE_ECHO_REQUEST:
            vm.drop("icmp_unsupported_type")
            return
        if not self._guest_source(vm, packet):
            return
        if packet.dst in self.own or packet.dst in self.guest_forwards:
            reply = icmp.IcmpMessage.echo(
                icmp.TYPE_ECHO_REPLY, message.ident, message.seq, message.payload
            )
            self.frames.ip(vm, eth.src, packet.dst, packet.src, ipv4.PROTO_ICMP, reply.encode())
            return
        guest = Endpoint(eth.src, packet.src, message.ident)
        refusal = self.echo.guest_echo(vm, guest, packet.dst, bytes(packet.payload), now)
        self._refused(vm, packet, refusal, now)

    def _tcp(
        self, vm: Vm, eth: ethernet.EthernetFrame, packet: ipv4.IPv4Packet, now: float
    ) -> None:
        try:
            segment = tcp.TcpSegment.parse(packet.payload, packet.src, packet.dst)
        except WireError as error:
            vm.drop(error.reason)
            return
        if not self._guest_source(vm, packet):
            return
        refusal = self.tcp.guest_segment(vm, eth.src, packet.src, packet.dst, segment, now)
        self._refused(vm, packet, refusal, now)
