"""ICMP echo NAT, for both families: a guest's echo identifier towards one destination
is a ping (or raw) socket on the host, and the replies get the guest's identifier back."""

from __future__ import annotations

from ipaddress import IPv6Address
from typing import Final

from slirpnet.core.addr import IPAddress
from slirpnet.core.flows import FLOW_EXHAUSTED, FLOW_FAILED, EchoFlow, Endpoint, SendFlow, echo_key
from slirpnet.core.flowtable import FlowTable
from slirpnet.core.frames import Frames
from slirpnet.core.policy import FLOW_LIMIT, Refusal, route
from slirpnet.core.settings import NetworkSettings
from slirpnet.core.vm import Vm
from slirpnet.wire import icmp, icmpv6, ipv4, ipv6
from slirpnet.wire.errors import WireError

ECHO_FLOW_IDLE: Final = 10.0


class EchoNat:
    def __init__(self, settings: NetworkSettings, frames: Frames, flows: FlowTable) -> None:
        self.settings = settings
        self.frames = frames
        self.flows = flows

    def guest_echo(
        self, vm: Vm, guest: Endpoint, dst: IPAddress, message: bytes, now: float
    ) -> Refusal | str | None:
        """An echo request (``message``, the whole ICMP message) to a host destination:
        sent on, or refused (a ``Refusal``, or ``FLOW_LIMIT`` counted) for the caller."""
        key = echo_key(guest.address, guest.port, dst)
        flow = vm.flows.get(key)
        if not isinstance(flow, EchoFlow):
            host = route(self.settings, dst)
            if isinstance(host, Refusal):
                return host
            if not self.flows.room(vm, now):
                return FLOW_LIMIT
            flow = EchoFlow(
                vm=vm,
                guest=guest,
                host_address=host,
                host_port=0,
                deadline=now + ECHO_FLOW_IDLE,
                dst_address=dst,
            )
            self.flows.open(flow)
        flow.deadline = now + ECHO_FLOW_IDLE
        self.flows.actions.append(SendFlow(flow, message))
        return None

    def received(self, flow: EchoFlow, payload: bytes, now: float) -> None:
        """A reply from the host's socket: to the guest, with its identifier restored."""
        src, dst = flow.dst_address, flow.guest.address
        if isinstance(src, IPv6Address) and isinstance(dst, IPv6Address):
            self._received6(flow, src, dst, payload, now)
            return
        try:
            message = icmp.IcmpMessage.parse(payload, verify_checksum=False)
        except WireError as error:
            flow.vm.drop(error.reason)
            return
        if message.type != icmp.TYPE_ECHO_REPLY:
            return
        flow.deadline = now + ECHO_FLOW_IDLE
        # A ping socket rewrites the identifier to its own; the guest wants its own back.
        reply = icmp.IcmpMessage.echo(
            icmp.TYPE_ECHO_REPLY, flow.guest.port, message.seq, message.payload
        )
        guest = flow.guest
        self.frames.ip(
            flow.vm, guest.mac, flow.dst_address, guest.address, ipv4.PROTO_ICMP, reply.encode()
        )

    def _received6(
        self, flow: EchoFlow, src: IPv6Address, dst: IPv6Address, payload: bytes, now: float
    ) -> None:
        try:  # the kernel checked it, against addresses we do not see
            message = icmpv6.Icmpv6Message.parse(payload, src, dst, verify_checksum=False)
        except WireError as error:
            flow.vm.drop(error.reason)
            return
        if message.type != icmpv6.TYPE_ECHO_REPLY:
            return
        if ipv6.HEADER_LEN + len(payload) > self.settings.mtu:
            flow.vm.drop("echo_reply_over_mtu")  # IPv6 is never cut on the way (RFC 8200 §5)
            return
        flow.deadline = now + ECHO_FLOW_IDLE
        reply = icmpv6.Icmpv6Message.echo(
            icmpv6.TYPE_ECHO_REPLY, flow.guest.port, message.seq, message.payload
        )
        self.frames.icmpv6(flow.vm, flow.guest.mac, src, dst, reply)

    def failed(self, flow: EchoFlow, kind: str) -> None:
        if kind == FLOW_FAILED:
            flow.vm.drop("host_socket_failed")
        if kind in (FLOW_FAILED, FLOW_EXHAUSTED):
            self.flows.close(flow)
