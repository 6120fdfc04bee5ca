"""A guest's UDP datagram, its source checked, in either family: to a service of the
gateway's (TFTP on the gateway address, DNS on the DNS address) or to the NAT.

What it answers is the L3 module's to send, in its own ICMP (``Unreachable``).
"""

from __future__ import annotations

from slirpnet.core.addr import IPAddress
from slirpnet.core.dns import DNS_PORT
from slirpnet.core.dnsrelay import DnsRelay
from slirpnet.core.flows import Endpoint
from slirpnet.core.frames import Unreachable
from slirpnet.core.nat_udp import UdpNat
from slirpnet.core.policy import refused
from slirpnet.core.settings import NetworkSettings
from slirpnet.core.tftp import TftpService
from slirpnet.core.vm import Vm


class GatewayUdp:
    def __init__(
        self, settings: NetworkSettings, tftp: TftpService, dns: DnsRelay, nat: UdpNat
    ) -> None:
        self.settings = settings
        self.tftp = tftp
        self.dns = dns
        self.nat = nat

    def datagram(
        self, vm: Vm, guest: Endpoint, dst: IPAddress, port: int, payload: bytes, now: float
    ) -> Unreachable | None:
        """Hand the datagram on; the unreachable the guest is owed, if any."""
        settings = self.settings
        if dst == settings.gateway_for(dst) and self.tftp.takes(vm, guest, port):
            self.tftp.receive(vm, guest, port, payload, now)
            return None
        if dst == settings.dns_for(dst):
            if port == DNS_PORT:
                self.dns.query(vm, guest, payload, now)
                return None
            vm.drop("no_service")
            return Unreachable.PORT
        refusal = self.nat.guest_datagram(vm, guest, dst, port, payload, now)
        return Unreachable.ADMIN if refused(vm, dst, refusal, now) else None
