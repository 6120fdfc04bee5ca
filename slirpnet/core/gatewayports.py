"""The gateway's ports for forwarded connections and datagrams, as the guest sees them.

A forward's flow appears to the guest as coming from the gateway, from a port of the
dynamic range (RFC 6335 §6) that no flow of the guest's port uses yet.
"""

from __future__ import annotations

from collections.abc import Container

from slirpnet.core.addr import IPAddress
from slirpnet.core.flows import FlowKey, flow_key

FORWARD_PORTS = range(49152, 65536)


class GatewayPorts:
    def __init__(self) -> None:
        self._next = FORWARD_PORTS.start

    def free(
        self,
        flows: Container[FlowKey],
        proto: int,
        guest: IPAddress,
        guest_port: int,
        gateway: IPAddress,
    ) -> int:
        """A gateway port no flow between ``gateway`` and ``guest:guest_port`` uses yet."""
        ports = FORWARD_PORTS
        while True:
            port = self._next
            self._next = port + 1 if port + 1 < ports.stop else ports.start
            if flow_key(proto, guest, guest_port, gateway, port) not in flows:
                return port
