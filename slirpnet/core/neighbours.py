"""Guest addresses, of both families, and the VM each was last heard from.

Forwards find their guest here (``choose_guest``): by lease, or by address when no lease
names it (a guest configured by hand, or an IPv6 address it made itself by SLAAC); the
NAT's fast path checks that a flow's address is still its VM's.  Bounded: a guest
spoofing sources cannot grow it.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address
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

    def address_of(self, vm: Vm, version: int) -> IPAddress | None:
        """An address of ``version`` that ``vm`` was heard from, or None."""
        for key, port in self._vms.items():
            if port is vm and (key >> 32 == 0xFFFF) == (version == 4):
                return IPv4Address(key & 0xFFFFFFFF) if version == 4 else IPv6Address(key)
        return None

    def forget(self, vm: Vm) -> None:
        for key in [key for key, port in self._vms.items() if port is vm]:
            del self._vms[key]


def choose_guest(
    forward: Forward, vms: Sequence[Vm], dhcp: DhcpServer, neighbours: Neighbours
) -> tuple[Vm, bytes, IPAddress] | None:
    """The VM, MAC and address a forward reaches now, or None when no VM is there.

    A guest address is looked up in the DHCP leases (IPv4), then among the addresses
    guests have sent from (a guest configured by hand has no lease, nor has an IPv6
    one).  Without one, the first VM that holds a bound lease is the target, at the
    address bound or renewed last (where its DHCP client is now, should a record of an
    earlier one remain), or else the first heard from at an IPv6 address: the forward
    reaches a guest over whichever family it has.
    """
    address = forward.guest_address
    if address is not None:
        mac = dhcp.mac_of(address) if isinstance(address, IPv4Address) else None
        for vm in vms:
            if mac is not None and mac in vm.macs:
                return vm, mac, address
        neighbour = neighbours.get(address)
        if neighbour is not None and neighbour.attached and neighbour.mac:
            return neighbour, neighbour.mac, address
        return None
    bound = [lease for lease in dhcp.leases() if lease.bound]
    for vm in vms:
        held = [lease for lease in bound if lease.mac in vm.macs]
        if held:
            lease = max(held, key=lambda lease: lease.expires)
            return vm, lease.mac, lease.address
    for vm in vms:
        found = neighbours.address_of(vm, 6)
        if found is not None and vm.mac:
            return vm, vm.mac, found
    return None
