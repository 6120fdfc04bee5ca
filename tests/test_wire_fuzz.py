"""Every parser, fed random bytes and mutations of valid packets, raises only WireError."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether

from slirpnet.wire.arp import ArpPacket
from slirpnet.wire.dhcp import DhcpMessage
from slirpnet.wire.dns import DnsQuery
from slirpnet.wire.errors import WireError
from slirpnet.wire.ethernet import EthernetFrame
from slirpnet.wire.icmp import IcmpMessage
from slirpnet.wire.ipv4 import IPv4Packet
from slirpnet.wire.tcp import TcpSegment
from slirpnet.wire.udp import UdpDatagram

SRC, DST = IPv4Address("10.0.2.15"), IPv4Address("10.0.2.2")


def parse_quoted(data: bytes) -> object:
    return IcmpMessage.parse(data, verify_checksum=False).quoted()


def parse_dhcp(data: bytes) -> object:
    message = DhcpMessage.parse(data)
    # The typed accessors read option values lazily: they are parsers too.
    return [
        getattr(message, name)
        for name in (
            "message_type",
            "subnet_mask",
            "routers",
            "dns_servers",
            "hostname",
            "domain_name",
            "interface_mtu",
            "requested_ip",
            "lease_time",
            "server_id",
            "parameter_request_list",
            "max_message_size",
            "client_id",
            "domain_search",
        )
    ]


# Each parser with a valid sample that mutations start from.
PARSERS: dict[str, tuple[Callable[[bytes], object], bytes]] = {
    "ethernet": (EthernetFrame.parse, bytes(Ether() / ARP())),
    "arp": (ArpPacket.parse, bytes(ARP(psrc="10.0.2.15", pdst="10.0.2.2"))),
    "ipv4": (
        lambda b: IPv4Packet.parse(b, verify_checksum=False),
        bytes(IP(src="10.0.2.15", dst="10.0.2.2", options=b"\x01\x01\x01\x00") / b"payload"),
    ),
    "icmp": (
        lambda b: IcmpMessage.parse(b, verify_checksum=False),
        bytes(ICMP(id=1, seq=2) / b"x"),
    ),
    "icmp_quote": (
        parse_quoted,
        bytes(ICMP(type=3, code=3) / IP(src="10.0.2.15", dst="10.0.2.2") / UDP())[:36],
    ),
    "udp": (
        lambda b: UdpDatagram.parse(b, SRC, DST, verify_checksum=False),
        bytes(UDP(sport=1, dport=2) / b"data"),
    ),
    "tcp": (
        lambda b: TcpSegment.parse(b, SRC, DST, verify_checksum=False),
        bytes(TCP(options=[("MSS", 1460), ("SAckOK", b""), ("WScale", 7)]) / b"data"),
    ),
    "dhcp": (
        parse_dhcp,
        bytes(
            BOOTP(chaddr=b"\x52\x54\x00\x12\x34\x56")
            / DHCP(options=[("message-type", "request"), ("hostname", "vm"), "end"])
        ),
    ),
    "dns": (DnsQuery.parse, bytes(DNS(qd=DNSQR(qname="a.example.test")))),
}


def must_not_raise_foreign(parse: Callable[[bytes], object], data: bytes) -> None:
    with contextlib.suppress(WireError):
        parse(data)


@pytest.mark.parametrize("name", sorted(PARSERS))
@settings(max_examples=300)
@given(data=st.binary(max_size=400))
def test_random_bytes(name: str, data: bytes) -> None:
    must_not_raise_foreign(PARSERS[name][0], data)


@pytest.mark.parametrize("name", sorted(PARSERS))
@settings(max_examples=300)
@given(draw=st.data())
def test_mutated_valid_packets(name: str, draw: st.DataObject) -> None:
    parse, sample = PARSERS[name]
    data = bytearray(sample)
    for _ in range(draw.draw(st.integers(1, 6))):
        action = draw.draw(st.sampled_from(["set", "insert", "delete", "truncate"]))
        if not data:
            break
        at = draw.draw(st.integers(0, len(data) - 1))
        if action == "set":
            data[at] = draw.draw(st.integers(0, 255))
        elif action == "insert":
            data[at:at] = draw.draw(st.binary(min_size=1, max_size=8))
        elif action == "delete":
            del data[at]
        else:
            del data[at:]
    must_not_raise_foreign(parse, bytes(data))


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_valid_samples_parse(name: str) -> None:
    parse, sample = PARSERS[name]
    parse(sample)
