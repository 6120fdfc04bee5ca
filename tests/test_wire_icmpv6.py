"""ICMPv6: echo, errors quoting up to the minimum MTU, pseudo-header checksums, scapy as oracle."""

from __future__ import annotations

from ipaddress import IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    ICMPv6ParamProblem,
    ICMPv6TimeExceeded,
    IPerror6,
    IPv6,
    IPv6ExtHdrDestOpt,
    UDPerror,
)
from scapy.packet import Packet, Raw
from scapy.utils import checksum as scapy_checksum

from slirpnet.wire import icmpv6
from slirpnet.wire.errors import IntegrityError, SanityError
from slirpnet.wire.icmpv6 import Icmpv6Message
from slirpnet.wire.ipv6 import MIN_MTU, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, IPv6Packet

GUEST = IPv6Address("fec0::5054:ff:fe12:3456")
GATEWAY = IPv6Address("fec0::2")
REMOTE = IPv6Address("2001:db8::80")


def packet_of(message: bytes, src: IPv6Address = GATEWAY, dst: IPv6Address = GUEST) -> IPv6:
    """``message`` as scapy dissects it in an IPv6 packet, checksum as sent."""
    return IPv6(bytes(IPv6(src=str(src), dst=str(dst), nh=58) / Raw(message)))


def in_ipv6(message: bytes) -> Packet:
    return packet_of(message)[1]


def assert_checksum_valid(message: bytes, src: IPv6Address, dst: IPv6Address) -> None:
    """scapy's checksum over the RFC 8200 §8.1 pseudo-header and the message is zero."""
    pseudo = src.packed + dst.packed + len(message).to_bytes(4, "big") + bytes((0, 0, 0, 58))
    assert scapy_checksum(pseudo + message) == 0


def reason_for(data: bytes, src: IPv6Address = GUEST, dst: IPv6Address = GATEWAY) -> str:
    with pytest.raises((IntegrityError, SanityError)) as info:
        Icmpv6Message.parse(data, src, dst)
    return info.value.reason


def scapy_icmp(layer: object, src: IPv6Address = GUEST, dst: IPv6Address = GATEWAY) -> bytes:
    """The ICMPv6 bytes scapy sends from ``src`` to ``dst``, checksum filled in."""
    return bytes(IPv6(src=str(src), dst=str(dst)) / layer)[40:]


def test_scapy_echo_request_parses() -> None:
    raw = scapy_icmp(ICMPv6EchoRequest(id=0x1234, seq=7, data=b"ping data"))
    message = Icmpv6Message.parse(raw, GUEST, GATEWAY)
    assert (message.type, message.code) == (icmpv6.TYPE_ECHO_REQUEST, 0)
    assert (message.ident, message.seq, bytes(message.payload)) == (0x1234, 7, b"ping data")
    assert not message.is_error


def test_echo_reply_is_dissected_by_scapy() -> None:
    request = Icmpv6Message.parse(
        scapy_icmp(ICMPv6EchoRequest(id=0xBEEF, seq=65535, data=b"x" * 57)), GUEST, GATEWAY
    )
    raw = request.echo_reply().encode(GATEWAY, GUEST)
    dissected = in_ipv6(raw)
    assert isinstance(dissected, ICMPv6EchoReply)
    assert (dissected.id, dissected.seq, dissected.data) == (0xBEEF, 65535, b"x" * 57)
    assert_checksum_valid(raw, GATEWAY, GUEST)
    built = Icmpv6Message.echo(icmpv6.TYPE_ECHO_REPLY, 0xBEEF, 65535, b"x" * 57)
    assert built.encode(GATEWAY, GUEST) == raw


def test_odd_length_message_checksum() -> None:
    raw = Icmpv6Message.echo(icmpv6.TYPE_ECHO_REQUEST, 1, 2, b"odd").encode(GUEST, REMOTE)
    assert_checksum_valid(raw, GUEST, REMOTE)
    assert bytes(Icmpv6Message.parse(raw, GUEST, REMOTE).payload) == b"odd"


def test_port_unreachable_quotes_the_whole_small_datagram() -> None:
    original = bytes(IPv6(src=str(GUEST), dst=str(GATEWAY)) / UDP(sport=5000, dport=53) / b"q")
    message = Icmpv6Message.destination_unreachable(icmpv6.CODE_PORT_UNREACHABLE, original)
    raw = message.encode(GATEWAY, GUEST)
    dissected = in_ipv6(raw)
    assert isinstance(dissected, ICMPv6DestUnreach)
    assert dissected.code == 4
    assert dissected[IPerror6].src == str(GUEST)
    assert (dissected[UDPerror].sport, dissected[UDPerror].dport) == (5000, 53)
    assert_checksum_valid(raw, GATEWAY, GUEST)
    assert raw[8:] == original
    quoted = Icmpv6Message.parse(raw, GATEWAY, GUEST).quoted()
    assert (quoted.src, quoted.dst, quoted.next_header) == (GUEST, GATEWAY, PROTO_UDP)
    assert bytes(quoted.transport) == original[40:48]


@pytest.mark.parametrize(
    "code",
    [
        icmpv6.CODE_NO_ROUTE,
        icmpv6.CODE_ADMIN_PROHIBITED,
        icmpv6.CODE_ADDRESS_UNREACHABLE,
        icmpv6.CODE_PORT_UNREACHABLE,
    ],
)
def test_destination_unreachable_codes(code: int) -> None:
    original = bytes(IPv6(src=str(GUEST), dst=str(REMOTE)) / TCP(sport=40000, dport=80))
    raw = Icmpv6Message.destination_unreachable(code, original).encode(GATEWAY, GUEST)
    assert (in_ipv6(raw).type, in_ipv6(raw).code) == (1, code)


def test_padding_after_the_payload_length_is_not_quoted() -> None:
    original = bytes(IPv6(src=str(GUEST), dst=str(REMOTE)) / UDP() / b"ab")
    message = Icmpv6Message.destination_unreachable(0, original + b"\0" * 16)
    assert bytes(message.payload) == original


@pytest.mark.parametrize("size", [1232, 1233, 1500, 9000, 65000])
def test_packet_too_big_quotes_what_fits_in_the_minimum_mtu(size: int) -> None:
    original = bytes(IPv6(src=str(GUEST), dst=str(REMOTE)) / UDP() / bytes(size - 48))
    message = Icmpv6Message.packet_too_big(1500, original)
    raw = message.encode(GATEWAY, GUEST)
    packet = IPv6Packet(GATEWAY, GUEST, PROTO_ICMPV6, raw, 255).encode()
    assert len(packet) == min(MIN_MTU, 48 + size)
    dissected = IPv6(packet)[ICMPv6PacketTooBig]
    assert dissected.mtu == 1500
    assert bytes(dissected.payload)[:48] == original[:48]
    assert Icmpv6Message.parse(raw, GATEWAY, GUEST).mtu == 1500
    assert_checksum_valid(raw, GATEWAY, GUEST)


def test_time_exceeded_and_parameter_problem() -> None:
    original = bytes(IPv6(src=str(GUEST), dst=str(REMOTE), hlim=1) / UDP())
    exceeded = Icmpv6Message.time_exceeded(icmpv6.CODE_HOP_LIMIT_EXCEEDED, original)
    assert isinstance(in_ipv6(exceeded.encode(GATEWAY, GUEST)), ICMPv6TimeExceeded)
    problem = Icmpv6Message.parameter_problem(icmpv6.CODE_UNRECOGNIZED_NEXT_HEADER, 6, original)
    dissected = in_ipv6(problem.encode(GATEWAY, GUEST))
    assert isinstance(dissected, ICMPv6ParamProblem)
    assert (dissected.code, dissected.ptr) == (1, 6)


def test_quote_behind_extension_headers() -> None:
    original = bytes(
        IPv6(src=str(GUEST), dst=str(REMOTE)) / IPv6ExtHdrDestOpt() / TCP(sport=1234, dport=443)
    )
    raw = scapy_icmp(ICMPv6DestUnreach(code=1) / original[:64], REMOTE, GUEST)
    quoted = Icmpv6Message.parse(raw, REMOTE, GUEST).quoted()
    assert (quoted.next_header, bytes(quoted.transport)) == (PROTO_TCP, original[48:56])


def test_round_trip() -> None:
    message = Icmpv6Message(icmpv6.TYPE_PACKET_TOO_BIG, 0, 1280, b"\x60" + bytes(47))
    assert Icmpv6Message.parse(message.encode(GUEST, GATEWAY), GUEST, GATEWAY) == message


@given(
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 0xFFFFFFFF),
    st.binary(max_size=300),
    st.integers(0, 2**128 - 1).map(IPv6Address),
)
def test_hypothesis_round_trip(
    type_: int, code: int, rest: int, body: bytes, src: IPv6Address
) -> None:
    message = Icmpv6Message(type_, code, rest, body)
    raw = message.encode(src, GATEWAY)
    assert Icmpv6Message.parse(raw, src, GATEWAY) == Icmpv6Message(
        type_, code, rest, memoryview(body)
    )
    assert_checksum_valid(raw, src, GATEWAY)


# --- refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize("length", range(8))
def test_truncated(length: int) -> None:
    raw = scapy_icmp(ICMPv6EchoRequest())
    assert reason_for(raw[:length]) == "icmpv6_truncated"


@pytest.mark.parametrize("position", range(12))
def test_bad_checksum(position: int) -> None:
    raw = bytearray(scapy_icmp(ICMPv6EchoRequest(data=b"abcd")))
    raw[position] ^= 0x10
    assert reason_for(bytes(raw)) == "icmpv6_bad_checksum"
    Icmpv6Message.parse(raw, GUEST, GATEWAY, verify_checksum=False)


def test_checksum_covers_the_pseudo_header() -> None:
    raw = scapy_icmp(ICMPv6EchoRequest())
    assert reason_for(raw, GUEST, REMOTE) == "icmpv6_bad_checksum"
    assert reason_for(raw, REMOTE, GATEWAY) == "icmpv6_bad_checksum"


def test_quote_refusals() -> None:
    def quoted_reason(message: Icmpv6Message) -> str:
        with pytest.raises((IntegrityError, SanityError)) as info:
            message.quoted()
        return info.value.reason

    assert quoted_reason(Icmpv6Message(icmpv6.TYPE_ECHO_REPLY, 0, 0, b"")) == "icmpv6_not_an_error"
    short = bytes(IPv6(src=str(GUEST), dst=str(REMOTE)) / UDP())[:39]
    assert quoted_reason(Icmpv6Message(1, 4, 0, short)) == "icmpv6_quote_truncated"
    assert quoted_reason(Icmpv6Message(1, 4, 0, b"\x45" + bytes(47))) == "icmpv6_quote_not_ipv6"
    # A quoted extension header cut by the quote's end.
    cut = bytes(IPv6(src=str(GUEST), dst=str(REMOTE)) / IPv6ExtHdrDestOpt() / UDP())[:44]
    assert quoted_reason(Icmpv6Message(1, 4, 0, cut)) == "ipv6_ext_overrun"
