"""DNS: reading the question, local answers and errors, scapy as oracle, no loops."""

from __future__ import annotations

import contextlib
from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.dns import DNS, DNSQR

from slirpnet.wire.dns import (
    RCODE_NOERROR,
    RCODE_SERVFAIL,
    TYPE_AAAA,
    DnsQuery,
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
    raw = reply(parsed, RCODE_NOERROR, (IPv4Address("10.0.2.2"),), ttl=60, authoritative=True)
    answer = DNS(raw)
    assert (answer.id, answer.qr, answer.rd, answer.ra, answer.aa) == (0x1234, 1, 1, 1, 1)
    assert answer.rcode == RCODE_NOERROR
    assert answer.qd[0].qname == b"Host.Slirpnet.Internal."
    assert answer.an[0].rdata == "10.0.2.2"
    assert answer.an[0].ttl == 60


def test_servfail_echoes_the_question() -> None:
    answer = DNS(reply(DnsQuery.parse(query(qtype="MX")), RCODE_SERVFAIL))
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
