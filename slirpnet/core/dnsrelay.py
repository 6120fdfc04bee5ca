"""DNS on the DNS address, for guests of either family: what ``DnsService`` (dns.py)
decides, carried out with flows and frames.

A query is answered locally or sent to the upstreams one at a time as a ``DnsFlow``:
no answer within the timeout, or an error, and the next is asked; when all have
failed the guest gets SERVFAIL, never silence.  An answer too long for the query or the
MTU becomes an empty one with TC set, so the guest asks again over TCP (RFC 7766 §5).
The room handed to ``DnsService`` is what one datagram of the guest's family carries.
"""

from __future__ import annotations

from slirpnet.core.addr import family_of
from slirpnet.core.dns import DNS_PORT, DnsService
from slirpnet.core.flows import FLOW_EXHAUSTED, DnsFlow, Endpoint, SendFlow
from slirpnet.core.flowtable import FlowTable
from slirpnet.core.frames import Frames
from slirpnet.core.settings import NetworkSettings
from slirpnet.core.vm import Vm


class DnsRelay:
    def __init__(
        self, settings: NetworkSettings, frames: Frames, flows: FlowTable, dns: DnsService
    ) -> None:
        self.settings = settings
        self.frames = frames
        self.flows = flows
        self.dns = dns

    def query(self, vm: Vm, guest: Endpoint, query: bytes, now: float) -> None:
        """A query from ``guest`` to the DNS address of its family."""
        vm.stats.count("dns_query")
        answer = self.dns.local_answer(vm, query, self._room(guest))
        if answer is not None:
            if answer:  # not DROPPED
                self._answer(vm, guest, answer)
        elif self.dns.upstreams:
            if self.flows.room(vm, now):
                self._ask(vm, guest, query, 0, now)
            else:
                self._servfail(vm, guest, query)

    def _ask(self, vm: Vm, guest: Endpoint, query: bytes, attempt: int, now: float) -> None:
        flow = self.dns.flow(vm, guest, query, attempt, now)
        self.flows.open(flow)
        self.flows.actions.append(SendFlow(flow, query))

    def _room(self, guest: Endpoint) -> int:
        return family_of(guest.address).udp_room(self.settings.mtu)

    def _answer(self, vm: Vm, guest: Endpoint, answer: bytes) -> None:
        self.frames.udp(vm, guest, self.settings.dns_for(guest.address), DNS_PORT, answer)

    def received(self, flow: DnsFlow, payload: bytes) -> None:
        """A datagram from the upstream: the answer, or a stray (counted)."""
        vm = flow.vm
        if not DnsService.matches(flow, payload):
            vm.drop("dns_reply_mismatch")
            return
        self.dns.upstream_answered(flow.attempt)
        answer = DnsService.fit(flow.query, payload, self._room(flow.guest))  # or TC: ask over TCP
        if answer is None:
            vm.drop("udp_reply_over_mtu")
        else:
            self._answer(vm, flow.guest, answer)
        self.flows.close(flow)

    def failed(self, flow: DnsFlow, kind: str, now: float) -> None:
        """The upstream's socket failed."""
        if kind == FLOW_EXHAUSTED:  # not the upstream's fault: don't ask the next one
            self.flows.close(flow)
            self._servfail(flow.vm, flow.guest, flow.query)
        else:
            self.timed_out(flow, now)

    def timed_out(self, flow: DnsFlow, now: float) -> None:
        """This upstream did not answer: ask the next, or tell the guest SERVFAIL."""
        self.flows.close(flow)
        vm = flow.vm
        vm.stats.count("dns_upstream_failed")
        self.dns.upstream_failed(flow.attempt)
        attempt = flow.attempt + 1
        if attempt < len(self.dns.upstreams) and vm.attached:
            self._ask(vm, flow.guest, flow.query, attempt, now)
            return
        if vm.attached:
            self._servfail(vm, flow.guest, flow.query)

    def _servfail(self, vm: Vm, guest: Endpoint, query: bytes) -> None:
        answer = DnsService.servfail(query, self._room(guest))
        if answer is not None:
            self._answer(vm, guest, answer)
