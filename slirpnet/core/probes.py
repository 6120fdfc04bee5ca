"""Asking for leased addresses not heard from (ARP, RFC 826).

A VM that connects again (after a restart of QEMU's link or of the server, with its
leases restored by the shell through ``dhcp.restore``) may stay quiet until its lease
is renewed, hours later, and forwards cannot find it meanwhile.  So the gateway asks,
by ARP unicast to each leased MAC no port has yet: on a port as it attaches (``probe``),
and on every port when a forward finds no VM (``probe_all``); the answer teaches the
switch the MAC and the neighbour table the address.
"""

from __future__ import annotations

from typing import Final

from slirpnet.core.dhcp import DhcpServer
from slirpnet.core.frames import Frames
from slirpnet.core.leases import Lease
from slirpnet.core.settings import NetworkSettings
from slirpnet.core.switch import Switch
from slirpnet.core.vm import Vm
from slirpnet.wire import arp, ethernet

# At once, then again after these delays in case the VM's link was not up yet; at most
# MAX_PROBED leases, those renewed last first, however many leases a big network holds.
PROBE_RETRIES = (1.0, 2.0, 4.0)
MAX_PROBED: Final = 16


class LeaseProbes:
    def __init__(
        self, settings: NetworkSettings, frames: Frames, dhcp: DhcpServer, switch: Switch
    ) -> None:
        self.settings = settings
        self.frames = frames
        self.dhcp = dhcp
        self.switch = switch
        # Ports asked on -> when next, and how many rounds so far.
        self._probing: dict[Vm, tuple[float, int]] = {}

    def probe(self, vm: Vm, now: float) -> None:
        """Ask on ``vm``'s port, now and again a few times while unanswered."""
        if vm.attached and self._unheard(now):
            self._send(vm, now)
            self._probing[vm] = (now + PROBE_RETRIES[0], 1)

    def probe_all(self, now: float) -> None:
        """A forward found no VM: ask on every port not being asked on already."""
        for vm in self.switch.ports:
            if vm not in self._probing:
                self.probe(vm, now)

    def forget(self, vm: Vm) -> None:
        self._probing.pop(vm, None)

    def next_time(self) -> float | None:
        return min((due for due, _ in self._probing.values()), default=None)

    def handle_timer(self, now: float) -> None:
        if not self._probing:
            return
        unheard = bool(self._unheard(now))
        for vm, (due, done) in list(self._probing.items()):
            if due > now:
                continue
            if unheard:
                self._send(vm, now)
            if unheard and done < len(PROBE_RETRIES):
                self._probing[vm] = (now + PROBE_RETRIES[done], done + 1)
            else:
                del self._probing[vm]

    def _unheard(self, now: float) -> list[Lease]:
        leases = [
            lease
            for lease in self.dhcp.leases()
            if lease.bound and lease.expires > now and lease.mac not in self.switch
        ]
        leases.sort(key=lambda lease: lease.expires, reverse=True)
        return leases[:MAX_PROBED]

    def _send(self, vm: Vm, now: float) -> None:
        gateway_mac = self.frames.gateway_mac
        for lease in self._unheard(now):
            request = arp.ArpPacket(
                arp.OP_REQUEST, gateway_mac, self.settings.gateway, bytes(6), lease.address
            )
            # Unicast to the lease's MAC (RFC 826 lets a request go anywhere): only that
            # NIC takes it, so other guests learn nothing of their neighbours.
            frame = self.frames.ethernet(lease.mac, ethernet.ETHERTYPE_ARP) + request.encode()
            vm.send(frame)
