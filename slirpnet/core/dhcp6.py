"""Stateless DHCPv6 (RFC 8415 §6.1, RFC 3646): the DNS server and search list.

Addresses come from SLAAC (``ra.py``); the RA's O flag sends clients that want their DNS
configuration over DHCPv6 (systemd-networkd, Windows) here with an Information-request,
answered with a Reply (§18.3.6).  Addresses (IA_NA) are not assigned, as libslirp does
not: a Solicit or Request hears NoAddrsAvail (§18.3.9) with the DNS options beside it.
Messages only servers send, from a guest, are dropped (RA guard's DHCPv6 half,
RFC 7610), and never reach other VMs (``Segment`` filters them before switching).
"""

from __future__ import annotations

from ipaddress import IPv6Address
from typing import Final

from slirpnet.core.frames import Frames
from slirpnet.core.settings import NetworkSettings
from slirpnet.core.vm import Vm
from slirpnet.wire import dhcpv6
from slirpnet.wire.errors import WireError
from slirpnet.wire.ipv6 import link_local

SERVER_PORT: Final = 547
CLIENT_PORT: Final = 546
ALL_SERVERS = IPv6Address("ff02::1:2")  # All_DHCP_Relay_Agents_and_Servers (§7.1)
REFRESH: Final = 3600  # §21.23: ask again after an hour


class Dhcp6Server:
    def __init__(self, settings: NetworkSettings, frames: Frames) -> None:
        self.settings = settings
        self.frames = frames
        self.address = link_local(frames.gateway_mac)
        self.duid = dhcpv6.duid_ll(frames.gateway_mac)

    def handle(self, vm: Vm, payload: bytes) -> bytes | None:
        """The reply to a client's message, or None (counted as a drop)."""
        try:
            message = dhcpv6.Dhcpv6Message.parse(payload)
            message.check_for_server(self.duid)
        except WireError as error:
            vm.drop(error.reason)
            return None
        settings = self.settings
        options = [
            dhcpv6.Dhcpv6Option.dns_servers((settings.dns6,)),
            dhcpv6.Dhcpv6Option.information_refresh_time(REFRESH),
        ]
        if settings.search:
            options.append(dhcpv6.Dhcpv6Option.domain_list(settings.search))
        kind = message.msg_type
        if kind == dhcpv6.MessageType.INFORMATION_REQUEST:
            vm.stats.count("dhcpv6_information_request")
            return message.reply(self.duid, options).encode()
        if kind in (dhcpv6.MessageType.SOLICIT, dhcpv6.MessageType.REQUEST):
            # No addresses here (§18.3.9); the client goes on with SLAAC.
            status = dhcpv6.Dhcpv6Option.status_code(
                dhcpv6.StatusCode.NO_ADDRS_AVAIL, "addresses by SLAAC only"
            )
            reply_type = (
                dhcpv6.MessageType.ADVERTISE
                if kind == dhcpv6.MessageType.SOLICIT and not message.rapid_commit
                else dhcpv6.MessageType.REPLY
            )
            return message.reply(self.duid, (status, *options), msg_type=reply_type).encode()
        vm.drop("dhcpv6_unsupported_message")
        return None
