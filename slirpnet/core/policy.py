"""The NAT decision, as one pure function: where a guest's packet goes on the host.

``route`` is passt's ``fwd_nat_from_tap()`` for slirpnet: given the network's settings
and the destination a guest addressed, either the host address its socket connects to,
or why not.  The gateway address of either family stands for the host's loopback of
that family (libslirp's rule); everything else is reached as addressed, unless policy
(``--restrict``, ``--no-host-loopback``, ``--deny``) says no.  The caller counts the
refusal and answers the guest (ICMP or RST), so that software hears it at once.
"""

from __future__ import annotations

import enum
from ipaddress import IPv4Address, IPv6Address

from slirpnet.core.addr import Family, IPAddress
from slirpnet.core.settings import NetworkSettings
from slirpnet.core.vm import Vm

_LIMITED_BROADCAST = IPv4Address("255.255.255.255")


class Refusal(enum.Enum):
    """Why a destination is not reached; the value is the drop reason counted."""

    NO_ROUTE = "no_route"  # not a host destination at all: dropped
    RESTRICTED = "restricted"  # policy: answered with ICMP administratively prohibited
    LOOPBACK_OFF = "host_loopback_disabled"
    DENIED = "denied"


_WHY = {
    Refusal.RESTRICTED: "guests reach only built-in services",
    Refusal.LOOPBACK_OFF: "the host's loopback is off",
    Refusal.DENIED: "on the deny list",
}
FLOW_LIMIT = "flow_limit"  # a NAT's answer when --max-flows refused (counted already)


def refused(vm: Vm, dst: IPAddress, refusal: Refusal | str | None, now: float) -> bool:
    """Count what a NAT refused; True when the guest is owed ICMP administratively
    prohibited (RFC 1812 §5.2.7.1, RFC 4443 §3.1): for a policy or a limit, not for a
    destination that is no route at all (dropped)."""
    if refusal is None:
        return False
    if refusal is Refusal.NO_ROUTE:
        vm.drop(refusal.value)
        return False
    if isinstance(refusal, Refusal):
        vm.refuse(refusal.value, now, f"{dst}: {_WHY[refusal]}")
    return True


def martian(address: IPAddress) -> bool:
    """Never a NAT destination: loopback, unspecified, multicast, reserved, link-local
    (RFC 6890), and for IPv6 also IPv4-mapped addresses (RFC 4291 §2.5.5.2: a guest
    does not reach IPv4 through them) and site-local ones (RFC 3879)."""
    if (
        address.is_loopback
        or address.is_unspecified
        or address.is_multicast
        or address.is_reserved
        or address.is_link_local
    ):
        return True
    if isinstance(address, IPv4Address):
        return address == _LIMITED_BROADCAST
    return address.ipv4_mapped is not None or address.is_site_local


def route(settings: NetworkSettings, dst: IPAddress) -> IPAddress | Refusal:
    """The host address for a guest's packet to ``dst``, or the refusal."""
    if isinstance(dst, IPv6Address):
        gateway: IPAddress = settings.gateway6
        local = dst in settings.network6
        family = Family.V6
    else:
        gateway = settings.gateway
        local = dst in settings.network
        family = Family.V4
    if dst == gateway:
        host = family.loopback
    elif local or martian(dst):
        return Refusal.NO_ROUTE
    else:
        host = dst
    if settings.restrict:
        return Refusal.RESTRICTED
    if dst == gateway and not settings.host_loopback:
        return Refusal.LOOPBACK_OFF
    if settings.denied(host):
        return Refusal.DENIED
    return host
