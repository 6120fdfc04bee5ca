"""The learning switch that joins a namespace's VMs (IEEE 802.1D's forwarding rule).

Each VM is a port.  A source MAC is learned on the port it came from and belongs to
that one live port: another port sending from it is refused (``eth_mac_in_use``) until
the first goes, for two VMs started with QEMU's default MAC would otherwise take each
other's frames and lease.  Broadcast, multicast and unknown unicast are flooded to the
other ports within the sender's storm control (``FLOOD_RATE``).
"""

from __future__ import annotations

from typing import Final

from slirpnet.core.vm import FLOOD_FRAME, FLOOD_RATE, Vm
from slirpnet.wire import ethernet

MAX_MACS_PER_VM: Final = 16  # a guest spraying source addresses cannot grow the switch table


class Switch:
    def __init__(self) -> None:
        self.ports: list[Vm] = []
        self._macs: dict[bytes, Vm] = {}  # learned source MAC -> port

    def port_of(self, mac: bytes) -> Vm | None:
        return self._macs.get(mac)

    def __contains__(self, mac: bytes) -> bool:
        return mac in self._macs

    def plug(self, vm: Vm) -> None:
        self.ports.append(vm)

    def unplug(self, vm: Vm) -> None:
        self.ports.remove(vm)
        for mac in vm.macs:
            if self._macs.get(mac) is vm:
                del self._macs[mac]

    def learn(self, vm: Vm, mac: bytes, now: float) -> bool:
        """``vm`` sent from ``mac``: False (counted and logged) when it may not."""
        if mac in vm.macs:
            self._macs[mac] = vm
            return True
        holder = self._macs.get(mac)
        if holder is not None:  # a live port's (unplug forgets a port's MACs)
            vm.refuse(
                "eth_mac_in_use",
                now,
                f"{ethernet.format_mac(mac)} is the MAC of {holder.name} already; "
                "give each VM its own: QEMU -device virtio-net-pci,...,mac=52:54:00:XX:XX:XX",
            )
            return False
        if len(vm.macs) >= MAX_MACS_PER_VM:
            vm.refuse("eth_mac_limit", now, f"more than {MAX_MACS_PER_VM} source MACs")
            return False
        vm.macs.add(mac)
        vm.mac = vm.mac or mac
        self._macs[mac] = vm
        return True

    def flood(self, source: Vm, frame: bytes, now: float) -> bool:
        """Send to every other port, within the source's storm control; False when there
        is no other port."""
        others = [vm for vm in self.ports if vm is not source]
        if not others:
            return False
        if source.floods.take(now, 1 + len(frame) // FLOOD_FRAME):
            for vm in others:
                vm.send(frame)
        else:
            source.refuse("flood_limit", now, f"over {FLOOD_RATE:.0f} flooded frames a second")
        return True
