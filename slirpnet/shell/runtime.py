"""A namespace on trio: its core ``Segment``, the host sockets of its flows, its timer.

Every input (a frame from a VM, a datagram on a host socket, a timer) is handed
to the segment and followed by ``flush``, which carries out the actions the
core asked for and moves the frames it produced to the VMs' ports.  Nothing
here decides anything about the network; that is the core's job.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import trio

from slirpnet.core.flows import Flow
from slirpnet.core.segment import Segment
from slirpnet.core.settings import NetworkSettings
from slirpnet.core.vm import Vm
from slirpnet.shell.forwards import Forwards
from slirpnet.shell.hostsockets import HostSockets
from slirpnet.shell.poller import Poller
from slirpnet.shell.port import Port

log = logging.getLogger(__name__)

# The timer wakes on multiples of this: the core's deadlines that fall within one grain
# are handled by one wake-up.  A connection's TIME_WAIT ends 2 s after it closes, each
# a wake-up of its own at 2,500 connections a second; none of the core's timers (an RTO
# is 200 ms at least) minds 5 ms more.
TIMER_GRAIN = 0.005


def open_namespace(
    settings: NetworkSettings | None = None, name: str = "default"
) -> AbstractAsyncContextManager[NamespaceRuntime]:
    """A namespace running in the caller's trio program, for the body of an ``async with``.

    The embedding API's entry point; ``attach`` on it gives a ``Port`` per VM.  Settings
    are taken as given: with no ``dns_upstreams`` only local names resolve (pass
    ``system_upstreams()`` for the host's resolvers, as ``slirpnet serve`` does).
    """
    return NamespaceRuntime.open(name, settings or NetworkSettings())


class NamespaceRuntime:
    def __init__(
        self, name: str, settings: NetworkSettings, nursery: trio.Nursery, poller: Poller
    ) -> None:
        self.name = name
        self.segment = Segment(settings)
        self.nursery = nursery
        self.poller = poller  # the flows' host sockets
        self.host = HostSockets(self)
        self.forwards = Forwards(self)
        self._ports: dict[Vm, Port] = {}
        self._timer_scope = trio.CancelScope()
        self.pcap_dir: Path | None = None  # set: every VM is captured to a file there
        # Called after a flush that changed the DHCP records (the lease store saves them).
        self.on_leases_changed: Callable[[], None] | None = None
        self._lease_changes = self.segment.dhcp.changes

    @classmethod
    @asynccontextmanager
    async def open(cls, name: str, settings: NetworkSettings) -> AsyncIterator[NamespaceRuntime]:
        """Run a namespace for the body of the ``async with``; everything closes after."""
        poller = Poller()
        with poller:  # closed last: the VMs' ports, leaving, still close their sockets
            async with trio.open_nursery() as nursery:
                runtime = cls(name, settings, nursery, poller)
                nursery.start_soon(runtime._timers)
                nursery.start_soon(poller.run, runtime.flush)
                try:
                    yield runtime
                finally:
                    for port in list(runtime._ports.values()):
                        runtime._detach(port)
                    runtime.forwards.close_all()
                    runtime.host.close_all()
                    nursery.cancel_scope.cancel()

    @asynccontextmanager
    async def attach(self, name: str) -> AsyncIterator[Port]:
        """A port for one VM, open for the body of the ``async with``.

        The port's nursery holds the VM's host sockets; leaving closes them all.
        """
        async with trio.open_nursery() as nursery:
            vm = self.segment.attach(name)
            port = Port(self, vm, nursery)
            self._ports[vm] = port
            if self.pcap_dir is not None:
                port.start_capture(self.pcap_dir / f"{self.name}-vm{vm.id}.pcap")
            log.info("VM connected on %s", name, extra=vm.log_context)
            # A VM come back may hold a lease and say nothing for hours: ask it now;
            # and tell it of the IPv6 router.
            self.segment.attached(vm, trio.current_time())
            self.flush()
            try:
                yield port
            finally:
                self._detach(port)
                nursery.cancel_scope.cancel()

    def _detach(self, port: Port) -> None:
        if port.closed:
            return
        port.close()
        self.segment.detach(port.vm)
        self.flush()
        del self._ports[port.vm]
        stats = port.vm.stats
        log.info(
            "VM disconnected after %d frames in, %d out",
            stats.frames_in,
            stats.frames_out,
            extra=port.vm.log_context,
        )

    @property
    def ports(self) -> list[Port]:
        return list(self._ports.values())

    def port_of(self, vm: Vm) -> Port:
        return self._ports[vm]

    # -- events from host sockets ------------------------------------------------------

    def report_received(self, flow: Flow, payload: bytes) -> None:
        self.segment.flow_received(flow, payload, trio.current_time())
        self.flush()

    def report_connected(self, flow: Flow) -> None:
        self.segment.flow_connected(flow, trio.current_time())
        self.flush()

    def report_eof(self, flow: Flow) -> None:
        self.segment.flow_eof(flow, trio.current_time())
        self.flush()

    def report_written(self, flow: Flow, count: int) -> None:
        self.segment.flow_written(flow, count, trio.current_time())
        self.flush()

    def report_error(self, flow: Flow, kind: str) -> None:
        self.segment.flow_error(flow, kind, trio.current_time())
        self.flush()

    # -- carrying out the core's output ------------------------------------------------

    def flush(self) -> None:
        """Do what the core asked: host socket actions, frames to VMs, the next timer.

        Every input is a batch (a VM's frames are fed ``FEED_BATCH`` or more at a time),
        so the TCP ACKs delayed for more of the guest's segments go out first.
        """
        segment = self.segment
        segment.send_delayed_acks(trio.current_time())
        while True:
            while actions := segment.take_actions():
                for action in actions:
                    self.host.apply(action)
            if not self.host.write_unwritten():  # the guest's data, a send per flow
                break
        for vm, port in self._ports.items():
            if vm.outbox:
                port.enqueue(vm.take_frames())
        if segment.dhcp.changes != self._lease_changes:
            self._lease_changes = segment.dhcp.changes
            if self.on_leases_changed is not None:
                self.on_leases_changed()
        deadline = _timer_deadline(segment.get_timer())
        # Setting a deadline costs trio a heap entry, even an unchanged one: most
        # flushes leave the earliest timer where it was.
        if deadline != self._timer_scope.deadline:
            self._timer_scope.deadline = deadline

    async def _timers(self) -> None:
        while True:
            with trio.CancelScope() as self._timer_scope:
                self._timer_scope.deadline = _timer_deadline(self.segment.get_timer())
                await trio.sleep_forever()
            now = trio.current_time()
            deadline = self.segment.get_timer()
            if deadline is not None and deadline <= now:
                self.segment.handle_timer(now)
                self.flush()


def _timer_deadline(deadline: float | None) -> float:
    """The core's next deadline, rounded up to the timer's grain."""
    if deadline is None:
        return math.inf
    rounded = math.ceil(deadline / TIMER_GRAIN) * TIMER_GRAIN
    return rounded if rounded >= deadline else rounded + TIMER_GRAIN  # not early by an ulp
