"""DNS on the virtual DNS address: local records answered here, the rest forwarded.

Queries go to the upstream resolvers unchanged, every type passed through, one
upstream at a time in order: when one does not answer within the timeout the
next is asked, and when all have failed the guest gets SERVFAIL, never silence
(a silent resolver costs a guest its full resolver timeout per name).  An
upstream's answer longer than the query allows over UDP (512 octets without
EDNS, RFC 1035 §4.2.1; the size its OPT record gives, RFC 6891 §6.2.5) or than
the guest's link carries is replaced by an empty one with TC set, and the guest
asks again over TCP (RFC 7766 §5), as it would a truncated answer.

Local names have an A record, an AAAA record or both: a question of another type
gets NODATA (RFC 2308 §2.2), as does a name's type it lacks.  Every answer built
here carries an OPT record when the query had one (RFC 6891 §7); a query of an
EDNS version above 0 that we would answer gets BADVERS (§6.1.3), while one that
is forwarded is the upstream's to judge (a proxy is as transparent as it can
be, RFC 5625 §4).  The room given with each call is the largest DNS message the
guest's link carries in one datagram: it bounds what we relay and is the UDP
size our OPT records advertise.

DNS over TCP to the DNS address is not handled here: ``TcpNat`` relays such a
connection, like any TCP flow, to the upstreams, the first and then, as the shell
finds it will not connect, the others (``TcpFlow.fallbacks``).  They answer for
local names too (they do not know them; resolvers only use TCP after a truncated
UDP answer, and local answers are never truncated).
"""

from __future__ import annotations

import logging
from typing import Final

from slirpnet.core.dnsrecords import LocalRecords
from slirpnet.core.flows import DnsFlow, Endpoint
from slirpnet.core.settings import Upstream
from slirpnet.core.vm import Vm
from slirpnet.wire import dns
from slirpnet.wire.errors import WireError

log = logging.getLogger(__name__)

DNS_PORT: Final = 53
LOCAL_TTL = 60
DROPPED = b""  # local_answer's verdict on a message to neither answer nor forward
_CLASSES = (dns.CLASS_IN, dns.CLASS_ANY)
_TYPES = {dns.TYPE_A: 4, dns.TYPE_AAAA: 6}  # question type -> the address family answering


class DnsService:
    def __init__(
        self, records: LocalRecords, upstreams: tuple[Upstream, ...], timeout: float
    ) -> None:
        self.records = records
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

    def local_answer(self, vm: Vm, payload: bytes, room: int) -> bytes | None:
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
        question = query.question
        addresses = None
        if query.opcode == dns.OPCODE_QUERY and question.qclass in _CLASSES:
            addresses = self.records.get(question.name)
        if addresses is None and self.upstreams:
            return None
        if query.edns is not None and query.edns.version > dns.EDNS_VERSION:
            return dns.reply(query, dns.RCODE_BADVERS, udp_size=room)
        if addresses is None:
            # Nobody to ask: what we do not know, or cannot do (RFC 1035 §4.1.1), fails.
            rcode = dns.RCODE_NOTIMP if query.opcode != dns.OPCODE_QUERY else dns.RCODE_SERVFAIL
            return dns.reply(query, rcode, udp_size=room)
        if question.qtype != dns.TYPE_ANY:
            # The name's other types, or one it has not: NODATA (RFC 2308 §2.2).
            family = _TYPES.get(question.qtype)
            addresses = tuple(address for address in addresses if address.version == family)
        return dns.reply(
            query, dns.RCODE_NOERROR, addresses, LOCAL_TTL, udp_size=room, authoritative=True
        )

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
    def servfail(payload: bytes, room: int) -> bytes | None:
        try:
            return dns.reply(dns.DnsQuery.parse(payload), dns.RCODE_SERVFAIL, udp_size=room)
        except WireError:
            return dns.error_for_unparsed(payload, dns.RCODE_SERVFAIL)

    @staticmethod
    def fit(query: bytes, answer: bytes, room: int) -> bytes | None:
        """An upstream's ``answer`` as the guest may have it over UDP: whole when it fits
        what ``query`` allows and ``room``, else an empty answer with TC set (RFC 2181 §9;
        RFC 6891 §7: header, question and OPT), which sends the guest to TCP; None when
        even that cannot be (an unreadable query: nothing to echo)."""
        try:
            parsed = dns.DnsQuery.parse(query)
        except WireError:
            return answer if len(answer) <= room else None
        if len(answer) <= min(parsed.udp_limit, room):
            return answer
        return dns.reply(parsed, dns.RCODE_NOERROR, udp_size=room, truncated=True)

    @staticmethod
    def matches(flow: DnsFlow, reply: bytes) -> bool:
        """A reply answers the query when its ID does (RFC 5452 §4.3 asks no less)."""
        return len(reply) >= dns.HEADER_LEN and reply[:2] == flow.query[:2]
