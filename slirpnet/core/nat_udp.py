"""UDP NAT, for both families: a guest's conversation with one destination is a flow,
and so is a host peer's with a forwarded port.

A guest's datagram to a destination policy allows opens a ``UdpFlow`` (a connected
host UDP socket, in the shell) that lives while datagrams pass, ``udp_idle_timeout``
(``DNS_FLOW_IDLE`` for port 53).  Replies come back from the address the guest
addressed.  The host's errors become ICMP unreachables (``failed``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from slirpnet.core.addr import IPAddress, family_of
from slirpnet.core.flows import (
    FLOW_EXHAUSTED,
    FLOW_FAILED,
    FLOW_REFUSED,
    FLOW_RESET,
    PROTO_UDP,
    Endpoint,
    SendFlow,
    UdpFlow,
    flow_key,
)
from slirpnet.core.flowtable import FlowTable
from slirpnet.core.forwards import Forward
from slirpnet.core.frames import Frames, Unreachable
from slirpnet.core.gatewayports import GatewayPorts
from slirpnet.core.policy import FLOW_LIMIT, Refusal, route
from slirpnet.core.settings import NetworkSettings
from slirpnet.core.vm import Vm
from slirpnet.wire import udp

DNS_FLOW_IDLE: Final = 10.0  # UDP flows to port 53 anywhere: one query, one answer


class UdpNat:
    def __init__(
        self, settings: NetworkSettings, frames: Frames, flows: FlowTable, ports: GatewayPorts
    ) -> None:
        self.settings = settings
        self.frames = frames
        self.flows = flows
        self.ports = ports

    def guest_datagram(
        self, vm: Vm, guest: Endpoint, dst: IPAddress, dst_port: int, payload: bytes, now: float
    ) -> Refusal | str | None:
        """A datagram from a checked guest address to a host destination: sent on, or
        refused (a ``Refusal``, or ``FLOW_LIMIT`` counted already) for the caller to answer."""
        key = flow_key(PROTO_UDP, guest.address, guest.port, dst, dst_port)
        flow = vm.flows.get(key)
        if not isinstance(flow, UdpFlow):
            host = route(self.settings, dst)
            if isinstance(host, Refusal):
                return host
            if not self.flows.room(vm, now):
                return FLOW_LIMIT
            flow = UdpFlow(
                vm=vm,
                guest=guest,
                host_address=host,
                host_port=dst_port,
                deadline=now,
                dst_address=dst,
                dst_port=dst_port,
            )
            flow.deadline = now + self._idle(flow)  # before open queues it
            self.flows.open(flow)
        flow.deadline = now + self._idle(flow)
        self.flows.actions.append(SendFlow(flow, payload))
        return None

    def _idle(self, flow: UdpFlow) -> float:
        return DNS_FLOW_IDLE if flow.dst_port == 53 else self.settings.udp_idle_timeout

    def _fits(self, vm: Vm, address: IPAddress, payload: bytes) -> bool:
        """IPv4 takes any datagram (past the MTU in fragments); IPv6 one within the MTU."""
        if address.version == 4 or len(payload) <= family_of(address).udp_room(self.settings.mtu):
            return True
        vm.drop("udp_reply_over_mtu")
        return False

    def received(self, flow: UdpFlow, payload: bytes, now: float) -> None:
        """A datagram from the host peer: to the guest, from the address it addressed."""
        if not self._fits(flow.vm, flow.guest.address, payload):
            return
        flow.deadline = now + self._idle(flow)
        self.frames.udp(flow.vm, flow.guest, flow.dst_address, flow.dst_port, payload)

    def forward_datagram(
        self,
        forward: Forward,
        peer: tuple[IPAddress, int],
        payload: bytes,
        now: float,
        target: Callable[[], tuple[Vm, bytes, IPAddress] | None],
    ) -> UdpFlow | None:
        """A datagram from ``peer`` to ``forward``'s port, for the guest ``target()`` finds
        when no flow has it yet; the flow its replies take, or None (dropped)."""
        flow = self.flows.forwarded_udp.get((forward, *peer))
        if flow is None or flow.closed:
            found = target()
            if found is None:
                return None
            vm, mac, address = found
            if not self._fits(vm, address, payload):
                return None
            gateway = self.settings.gateway_for(address)
            port = self.ports.free(vm.flows, PROTO_UDP, address, forward.guest_port, gateway)
            flow = UdpFlow(
                vm=vm,
                guest=Endpoint(mac, address, forward.guest_port),
                host_address=peer[0],
                host_port=peer[1],
                deadline=now + self.settings.udp_idle_timeout,
                dst_address=gateway,
                dst_port=port,
                forward=forward,
            )
            vm.stats.count("forward_udp")
            self.flows.open(flow)
        elif not self._fits(flow.vm, flow.guest.address, payload):
            return flow
        flow.deadline = now + self.settings.udp_idle_timeout
        self.frames.udp(flow.vm, flow.guest, flow.dst_address, flow.dst_port, payload)
        return flow

    def failed(self, flow: UdpFlow, kind: str) -> None:
        """The host socket failed: ICMP unreachable for what the host said (RFC 792), from
        the destination for a refused port, from the gateway when no host was reached."""
        vm = flow.vm
        if kind == FLOW_FAILED:
            vm.drop("host_socket_failed")
        else:
            guest = flow.guest
            header = udp.UdpDatagram(guest.port, flow.dst_port, b"").encode(
                guest.address, flow.dst_address
            )
            original = self.frames.original(guest.address, flow.dst_address, PROTO_UDP, header)
            refused = kind == FLOW_REFUSED
            reached = kind in (FLOW_REFUSED, FLOW_RESET)
            source = flow.dst_address if reached else self.settings.gateway_for(guest.address)
            kind_ = Unreachable.PORT if refused else Unreachable.HOST
            self.frames.unreachable(vm, guest.mac, source, guest.address, kind_, original)
        if kind in (FLOW_FAILED, FLOW_EXHAUSTED):
            self.flows.close(flow)
