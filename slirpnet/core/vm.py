"""One VM on a segment: its counters, the frames waiting for it, and its flows."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from slirpnet.core.budget import VM_TCP_BUFFER, BufferBudget
from slirpnet.core.ratelimit import TokenBucket
from slirpnet.core.stats import Stats
from slirpnet.wire.ethernet import format_mac

if TYPE_CHECKING:
    from slirpnet.core.flows import DnsFlow, Flow, FlowKey, TcpFlow

log = logging.getLogger(__name__)

# A guest that hits a limit hits it thousands of times a second: one line per reason
# at most this often, with the count so far, says as much without flooding the log.
REFUSAL_LOG_INTERVAL: Final = 60.0
# Storm control, as switches have it: the broadcast, multicast and unknown-unicast
# frames a VM may flood to the other VMs of its segment, counted in frames of up to
# FLOOD_FRAME bytes (a larger one counts as several).  Well above what ARP, DHCP or
# mDNS need.  Every flooded frame costs every other VM a write: at 1000 a second from
# two VMs, a third on -netdev dgram moved 30 Mbit/s instead of 1.1 Gbit/s; at 100, 370.
FLOOD_RATE: Final = 100.0  # a second
FLOOD_BURST: Final = 200.0
FLOOD_FRAME: Final = 1514


@dataclass(eq=False)
class Vm:
    """A port of the segment: one connection from a VM's NIC.  Compared by identity."""

    name: str  # where it is plugged in: the transport and peer, e.g. "unix:/run/vm.sock"
    id: int = 0  # unique in its segment: the VM's number in logs and the control API
    stats: Stats = field(default_factory=Stats)
    macs: set[bytes] = field(default_factory=set)  # source addresses seen on this port
    mac: bytes = b""  # the first of them: the NIC's own, for logs
    outbox: list[bytes] = field(default_factory=list)  # frames for the VM, drained by the shell
    # Its TCP, UDP and echo flows of both families, by key (core/flows.py).  Each VM
    # has its own: a guest using another's address never reaches that one's flows.
    flows: dict[FlowKey, Flow] = field(default_factory=dict)
    dns_flows: set[DnsFlow] = field(default_factory=set)  # queries to upstreams: no key
    # Guest connects the host has not finished.
    connecting: set[TcpFlow] = field(default_factory=set)
    tcp_buffers: BufferBudget = field(default_factory=lambda: BufferBudget(VM_TCP_BUFFER))
    floods: TokenBucket = field(default_factory=lambda: TokenBucket(FLOOD_RATE, FLOOD_BURST))
    attached: bool = True
    _refusals_logged: dict[str, float] = field(default_factory=dict)  # reason -> when last logged

    def send(self, frame: bytes) -> None:
        self.outbox.append(frame)
        self.stats.frames_out += 1
        self.stats.bytes_out += len(frame)

    def drop(self, reason: str) -> None:
        """A frame not used: counted under ``reason``, logged at debug level."""
        self.stats.drop(reason)
        log.debug("drop %s", reason, extra=self.log_context)

    def refuse(self, reason: str, now: float, why: str) -> None:
        """A limit or a policy said no: counted under ``reason`` every time, logged (with
        ``why``) the first time and then at most once per ``REFUSAL_LOG_INTERVAL``."""
        self.stats.drop(reason)
        last = self._refusals_logged.get(reason)
        if last is not None and now < last + REFUSAL_LOG_INTERVAL:
            return
        self._refusals_logged[reason] = now
        count = self.stats.drops[reason]
        log.warning("refused (%s): %s; %d so far", reason, why, count, extra=self.log_context)

    def take_frames(self) -> list[bytes]:
        frames, self.outbox = self.outbox, []
        return frames

    @property
    def log_context(self) -> dict[str, str]:
        """The ``extra`` of a log line about this VM: its number and its MAC."""
        return {"vm": str(self.id), "mac": format_mac(self.mac) if self.mac else "-"}

    @property
    def flow_count(self) -> int:
        return len(self.flows) + len(self.dns_flows)
