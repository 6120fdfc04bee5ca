"""The core ``Segment``'s DNS service on 10.0.2.3:53, on a fake clock, scapy as oracle.

See ``test_core_segment.py`` for the harness.  Upstream resolvers are addresses
in 192.0.2.0/24 that only ever appear as values: nothing is sent anywhere.
"""

from __future__ import annotations

from collections import Counter
from ipaddress import IPv4Address, IPv6Address

import pytest
from scapy.layers.dns import DNS, DNSQR, DNSRR, DNSRROPT, EDNS0TLV
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from slirpnet.core.flows import (
    FLOW_FAILED,
    FLOW_REFUSED,
    FLOW_UNREACHABLE,
    CloseFlow,
    DnsFlow,
    OpenFlow,
    SendFlow,
    TcpFlow,
)
from slirpnet.core.segment import Segment
from slirpnet.core.settings import Upstream
from slirpnet.core.vm import Vm
from tests.test_core_segment import (
    DNS_IP,
    GATEWAY_IP,
    GUEST_IP,
    UPSTREAM_1,
    UPSTREAM_2,
    Shell,
    closes,
    from_gateway,
    new_segment,
    one_frame,
    udp_frame,
)

SPORT = 33333


def query(name: str = "example.com", qtype: str | int = "A", ident: int = 0x1234) -> bytes:
    return bytes(DNS(id=ident, rd=1, qd=DNSQR(qname=name, qtype=qtype)))


def ask(segment: Segment, vm: Vm, payload: bytes, now: float = 0.0) -> None:
    segment.receive(vm, udp_frame(DNS_IP, 53, payload, sport=SPORT), now)


def answer_frame(vm: Vm) -> DNS:
    """The one frame for the guest: a DNS reply from 10.0.2.3:53 to its port."""
    frame = one_frame(vm)
    assert (frame[IP].src, frame[IP].dst) == (DNS_IP, GUEST_IP)
    assert (frame[UDP].sport, frame[UDP].dport) == (53, SPORT)
    return frame[DNS]


def forwarded(shell: Shell, payload: bytes, upstream: Upstream, attempt: int = 0) -> DnsFlow:
    flow, sent = shell.opened_one(DnsFlow)
    assert isinstance(flow, DnsFlow)
    assert sent == payload  # byte for byte
    assert (flow.host_address, flow.host_port, flow.attempt) == (
        upstream.address,
        upstream.port,
        attempt,
    )
    assert (flow.guest.address, flow.guest.port) == (IPv4Address(GUEST_IP), SPORT)
    return flow


def assert_servfail(reply: DNS, sent: bytes) -> None:
    asked = DNS(sent)
    assert (reply.id, reply.qr, reply.rcode, reply.rd, reply.ra) == (asked.id, 1, 2, 1, 1)
    assert (reply.qdcount, reply.ancount, reply.nscount, reply.arcount) == (1, 0, 0, 0)
    assert bytes(reply.qd[0]) == bytes(asked.qd[0])


@pytest.fixture
def segment() -> Segment:
    return new_segment(dns_upstreams=(UPSTREAM_1, UPSTREAM_2))


@pytest.fixture
def vm(segment: Segment) -> Vm:
    return segment.attach("guest")


@pytest.fixture
def shell(segment: Segment) -> Shell:
    return Shell(segment)


# -- local records -----------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["host.slirpnet.internal", "HOST.SLIRPNET.INTERNAL", "Host.SlirpNet.Internal."]
)
@pytest.mark.parametrize("upstreams", [(), (UPSTREAM_1,)])
def test_host_name_answered_locally(name: str, upstreams: tuple[Upstream, ...]) -> None:
    segment = new_segment(dns_upstreams=upstreams)
    vm = segment.attach("guest")
    ask(segment, vm, query(name, ident=0xABCD))
    assert segment.take_actions() == []
    reply = answer_frame(vm)
    assert (reply.id, reply.qr, reply.aa, reply.rd, reply.ra, reply.rcode) == (
        0xABCD,
        1,
        1,
        1,
        1,
        0,
    )
    assert (reply.qdcount, reply.ancount) == (1, 1)
    # The question comes back as asked, case and all (RFC 1035 §2.3.3, 0x20 encoding).
    assert reply.qd[0].qname == name.rstrip(".").encode() + b"."
    record = reply.an[0]
    assert (record.type, record.rclass, record.ttl, record.rdata) == (1, 1, 60, GATEWAY_IP)
    assert record.rrname.lower() == b"host.slirpnet.internal."
    assert vm.stats.drops == Counter()
    assert segment.get_timer() is None


def records(reply: DNS) -> list[tuple[int, str]]:
    """The answer section as (type, address), each checked to own the question's name."""
    found = []
    for index in range(reply.ancount):
        record = reply.an[index]
        assert (record.rrname.lower(), record.rclass, record.ttl) == (
            reply.qd[0].qname.lower(),
            1,
            60,
        )
        found.append((record.type, record.rdata))
    return found


def test_host_name_has_the_gateways_ipv6_address_too(segment: Segment, vm: Vm) -> None:
    ask(segment, vm, query("host.slirpnet.internal", "AAAA"))
    reply = answer_frame(vm)
    assert (reply.rcode, reply.aa) == (0, 1)
    assert records(reply) == [(28, "fec0::2")]
    ask(segment, vm, query("host.slirpnet.internal", "ALL"))
    assert records(answer_frame(vm)) == [(1, GATEWAY_IP), (28, "fec0::2")]


def test_without_ipv6_the_host_name_has_no_aaaa() -> None:
    segment = new_segment(ipv6=False, dns_upstreams=(UPSTREAM_1,))
    vm = segment.attach("guest")
    ask(segment, vm, query("host.slirpnet.internal", "AAAA"))
    reply = answer_frame(vm)
    assert (reply.rcode, reply.aa, reply.ancount) == (0, 1, 0)  # NODATA: the name is ours
    assert segment.take_actions() == []


@pytest.mark.parametrize("qtype", ["MX", "TXT"])
def test_other_types_for_local_name_are_nodata(
    segment: Segment, vm: Vm, shell: Shell, qtype: str
) -> None:
    ask(segment, vm, query("host.slirpnet.internal", qtype))
    assert shell.actions() == []
    reply = answer_frame(vm)
    assert (reply.rcode, reply.aa, reply.ancount, reply.qd[0].qtype) == (
        0,
        1,
        0,
        DNSQR(qtype=qtype).qtype,
    )


def test_configured_records_answered() -> None:
    segment = new_segment(
        dns_upstreams=(UPSTREAM_1,),
        dns_records=(
            ("printer.lan", IPv4Address("10.0.2.50")),
            ("DB.Example.", IPv4Address("192.0.2.9")),
            ("host.slirpnet.internal", IPv4Address("10.0.2.60")),  # overrides the host name
        ),
    )
    vm = segment.attach("guest")
    for name, address in [
        ("printer.lan", "10.0.2.50"),
        ("db.example", "192.0.2.9"),
        ("PRINTER.LAN", "10.0.2.50"),
        ("host.slirpnet.internal", "10.0.2.60"),
    ]:
        ask(segment, vm, query(name))
        reply = answer_frame(vm)
        assert (reply.aa, reply.an[0].rdata) == (1, address), name
    assert segment.take_actions() == []
    # Subdomains of a record are not the record.
    ask(segment, vm, query("www.printer.lan"))
    assert len(segment.take_actions()) == 2


def test_a_name_may_have_an_ipv4_and_an_ipv6_address() -> None:
    segment = new_segment(
        dns_upstreams=(UPSTREAM_1,),
        dns_records=(
            ("both.test", IPv4Address("10.0.2.50")),
            ("both.test", IPv6Address("fd00::50")),
            ("six.test", IPv6Address("fd00::60")),
            ("six.test", IPv6Address("fd00::61")),  # the last of a family counts
            ("host.slirpnet.internal", IPv6Address("fd00::2")),  # replaces both of the host's
        ),
    )
    vm = segment.attach("guest")
    expected = {
        ("both.test", "A"): [(1, "10.0.2.50")],
        ("BOTH.test", "AAAA"): [(28, "fd00::50")],
        ("both.test", "ALL"): [(1, "10.0.2.50"), (28, "fd00::50")],
        ("six.test", "AAAA"): [(28, "fd00::61")],
        ("six.test", "A"): [],  # NODATA, not NXDOMAIN (RFC 2308 §2.2)
        ("host.slirpnet.internal", "A"): [],
        ("host.slirpnet.internal", "AAAA"): [(28, "fd00::2")],
    }
    for (name, qtype), answers in expected.items():
        ask(segment, vm, query(name, qtype))
        reply = answer_frame(vm)
        assert (reply.rcode, reply.aa, records(reply)) == (0, 1, answers), (name, qtype)
    assert segment.take_actions() == []


@pytest.mark.parametrize(
    ("opcode", "qclass"), [(1, "IN"), (2, "IN"), (4, "IN"), (5, "IN"), (0, "CH"), (0, "HS")]
)
def test_only_internet_queries_are_answered_locally(
    segment: Segment, vm: Vm, shell: Shell, opcode: int, qclass: str
) -> None:
    sent = bytes(DNS(id=3, opcode=opcode, qd=DNSQR(qname="host.slirpnet.internal", qclass=qclass)))
    ask(segment, vm, sent)
    forwarded(shell, sent, UPSTREAM_1)  # the upstream knows what to make of it


def test_without_upstreams_other_opcodes_are_not_implemented() -> None:
    segment = new_segment()
    vm = segment.attach("guest")
    for opcode, name in [(2, "host.slirpnet.internal"), (5, "example.com")]:
        ask(segment, vm, bytes(DNS(id=8, opcode=opcode, rd=1, qd=DNSQR(qname=name))))
        reply = answer_frame(vm)
        assert (reply.id, reply.qr, reply.opcode, reply.rcode, reply.ancount) == (
            8,
            1,
            opcode,
            4,
            0,
        )


def test_host_name_can_be_changed_or_disabled() -> None:
    segment = new_segment(host_name="gw.test", dns_upstreams=(UPSTREAM_1,))
    vm = segment.attach("guest")
    ask(segment, vm, query("gw.test"))
    assert answer_frame(vm).an[0].rdata == GATEWAY_IP
    ask(segment, vm, query("host.slirpnet.internal"))
    assert len(segment.take_actions()) == 2  # forwarded
    segment = new_segment(host_name=None)
    vm = segment.attach("guest")
    ask(segment, vm, query("host.slirpnet.internal"))
    assert answer_frame(vm).rcode == 2  # not ours, and nobody to ask


# -- forwarding --------------------------------------------------------------------


def test_other_names_forwarded_unchanged(segment: Segment, vm: Vm, shell: Shell) -> None:
    sent = bytes(
        DNS(id=0x4242, rd=1, qd=DNSQR(qname="ExAmPlE.com", qtype="AAAA"), ar=DNSRROPT(rclass=1232))
    )
    ask(segment, vm, sent)
    forwarded(shell, sent, UPSTREAM_1)
    assert vm.take_frames() == []
    assert segment.get_timer() == 2.0
    assert vm.stats.drops == Counter()


def test_upstream_reply_relayed_and_flow_closed(segment: Segment, vm: Vm, shell: Shell) -> None:
    sent = query(ident=7)
    ask(segment, vm, sent, 10.0)
    flow = forwarded(shell, sent, UPSTREAM_1)
    reply = bytes(
        DNS(
            id=7,
            qr=1,
            rd=1,
            ra=1,
            qd=DNSQR(qname="example.com"),
            an=DNSRR(rrname="example.com", rdata="192.0.2.80"),
        )
    )
    segment.flow_received(flow, reply, 10.1)
    from_gateway(
        vm.take_frames()[0], IP(src=DNS_IP, dst=GUEST_IP) / UDP(sport=53, dport=SPORT) / reply
    )
    assert closes(shell.actions()) == [flow]
    assert vm.dns_flows == set()
    segment.handle_timer(12.0)  # its old deadline passes quietly
    assert shell.actions() == []
    assert vm.take_frames() == []
    assert vm.stats.drops == Counter()
    assert vm.stats.events == Counter({"dns_query": 1})


def test_reply_with_wrong_id_ignored_and_counted(segment: Segment, vm: Vm, shell: Shell) -> None:
    sent = query(ident=0x0102)
    ask(segment, vm, sent)
    flow = forwarded(shell, sent, UPSTREAM_1)
    segment.flow_received(flow, bytes(DNS(id=0x0201, qr=1)), 0.5)
    segment.flow_received(flow, b"\x01\x02\x81", 0.5)  # right ID, shorter than a header
    assert vm.take_frames() == []
    assert shell.actions() == []
    assert vm.stats.drops == Counter({"dns_reply_mismatch": 2})
    good = bytes(DNS(id=0x0102, qr=1, rcode=3, qd=DNSQR(qname="example.com")))
    segment.flow_received(flow, good, 1.0)
    assert bytes(answer_frame(vm)) == good
    assert closes(shell.actions()) == [flow]


def test_concurrent_queries_have_their_own_flows(segment: Segment, vm: Vm, shell: Shell) -> None:
    first, second = query("a.example", ident=1), query("b.example", ident=2)
    ask(segment, vm, first)
    one = forwarded(shell, first, UPSTREAM_1)
    ask(segment, vm, second)
    two = forwarded(shell, second, UPSTREAM_1)
    assert vm.dns_flows == {one, two}
    segment.flow_received(two, bytes(DNS(id=2, qr=1)), 0.5)
    assert answer_frame(vm).id == 2
    assert closes(shell.actions()) == [two]
    segment.flow_received(one, bytes(DNS(id=1, qr=1)), 0.6)
    assert answer_frame(vm).id == 1


def test_timeout_moves_to_next_upstream_then_servfail(
    segment: Segment, vm: Vm, shell: Shell
) -> None:
    sent = query(ident=0x5151)
    ask(segment, vm, sent, 100.0)
    first = forwarded(shell, sent, UPSTREAM_1)
    segment.handle_timer(101.999)
    assert shell.actions() == []
    segment.handle_timer(102.0)
    actions = shell.actions()
    assert [type(a) for a in actions] == [CloseFlow, OpenFlow, SendFlow]
    assert actions[0].flow is first
    second = actions[1].flow
    assert isinstance(second, DnsFlow)
    assert actions[2] == SendFlow(second, sent)
    assert (second.host_address, second.host_port, second.attempt) == (
        UPSTREAM_2.address,
        5353,
        1,
    )
    assert vm.take_frames() == []
    assert vm.stats.events == Counter({"dns_query": 1, "dns_upstream_failed": 1})
    # A late answer from the first upstream is too late.
    segment.flow_received(first, bytes(DNS(id=0x5151, qr=1)), 102.5)
    assert vm.take_frames() == []
    assert segment.get_timer() == 104.0
    segment.handle_timer(104.0)
    assert closes(shell.actions()) == [second]
    assert_servfail(answer_frame(vm), sent)
    assert vm.stats.events == Counter({"dns_query": 1, "dns_upstream_failed": 2})
    assert vm.stats.drops == Counter()
    assert vm.dns_flows == set()
    assert shell.open == set()


def test_dns_timeout_is_configurable(shell: Shell) -> None:
    segment = new_segment(dns_upstreams=(UPSTREAM_1,), dns_timeout=0.5)
    shell = Shell(segment)
    vm = segment.attach("guest")
    sent = query()
    ask(segment, vm, sent)
    forwarded(shell, sent, UPSTREAM_1)
    assert segment.get_timer() == 0.5
    segment.handle_timer(0.5)
    assert len(closes(shell.actions())) == 1
    assert_servfail(answer_frame(vm), sent)


@pytest.mark.parametrize("kind", [FLOW_REFUSED, FLOW_UNREACHABLE, FLOW_FAILED])
def test_flow_error_moves_to_next_upstream_at_once(
    segment: Segment, vm: Vm, shell: Shell, kind: str
) -> None:
    sent = query(ident=9)
    ask(segment, vm, sent)
    first = forwarded(shell, sent, UPSTREAM_1)
    segment.flow_error(first, kind, 0.1)
    actions = shell.actions()
    assert [type(a) for a in actions] == [CloseFlow, OpenFlow, SendFlow]
    second = actions[1].flow
    assert isinstance(second, DnsFlow)
    assert (second.host_address, second.attempt, second.deadline) == (UPSTREAM_2.address, 1, 2.1)
    segment.flow_error(second, kind, 0.2)
    assert closes(shell.actions()) == [second]
    assert_servfail(answer_frame(vm), sent)
    assert vm.stats.drops == Counter()
    assert vm.stats.events == Counter({"dns_query": 1, "dns_upstream_failed": 2})


def test_no_upstreams_is_servfail_at_once() -> None:
    segment = new_segment()
    vm = segment.attach("guest")
    for qtype in ("A", "AAAA"):
        sent = query(qtype=qtype, ident=77)
        ask(segment, vm, sent)
        assert segment.take_actions() == []
        assert_servfail(answer_frame(vm), sent)
    assert vm.stats.drops == Counter()


def test_unreadable_query_without_upstreams_is_formerr() -> None:
    segment = new_segment()
    vm = segment.attach("guest")
    ask(segment, vm, bytes(DNS(id=0x0BAD, rd=1, qd=[])))  # no question
    reply = answer_frame(vm)
    assert (reply.id, reply.qr, reply.rcode, reply.qdcount) == (0x0BAD, 1, 1, 0)
    ask(segment, vm, b"\x0b\xad\x01")  # not even an ID and flags: nothing to answer
    assert vm.take_frames() == []
    assert vm.stats.drops == Counter({"dns_no_question": 1, "dns_truncated": 1})


def test_unreadable_query_is_forwarded_then_servfail_by_id(
    segment: Segment, vm: Vm, shell: Shell
) -> None:
    sent = bytes(DNS(id=0x0BAD, rd=1, qd=[])) + b"\xff"
    ask(segment, vm, sent)
    first = forwarded(shell, sent, UPSTREAM_1)
    assert vm.stats.drops == Counter()
    segment.flow_error(first, FLOW_REFUSED, 0.1)
    second = shell.actions()[1].flow
    segment.flow_error(second, FLOW_REFUSED, 0.2)
    reply = answer_frame(vm)
    assert (reply.id, reply.qr, reply.rcode, reply.qdcount) == (0x0BAD, 1, 2, 0)


@pytest.mark.parametrize("upstreams", [(), (UPSTREAM_1,)])
def test_a_response_sent_to_the_resolver_is_dropped(upstreams: tuple[Upstream, ...]) -> None:
    segment = new_segment(dns_upstreams=upstreams)
    vm = segment.attach("guest")
    ask(segment, vm, bytes(DNS(id=5, qr=1, qd=DNSQR(qname="example.com"))))
    ask(segment, vm, bytes(DNS(id=6, qr=1, qd=DNSQR(qname="host.slirpnet.internal"))))
    assert segment.take_actions() == []  # counted as a drop, so never forwarded either
    assert vm.take_frames() == []
    assert vm.stats.drops == Counter({"dns_not_a_query": 2})


def test_detach_abandons_pending_queries(segment: Segment, vm: Vm, shell: Shell) -> None:
    sent = query()
    ask(segment, vm, sent)
    flow = forwarded(shell, sent, UPSTREAM_1)
    segment.detach(vm)
    assert closes(shell.actions()) == [flow]
    segment.handle_timer(10.0)
    segment.flow_error(flow, FLOW_REFUSED, 10.0)
    assert shell.actions() == []
    assert vm.take_frames() == []
    assert vm.stats.events == Counter({"dns_query": 1})


def test_dns_answers_are_sent_to_the_asking_mac(segment: Segment, shell: Shell) -> None:
    a = segment.attach("a")
    b = segment.attach("b")
    other_mac = "52:54:00:65:43:21"
    frame = udp_frame(DNS_IP, 53, query(ident=3), sport=SPORT, src=other_mac, src_ip="10.0.2.16")
    segment.receive(b, frame, 0.0)
    flow = forwarded_any(shell)
    segment.flow_received(flow, bytes(DNS(id=3, qr=1)), 0.1)
    assert a.take_frames() == []
    got = Ether(b.take_frames()[0])
    assert (got.dst, got[IP].dst) == (other_mac, "10.0.2.16")


def forwarded_any(shell: Shell) -> DnsFlow:
    flow, _ = shell.opened_one(DnsFlow)
    assert isinstance(flow, DnsFlow)
    return flow


# -- EDNS (RFC 6891) ---------------------------------------------------------------

ROOM = 65520 - 28  # the largest DNS message a default link carries in one datagram


def edns_query(
    name: str = "host.slirpnet.internal",
    qtype: str = "A",
    *,
    size: int = 1232,
    version: int = 0,
    do: bool = False,
    opcode: int = 0,
) -> bytes:
    """A query with an OPT record, a cookie in it as resolvers send (RFC 7873 §4)."""
    opt = DNSRROPT(
        rclass=size,
        version=version,
        z=0x8000 if do else 0,
        rdata=[EDNS0TLV(optcode=10, optdata=b"\x01" * 8)],
    )
    return bytes(DNS(id=0x0E0E, rd=1, opcode=opcode, qd=DNSQR(qname=name, qtype=qtype), ar=opt))


def our_opt(reply: DNS, room: int = ROOM) -> DNSRROPT:
    """The reply's one additional record: our OPT, with no options (RFC 6891 §6.1.2)."""
    assert (reply.arcount, reply.nscount) == (1, 0)
    opt = reply.ar[0]
    assert isinstance(opt, DNSRROPT)
    assert (opt.rrname, opt.type, opt.rclass, opt.version, opt.rdata) == (b".", 41, room, 0, [])
    assert bytes(reply).endswith(b"\x00\x00")  # RDLEN 0: the OPT is last
    assert int(opt.z) & 0x7FFF == 0  # Z: zero when sent (§6.1.4)
    return opt


@pytest.mark.parametrize("do", [False, True])
def test_local_answers_carry_an_opt_record_echoing_do(segment: Segment, vm: Vm, do: bool) -> None:
    for qtype, answers in [("A", 1), ("AAAA", 1), ("MX", 0)]:
        ask(segment, vm, edns_query(qtype=qtype, do=do))
        reply = answer_frame(vm)
        assert (reply.id, reply.rcode, reply.aa, reply.ancount) == (0x0E0E, 0, 1, answers)
        opt = our_opt(reply)
        assert (opt.extrcode, int(opt.z) >> 15) == (0, do)  # RFC 3225 §3: DO copied


def test_opt_offered_is_the_links_room() -> None:
    segment = new_segment(mtu=1500)
    vm = segment.attach("guest")
    ask(segment, vm, edns_query(size=4096))
    our_opt(answer_frame(vm), 1500 - 28)


def test_no_opt_without_one_in_the_query(segment: Segment, vm: Vm) -> None:
    ask(segment, vm, query("host.slirpnet.internal"))
    reply = answer_frame(vm)
    assert (reply.arcount, list(reply.ar)) == (0, [])


@pytest.mark.parametrize("upstreams", [(), (UPSTREAM_1,)])
def test_a_later_edns_version_is_badvers(upstreams: tuple[Upstream, ...]) -> None:
    segment = new_segment(dns_upstreams=upstreams)
    vm = segment.attach("guest")
    ask(segment, vm, edns_query(version=1, do=True))
    reply = answer_frame(vm)
    # BADVERS is 16: 0 in the header, 1 in the OPT's upper bits (RFC 6891 §6.1.3, §9).
    assert (reply.id, reply.qr, reply.rcode, reply.ancount) == (0x0E0E, 1, 0, 0)
    assert bytes(reply.qd[0]) == bytes(DNS(edns_query()).qd[0])
    opt = our_opt(reply)
    assert (opt.extrcode, opt.version, int(opt.z) >> 15) == (1, 0, 1)
    assert segment.take_actions() == []


def test_a_later_edns_version_for_others_is_the_upstreams_to_judge(
    segment: Segment, vm: Vm, shell: Shell
) -> None:
    sent = edns_query("example.com", version=1)
    ask(segment, vm, sent)
    forwarded(shell, sent, UPSTREAM_1)


@pytest.mark.parametrize("version", [0, 1])
def test_servfail_and_notimp_carry_an_opt_record(version: int) -> None:
    segment = new_segment()
    vm = segment.attach("guest")
    ask(segment, vm, edns_query("example.com", do=True))
    reply = answer_frame(vm)
    assert (reply.rcode, our_opt(reply).extrcode, int(reply.ar[0].z) >> 15) == (2, 0, 1)
    ask(segment, vm, edns_query("example.com", opcode=2, version=version))
    reply = answer_frame(vm)
    # A version we lack is said before what the query asks (RFC 6891 §6.1.3).
    assert (reply.rcode, our_opt(reply).extrcode) == ((4, 0) if version == 0 else (0, 1))


def test_servfail_after_the_upstreams_carries_an_opt_record(
    segment: Segment, vm: Vm, shell: Shell
) -> None:
    sent = edns_query("example.com", do=True)
    ask(segment, vm, sent)
    first = forwarded(shell, sent, UPSTREAM_1)
    segment.flow_error(first, FLOW_REFUSED, 0.1)
    second = shell.actions()[1].flow
    segment.handle_timer(5.0)
    assert closes(shell.actions()) == [second]
    reply = answer_frame(vm)
    assert (reply.id, reply.rcode, int(our_opt(reply).z) >> 15) == (0x0E0E, 2, 1)


def test_two_opt_records_are_formerr_without_upstreams() -> None:
    segment = new_segment()
    vm = segment.attach("guest")
    two = DNS(id=4, rd=1, qd=DNSQR(qname="host.slirpnet.internal"), ar=[DNSRROPT(), DNSRROPT()])
    ask(segment, vm, bytes(two))
    reply = answer_frame(vm)
    assert (reply.id, reply.rcode, reply.qdcount, reply.arcount) == (4, 1, 0, 0)
    assert vm.stats.drops == Counter({"dns_opt_twice": 1})


# -- truncation of upstream answers ------------------------------------------------


def upstream_answer(sent: bytes, size: int) -> bytes:
    """An upstream's answer to ``sent`` of exactly ``size`` octets (a NULL record's data)."""
    asked = DNS(sent)

    def answer(data: bytes) -> bytes:
        record = DNSRR(rrname=asked.qd[0].qname, type="NULL", rdata=data)
        return bytes(DNS(id=asked.id, qr=1, rd=1, ra=1, qd=asked.qd, an=record))

    raw = answer(b"x" * (size - len(answer(b""))))
    assert len(raw) == size
    return raw


def relay(segment: Segment, vm: Vm, shell: Shell, sent: bytes, size: int) -> DNS:
    ask(segment, vm, sent)
    flow = forwarded(shell, sent, UPSTREAM_1)
    answer = upstream_answer(sent, size)
    segment.flow_received(flow, answer, 0.5)
    assert closes(shell.actions()) == [flow]
    reply = answer_frame(vm)
    if not reply.tc:
        assert bytes(reply) == answer  # byte for byte
    return reply


def assert_truncated(reply: DNS, sent: bytes) -> None:
    """RFC 6891 §7: header and question, with TC; RFC 2181 §9: the client asks again."""
    asked = DNS(sent)
    assert (reply.id, reply.qr, reply.tc, reply.rcode) == (asked.id, 1, 1, 0)
    assert (reply.qdcount, reply.ancount, reply.nscount) == (1, 0, 0)
    assert bytes(reply.qd[0]) == bytes(asked.qd[0])


def test_without_edns_answers_over_512_octets_are_truncated(
    segment: Segment, vm: Vm, shell: Shell
) -> None:
    sent = query(ident=21)
    assert not relay(segment, vm, shell, sent, 512).tc
    reply = relay(segment, vm, shell, sent, 513)
    assert_truncated(reply, sent)
    assert reply.arcount == 0  # no OPT: the query had none
    assert vm.stats.drops == Counter()


@pytest.mark.parametrize(("size", "limit"), [(1232, 1232), (4096, 4096), (100, 512)])
def test_with_edns_answers_fit_the_size_the_query_gives(
    segment: Segment, vm: Vm, shell: Shell, size: int, limit: int
) -> None:
    sent = edns_query("example.com", size=size, do=True)
    assert not relay(segment, vm, shell, sent, limit).tc
    reply = relay(segment, vm, shell, sent, limit + 1)
    assert_truncated(reply, sent)
    assert int(our_opt(reply).z) >> 15 == 1


def test_answers_fit_the_link_too() -> None:
    segment = new_segment(dns_upstreams=(UPSTREAM_1,), mtu=1500)
    vm, shell = segment.attach("guest"), Shell(segment)
    sent = edns_query("example.com", size=4096)
    assert not relay(segment, vm, shell, sent, 1472).tc
    reply = relay(segment, vm, shell, sent, 1473)
    assert_truncated(reply, sent)
    our_opt(reply, 1472)


# -- DNS over TCP ------------------------------------------------------------------


def tcp_syn(dport: int) -> bytes:
    return bytes(
        Ether(src="52:54:00:12:34:56", dst="52:55:0a:00:02:02")
        / IP(src=GUEST_IP, dst=DNS_IP)
        / TCP(sport=SPORT, dport=dport, flags="S", seq=1000)
    )


def opened_tcp(segment: Segment, vm: Vm, frame: bytes) -> TcpFlow:
    segment.receive(vm, frame, 0.0)
    (action,) = segment.take_actions()
    assert isinstance(action, OpenFlow) and isinstance(action.flow, TcpFlow)
    return action.flow


def test_tcp_to_port_53_is_relayed_to_the_upstreams_in_turn(segment: Segment, vm: Vm) -> None:
    flow = opened_tcp(segment, vm, tcp_syn(53))
    assert (flow.host_address, flow.host_port) == (UPSTREAM_1.address, UPSTREAM_1.port)
    # The shell tries these in order when the first will not connect (shell/hostsockets.py).
    assert flow.fallbacks == (UPSTREAM_2,)
    assert (flow.dst_address, flow.dst_port) == (IPv4Address(DNS_IP), 53)
    assert vm.stats.drops == Counter()


def test_tcp_to_others_has_no_fallbacks() -> None:
    segment = new_segment(dns_upstreams=(UPSTREAM_1,))
    vm = segment.attach("guest")
    assert opened_tcp(segment, vm, tcp_syn(53)).fallbacks == ()
    other = bytes(
        Ether(src="52:54:00:12:34:56", dst="52:55:0a:00:02:02")
        / IP(src=GUEST_IP, dst="192.0.2.99")
        / TCP(sport=SPORT, dport=53, flags="S", seq=1000)
    )
    flow = opened_tcp(segment, vm, other)
    assert (flow.host_address, flow.fallbacks) == (IPv4Address("192.0.2.99"), ())


def test_ipv6_upstreams_are_asked_over_udp_and_tcp() -> None:
    upstreams = (Upstream(IPv6Address("::1"), 5353), UPSTREAM_1)
    segment = new_segment(dns_upstreams=upstreams)
    vm, shell = segment.attach("guest"), Shell(segment)
    sent = query()
    ask(segment, vm, sent)
    forwarded(shell, sent, upstreams[0])
    flow = opened_tcp(segment, vm, tcp_syn(53))
    assert (flow.host_address, flow.host_port, flow.fallbacks) == (
        IPv6Address("::1"),
        5353,
        (UPSTREAM_1,),
    )


@pytest.mark.parametrize(("upstreams", "port"), [((UPSTREAM_1,), 80), ((), 53)])
def test_tcp_to_the_dns_address_is_refused_without_a_service(
    upstreams: tuple[Upstream, ...], port: int
) -> None:
    segment = new_segment(dns_upstreams=upstreams)
    vm = segment.attach("guest")
    segment.receive(vm, tcp_syn(port), 0.0)
    assert segment.take_actions() == []
    assert vm.stats.drops == Counter({"no_service": 1})
    from_gateway(
        vm.take_frames()[0],
        IP(src=DNS_IP, dst=GUEST_IP)
        / TCP(sport=port, dport=SPORT, seq=0, ack=1001, flags="RA", window=0),
    )
