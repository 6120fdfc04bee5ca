"""One namespace's virtual Ethernet segment, with the gateway that serves it.  No I/O.

Theory of operation
-------------------
Every VM of a namespace is a port (``Vm``) of one learning switch.  A frame from
a port is switched by destination MAC: to another port, flooded when it is
broadcast, multicast or unknown, or handed to the gateway when addressed to it
(or broadcast).  So VMs of a namespace reach each other directly at L2, and
different namespaces are different ``Segment`` objects that share nothing.  A
MAC belongs to one live port: another port sending from it is refused
(``eth_mac_in_use``) until the first goes, for two VMs started with QEMU's
default MAC would otherwise take each other's frames and lease.

A VM that connects again (after a restart of QEMU's link or of the server,
with its leases restored by the shell through ``dhcp.restore``) may stay quiet
until its lease is renewed, hours later, and forwards cannot find it meanwhile.
So the gateway asks, with ARP, for every leased address whose MAC no port has
yet: on a port as it attaches (``probe_leases``), and on every port when a
forward finds no VM; the answer teaches the switch the MAC and the address.

The gateway owns two addresses (``gateway``, which stands for the host, and
``dns``) behind one MAC.  It answers ARP for them, serves DHCP and TFTP, answers or
forwards DNS, answers pings, and NATs the guests' TCP, UDP and ICMP echo: each
flow becomes a host socket that the shell opens, feeds and closes on the core's
``actions``; the shell reports what happens on it through ``flow_received`` and
``flow_error``, and for TCP ``flow_connected``, ``flow_eof`` and ``flow_written``.
Each TCP flow's protocol is its ``TcpEndpoint`` (``tcp.py``).  Frames for a VM
collect in ``vm.outbox``.

Time is only ever what the caller passes in: ``get_timer()`` says when
``handle_timer(now)`` is next due (idle flows, DNS retries, TCP timers).
After a batch of frames the caller calls ``send_delayed_acks(now)``: the TCP
ACKs that waited for more of the guest's segments (``tcp.py``) go out then,
one per flow and batch, rather than one per segment.

Bad input never raises: every frame that is not used is counted under a reason
in the sending VM's ``stats.drops`` and logged at debug level.
"""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Container, Sequence
from ipaddress import IPv4Address
from typing import Final

from slirpnet import native
from slirpnet.core.dhcp import DhcpServer, Lease
from slirpnet.core.dns import DnsService
from slirpnet.core.flows import (
    Action,
    CloseFlow,
    DnsFlow,
    EchoFlow,
    Endpoint,
    Flow,
    FlowKey,
    OpenFlow,
    ResumeFlow,
    SendFlow,
    ShutdownFlow,
    TcpFlow,
    TftpFlow,
    UdpFlow,
)
from slirpnet.core.forwards import Forward, choose_guest
from slirpnet.core.sequence import seq_lt
from slirpnet.core.settings import HOST_LOOPBACK, NetworkSettings
from slirpnet.core.stats import Stats
from slirpnet.core.tcp import HostOp, State, TcpEndpoint
from slirpnet.core.tftp import TftpService
from slirpnet.core.timers import Deadlines
from slirpnet.core.vm import FLOOD_FRAME, FLOOD_RATE, Vm
from slirpnet.wire import arp, dhcp, ethernet, icmp, ipv4, tcp, udp
from slirpnet.wire.errors import WireError

log = logging.getLogger(__name__)

MAX_MACS_PER_VM: Final = 16  # a guest spraying source addresses cannot grow the switch table
MAX_NEIGHBOURS: Final = 4096  # guest addresses remembered for forwards, however many are spoofed
# ARP requests for leased addresses not heard from (see above): at once, then again
# after these delays in case the VM's link was not up yet; at most MAX_PROBED leases,
# those renewed last first, however many leases a big network holds.
PROBE_RETRIES = (1.0, 2.0, 4.0)
MAX_PROBED: Final = 16
# The gateway's ports for forwarded connections, as the guest sees them (RFC 6335 §6).
FORWARD_PORTS = range(49152, 65536)
DNS_FLOW_IDLE: Final = 10.0  # UDP flows to port 53 anywhere: one query, one answer
ECHO_FLOW_IDLE: Final = 10.0
FLOW_REFUSED: Final = "refused"  # the host said port unreachable
FLOW_UNREACHABLE: Final = "unreachable"  # the host said host or network unreachable
FLOW_RESET: Final = "reset"  # the host peer reset the connection
FLOW_FAILED: Final = "failed"  # no host socket could be had
FLOW_EXHAUSTED: Final = "exhausted"  # no host socket: the host is out of file descriptors
# Closed flows whose timer entries may wait, before the queue is swept of them: an
# entry waits for its time (an idle timeout: up to hours), keeping its flow alive.
PRUNE_MIN: Final = 64

_ETHERNET = struct.Struct("!6s6sH")
# An established flow's frame, read in one go: Ethernet, an IPv4 header without
# options, the fixed TCP header (RFC 791 §3.1, RFC 9293 §3.1).
_ETH_IPV4_TCP = struct.Struct("!6s6sHBBHHHBBHIIHHIIHHHH")
_TCP_AT: Final = ethernet.HEADER_LEN + ipv4.MIN_HEADER_LEN
_FAST_MIN: Final = _TCP_AT + tcp.HEADER_LEN
# The reserved flag, MF and the fragment offset: DF alone may be set.
_IPV4_NOT_WHOLE: Final = 0xBFFF
_IP_UDP_HEADERS: Final = ipv4.MIN_HEADER_LEN + udp.HEADER_LEN
# A plain ACK: IPv4's total length, and where its acknowledgment number lies.
_PLAIN_ACK_TOTAL_LEN: Final = ipv4.MIN_HEADER_LEN + tcp.HEADER_LEN
_ETHERNET_MIN_FRAME: Final = 60  # a short frame may come padded to Ethernet's minimum
_ACK_AT: Final = _TCP_AT + 8
_ACK_FIELD = struct.Struct("!I")


def _martian(address: IPv4Address) -> bool:
    """Never a NAT destination: loopback, unspecified, multicast, reserved, link-local."""
    return (
        address.is_loopback
        or address.is_unspecified
        or address.is_multicast
        or address.is_reserved
        or address.is_link_local
        or address == IPv4Address("255.255.255.255")
    )


def _is_plain_ack(frame: bytes) -> bool:
    """Ethernet + IPv4 without options or fragments + TCP with no options, no data and
    no flag but ACK: what a guest sends to acknowledge our data (the checksums are
    checked when the frame is handled, not here)."""
    return (
        _FAST_MIN <= len(frame) <= _ETHERNET_MIN_FRAME
        and frame[12] == 0x08
        and frame[13] == 0x00
        and frame[14] == 0x45
        and frame[16] == 0
        and frame[17] == _PLAIN_ACK_TOTAL_LEN
        and frame[23] == ipv4.PROTO_TCP
        and frame[20] & 0x3F == 0
        and frame[21] == 0
        and frame[46] == 0x50
        and frame[47] == tcp.ACK
    )


def _superseded(frame: bytes, following: bytes) -> bool:
    """``frame`` is a plain ACK and ``following`` one of the same connection from the
    same MAC, with the same sequence number and an acknowledgment number beyond."""
    if not (_is_plain_ack(frame) and _is_plain_ack(following)):
        return False
    if frame[:12] != following[:12] or frame[26:42] != following[26:42]:
        return False  # other MACs, addresses, ports or sequence number
    ack = _ACK_FIELD.unpack_from(frame, _ACK_AT)[0]
    return seq_lt(ack, _ACK_FIELD.unpack_from(following, _ACK_AT)[0])


class Segment:
    def __init__(self, settings: NetworkSettings) -> None:
        self.settings = settings
        # libslirp's convention: 52:55 then the gateway's IPv4 address.
        self.gateway_mac = b"\x52\x55" + settings.gateway.packed
        self.vms: list[Vm] = []
        self.dhcp = DhcpServer(settings)
        self.dns = DnsService(
            settings.local_records(), settings.dns_upstreams, settings.dns_timeout
        )
        self.tftp = TftpService(
            settings, self._send_udp, self._open, self._close, self._reschedule, self._act
        )
        self._switch: dict[bytes, Vm] = {}  # learned source MAC -> port
        self._neighbours: dict[int, Vm] = {}  # guest addresses seen (as integers) -> their port
        self._forwarded_udp: dict[tuple[Forward, IPv4Address, int], UdpFlow] = {}
        self._next_port = FORWARD_PORTS.start
        self._actions: list[Action] = []
        self._deadlines: Deadlines[Flow] = Deadlines()
        self._acks_delayed: dict[TcpFlow, None] = {}  # flows owing a delayed ACK, in order
        self._closed_queued = 0  # closed flows with entries in _deadlines, about
        self._ip_ident = 0
        self._vm_ids = 0
        # Ports the gateway asks on (probe_leases) -> when next, and how many rounds so far.
        self._probing: dict[Vm, tuple[float, int]] = {}
        self._departed = Stats()  # the counts of VMs that have left, so totals never go back
        network = settings.network
        self._own = frozenset((settings.gateway, settings.dns))
        self._not_guests = frozenset(
            (settings.gateway, settings.dns, network.network_address, network.broadcast_address)
        )

    # -- ports -------------------------------------------------------------------------

    def attach(self, name: str) -> Vm:
        self._vm_ids += 1
        vm = Vm(name, id=self._vm_ids)
        self.vms.append(vm)
        return vm

    def detach(self, vm: Vm) -> None:
        """The VM is gone: close every flow of its and forget its MACs.  Leases stay."""
        if not vm.attached:
            return
        vm.attached = False
        self.vms.remove(vm)
        for mac in vm.macs:
            if self._switch.get(mac) is vm:
                del self._switch[mac]
        for address in [a for a, port in self._neighbours.items() if port is vm]:
            del self._neighbours[address]
        for flow in [
            *vm.udp_flows.values(),
            *vm.tcp_flows.values(),
            *vm.echo_flows.values(),
            *vm.dns_flows,
            *self.tftp.flows_of(vm),
        ]:
            self._close(flow, abort=True)
        vm.outbox.clear()
        self._probing.pop(vm, None)
        self._prune_timers()
        self.dhcp.forget_owner(vm)
        self._departed.add(vm.stats)

    def totals(self) -> Stats:
        """The counts of every VM this segment has had, connected or gone."""
        total = Stats()
        total.add(self._departed)
        for vm in self.vms:
            total.add(vm.stats)
        return total

    def send_delayed_acks(self, now: float) -> None:
        """The end of a batch of frames: every delayed TCP ACK goes out now.

        A batch is what the caller had at hand at once; the guest's next segments
        come after our ACKs get to it, so waiting longer would only slow it down.
        """
        if not self._acks_delayed:
            return
        flows, self._acks_delayed = self._acks_delayed, {}
        for flow in flows:
            if not flow.closed:
                flow.endpoint.send_delayed_ack()
                self._tcp_output(flow, now)

    def _act(self, action: Action) -> None:
        self._actions.append(action)

    def take_actions(self) -> list[Action]:
        actions, self._actions = self._actions, []
        return actions

    # -- frames from a VM --------------------------------------------------------------

    def receive_many(self, vm: Vm, frames: Sequence[bytes], now: float) -> None:
        """A batch of frames from ``vm``'s NIC, in order.

        A guest's plain cumulative ACK that the next frame of the batch acknowledges
        beyond (``_superseded``) is counted and passed over: the later ACK says all it
        said (RFC 9293 §3.10.7.4: SND.UNA moves to the highest ACK; the window comes
        with the newest).  At MTU 1500 the guest ACKs every second frame of ours, and
        a batch holds runs of them.  Duplicate ACKs are never passed over: three of
        them are a fast retransmit (RFC 5681 §3.2).
        """
        last = len(frames) - 1
        for index, frame in enumerate(frames):
            if index < last and _superseded(frame, frames[index + 1]):
                stats = vm.stats
                stats.frames_in += 1
                stats.bytes_in += len(frame)
                stats.count("tcp_acks_coalesced")
            else:
                self.receive(vm, frame, now)

    def receive(self, vm: Vm, frame: bytes, now: float) -> None:
        """One Ethernet frame from ``vm``'s NIC."""
        if not vm.attached:
            return
        vm.stats.frames_in += 1
        vm.stats.bytes_in += len(frame)
        if self._established_tcp(vm, frame, now):
            return
        try:
            eth = ethernet.EthernetFrame.parse(frame)
        except WireError as error:
            self._drop(vm, error.reason)
            return
        if ethernet.is_multicast(eth.src) or eth.src == self.gateway_mac:
            self._drop(vm, "eth_bad_source")
            return
        if not self._learn(vm, eth.src, now):
            return
        if eth.dst == self.gateway_mac:
            self._to_gateway(vm, eth, now)
        elif eth.dst == ethernet.BROADCAST:
            self._flood(vm, frame, now)
            self._to_gateway(vm, eth, now)
        elif ethernet.is_multicast(eth.dst):
            if not self._flood(vm, frame, now):
                self._drop(vm, "eth_multicast")
        else:
            port = self._switch.get(eth.dst)
            if port is vm:
                self._drop(vm, "eth_to_self")
            elif port is not None:
                port.send(frame)
            elif not self._flood(vm, frame, now):
                self._drop(vm, "eth_unknown_destination")

    def _established_tcp(self, vm: Vm, frame: bytes, now: float) -> bool:
        """The common case, taken in one step: a valid TCP segment of a flow ``vm`` holds.

        What the general path (``_to_gateway``, ``_ipv4``, ``_tcp``) would do with it,
        without building the Ethernet and IPv4 objects: from a MAC this port has
        learned to the gateway's, IPv4 without options or fragments, both checksums
        right, a flow under this key (so its source was checked when it opened), the
        address still this port's.  Anything else, malformed frames included, is left
        to the general path (False), which counts and answers it.
        """
        if len(frame) < _FAST_MIN:
            return False
        (
            dst_mac,
            src_mac,
            ethertype,
            ver_ihl,
            tos,
            total_len,
            ident,
            flags_frag,
            ttl,
            protocol,
            ip_checksum,
            src,
            dst,
            src_port,
            dst_port,
            seq,
            ack,
            offset_flags,
            window,
            _,
            urgent,
        ) = _ETH_IPV4_TCP.unpack_from(frame)
        if (
            dst_mac != self.gateway_mac
            or ethertype != ethernet.ETHERTYPE_IPV4
            or ver_ihl != 0x45
            or protocol != ipv4.PROTO_TCP
            or flags_frag & _IPV4_NOT_WHOLE
            or not _TCP_AT + tcp.HEADER_LEN <= ethernet.HEADER_LEN + total_len <= len(frame)
            or self._switch.get(src_mac) is not vm
        ):
            return False
        flow = vm.tcp_flows.get((src, src_port, dst, dst_port))
        if flow is None or flow.endpoint.state is State.TIME_WAIT:
            return False  # (a new SYN may replace a flow in TIME_WAIT: the general path)
        # RFC 1071: the header's words, checksum included, sum to negative zero, i.e.
        # to a non-zero multiple of 0xFFFF (the version word makes the sum non-zero).
        words = (ver_ihl << 8 | tos) + total_len + ident + flags_frag + (ttl << 8 | protocol)
        if (words + ip_checksum + src + dst) % 0xFFFF:
            return False
        view = memoryview(frame)[_TCP_AT : ethernet.HEADER_LEN + total_len]
        if native.ones_sum(view, src + dst + tcp.PROTOCOL + len(view)) != 0xFFFF:
            return False
        try:
            segment = tcp.TcpSegment.from_fields(
                view, src_port, dst_port, seq, ack, offset_flags, window, urgent
            )
        except WireError:
            return False
        if self._neighbours.get(src) is not vm:
            return False  # the address moved to another port: the general path takes it back
        flow.endpoint.segment_received(segment, now)
        self._tcp_output(flow, now)
        return True

    def _learn(self, vm: Vm, mac: bytes, now: float) -> bool:
        if mac in vm.macs:
            self._switch[mac] = vm
            return True
        holder = self._switch.get(mac)
        if holder is not None:  # a live port's (detach forgets a port's MACs)
            vm.refuse(
                "eth_mac_in_use",
                now,
                f"{ethernet.format_mac(mac)} is the MAC of {holder.name} already; "
                "give each VM its own: QEMU -device virtio-net-pci,...,mac=52:54:00:XX:XX:XX",
            )
            return False
        if len(vm.macs) >= MAX_MACS_PER_VM:
            vm.refuse("eth_mac_limit", now, f"more than {MAX_MACS_PER_VM} source MACs")
            return False
        vm.macs.add(mac)
        vm.mac = vm.mac or mac
        self._switch[mac] = vm
        return True

    def _flood(self, source: Vm, frame: bytes, now: float) -> bool:
        """Send to every other port, within the source's storm control (``FLOOD_RATE``);
        False when there is no other port."""
        others = [vm for vm in self.vms if vm is not source]
        if not others:
            return False
        if source.floods.take(now, 1 + len(frame) // FLOOD_FRAME):
            for vm in others:
                vm.send(frame)
        else:
            source.refuse("flood_limit", now, f"over {FLOOD_RATE:.0f} flooded frames a second")
        return True

    def _to_gateway(self, vm: Vm, eth: ethernet.EthernetFrame, now: float) -> None:
        if eth.ethertype == ethernet.ETHERTYPE_ARP:
            self._arp(vm, eth)
        elif eth.ethertype == ethernet.ETHERTYPE_IPV4:
            self._ipv4(vm, eth, now)
        elif eth.ethertype == ethernet.ETHERTYPE_IPV6:
            self._drop(vm, "ipv6_unsupported")
        else:
            self._drop(vm, "eth_unknown_ethertype")

    # -- ARP (RFC 826, probes per RFC 5227) ----------------------------------------------

    def _arp(self, vm: Vm, eth: ethernet.EthernetFrame) -> None:
        try:
            packet = arp.ArpPacket.parse(eth.payload)
        except WireError as error:
            self._drop(vm, error.reason)
            return
        if packet.target_ip not in self._own:
            return  # another VM's business
        if packet.sender_ip == packet.target_ip:
            self._drop(vm, "arp_claims_gateway")  # an announcement of an address we own
            return
        if packet.sender_ip in self.settings.network and packet.sender_ip not in self._not_guests:
            self._heard(vm, packet.sender_ip)  # the answer to probe_leases, or a guest asking
        if packet.op != arp.OP_REQUEST:
            return
        # A probe (sender 0.0.0.0) gets a reply too: its target is ours, so it is taken.
        reply = packet.reply(self.gateway_mac)
        vm.send(self._ethernet(packet.sender_mac, ethernet.ETHERTYPE_ARP) + reply.encode())

    # -- IPv4 --------------------------------------------------------------------------

    def _ipv4(self, vm: Vm, eth: ethernet.EthernetFrame, now: float) -> None:
        try:
            packet = ipv4.IPv4Packet.parse(eth.payload)
        except WireError as error:
            self._drop(vm, error.reason)
            return
        if packet.is_fragment:
            # We never reassemble (see wire/ipv4.py); a guest with our MTU never fragments.
            self._drop(vm, "ipv4_fragment")
            return
        if packet.protocol == ipv4.PROTO_UDP:
            self._udp(vm, eth, packet, now)
        elif packet.protocol == ipv4.PROTO_ICMP:
            self._icmp(vm, eth, packet, now)
        elif packet.protocol == ipv4.PROTO_TCP:
            self._tcp(vm, eth, packet, now)
        else:
            self._drop(vm, "ipv4_unsupported_protocol")

    def _guest_source(self, vm: Vm, packet: ipv4.IPv4Packet) -> bool:
        """The source must be a guest address of our network: no spoofing the gateway."""
        source = packet.src
        if source in self.settings.network and source not in self._not_guests:
            self._heard(vm, source)
            return True
        self._drop(vm, "ipv4_bad_source")
        return False

    def _heard(self, vm: Vm, address: IPv4Address) -> None:
        """``vm`` sent from ``address``, a guest address of the network."""
        known = self._neighbours.get(int(address))
        if known is not vm and (known or len(self._neighbours) < MAX_NEIGHBOURS):
            self._neighbours[int(address)] = vm

    # -- asking for leased addresses not heard from ------------------------------------

    def probe_leases(self, vm: Vm, now: float) -> None:
        """Ask on ``vm``'s port for each leased address whose MAC no port has, now and
        again a few times (``PROBE_RETRIES``) while unanswered: the shell calls it as a
        port attaches, and a forward that finds no VM on every port (``_probe_all``)."""
        if vm.attached and self._unheard_leases(now):
            self._send_probes(vm, now)
            self._probing[vm] = (now + PROBE_RETRIES[0], 1)

    def _probe_all(self, now: float) -> None:
        """A forward found no VM: ask on every port not being asked on already."""
        for vm in self.vms:
            if vm not in self._probing:
                self.probe_leases(vm, now)

    def _unheard_leases(self, now: float) -> list[Lease]:
        leases = [
            lease
            for lease in self.dhcp.leases()
            if lease.bound and lease.expires > now and lease.mac not in self._switch
        ]
        leases.sort(key=lambda lease: lease.expires, reverse=True)
        return leases[:MAX_PROBED]

    def _send_probes(self, vm: Vm, now: float) -> None:
        for lease in self._unheard_leases(now):
            request = arp.ArpPacket(
                arp.OP_REQUEST, self.gateway_mac, self.settings.gateway, bytes(6), lease.address
            )
            # Unicast to the lease's MAC (RFC 826 lets a request go anywhere): only that
            # NIC takes it, so other guests learn nothing of their neighbours.
            vm.send(self._ethernet(lease.mac, ethernet.ETHERTYPE_ARP) + request.encode())

    def _probe_again(self, now: float) -> None:
        unheard = bool(self._unheard_leases(now))
        for vm, (due, done) in list(self._probing.items()):
            if due > now:
                continue
            if unheard:
                self._send_probes(vm, now)
            if unheard and done < len(PROBE_RETRIES):
                self._probing[vm] = (now + PROBE_RETRIES[done], done + 1)
            else:
                del self._probing[vm]

    def _host_destination(self, vm: Vm, packet: ipv4.IPv4Packet, now: float) -> IPv4Address | None:
        """Where a guest's packet to ``packet.dst`` goes on the host, or None (counted)."""
        settings = self.settings
        dst = packet.dst
        if (dst in settings.network and dst != settings.gateway) or _martian(dst):
            self._drop(vm, "no_route")
            return None
        host = HOST_LOOPBACK if dst == settings.gateway else dst
        if settings.restrict:
            vm.refuse("restricted", now, f"{dst}: guests reach only built-in services")
        elif dst == settings.gateway and not settings.host_loopback:
            vm.refuse("host_loopback_disabled", now, f"{dst}: the host's loopback is off")
        elif settings.denied(host):
            vm.refuse("denied", now, f"{dst}: on the deny list")
        else:
            return host
        self._prohibited(vm, packet)
        return None

    def _prohibited(self, vm: Vm, packet: ipv4.IPv4Packet) -> None:
        """RFC 1812 §5.2.7.1: tell the guest at once rather than let it time out."""
        self._icmp_error(vm, packet, icmp.TYPE_DEST_UNREACHABLE, icmp.CODE_ADMIN_PROHIBITED)

    # -- UDP: DHCP, DNS, NAT -----------------------------------------------------------

    def _udp(
        self, vm: Vm, eth: ethernet.EthernetFrame, packet: ipv4.IPv4Packet, now: float
    ) -> None:
        try:
            datagram = udp.UdpDatagram.parse(packet.payload, packet.src, packet.dst)
        except WireError as error:
            self._drop(vm, error.reason)
            return
        dst = packet.dst
        if datagram.dst_port == dhcp.SERVER_PORT and (
            dst.packed == b"\xff\xff\xff\xff" or dst == self.settings.gateway
        ):
            self._dhcp(vm, datagram, now)
            return
        if dst.packed == b"\xff\xff\xff\xff" or dst == self.settings.network.broadcast_address:
            self._drop(vm, "udp_broadcast")
            return
        if dst.is_multicast:
            self._drop(vm, "udp_multicast")
            return
        if not self._guest_source(vm, packet):
            return
        guest = Endpoint(eth.src, packet.src, datagram.src_port)
        if dst == self.settings.gateway and self.tftp.takes(guest, datagram.dst_port):
            self.tftp.receive(vm, guest, datagram.dst_port, bytes(datagram.payload), now)
            return
        if dst == self.settings.dns:
            if datagram.dst_port == 53:
                self._dns_query(vm, guest, bytes(datagram.payload), now)
            else:
                self._drop(vm, "no_service")
                self._icmp_error(vm, packet, icmp.TYPE_DEST_UNREACHABLE, icmp.CODE_PORT_UNREACHABLE)
            return
        key = (int(packet.src), datagram.src_port, int(dst), datagram.dst_port)
        flow = vm.udp_flows.get(key)
        if flow is None:
            host = self._host_destination(vm, packet, now)
            if host is None:
                return
            if not self._room_for_flow(vm, now):
                self._prohibited(vm, packet)
                return
            flow = UdpFlow(
                vm=vm,
                guest=guest,
                host_address=host,
                host_port=datagram.dst_port,
                deadline=now,
                dst_address=dst,
                dst_port=datagram.dst_port,
            )
            flow.deadline = now + self._udp_idle(flow)  # before _open queues it
            vm.udp_flows[key] = flow
            self._open(flow)
        flow.deadline = now + self._udp_idle(flow)
        self._actions.append(SendFlow(flow, bytes(datagram.payload)))

    def _udp_idle(self, flow: UdpFlow) -> float:
        return DNS_FLOW_IDLE if flow.dst_port == 53 else self.settings.udp_idle_timeout

    def _dhcp(self, vm: Vm, datagram: udp.UdpDatagram, now: float) -> None:
        try:
            message = dhcp.DhcpMessage.parse(datagram.payload)
        except WireError as error:
            self._drop(vm, error.reason)
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
        self._send_udp(vm, client, self.settings.gateway, dhcp.SERVER_PORT, reply.message.encode())

    def _dns_query(self, vm: Vm, guest: Endpoint, query: bytes, now: float) -> None:
        vm.stats.count("dns_query")
        answer = self.dns.local_answer(vm, query)
        if answer is not None:
            if answer:  # not DROPPED
                self._send_udp(vm, guest, self.settings.dns, 53, answer)
        elif self.dns.upstreams:
            if self._room_for_flow(vm, now):
                self._ask_upstream(vm, guest, query, 0, now)
            else:
                self._servfail(vm, guest, query)

    def _ask_upstream(
        self, vm: Vm, guest: Endpoint, query: bytes, attempt: int, now: float
    ) -> None:
        flow = self.dns.flow(vm, guest, query, attempt, now)
        vm.dns_flows.add(flow)
        self._open(flow)
        self._actions.append(SendFlow(flow, query))

    # -- TCP ---------------------------------------------------------------------------

    def _tcp(
        self, vm: Vm, eth: ethernet.EthernetFrame, packet: ipv4.IPv4Packet, now: float
    ) -> None:
        try:
            segment = tcp.TcpSegment.parse(packet.payload, packet.src, packet.dst)
        except WireError as error:
            self._drop(vm, error.reason)
            return
        if not self._guest_source(vm, packet):
            return
        key = (int(packet.src), segment.src_port, int(packet.dst), segment.dst_port)
        flow = vm.tcp_flows.get(key)
        if flow is not None and flow.endpoint.takes_new_syn(segment):
            self._close(flow)  # its TIME_WAIT gives way to a new connection on the same ports
            flow = None
        if flow is not None:
            flow.endpoint.segment_received(segment, now)
            self._tcp_output(flow, now)
            return
        if segment.flags & tcp.RST:
            self._drop(vm, "tcp_no_flow")
            return
        if segment.flags & (tcp.SYN | tcp.ACK) != tcp.SYN:
            self._drop(vm, "tcp_no_flow")
            self._tcp_refuse(vm, eth.src, packet, segment)
            return
        destination = self._tcp_destination(vm, eth.src, packet, segment, now)
        if destination is None:
            return
        if not self._room_for_flow(vm, now) or not self._room_to_connect(vm, now):
            self._tcp_refuse(vm, eth.src, packet, segment)
            return
        endpoint = TcpEndpoint.from_syn(segment, self.settings.mtu - 40, now, budget=vm.tcp_buffers)
        flow = TcpFlow(
            vm=vm,
            guest=Endpoint(eth.src, packet.src, segment.src_port),
            host_address=destination[0],
            host_port=destination[1],
            deadline=endpoint.deadline(),
            dst_address=packet.dst,
            dst_port=segment.dst_port,
            endpoint=endpoint,
        )
        vm.tcp_flows[key] = flow
        vm.connecting.add(flow)
        self._open(flow)

    def _room_to_connect(self, vm: Vm, now: float) -> bool:
        limit = self.settings.max_connecting
        if len(vm.connecting) < limit:
            return True
        vm.refuse("connect_limit", now, f"{limit} connects pending already (--max-connecting)")
        return False

    def _tcp_destination(
        self,
        vm: Vm,
        mac: bytes,
        packet: ipv4.IPv4Packet,
        segment: tcp.TcpSegment,
        now: float,
    ) -> tuple[IPv4Address, int] | None:
        """Where the host socket of a new connection goes, or None (counted, maybe refused)."""
        if packet.dst == self.settings.dns:
            # RFC 7766 §5: resolvers fall back to TCP (after a truncated answer, say), so
            # the DNS address takes TCP on port 53 too and relays it to the first upstream.
            if segment.dst_port == 53 and self.dns.upstreams:
                upstream = self.dns.upstreams[0]
                return upstream.address, upstream.port
            self._drop(vm, "no_service")
            self._tcp_refuse(vm, mac, packet, segment)
            return None
        host = self._host_destination(vm, packet, now)
        return None if host is None else (host, segment.dst_port)

    def _tcp_refuse(
        self, vm: Vm, mac: bytes, packet: ipv4.IPv4Packet, segment: tcp.TcpSegment
    ) -> None:
        """RFC 9293 §3.10.7.1: what a closed port answers."""
        if segment.flags & tcp.ACK:
            seq, ack, flags = segment.ack, 0, tcp.RST
        else:
            length = len(segment.payload) + (segment.flags & tcp.SYN) // tcp.SYN
            length += segment.flags & tcp.FIN
            seq, ack, flags = 0, (segment.seq + length) & 0xFFFFFFFF, tcp.RST | tcp.ACK
        reset = tcp.TcpSegment(segment.dst_port, segment.src_port, seq, ack, flags, 0)
        self._send_ip(
            vm, mac, packet.dst, packet.src, ipv4.PROTO_TCP, reset.encode(packet.dst, packet.src)
        )

    def _tcp_output(self, flow: TcpFlow, now: float) -> None:
        """Move what the endpoint produced: segments to the guest, operations to the host."""
        endpoint = flow.endpoint
        vm = flow.vm
        if endpoint.segments:
            head = flow.frame_head
            if head is None:
                mac = self._ethernet(flow.guest.mac, ethernet.ETHERTYPE_IPV4)
                head = flow.frame_head = (mac, int(flow.dst_address), int(flow.guest.address))
            mac, src, dst = head
            for segment in endpoint.segments:
                self._ip_ident = ident = (self._ip_ident + 1) & 0xFFFF
                options = segment.options
                vm.send(
                    native.tcp_frame(
                        mac,
                        src,
                        dst,
                        ident,
                        segment.src_port,
                        segment.dst_port,
                        segment.seq,
                        segment.ack,
                        segment.flags,
                        segment.window,
                        segment.urgent,
                        b"" if options is tcp.NO_OPTIONS else options.encode(),
                        segment.payload,
                    )
                )
            endpoint.segments.clear()
        for op in endpoint.host_ops:
            if not isinstance(op, HostOp):
                self._actions.append(SendFlow(flow, op))
            elif op is HostOp.SHUTDOWN:
                self._actions.append(ShutdownFlow(flow))
            elif op is HostOp.RESUME:
                self._actions.append(ResumeFlow(flow))
            elif not flow.host_closed:
                flow.host_closed = True
                self._actions.append(CloseFlow(flow, abort=op is HostOp.ABORT))
        endpoint.host_ops.clear()
        if endpoint.state is not State.CONNECTING:
            vm.connecting.discard(flow)
        if endpoint.closed:
            if endpoint.unreachable:
                self._tcp_unreachable(flow)
            self._close(flow)
        else:
            if endpoint.ack_at is not None:
                self._acks_delayed[flow] = None
            self._reschedule(flow, endpoint.deadline())

    def _tcp_unreachable(self, flow: TcpFlow) -> None:
        """ICMP host unreachable from the gateway, quoting the guest's SYN (RFC 1812 §5.2.7.1).

        Sent when the host connect failed as unreachable or took too long: the guest
        hears EHOSTUNREACH at once rather than a refusal that did not happen.
        """
        guest = flow.guest
        syn = tcp.TcpSegment(guest.port, flow.dst_port, flow.endpoint.guest_isn, 0, tcp.SYN, 0)
        header = syn.encode(guest.address, flow.dst_address)
        original = ipv4.IPv4Packet(guest.address, flow.dst_address, ipv4.PROTO_TCP, header)
        message = icmp.IcmpMessage.error(
            icmp.TYPE_DEST_UNREACHABLE, icmp.CODE_HOST_UNREACHABLE, original.encode()
        )
        self._send_ip(
            flow.vm,
            guest.mac,
            self.settings.gateway,
            guest.address,
            ipv4.PROTO_ICMP,
            message.encode(),
        )

    # -- forwards from the host --------------------------------------------------------

    def forward_connection(
        self, forward: Forward, peer: tuple[IPv4Address, int], now: float
    ) -> TcpFlow | None:
        """A host connection accepted on ``forward``: a flow that opens to the guest, or
        None when no VM is there to take it (the shell then resets the connection)."""
        target = self._forward_target(forward, now)
        if target is None:
            return None
        vm, mac, address = target
        gateway = self.settings.gateway
        port = self._free_port(vm.tcp_flows, address, forward.guest_port)
        endpoint = TcpEndpoint.active(
            forward.guest_port, port, self.settings.mtu - 40, now, budget=vm.tcp_buffers
        )
        flow = TcpFlow(
            vm=vm,
            guest=Endpoint(mac, address, forward.guest_port),
            host_address=peer[0],
            host_port=peer[1],
            deadline=endpoint.deadline(),
            dst_address=gateway,
            dst_port=port,
            endpoint=endpoint,
            forward=forward,
        )
        vm.tcp_flows[flow.key] = flow
        vm.stats.count("forward_tcp")
        self._open(flow)
        self._tcp_output(flow, now)
        return flow

    def forward_refused(self, forward: Forward, now: float) -> bool:
        """A connection on ``forward`` was reset for want of file descriptors: counted
        (and logged) on the VM it was for; False when there is none."""
        target = choose_guest(forward, self.vms, self.dhcp, self._neighbours)
        if target is None:
            return False
        why = f"forward {forward}: no host socket: out of file descriptors"
        target[0].refuse("host_out_of_fds", now, why)
        return True

    def forward_datagram(
        self, forward: Forward, peer: tuple[IPv4Address, int], payload: bytes, now: float
    ) -> UdpFlow | None:
        """A datagram from ``peer`` to ``forward``'s port, sent on to the guest; the flow
        its replies take (new or not), or None when no VM is there (dropped)."""
        flow = self._forwarded_udp.get((forward, *peer))
        if flow is None or flow.closed:
            target = self._forward_target(forward, now)
            if target is None:
                return None
            vm, mac, address = target
            if len(payload) + _IP_UDP_HEADERS > self.settings.mtu:
                self._drop(vm, "udp_reply_over_mtu")
                return None
            port = self._free_port(vm.udp_flows, address, forward.guest_port)
            flow = UdpFlow(
                vm=vm,
                guest=Endpoint(mac, address, forward.guest_port),
                host_address=peer[0],
                host_port=peer[1],
                deadline=now + self.settings.udp_idle_timeout,
                dst_address=self.settings.gateway,
                dst_port=port,
                forward=forward,
            )
            vm.udp_flows[flow.key] = flow
            self._forwarded_udp[forward, *peer] = flow
            vm.stats.count("forward_udp")
            self._open(flow)
        elif len(payload) + _IP_UDP_HEADERS > self.settings.mtu:
            self._drop(flow.vm, "udp_reply_over_mtu")
            return flow
        flow.deadline = now + self.settings.udp_idle_timeout
        self._send_udp(flow.vm, flow.guest, flow.dst_address, flow.dst_port, payload)
        return flow

    def _forward_target(self, forward: Forward, now: float) -> tuple[Vm, bytes, IPv4Address] | None:
        target = choose_guest(forward, self.vms, self.dhcp, self._neighbours)
        if target is None:
            self._probe_all(now)  # a VM may hold the lease and have said nothing yet
            return None
        return target if self._room_for_flow(target[0], now) else None

    def _free_port(self, flows: Container[FlowKey], address: IPv4Address, guest_port: int) -> int:
        """A gateway port no flow of the guest's ``guest_port`` uses yet."""
        ports = FORWARD_PORTS
        gateway = int(self.settings.gateway)
        while True:
            port = self._next_port
            self._next_port = port + 1 if port + 1 < ports.stop else ports.start
            if (int(address), guest_port, gateway, port) not in flows:
                return port

    # -- ICMP --------------------------------------------------------------------------

    def _icmp(
        self, vm: Vm, eth: ethernet.EthernetFrame, packet: ipv4.IPv4Packet, now: float
    ) -> None:
        try:
            message = icmp.IcmpMessage.parse(packet.payload)
        except WireError as error:
            self._drop(vm, error.reason)
            return
        if message.type != icmp.TYPE_ECHO_REQUEST:
            self._drop(vm, "icmp_unsupported_type")
            return
        if not self._guest_source(vm, packet):
            return
        guest = Endpoint(eth.src, packet.src, message.ident)
        if packet.dst in self._own:
            reply = icmp.IcmpMessage.echo(
                icmp.TYPE_ECHO_REPLY, message.ident, message.seq, message.payload
            )
            self._send_ip(vm, eth.src, packet.dst, packet.src, ipv4.PROTO_ICMP, reply.encode())
            return
        key = (int(packet.dst), message.ident)
        flow = vm.echo_flows.get(key)
        if flow is None:
            host = self._host_destination(vm, packet, now)
            if host is None:
                return
            if not self._room_for_flow(vm, now):
                self._prohibited(vm, packet)
                return
            flow = EchoFlow(
                vm=vm,
                guest=guest,
                host_address=host,
                host_port=0,
                deadline=now + ECHO_FLOW_IDLE,
                dst_address=packet.dst,
            )
            vm.echo_flows[key] = flow
            self._open(flow)
        flow.deadline = now + ECHO_FLOW_IDLE
        self._actions.append(SendFlow(flow, bytes(packet.payload)))

    def _icmp_error(self, vm: Vm, packet: ipv4.IPv4Packet, type_: int, code: int) -> None:
        """An ICMP error about ``packet`` to the guest that sent it, from the gateway."""
        mac = self._mac_of(vm, packet.src)
        if mac is None:
            return
        quoted = packet.encode_header() + bytes(packet.payload[:8])
        message = icmp.IcmpMessage.error(type_, code, quoted)
        self._send_ip(vm, mac, self.settings.gateway, packet.src, ipv4.PROTO_ICMP, message.encode())

    def _mac_of(self, vm: Vm, address: IPv4Address) -> bytes | None:
        lease = self.dhcp.mac_of(address)
        if lease is not None and lease in vm.macs:
            return lease
        # Without a lease (a static guest address) the VM's one MAC will do.
        return next(iter(vm.macs)) if len(vm.macs) == 1 else None

    # -- events from host sockets ------------------------------------------------------

    def flow_connected(self, flow: Flow, now: float) -> None:
        """The host socket of a TCP flow is connected."""
        if isinstance(flow, TcpFlow) and not flow.closed:
            flow.endpoint.host_connected(now)
            self._tcp_output(flow, now)

    def flow_eof(self, flow: Flow, now: float) -> None:
        """The host peer of a TCP flow closed its side (a read returned nothing)."""
        if isinstance(flow, TcpFlow) and not flow.closed:
            flow.endpoint.host_eof(now)
            self._tcp_output(flow, now)

    def flow_written(self, flow: Flow, count: int, now: float) -> None:
        """The host socket of a TCP flow took ``count`` bytes of what it was sent."""
        if isinstance(flow, TcpFlow) and not flow.closed:
            flow.endpoint.host_written(count, now)
            self._tcp_output(flow, now)

    def flow_received(self, flow: Flow, payload: bytes, now: float) -> None:
        """The host socket of ``flow`` received ``payload`` from its peer."""
        if flow.closed:
            return
        vm = flow.vm
        if isinstance(flow, TcpFlow):
            flow.endpoint.host_data(payload, now)
            self._tcp_output(flow, now)
        elif isinstance(flow, UdpFlow):
            if len(payload) + _IP_UDP_HEADERS > self.settings.mtu:
                self._drop(vm, "udp_reply_over_mtu")
                return
            flow.deadline = now + self._udp_idle(flow)
            self._send_udp(vm, flow.guest, flow.dst_address, flow.dst_port, payload)
        elif isinstance(flow, EchoFlow):
            self._echo_reply(flow, payload, now)
        elif isinstance(flow, TftpFlow):
            self.tftp.received(flow, payload, now)
        elif isinstance(flow, DnsFlow):
            if DnsService.matches(flow, payload):
                self.dns.upstream_answered(flow.attempt)
                answer: bytes | None = payload
                if len(payload) + _IP_UDP_HEADERS > self.settings.mtu:
                    answer = DnsService.truncated(flow.query)  # the guest asks again over TCP
                if answer is None:
                    self._drop(vm, "udp_reply_over_mtu")
                else:
                    self._send_udp(vm, flow.guest, self.settings.dns, 53, answer)
                self._close(flow)
            else:
                self._drop(vm, "dns_reply_mismatch")

    def _echo_reply(self, flow: EchoFlow, payload: bytes, now: float) -> None:
        try:
            message = icmp.IcmpMessage.parse(payload, verify_checksum=False)
        except WireError as error:
            self._drop(flow.vm, error.reason)
            return
        if message.type != icmp.TYPE_ECHO_REPLY:
            return
        flow.deadline = now + ECHO_FLOW_IDLE
        # A ping socket rewrites the identifier to its own; the guest wants its own back.
        reply = icmp.IcmpMessage.echo(
            icmp.TYPE_ECHO_REPLY, flow.guest.port, message.seq, message.payload
        )
        self._send_ip(
            flow.vm,
            flow.guest.mac,
            flow.dst_address,
            flow.guest.address,
            ipv4.PROTO_ICMP,
            reply.encode(),
        )

    def flow_error(self, flow: Flow, kind: str, now: float) -> None:
        """The host socket of ``flow`` failed: ``FLOW_REFUSED``, ``_UNREACHABLE``, ``_RESET``,
        ``_FAILED``, or ``_EXHAUSTED`` (it could not be had for want of file descriptors)."""
        if flow.closed:
            return
        if isinstance(flow, TftpFlow):
            self.tftp.failed(flow, kind, now)
            return
        vm = flow.vm
        if kind == FLOW_EXHAUSTED:
            # The flow is refused like any other over a limit; the ones open go on.
            vm.refuse("host_out_of_fds", now, "no host socket: out of file descriptors")
        if isinstance(flow, DnsFlow):
            if kind == FLOW_EXHAUSTED:  # not the upstream's fault: don't ask the next one
                self._close(flow)
                self._servfail(vm, flow.guest, flow.query)
            else:
                self._dns_failed(flow, now)
            return
        if isinstance(flow, TcpFlow):
            vm.stats.count(f"tcp_host_{kind}")
            flow.endpoint.host_failed(now, unreachable=kind == FLOW_UNREACHABLE)
            self._tcp_output(flow, now)
            return
        if kind == FLOW_FAILED:
            self._drop(vm, "host_socket_failed")
        if isinstance(flow, UdpFlow) and kind != FLOW_FAILED:
            self._udp_unreachable(flow, kind)
        if kind in (FLOW_FAILED, FLOW_EXHAUSTED):
            self._close(flow)

    def _udp_unreachable(self, flow: UdpFlow, kind: str) -> None:
        """ICMP destination unreachable for a UDP flow, quoting a datagram of its (RFC 792):
        from the destination for a refused port, from the gateway when no host was reached."""
        code = icmp.CODE_PORT_UNREACHABLE if kind == FLOW_REFUSED else icmp.CODE_HOST_UNREACHABLE
        guest = flow.guest
        header = udp.UdpDatagram(guest.port, flow.dst_port, b"").encode(
            guest.address, flow.dst_address
        )
        original = ipv4.IPv4Packet(guest.address, flow.dst_address, ipv4.PROTO_UDP, header)
        message = icmp.IcmpMessage.error(icmp.TYPE_DEST_UNREACHABLE, code, original.encode())
        source = flow.dst_address if kind in (FLOW_REFUSED, FLOW_RESET) else self.settings.gateway
        self._send_ip(flow.vm, guest.mac, source, guest.address, ipv4.PROTO_ICMP, message.encode())

    def _dns_failed(self, flow: DnsFlow, now: float) -> None:
        """This upstream did not answer: ask the next, or tell the guest SERVFAIL."""
        self._close(flow)
        vm = flow.vm
        vm.stats.count("dns_upstream_failed")
        self.dns.upstream_failed(flow.attempt)
        attempt = flow.attempt + 1
        if attempt < len(self.dns.upstreams) and vm.attached:
            self._ask_upstream(vm, flow.guest, flow.query, attempt, now)
            return
        if vm.attached:
            self._servfail(vm, flow.guest, flow.query)

    def _servfail(self, vm: Vm, guest: Endpoint, query: bytes) -> None:
        answer = DnsService.servfail(query)
        if answer is not None:
            self._send_udp(vm, guest, self.settings.dns, 53, answer)

    # -- timers ------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When ``handle_timer`` should next run (possibly early), or None."""
        deadline = self._deadlines.next_time()
        if self._probing:
            due = min(due for due, _ in self._probing.values())
            deadline = due if deadline is None else min(deadline, due)
        return deadline

    def handle_timer(self, now: float) -> None:
        if self._probing:
            self._probe_again(now)
        for flow in self._deadlines.pop_due(now):
            if flow.closed:
                continue
            flow.scheduled = math.inf
            if flow.deadline > now:
                self._reschedule(flow, flow.deadline)
            elif isinstance(flow, TcpFlow):
                flow.endpoint.handle_timer(now)
                self._tcp_output(flow, now)
            elif isinstance(flow, DnsFlow):
                self._dns_failed(flow, now)
            elif isinstance(flow, TftpFlow):
                self.tftp.timer(flow, now)
            else:
                self._close(flow)

    # -- flows -------------------------------------------------------------------------

    def _room_for_flow(self, vm: Vm, now: float) -> bool:
        limit = self.settings.max_flows
        if vm.flow_count < limit:
            return True
        vm.refuse("flow_limit", now, f"{limit} flows held already (--max-flows)")
        return False

    def _open(self, flow: Flow) -> None:
        self._actions.append(OpenFlow(flow))
        self._reschedule(flow, flow.deadline)

    def _prune_timers(self) -> None:
        """Sweep closed flows out of the timer queue: so many that it is worth a pass
        over it, or a VM has left (its flows, and the VM with them, are freed now)."""
        self._deadlines.prune(lambda flow: flow.closed)
        self._closed_queued = 0

    def _reschedule(self, flow: Flow, deadline: float) -> None:
        """Make sure the timer queue holds an entry no later than ``deadline``.

        Deadlines that move later cost nothing (the entry is re-queued when it comes
        due); only one that moves earlier, like a TCP retransmission, needs a push.
        """
        flow.deadline = deadline
        if deadline < flow.scheduled:
            flow.scheduled = deadline
            self._deadlines.push(deadline, flow)

    def _close(self, flow: Flow, *, abort: bool = False) -> None:
        if flow.closed:
            return
        flow.closed = True
        if flow.scheduled != math.inf:
            self._closed_queued += 1
            if self._closed_queued > max(PRUNE_MIN, len(self._deadlines) // 2):
                self._prune_timers()
        vm = flow.vm
        if isinstance(flow, TcpFlow):
            vm.tcp_flows.pop(flow.key, None)
            vm.connecting.discard(flow)
            vm.stats.count("tcp_retransmits", flow.endpoint.counters.retransmits)
            flow.endpoint.discard()
            if flow.host_closed:
                return
            flow.host_closed = True
        elif isinstance(flow, UdpFlow):
            vm.udp_flows.pop(flow.key, None)
            if flow.forward is not None:
                self._forwarded_udp.pop((flow.forward, flow.host_address, flow.host_port), None)
        elif isinstance(flow, EchoFlow):
            vm.echo_flows.pop((int(flow.dst_address), flow.guest.port), None)
        elif isinstance(flow, DnsFlow):
            vm.dns_flows.discard(flow)
        elif isinstance(flow, TftpFlow):
            self.tftp.forget(flow)
        self._actions.append(CloseFlow(flow, abort=abort))

    # -- building frames ---------------------------------------------------------------

    def _ethernet(self, dst_mac: bytes, ethertype: int) -> bytes:
        return _ETHERNET.pack(dst_mac, self.gateway_mac, ethertype)

    def _send_ip(
        self,
        vm: Vm,
        dst_mac: bytes,
        src: IPv4Address,
        dst: IPv4Address,
        protocol: int,
        payload: bytes,
    ) -> None:
        self._ip_ident = (self._ip_ident + 1) & 0xFFFF
        header = ipv4.IPv4Packet(src, dst, protocol, payload, ident=self._ip_ident).encode_header()
        vm.send(b"".join((self._ethernet(dst_mac, ethernet.ETHERTYPE_IPV4), header, payload)))

    def _send_udp(
        self, vm: Vm, dst: Endpoint, src: IPv4Address, src_port: int, payload: bytes
    ) -> None:
        datagram = udp.UdpDatagram(src_port, dst.port, payload).encode(src, dst.address)
        self._send_ip(vm, dst.mac, src, dst.address, ipv4.PROTO_UDP, datagram)

    def _drop(self, vm: Vm, reason: str) -> None:
        vm.stats.drop(reason)
        log.debug("drop %s", reason, extra=vm.log_context)
