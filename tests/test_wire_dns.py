"""DNS: reading the question, local answers and errors, scapy as oracle, no loops."""

from __future__ import annotations

import contextlib
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.dns import DNS, DNSQR, DNSRR, DNSRROPT, EDNS0TLV

from slirpnet.wire.dns import (
    RCODE_BADVERS,
    RCODE_NOERROR,
    RCODE_SERVFAIL,
    TYPE_AAAA,
    DnsQuery,
    Edns,
    error_for_unparsed,
    read_name,
    reply,
)
from slirpnet.wire.errors import IntegrityError, SanityError, WireError


def query(name: str = "Host.Slirpnet.Internal", qtype: str = "A", **kw: int) -> bytes:
    return bytes(DNS(id=0x1234, rd=1, qd=DNSQR(qname=name, qtype=qtype), **kw))


def test_question_is_read_with_its_case() -> None:
    parsed = DnsQuery.parse(query(qtype="AAAA"))
    assert parsed.ident == 0x1234
    assert parsed.question.name == "Host.Slirpnet.Internal"
    assert parsed.question.qtype == TYPE_AAAA
    assert parsed.question.qclass == 1
    assert not parsed.is_response and parsed.opcode == 0


def test_local_answer_is_dissected_by_scapy() -> None:
    parsed = DnsQuery.parse(query())
    addresses = (IPv4Address("10.0.2.2"), IPv6Address("fec0::2"))
    raw = reply(parsed, RCODE_NOERROR, addresses, ttl=60, udp_size=1472, authoritative=True)
    answer = DNS(raw)
    assert (answer.id, answer.qr, answer.rd, answer.ra, answer.aa) == (0x1234, 1, 1, 1, 1)
    assert answer.rcode == RCODE_NOERROR
    assert answer.qd[0].qname == b"Host.Slirpnet.Internal."
    assert [(a.type, a.rdata, a.ttl) for a in answer.an] == [
        (1, "10.0.2.2", 60),
        (28, "fec0::2", 60),
    ]
    assert answer.arcount == 0  # no OPT asked, none given
    assert len(raw) == len(bytes(answer))  # nothing scapy did not read


def test_servfail_echoes_the_question() -> None:
    answer = DNS(reply(DnsQuery.parse(query(qtype="MX")), RCODE_SERVFAIL, udp_size=512))
    assert answer.rcode == RCODE_SERVFAIL
    assert answer.ancount == 0
    assert answer.qd[0].qtype == 15


def test_error_for_unparsed_keeps_the_id() -> None:
    answer = DNS(error_for_unparsed(b"\xab\xcd\x01\x00junk", RCODE_SERVFAIL) or b"")
    assert (answer.id, answer.qr, answer.rcode, answer.qdcount) == (0xABCD, 1, 2, 0)
    assert error_for_unparsed(b"\x01", RCODE_SERVFAIL) is None


def test_compression_pointers_are_followed_and_loops_refused() -> None:
    # "www" then a pointer to "example.com" at offset 0.
    message = b"\x07example\x03com\x00" + b"\x03www\xc0\x00"
    assert read_name(memoryview(message), 13) == ("www.example.com", 19, True)
    with pytest.raises(IntegrityError) as info:
        read_name(memoryview(b"\xc0\x00"), 0)
    assert info.value.reason == "dns_pointer_loop"


def test_refusals() -> None:
    with pytest.raises(IntegrityError):
        DnsQuery.parse(query()[:11])
    with pytest.raises(SanityError):
        DnsQuery.parse(bytes(DNS(id=1, qd=[])))
    with pytest.raises(SanityError):
        DnsQuery.parse(b"\0" * 12 + b"\0\x01" + b"\xc0\x0c\0\x01\0\x01")
    with pytest.raises(IntegrityError) as info:
        DnsQuery.parse(b"\0\0\1\0\0\1\0\0\0\0\0\0" + (b"\x3f" + b"a" * 63) * 5 + b"\0\0\1\0\1")
    assert info.value.reason == "dns_name_too_long"
    with pytest.raises(SanityError) as info:
        DnsQuery.parse(b"\0\0\1\0\0\1\0\0\0\0\0\0\x41")
    assert info.value.reason == "dns_bad_label"


def test_opt_record_is_read_past_every_section() -> None:
    raw = bytes(
        DNS(
            id=7,
            qd=[DNSQR(qname="first.test"), DNSQR(qname="second.test", qtype="AAAA")],
            an=DNSRR(rrname="first.test", rdata="192.0.2.1"),
            ns=DNSRR(rrname="first.test", type="NS", rdata="ns.first.test"),
            ar=[
                DNSRR(rrname="ns.first.test", rdata="192.0.2.2"),
                DNSRROPT(
                    rclass=1232, version=3, z=0x8000, rdata=[EDNS0TLV(optcode=10, optdata=b"c" * 8)]
                ),
            ],
        )
    )
    parsed = DnsQuery.parse(raw)
    assert parsed.question.name == "first.test"
    assert parsed.edns == Edns(1232, 3, dnssec_ok=True)
    assert DnsQuery.parse(query()).edns is None
    plain = DnsQuery.parse(bytes(DNS(qd=DNSQR(qname="a.test"), ar=DNSRROPT(rclass=100, z=0))))
    assert plain.edns == Edns(100, 0, dnssec_ok=False)
    assert plain.udp_limit == 512  # RFC 6891 §6.2.5: below 512 means 512
    assert DnsQuery.parse(query()).udp_limit == 512
    assert parsed.udp_limit == 1232


def test_our_opt_record_as_scapy_reads_it() -> None:
    asked = DnsQuery.parse(
        bytes(DNS(id=9, qd=DNSQR(qname="a.test"), ar=DNSRROPT(version=2, z=0x8000)))
    )
    raw = reply(asked, RCODE_BADVERS, udp_size=1452)
    answer = DNS(raw)
    assert (answer.rcode, answer.ancount, answer.arcount) == (0, 0, 1)
    opt = answer.ar[0]
    assert (opt.rclass, opt.extrcode, opt.version, int(opt.z), opt.rdata) == (
        1452,
        1,
        0,
        0x8000,
        [],
    )
    assert raw[-11:] == b"\x00\x00\x29\x05\xac\x01\x00\x80\x00\x00\x00"


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (DNS(qd=DNSQR(qname="a.test"), ar=[DNSRROPT(), DNSRROPT()]), "dns_opt_twice"),
        (DNS(qd=DNSQR(qname="a.test"), arcount=1), "dns_truncated"),
        (DNS(qd=DNSQR(qname="a.test"), ancount=1), "dns_truncated"),
        (DNS(qd=DNSQR(qname="a.test"), qdcount=2), "dns_truncated"),
    ],
)
def test_records_the_header_counts_must_be_there(message: DNS, reason: str) -> None:
    raw = bytes(message)
    if reason == "dns_truncated":
        raw += b"\x00\x00"  # a root name, then nothing
    with pytest.raises(WireError) as info:
        DnsQuery.parse(raw)
    assert info.value.reason == reason


def test_rdata_longer_than_the_message_is_truncated() -> None:
    raw = bytearray(
        bytes(
            DNS(
                qd=DNSQR(qname="a.test"),
                ar=DNSRROPT(rdata=[EDNS0TLV(optcode=10, optdata=b"c" * 8)]),
            )
        )
    )
    raw[-13] += 1  # RDLEN one more than there is
    with pytest.raises(IntegrityError) as info:
        DnsQuery.parse(bytes(raw))
    assert info.value.reason == "dns_truncated"


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_wire_errors(data: bytes) -> None:
    with contextlib.suppress(WireError):
        DnsQuery.parse(data)


@given(st.data())
def test_mutated_queries_raise_only_wire_errors(data: st.DataObject) -> None:
    raw = bytearray(query("a.b.example"))
    for _ in range(data.draw(st.integers(1, 8))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    with contextlib.suppress(WireError):
        DnsQuery.parse(bytes(raw[:cut]))
