"""Router advertisements (RFC 4861 §6.2): how a guest learns the IPv6 network.

The gateway advertises itself as the default router, from its link-local address with
hop limit 255 (§6.1.2), carrying: the prefix for SLAAC (RFC 4862: on-link, autonomous),
the link's MTU (§4.6.4), the DNS address (RDNSS) and the search list (DNSSL, RFC 8106),
and the O flag, so that a client that wants them over DHCPv6 asks (RFC 8415 stateless;
``dhcp6.py``).  Sent in answer to a router solicitation, at once (§6.2.6 lets a router
delay, but only to pool answers among many routers; there is one here, and iPXE and
systemd-networkd wait for it), and unsolicited to every port every ``RA_INTERVAL``
(§6.2.4), so a guest that kept its address across a restart of the server hears from
its router again well within the router lifetime.  Nothing is sent as a port attaches:
the guest behind it has not booted yet, and solicits when its link comes up.
"""

from __future__ import annotations

from ipaddress import IPv6Address
from typing import Final

from slirpnet.core.frames import Frames
from slirpnet.core.settings import NetworkSettings
from slirpnet.core.vm import Vm
from slirpnet.wire import ndp
from slirpnet.wire.ipv6 import ALL_NODES, link_local, multicast_mac

# §6.2.1's MaxRtrAdvInterval default is 600 s; the lifetimes are well beyond it, so a
# guest never loses its route or DNS server between two advertisements (RFC 8106 §5.1:
# at least 3 x the interval... we take 3 x the interval for the router, as §6.2.1 does).
RA_INTERVAL: Final = 200.0
ROUTER_LIFETIME: Final = 1800  # 3 x MaxRtrAdvInterval (§6.2.1)
DNS_LIFETIME: Final = 1800
PREFIX_VALID: Final = 86400  # §6.2.1's AdvValidLifetime default
PREFIX_PREFERRED: Final = 14400  # AdvPreferredLifetime


class RouterAdvertiser:
    def __init__(self, settings: NetworkSettings, frames: Frames) -> None:
        self.settings = settings
        self.frames = frames
        self.address = link_local(frames.gateway_mac)  # the router's own (§6.1.2)
        self._next: float | None = None
        options: list[ndp.NdpOption] = [
            ndp.SourceLinkLayerAddress(frames.gateway_mac),
            ndp.Mtu(settings.mtu),
            ndp.PrefixInformation(
                settings.network6,
                valid_lifetime=PREFIX_VALID,
                preferred_lifetime=PREFIX_PREFERRED,
            ),
            ndp.RecursiveDnsServers((settings.dns6,), DNS_LIFETIME),
        ]
        if settings.search:
            options.append(ndp.DnsSearchList(settings.search, DNS_LIFETIME))
        self.message = ndp.RouterAdvertisement(
            other=True, router_lifetime=ROUTER_LIFETIME, options=options
        ).to_icmpv6()

    def advertise(self, vm: Vm, dst: IPv6Address = ALL_NODES, dst_mac: bytes | None = None) -> None:
        """One advertisement to ``vm``'s port: to all nodes, or to a soliciting guest."""
        mac = multicast_mac(dst) if dst_mac is None else dst_mac
        self.frames.icmpv6(vm, mac, self.address, dst, self.message, hop_limit=ndp.HOP_LIMIT)

    def solicited(self, vm: Vm, src: IPv6Address, src_mac: bytes) -> None:
        """A router solicitation from ``src``: answered at once, to it when it has an
        address (§6.2.6 allows unicast), else to all nodes."""
        vm.stats.count("ipv6_router_solicitation")
        if src.is_unspecified:
            self.advertise(vm)
        else:
            self.advertise(vm, src, src_mac)

    def attached(self, now: float) -> None:
        """A port came up: keep the periodic timer going."""
        if self._next is None:
            self._next = now + RA_INTERVAL

    def next_time(self) -> float | None:
        return self._next

    def handle_timer(self, now: float, ports: list[Vm]) -> None:
        if self._next is None or self._next > now:
            return
        for vm in ports:
            self.advertise(vm)
        self._next = now + RA_INTERVAL if ports else None
