"""DNS on the virtual DNS address: local records answered here, the rest forwarded.

Queries go to the upstream resolvers unchanged, every type passed through, one
upstream at a time in order: when one does not answer within the timeout the
next is asked, and when all have failed the guest gets SERVFAIL, never silence
(a silent resolver costs a guest its full resolver timeout per name).  An
answer too long for the guest's MTU is replaced by an empty one with TC set, and
the guest asks again over TCP (RFC 7766 §5), as it would a truncated answer.

DNS over TCP to the DNS address is not handled here: the segment relays such a
connection, like any TCP flow, to the first upstream, which then also answers
for local names (it does not know them; resolvers only use TCP after a
truncated UDP answer, and local answers are never truncated).
"""

from __future__ import annotations

import logging
from ipaddress import IPv4Address

from slirpnet.core.flows import DnsFlow, Endpoint
from slirpnet.core.settings import Upstream
from slirpnet.core.vm import Vm
from slirpnet.wire import dns
from slirpnet.wire.errors import WireError

log = logging.getLogger(__name__)

LOCAL_TTL = 60
DROPPED = b""  # local_answer's verdict on a message to neither answer nor forward


class DnsService:
    def __init__(
        self, records: dict[str, IPv4Address], upstreams: tuple[Upstream, ...], timeout: float
    ) -> None:
        self.records = records  # lower-cased names
        self.upstreams = upstreams
        self.timeout = timeout  # per upstream
        self.down: set[Upstream] = set()  # failed their last query: logged once, until back

    def upstream_failed(self, attempt: int) -> None:
        upstream = self.upstreams[attempt]
        if upstream not in self.down:
            self.down.add(upstream)
            log.warning("DNS upstream %s is not answering", upstream)

    def upstream_answered(self, attempt: int) -> None:
        upstream = self.upstreams[attempt]
        if upstream in self.down:
            self.down.discard(upstream)
            log.info("DNS upstream %s answers again", upstream)

    def local_answer(self, vm: Vm, payload: bytes) -> bytes | None:
        """The reply when we can give it ourselves: a local name, or nobody to ask.

        None when the query is to be forwarded; ``DROPPED`` when it was counted as a drop.
        """
        try:
            query = dns.DnsQuery.parse(payload)
        except WireError as error:
            if self.upstreams:
                return None  # forwarded unchanged: the upstream may read what we cannot
            vm.stats.drop(error.reason)
            return dns.error_for_unparsed(payload, dns.RCODE_FORMERR)
        if query.is_response:
            vm.stats.drop("dns_not_a_query")
            return DROPPED
        address = self.records.get(query.question.name.lower())
        if address is not None:
            if query.question.qtype in (dns.TYPE_A, dns.TYPE_ANY):
                return dns.reply(
                    query, dns.RCODE_NOERROR, (address,), LOCAL_TTL, authoritative=True
                )
            # The name exists with no record of this type: NODATA (RFC 2308 §2.2).
            return dns.reply(query, dns.RCODE_NOERROR, authoritative=True)
        if not self.upstreams:
            return dns.reply(query, dns.RCODE_SERVFAIL)
        return None

    def flow(self, vm: Vm, guest: Endpoint, payload: bytes, attempt: int, now: float) -> DnsFlow:
        """A flow asking upstream number ``attempt``."""
        upstream = self.upstreams[attempt]
        return DnsFlow(
            vm=vm,
            guest=guest,
            host_address=upstream.address,
            host_port=upstream.port,
            deadline=now + self.timeout,
            query=payload,
            attempt=attempt,
        )

    @staticmethod
    def servfail(payload: bytes) -> bytes | None:
        try:
            return dns.reply(dns.DnsQuery.parse(payload), dns.RCODE_SERVFAIL)
        except WireError:
            return dns.error_for_unparsed(payload, dns.RCODE_SERVFAIL)

    @staticmethod
    def truncated(query: bytes) -> bytes | None:
        """An empty answer with TC set, which sends the guest to TCP; None if unreadable."""
        try:
            return dns.reply(dns.DnsQuery.parse(query), dns.RCODE_NOERROR, truncated=True)
        except WireError:
            return None

    @staticmethod
    def matches(flow: DnsFlow, reply: bytes) -> bool:
        """A reply answers the query when its ID does (RFC 5452 §4.3 asks no less)."""
        return len(reply) >= dns.HEADER_LEN and reply[:2] == flow.query[:2]
