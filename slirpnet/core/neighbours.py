"""Guest addresses, of both families, and the VM each was last heard from.

Forwards find their guest here (``choose_guest``): by lease, or by address when no lease
names it (a guest configured by hand, or an IPv6 address it made itself by SLAAC); the
NAT's fast path checks that a flow's address is still its VM's.  Bounded: a guest
spoofing sources cannot grow it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from slirpnet.core.addr import IPAddress, key_int
from slirpnet.core.dhcp import DhcpServer
from slirpnet.core.forwards import Forward
from slirpnet.core.vm import Vm

MAX_NEIGHBOURS: Final = 4096  # guest addresses remembered, however many are spoofed


class Neighbours:
    def __init__(self) -> None:
        self._vms: dict[int, Vm] = {}  # key_int(address) -> the port it was heard on

    def heard(self, vm: Vm, address: IPAddress) -> None:
        """``vm`` sent from ``address``, a guest address of the network."""
        key = key_int(address)
        known = self._vms.get(key)
        if known is not vm and (known or len(self._vms) < MAX_NEIGHBOURS):
            self._vms[key] = vm

    def get(self, address: IPAddress) -> Vm | None:
        return self._vms.get(key_int(address))

    def get_key(self, key: int) -> Vm | None:
        """By an address already in key_int's space (the fast path's)."""
        return self._vms.get(key)

    def forget(self, vm: Vm) -> None:
        for key in [key for key, port in self._vms.items() if port is vm]:
            del self._vms[key]


def choose_guest(
    forward: Forward, vms: Sequence[Vm], dhcp: DhcpServer, neighbours: Neighbours
) -> tuple[Vm, bytes, IPAddress] | None:
    """The VM, MAC and address a forward reaches now, or None when no VM is there.

    A guest address is looked up in the DHCP leases, then among the addresses
    guests have sent from (``neighbours``: a guest configured by hand has no
    lease).  Without one, the first VM that holds a bound lease is the target,
    at the address bound or renewed last: where its DHCP client is now, should a
    record of an earlier one remain.
    """
    if forward.guest_address is not None:
        mac = dhcp.mac_of(forward.guest_address)
        for vm in vms:
            if mac is not None and mac in vm.macs:
                return vm, mac, forward.guest_address
        neighbour = neighbours.get(forward.guest_address)
        if neighbour is not None and neighbour.attached and neighbour.mac:
            return neighbour, neighbour.mac, forward.guest_address
        return None
    bound = [lease for lease in dhcp.leases() if lease.bound]
    for vm in vms:
        held = [lease for lease in bound if lease.mac in vm.macs]
        if held:
            lease = max(held, key=lambda lease: lease.expires)
            return vm, lease.mac, lease.address
    return None
