"""TCP NAT, for both families: a guest's connection split at a ``TcpEndpoint``.

The L3 modules (``ipv4.py``, ``ipv6.py``) parse and check a guest's packet and hand its
TCP segment here with the addresses; from here on nothing depends on the family but
the frames' headers (``fastpath.send_segments``, ``Frames``).  A SYN becomes a
``TcpFlow`` and an ``OpenFlow``; the shell's events (``connected``, ``received``, ...)
feed the endpoint; ``output`` moves what the endpoint produced: segments to the guest,
operations to the host socket.  See core/tcp.py for the endpoint's theory of operation.
"""

from __future__ import annotations

from slirpnet.core import dns
from slirpnet.core.addr import IPAddress, family_of
from slirpnet.core.fastpath import send_segments
from slirpnet.core.flows import (
    FLOW_UNREACHABLE,
    PROTO_TCP,
    CloseFlow,
    Endpoint,
    ResumeFlow,
    SendFlow,
    ShutdownFlow,
    TcpFlow,
    flow_key,
)
from slirpnet.core.flowtable import FlowTable
from slirpnet.core.forwards import Forward
from slirpnet.core.frames import Frames, Unreachable
from slirpnet.core.gatewayports import GatewayPorts
from slirpnet.core.guestfwd import GuestForwards
from slirpnet.core.policy import Refusal, route
from slirpnet.core.settings import NetworkSettings, Upstream
from slirpnet.core.tcp import HostOp, State, TcpEndpoint
from slirpnet.core.vm import Vm
from slirpnet.wire import tcp


class TcpNat:
    def __init__(
        self,
        settings: NetworkSettings,
        frames: Frames,
        flows: FlowTable,
        ports: GatewayPorts,
        upstreams: tuple[Upstream, ...],
        guest_forwards: GuestForwards,
    ) -> None:
        self.settings = settings
        self.frames = frames
        self.flows = flows
        self.ports = ports
        self.upstreams = upstreams
        self.guest_forwards = guest_forwards
        self._acks_delayed: dict[TcpFlow, None] = {}  # flows owing a delayed ACK, in order

    # -- from the guest ------------------------------------------------------------------

    def deliver(self, flow: TcpFlow, segment: tcp.TcpSegment, now: float) -> None:
        """A segment of an open flow (the fast path's, or the general path's)."""
        flow.endpoint.segment_received(segment, now)
        self.output(flow, now)

    def guest_segment(
        self,
        vm: Vm,
        mac: bytes,
        src: IPAddress,
        dst: IPAddress,
        segment: tcp.TcpSegment,
        now: float,
    ) -> Refusal | None:
        """A checked segment from a guest address of ``vm``; a policy refusal is returned
        for the caller to answer (ICMP), everything else is handled here."""
        key = flow_key(PROTO_TCP, src, segment.src_port, dst, segment.dst_port)
        flow = vm.flows.get(key)
        if isinstance(flow, TcpFlow):
            if flow.endpoint.takes_new_syn(segment):
                self.flows.close(flow)  # TIME_WAIT gives way to a new connection on the ports
            else:
                self.deliver(flow, segment, now)
                return None
        if segment.flags & tcp.RST:
            vm.drop("tcp_no_flow")
            return None
        if segment.flags & (tcp.SYN | tcp.ACK) != tcp.SYN:
            vm.drop("tcp_no_flow")
            self.refuse(vm, mac, src, dst, segment)
            return None
        destination = self._destination(vm, mac, src, dst, segment)
        if isinstance(destination, Refusal) or destination is None:
            return destination
        if not self.flows.room(vm, now) or not self.flows.room_to_connect(vm, now):
            self.refuse(vm, mac, src, dst, segment)
            return None
        mss = family_of(dst).mss(self.settings.mtu)
        endpoint = TcpEndpoint.from_syn(segment, mss, now, budget=vm.tcp_buffers)
        flow = TcpFlow(
            vm=vm,
            guest=Endpoint(mac, src, segment.src_port),
            host_address=destination[0],
            host_port=destination[1],
            deadline=endpoint.deadline(),
            dst_address=dst,
            dst_port=segment.dst_port,
            endpoint=endpoint,
            fallbacks=self.upstreams[1:] if dst == self.settings.dns_for(dst) else (),
            guestfwd=self.guest_forwards.get(dst, segment.dst_port),
        )
        self.flows.open(flow)
        return None

    def _destination(
        self, vm: Vm, mac: bytes, src: IPAddress, dst: IPAddress, segment: tcp.TcpSegment
    ) -> tuple[IPAddress, int] | Refusal | None:
        """Where the host socket of a new connection goes; a refusal; or None when the
        guest has been answered already."""
        if dst == self.settings.dns_for(dst):
            # RFC 7766 §5: resolvers fall back to TCP (after a truncated answer, say), so
            # the DNS address takes TCP on port 53 too and relays it to the upstreams: the
            # first, then the others as the shell finds it will not connect (fallbacks).
            if segment.dst_port == dns.DNS_PORT and self.upstreams:
                upstream = self.upstreams[0]
                return upstream.address, upstream.port
            vm.drop("no_service")
            self.refuse(vm, mac, src, dst, segment)
            return None
        if dst in self.guest_forwards:
            # A guestfwd's port leads to its target (the shell opens it); the rest are closed.
            if self.guest_forwards.get(dst, segment.dst_port) is not None:
                return dst, segment.dst_port
            vm.drop("no_service")
            self.refuse(vm, mac, src, dst, segment)
            return None
        host = route(self.settings, dst)
        return host if isinstance(host, Refusal) else (host, segment.dst_port)

    def refuse(
        self, vm: Vm, mac: bytes, src: IPAddress, dst: IPAddress, segment: tcp.TcpSegment
    ) -> None:
        """RFC 9293 §3.10.7.1: what a closed port answers."""
        if segment.flags & tcp.ACK:
            seq, ack, flags = segment.ack, 0, tcp.RST
        else:
            length = len(segment.payload) + (segment.flags & tcp.SYN) // tcp.SYN
            length += segment.flags & tcp.FIN
            seq, ack, flags = 0, (segment.seq + length) & 0xFFFFFFFF, tcp.RST | tcp.ACK
        reset = tcp.TcpSegment(segment.dst_port, segment.src_port, seq, ack, flags, 0)
        self.frames.ip(vm, mac, dst, src, PROTO_TCP, reset.encode(dst, src))

    # -- to the guest and the host ---------------------------------------------------------

    def output(self, flow: TcpFlow, now: float) -> None:
        """Move what the endpoint produced: segments to the guest, operations to the host."""
        endpoint = flow.endpoint
        if endpoint.segments:
            send_segments(flow, self.frames)
            endpoint.segments.clear()
        actions = self.flows.actions
        for op in endpoint.host_ops:
            if not isinstance(op, HostOp):
                actions.append(SendFlow(flow, op))
            elif op is HostOp.SHUTDOWN:
                actions.append(ShutdownFlow(flow))
            elif op is HostOp.RESUME:
                actions.append(ResumeFlow(flow))
            elif not flow.host_closed:
                flow.host_closed = True
                actions.append(CloseFlow(flow, abort=op is HostOp.ABORT))
        endpoint.host_ops.clear()
        if endpoint.state is not State.CONNECTING:
            flow.vm.connecting.discard(flow)
        if endpoint.closed:
            if endpoint.unreachable:
                self._unreachable(flow)
            self.flows.close(flow)
        else:
            if endpoint.ack_at is not None:
                self._acks_delayed[flow] = None
            self.flows.reschedule(flow, endpoint.deadline())

    def send_delayed_acks(self, now: float) -> None:
        """The end of a batch of frames: every delayed ACK goes out now (see Segment)."""
        if not self._acks_delayed:
            return
        flows, self._acks_delayed = self._acks_delayed, {}
        for flow in flows:
            if not flow.closed:
                flow.endpoint.send_delayed_ack()
                self.output(flow, now)

    def _unreachable(self, flow: TcpFlow) -> None:
        """ICMP host unreachable from the gateway, quoting the guest's SYN (RFC 1812 §5.2.7.1).

        Sent when the host connect failed as unreachable or took too long: the guest
        hears EHOSTUNREACH at once rather than a refusal that did not happen.
        """
        guest = flow.guest
        syn = tcp.TcpSegment(guest.port, flow.dst_port, flow.endpoint.guest_isn, 0, tcp.SYN, 0)
        original = self.frames.original(
            guest.address, flow.dst_address, PROTO_TCP, syn.encode(guest.address, flow.dst_address)
        )
        gateway = self.settings.gateway_for(guest.address)
        self.frames.unreachable(
            flow.vm, guest.mac, gateway, guest.address, Unreachable.HOST, original
        )

    # -- forwards from the host ----------------------------------------------------------

    def forward_connection(
        self,
        forward: Forward,
        peer: tuple[IPAddress, int],
        target: tuple[Vm, bytes, IPAddress],
        now: float,
    ) -> TcpFlow:
        """A host connection accepted on ``forward`` for the guest ``target``: a flow
        that opens to the guest from a gateway port."""
        vm, mac, address = target
        gateway = self.settings.gateway_for(address)
        port = self.ports.free(vm.flows, PROTO_TCP, address, forward.guest_port, gateway)
        mss = family_of(address).mss(self.settings.mtu)
        endpoint = TcpEndpoint.active(forward.guest_port, port, mss, now, budget=vm.tcp_buffers)
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
        vm.stats.count("forward_tcp")
        self.flows.open(flow)
        self.output(flow, now)
        return flow

    # -- events from the host socket -------------------------------------------------------

    def connected(self, flow: TcpFlow, now: float) -> None:
        flow.endpoint.host_connected(now)
        self.output(flow, now)

    def eof(self, flow: TcpFlow, now: float) -> None:
        flow.endpoint.host_eof(now)
        self.output(flow, now)

    def written(self, flow: TcpFlow, count: int, now: float) -> None:
        flow.endpoint.host_written(count, now)
        self.output(flow, now)

    def received(self, flow: TcpFlow, payload: bytes, now: float) -> None:
        flow.endpoint.host_data(payload, now)
        self.output(flow, now)

    def failed(self, flow: TcpFlow, kind: str, now: float) -> None:
        flow.vm.stats.count(f"tcp_host_{kind}")
        flow.endpoint.host_failed(now, unreachable=kind == FLOW_UNREACHABLE)
        self.output(flow, now)

    def timer(self, flow: TcpFlow, now: float) -> None:
        flow.endpoint.handle_timer(now)
        self.output(flow, now)
