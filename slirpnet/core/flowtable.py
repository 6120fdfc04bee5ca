"""Every NAT flow of a namespace: where each is held, its timers, and the actions.

A flow lives in its VM's ``flows`` under its key (TCP, UDP, echo, either family),
or in its ``dns_flows`` (queries on their way upstream); TCP flows whose host socket
is still connecting are also in ``connecting``; a forward's UDP conversation is also
found by its host peer.  Opening queues an ``OpenFlow`` for the shell, closing a
``CloseFlow``, whatever ends the flow: idle timeout, error, or its VM leaving.

Timers: each flow carries its own ``deadline``, and ``Deadlines`` holds at least one
entry no later than it (see core/timers.py); the owner handles what ``due`` returns.
"""

from __future__ import annotations

import math
from typing import Final

from slirpnet.core.addr import IPAddress
from slirpnet.core.flows import (
    Action,
    CloseFlow,
    DnsFlow,
    Flow,
    OpenFlow,
    TcpFlow,
    UdpFlow,
)
from slirpnet.core.forwards import Forward
from slirpnet.core.settings import NetworkSettings
from slirpnet.core.timers import Deadlines
from slirpnet.core.vm import Vm

# Closed flows whose timer entries may wait, before the queue is swept of them: an
# entry waits for its time (an idle timeout: up to hours), keeping its flow alive.
PRUNE_MIN: Final = 64

ForwardedKey = tuple[Forward, IPAddress, int]  # a forward and the host peer's address, port


class FlowTable:
    def __init__(self, settings: NetworkSettings) -> None:
        self.settings = settings
        self.actions: list[Action] = []
        self.forwarded_udp: dict[ForwardedKey, UdpFlow] = {}
        self._deadlines: Deadlines[Flow] = Deadlines()
        self._closed_queued = 0  # closed flows with entries in _deadlines, about

    def __len__(self) -> int:
        """Timer entries queued, closed flows' included (for tests of the sweep)."""
        return len(self._deadlines)

    def room(self, vm: Vm, now: float) -> bool:
        """May ``vm`` open one more flow (``--max-flows``)?  A refusal is counted."""
        limit = self.settings.max_flows
        if vm.flow_count < limit:
            return True
        vm.refuse("flow_limit", now, f"{limit} flows held already (--max-flows)")
        return False

    def room_to_connect(self, vm: Vm, now: float) -> bool:
        """May ``vm`` have one more host connect pending (``--max-connecting``)?"""
        limit = self.settings.max_connecting
        if len(vm.connecting) < limit:
            return True
        vm.refuse("connect_limit", now, f"{limit} connects pending already (--max-connecting)")
        return False

    def open(self, flow: Flow) -> None:
        """Hold ``flow`` and ask the shell for its host socket."""
        vm = flow.vm
        key = flow.key
        if key is not None:
            vm.flows[key] = flow
        elif isinstance(flow, DnsFlow):
            vm.dns_flows.add(flow)
        if isinstance(flow, TcpFlow) and flow.forward is None:
            vm.connecting.add(flow)
        elif isinstance(flow, UdpFlow) and flow.forward is not None:
            self.forwarded_udp[flow.forward, flow.host_address, flow.host_port] = flow
        self.actions.append(OpenFlow(flow))
        self.reschedule(flow, flow.deadline)

    def close(self, flow: Flow, *, abort: bool = False) -> None:
        if flow.closed:
            return
        flow.closed = True
        if flow.scheduled != math.inf:
            self._closed_queued += 1
            if self._closed_queued > max(PRUNE_MIN, len(self._deadlines) // 2):
                self.prune()
        vm = flow.vm
        key = flow.key
        if key is not None and vm.flows.get(key) is flow:
            del vm.flows[key]
        if isinstance(flow, TcpFlow):
            vm.connecting.discard(flow)
            vm.stats.count("tcp_retransmits", flow.endpoint.counters.retransmits)
            flow.endpoint.discard()
            if flow.host_closed:
                return
            flow.host_closed = True
        elif isinstance(flow, UdpFlow):
            if flow.forward is not None:
                self.forwarded_udp.pop((flow.forward, flow.host_address, flow.host_port), None)
        elif isinstance(flow, DnsFlow):
            vm.dns_flows.discard(flow)
        self.actions.append(CloseFlow(flow, abort=abort))

    def close_all(self, vm: Vm) -> None:
        """``vm`` has left: close every flow of its, and sweep them from the timers."""
        for flow in [*vm.flows.values(), *vm.dns_flows]:
            self.close(flow, abort=True)
        self.prune()

    def reschedule(self, flow: Flow, deadline: float) -> None:
        """Make sure the timer queue holds an entry no later than ``deadline``.

        Deadlines that move later cost nothing (the entry is re-queued when it comes
        due); only one that moves earlier, like a TCP retransmission, needs a push.
        """
        flow.deadline = deadline
        if deadline < flow.scheduled:
            flow.scheduled = deadline
            self._deadlines.push(deadline, flow)

    def prune(self) -> None:
        """Sweep closed flows out of the timer queue: so many that it is worth a pass
        over it, or a VM has left (its flows, and the VM with them, are freed now)."""
        self._deadlines.prune(lambda flow: flow.closed)
        self._closed_queued = 0

    def next_time(self) -> float | None:
        return self._deadlines.next_time()

    def due(self, now: float) -> list[Flow]:
        """Open flows whose deadline has come; those whose deadline moved are re-queued."""
        due = []
        for flow in self._deadlines.pop_due(now):
            if flow.closed:
                continue
            flow.scheduled = math.inf
            if flow.deadline > now:
                self.reschedule(flow, flow.deadline)
            else:
                due.append(flow)
        return due

    def take_actions(self) -> list[Action]:
        actions, self.actions = self.actions, []
        return actions
