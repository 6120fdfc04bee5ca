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
from collections.abc import Sequence
from ipaddress import IPv6Address

from slirpnet.core.addr import IPAddress
from slirpnet.core.dhcp import DhcpServer
from slirpnet.core.dhcp6 import Dhcp6Server
from slirpnet.core.dns import DnsService
from slirpnet.core.dnsrelay import DnsRelay
from slirpnet.core.fastpath import established_segment, superseded
from slirpnet.core.flows import (
    FLOW_EXHAUSTED,
    Action,
    DnsFlow,
    EchoFlow,
    Flow,
    TcpFlow,
    TftpFlow,
    UdpFlow,
)
from slirpnet.core.flowtable import FlowTable
from slirpnet.core.forwards import Forward
from slirpnet.core.frames import Frames
from slirpnet.core.gatewayports import GatewayPorts
from slirpnet.core.gatewayudp import GatewayUdp
from slirpnet.core.guestfwd import GuestForwards
from slirpnet.core.ipv4layer import Ipv4Layer
from slirpnet.core.ipv6layer import Ipv6Layer, guarded
from slirpnet.core.nat_echo import EchoNat
from slirpnet.core.nat_tcp import TcpNat
from slirpnet.core.nat_udp import UdpNat
from slirpnet.core.neighbours import Neighbours, choose_guest
from slirpnet.core.probes import LeaseProbes
from slirpnet.core.ra import RouterAdvertiser
from slirpnet.core.settings import NetworkSettings
from slirpnet.core.stats import Stats
from slirpnet.core.switch import Switch
from slirpnet.core.tcp import State
from slirpnet.core.tftp import TftpService
from slirpnet.core.vm import Vm
from slirpnet.wire import ethernet
from slirpnet.wire.errors import WireError

log = logging.getLogger(__name__)


class Segment:
    """One namespace's network: its parts, put together (see the docstring above)."""

    def __init__(self, settings: NetworkSettings) -> None:
        self.settings = settings
        # libslirp's convention: 52:55 then the gateway's IPv4 address.
        self.gateway_mac = b"\x52\x55" + settings.gateway.packed
        self.switch = Switch()
        self.vms = self.switch.ports
        self.neighbours = Neighbours()
        self.flows = FlowTable(settings)
        self.frames = Frames(self.gateway_mac, settings.mtu)
        self.dhcp = DhcpServer(settings)
        # Addresses the gateway answers for besides its own (ARP, ping): never leased.
        self.guest_forwards = GuestForwards(settings.network, settings.guest_forwards)
        self.dhcp.reserved = self.guest_forwards
        self.dns = DnsService(
            settings.local_records(), settings.dns_upstreams, settings.dns_timeout
        )
        self.probes = LeaseProbes(settings, self.frames, self.dhcp, self.switch)
        ports = GatewayPorts()
        self.tcp = TcpNat(
            settings, self.frames, self.flows, ports, self.dns.upstreams, self.guest_forwards
        )
        self.udp = UdpNat(settings, self.frames, self.flows, ports)
        self.echo = EchoNat(settings, self.frames, self.flows)
        self.dns_relay = DnsRelay(settings, self.frames, self.flows, self.dns)
        self.tftp = TftpService(settings, self.frames, self.flows, ports)
        gateway_udp = GatewayUdp(settings, self.tftp, self.dns_relay, self.udp)
        self.ipv4 = Ipv4Layer(
            settings,
            self.frames,
            self.neighbours,
            self.dhcp,
            gateway_udp,
            self.tcp,
            self.echo,
            self.guest_forwards,
        )
        self.ra = RouterAdvertiser(settings, self.frames)
        self.ipv6 = Ipv6Layer(
            settings,
            self.frames,
            self.neighbours,
            gateway_udp,
            self.tcp,
            self.echo,
            self.ra,
            Dhcp6Server(settings, self.frames),
        )
        self._vm_ids = 0
        self._departed = Stats()  # the counts of VMs that have left, so totals never go back

    # -- ports -------------------------------------------------------------------------

    def attach(self, name: str) -> Vm:
        self._vm_ids += 1
        vm = Vm(name, id=self._vm_ids)
        self.switch.plug(vm)
        return vm

    def detach(self, vm: Vm) -> None:
        """The VM is gone: close every flow of its and forget its MACs.  Leases stay."""
        if not vm.attached:
            return
        vm.attached = False
        self.switch.unplug(vm)
        self.neighbours.forget(vm)
        self.flows.close_all(vm)
        self.ipv4.fragments.forget(vm)
        vm.outbox.clear()
        self.probes.forget(vm)
        self.dhcp.forget_owner(vm)
        self._departed.add(vm.stats)

    def totals(self) -> Stats:
        """The counts of every VM this segment has had, connected or gone."""
        total = Stats()
        total.add(self._departed)
        for vm in self.vms:
            total.add(vm.stats)
        return total

    def attached(self, vm: Vm, now: float) -> None:
        """``vm``'s port is up (the shell says so once it can carry frames): the gateway
        asks for leased addresses no port has, and advertises itself as IPv6 router from
        now on (core/ra.py)."""
        self.probe_leases(vm, now)
        if self.settings.ipv6:
            self.ra.attached(now)

    def probe_leases(self, vm: Vm, now: float) -> None:
        """Ask on ``vm``'s port for leased addresses no port has (core/probes.py)."""
        self.probes.probe(vm, now)

    def send_delayed_acks(self, now: float) -> None:
        """The end of a batch of frames: every delayed TCP ACK goes out now.

        A batch is what the caller had at hand at once; the guest's next segments
        come after our ACKs get to it, so waiting longer would only slow it down.
        """
        self.tcp.send_delayed_acks(now)

    def take_actions(self) -> list[Action]:
        return self.flows.take_actions()

    # -- frames from a VM --------------------------------------------------------------

    def receive_many(self, vm: Vm, frames: Sequence[bytes], now: float) -> None:
        """A batch of frames from ``vm``'s NIC, in order.

        A guest's plain cumulative ACK that the next frame of the batch acknowledges
        beyond (``fastpath.superseded``) is counted and passed over: the later ACK says
        all it said (RFC 9293 §3.10.7.4: SND.UNA moves to the highest ACK; the window
        comes with the newest).  At MTU 1500 the guest ACKs every second frame of ours,
        and a batch holds runs of them.  Duplicate ACKs are never passed over: three of
        them are a fast retransmit (RFC 5681 §3.2).
        """
        last = len(frames) - 1
        for index, frame in enumerate(frames):
            if index < last and superseded(frame, frames[index + 1]):
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
            vm.drop(error.reason)
            return
        if ethernet.is_multicast(eth.src) or eth.src == self.gateway_mac:
            vm.drop("eth_bad_source")
            return
        switch = self.switch
        if not switch.learn(vm, eth.src, now):
            return
        if eth.dst == self.gateway_mac:
            self._to_gateway(vm, eth, now)
            return
        ipv6 = eth.ethertype == ethernet.ETHERTYPE_IPV6
        if ipv6:  # RA guard: what only routers and DHCP servers send stays here
            refused = guarded(frame)
            if refused is not None:
                vm.drop(refused)
                return
        if eth.dst == ethernet.BROADCAST:
            switch.flood(vm, frame, now)
            self._to_gateway(vm, eth, now)
        elif ethernet.is_multicast(eth.dst):
            flooded = switch.flood(vm, frame, now)
            if ipv6:  # Neighbour Discovery, DHCPv6 and MLD to groups the gateway is in
                self._to_gateway(vm, eth, now)
            elif not flooded:
                vm.drop("eth_multicast")
        else:
            port = switch.port_of(eth.dst)
            if port is vm:
                vm.drop("eth_to_self")
            elif port is not None:
                port.send(frame)
            elif not switch.flood(vm, frame, now):
                vm.drop("eth_unknown_destination")

    def _established_tcp(self, vm: Vm, frame: bytes, now: float) -> bool:
        """The common case in one step (core/fastpath.py): a valid TCP segment of a flow
        ``vm`` holds, from a MAC its port has learned, from an address still its own.
        Anything else is left to the general path (False), which counts and answers it."""
        found = established_segment(frame, self.gateway_mac)
        if found is None or self.switch.port_of(found.src_mac) is not vm:
            return False
        flow = vm.flows.get(found.key)
        if not isinstance(flow, TcpFlow) or flow.endpoint.state is State.TIME_WAIT:
            return False  # (a new SYN may replace a flow in TIME_WAIT: the general path)
        if self.neighbours.get_key(found.src) is not vm:
            return False  # the address moved to another port: the general path takes it back
        self.tcp.deliver(flow, found.segment, now)
        return True

    def _to_gateway(self, vm: Vm, eth: ethernet.EthernetFrame, now: float) -> None:
        if eth.ethertype == ethernet.ETHERTYPE_ARP:
            self.ipv4.arp(vm, eth)
        elif eth.ethertype == ethernet.ETHERTYPE_IPV4:
            self.ipv4.packet(vm, eth, now)
        elif eth.ethertype == ethernet.ETHERTYPE_IPV6:
            self.ipv6.packet(vm, eth, now)
        else:
            vm.drop("eth_unknown_ethertype")

    # -- forwards from the host --------------------------------------------------------

    def forward_connection(
        self, forward: Forward, peer: tuple[IPAddress, int], now: float
    ) -> TcpFlow | None:
        """A host connection accepted on ``forward``: a flow that opens to the guest, or
        None when no VM is there to take it (the shell then resets the connection)."""
        target = self._forward_target(forward, now)
        if target is None:
            return None
        return self.tcp.forward_connection(forward, peer, target, now)

    def forward_refused(self, forward: Forward, now: float) -> bool:
        """A connection on ``forward`` was reset for want of file descriptors: counted
        (and logged) on the VM it was for; False when there is none."""
        target = choose_guest(forward, self.vms, self.dhcp, self.neighbours)
        if target is None:
            return False
        why = f"forward {forward}: no host socket: out of file descriptors"
        target[0].refuse("host_out_of_fds", now, why)
        return True

    def forward_datagram(
        self, forward: Forward, peer: tuple[IPAddress, int], payload: bytes, now: float
    ) -> UdpFlow | None:
        """A datagram from ``peer`` to ``forward``'s port, sent on to the guest; the flow
        its replies take (new or not), or None when no VM is there (dropped)."""
        return self.udp.forward_datagram(
            forward, peer, payload, now, lambda: self._forward_target(forward, now)
        )

    def _forward_target(self, forward: Forward, now: float) -> tuple[Vm, bytes, IPAddress] | None:
        target = choose_guest(forward, self.vms, self.dhcp, self.neighbours)
        if target is None:
            # A VM may hold the lease, or the address, and have said nothing yet: ask.
            self.probes.probe_all(now)
            address = forward.guest_address
            if isinstance(address, IPv6Address) and self.settings.ipv6:
                for vm in self.vms:
                    self.ipv6.solicit(vm, address)
            return None
        return target if self.flows.room(target[0], now) else None

    # -- events from host sockets ------------------------------------------------------

    def flow_connected(self, flow: Flow, now: float) -> None:
        """The host socket of a TCP flow is connected."""
        if isinstance(flow, TcpFlow) and not flow.closed:
            self.tcp.connected(flow, now)

    def flow_eof(self, flow: Flow, now: float) -> None:
        """The host peer of a TCP flow closed its side (a read returned nothing)."""
        if isinstance(flow, TcpFlow) and not flow.closed:
            self.tcp.eof(flow, now)

    def flow_written(self, flow: Flow, count: int, now: float) -> None:
        """The host socket of a TCP flow took ``count`` bytes of what it was sent."""
        if isinstance(flow, TcpFlow) and not flow.closed:
            self.tcp.written(flow, count, now)

    def flow_received(self, flow: Flow, payload: bytes, now: float) -> None:
        """The host socket of ``flow`` received ``payload`` from its peer."""
        if flow.closed:
            return
        if isinstance(flow, TcpFlow):
            self.tcp.received(flow, payload, now)
        elif isinstance(flow, UdpFlow):
            self.udp.received(flow, payload, now)
        elif isinstance(flow, EchoFlow):
            self.echo.received(flow, payload, now)
        elif isinstance(flow, DnsFlow):
            self.dns_relay.received(flow, payload)
        elif isinstance(flow, TftpFlow):
            self.tftp.received(flow, payload, now)

    def flow_error(self, flow: Flow, kind: str, now: float) -> None:
        """The host socket of ``flow`` failed: one of the ``FLOW_*`` kinds (core/flows.py);
        ``FLOW_EXHAUSTED``: it could not be had for want of file descriptors."""
        if flow.closed:
            return
        if kind == FLOW_EXHAUSTED:
            # The flow is refused like any other over a limit; the ones open go on.
            flow.vm.refuse("host_out_of_fds", now, "no host socket: out of file descriptors")
        if isinstance(flow, TcpFlow):
            self.tcp.failed(flow, kind, now)
        elif isinstance(flow, UdpFlow):
            self.udp.failed(flow, kind)
        elif isinstance(flow, EchoFlow):
            self.echo.failed(flow, kind)
        elif isinstance(flow, DnsFlow):
            self.dns_relay.failed(flow, kind, now)
        elif isinstance(flow, TftpFlow):
            self.tftp.failed(flow, kind, now)

    # -- timers ------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When ``handle_timer`` should next run (possibly early), or None."""
        times = (
            self.flows.next_time(),
            self.probes.next_time(),
            self.ra.next_time(),
            self.ipv4.fragments.next_time(),
        )
        return min((t for t in times if t is not None), default=None)

    def handle_timer(self, now: float) -> None:
        self.probes.handle_timer(now)
        self.ra.handle_timer(now, self.vms)
        self.ipv4.expire_fragments(now)
        for flow in self.flows.due(now):
            if isinstance(flow, TcpFlow):
                self.tcp.timer(flow, now)
            elif isinstance(flow, DnsFlow):
                self.dns_relay.timed_out(flow, now)
            elif isinstance(flow, TftpFlow):
                self.tftp.timer(flow, now)
            else:
                self.flows.close(flow)
