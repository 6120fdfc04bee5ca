"""ICMP: echo, errors with their quote, checksums, scapy as oracle."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, UDPerror

from slirpnet.wire.errors import IntegrityError, SanityError
from slirpnet.wire.icmp import (
    CODE_FRAGMENTATION_NEEDED,
    CODE_PORT_UNREACHABLE,
    TYPE_DEST_UNREACHABLE,
    TYPE_ECHO_REPLY,
    TYPE_ECHO_REQUEST,
    TYPE_TIME_EXCEEDED,
    IcmpMessage,
)
from slirpnet.wire.ipv4 import PROTO_TCP, PROTO_UDP


def test_scapy_echo_request_parses() -> None:
    message = IcmpMessage.parse(bytes(ICMP(type=8, id=0x1234, seq=7) / b"ping data"))
    assert (message.type, message.code) == (TYPE_ECHO_REQUEST, 0)
    assert (message.ident, message.seq) == (0x1234, 7)
    assert bytes(message.payload) == b"ping data"
    assert not message.is_error


def test_echo_reply_is_dissected_by_scapy() -> None:
    raw = IcmpMessage.echo(TYPE_ECHO_REPLY, 0xBEEF, 65535, b"x" * 57).encode()
    dissected = ICMP(raw)
    assert (dissected.type, dissected.id, dissected.seq) == (0, 0xBEEF, 65535)
    assert bytes(dissected.payload) == b"x" * 57
    del dissected.chksum
    assert ICMP(bytes(dissected)).chksum == ICMP(raw).chksum


def test_port_unreachable_quotes_header_and_eight_bytes() -> None:
    original = bytes(IP(src="10.0.2.15", dst="10.0.2.2") / UDP(sport=5000, dport=53) / (b"q" * 40))
    raw = IcmpMessage.error(TYPE_DEST_UNREACHABLE, CODE_PORT_UNREACHABLE, original).encode()
    dissected = ICMP(raw)
    assert (dissected.type, dissected.code) == (3, 3)
    assert dissected[IPerror].src == "10.0.2.15"
    assert (dissected[UDPerror].sport, dissected[UDPerror].dport) == (5000, 53)
    assert len(raw) == 8 + 20 + 8
    quoted = IcmpMessage.parse(raw).quoted()
    assert (quoted.src, quoted.dst, quoted.protocol) == (
        IPv4Address("10.0.2.15"),
        IPv4Address("10.0.2.2"),
        PROTO_UDP,
    )
    assert bytes(quoted.transport) == original[20:28]


def test_fragmentation_needed_carries_the_mtu() -> None:
    original = bytes(IP() / UDP() / (b"q" * 40))
    raw = IcmpMessage.error(
        TYPE_DEST_UNREACHABLE, CODE_FRAGMENTATION_NEEDED, original, mtu=1500
    ).encode()
    assert ICMP(raw).nexthopmtu == 1500


def test_scapy_time_exceeded_quote_with_ip_options_parses() -> None:
    quote = bytes(
        IP(src="10.0.2.15", dst="127.0.0.1", options=b"\x01\x01\x01\x00")
        / TCP(sport=40000, dport=80)
    )[:32]
    message = IcmpMessage.parse(bytes(ICMP(type=11, code=0) / quote))
    assert message.type == TYPE_TIME_EXCEEDED
    quoted = message.quoted()
    assert quoted.protocol == PROTO_TCP
    assert bytes(quoted.transport) == quote[24:32]


def test_round_trip() -> None:
    message = IcmpMessage(TYPE_DEST_UNREACHABLE, 1, 0, b"\x45" + b"\0" * 27)
    assert IcmpMessage.parse(message.encode()) == message


def test_refusals() -> None:
    with pytest.raises(IntegrityError) as info:
        IcmpMessage.parse(bytes(ICMP())[:7])
    assert info.value.reason == "icmp_truncated"
    with pytest.raises(IntegrityError) as info:
        IcmpMessage.parse(bytes(ICMP(chksum=1)))
    assert info.value.reason == "icmp_bad_checksum"
    with pytest.raises(SanityError) as info:
        IcmpMessage.parse(bytes(ICMP(type=8))).quoted()
    assert info.value.reason == "icmp_not_an_error"
    with pytest.raises(IntegrityError) as info:
        IcmpMessage.parse(bytes(ICMP(type=3) / (b"\x45" + b"\0" * 10))).quoted()
    assert info.value.reason == "icmp_quote_truncated"
    with pytest.raises(SanityError) as info:
        IcmpMessage.parse(bytes(ICMP(type=3) / (b"\x60" + b"\0" * 40))).quoted()
    assert info.value.reason == "icmp_quote_not_ipv4"
