"""Every parser, fed random bytes and mutations of valid packets, raises only WireError."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.dhcp6 import (
    DUID_LL,
    DHCP6_Solicit,
    DHCP6OptClientId,
    DHCP6OptDNSDomains,
    DHCP6OptIA_NA,
    DHCP6OptOptReq,
)
from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6NDOptDNSSL,
    ICMPv6NDOptPrefixInfo,
    ICMPv6NDOptRDNSS,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    RouterAlert,
)
from scapy.layers.l2 import ARP, Ether

from slirpnet.wire import ndp
from slirpnet.wire.arp import ArpPacket
from slirpnet.wire.dhcp import DhcpMessage
from slirpnet.wire.dhcpv6 import Dhcpv6Message, duid_ll
from slirpnet.wire.dns import DnsQuery
from slirpnet.wire.errors import WireError
from slirpnet.wire.ethernet import EthernetFrame
from slirpnet.wire.icmp import IcmpMessage
from slirpnet.wire.icmpv6 import Icmpv6Message
from slirpnet.wire.ipv4 import IPv4Packet
from slirpnet.wire.ipv6 import IPv6Packet
from slirpnet.wire.tcp import TcpSegment
from slirpnet.wire.udp import UdpDatagram

SRC, DST = IPv4Address("10.0.2.15"), IPv4Address("10.0.2.2")
SRC6, DST6 = IPv6Address("fe80::5054:ff:fe12:3456"), IPv6Address("fe80::2")


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


def parse_quoted6(data: bytes) -> object:
    return Icmpv6Message.parse(data, SRC6, DST6, verify_checksum=False).quoted()


def parse_ndp(data: bytes) -> object:
    message = ndp.parse(Icmpv6Message.parse(data, SRC6, DST6, verify_checksum=False))
    ndp.check_ip(IPv6Packet(SRC6, DST6, 58, b"", ndp.HOP_LIMIT), message)
    return message


def parse_dhcpv6(data: bytes) -> object:
    message = Dhcpv6Message.parse(data)
    message.check_for_server(duid_ll(b"\x52\x54\x00\x00\x00\x02"))
    # Parsing checked every option these read: they must not raise at all.
    return [
        getattr(message, name)
        for name in (
            "client_id",
            "server_id",
            "option_request",
            "elapsed_time",
            "rapid_commit",
            "has_ia_na",
            "has_ia",
            "status",
            "dns_servers",
            "domain_list",
        )
    ]


def icmpv6_bytes(layer: object) -> bytes:
    return bytes(IPv6(src=str(SRC6), dst=str(DST6)) / layer)[40:]


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
    "ipv6": (
        IPv6Packet.parse,
        bytes(
            IPv6(src=str(SRC6), dst=str(DST6))
            / IPv6ExtHdrHopByHop(options=[RouterAlert()])
            / IPv6ExtHdrRouting(segleft=0, addresses=[str(DST6)])
            / IPv6ExtHdrDestOpt()
            / UDP()
            / b"data"
        ),
    ),
    "udp6": (
        lambda b: UdpDatagram.parse(b, SRC6, DST6),
        bytes(IPv6(src=str(SRC6), dst=str(DST6)) / UDP(sport=1, dport=2) / b"data")[40:],
    ),
    "icmpv6": (
        lambda b: Icmpv6Message.parse(b, SRC6, DST6, verify_checksum=False),
        icmpv6_bytes(ICMPv6DestUnreach()),
    ),
    "icmpv6_quote": (
        parse_quoted6,
        icmpv6_bytes(
            ICMPv6DestUnreach(code=4)
            / IPv6(src=str(DST6), dst=str(SRC6))
            / IPv6ExtHdrDestOpt()
            / UDP()
        ),
    ),
    "ndp_ra": (
        parse_ndp,
        icmpv6_bytes(
            ICMPv6ND_RA()
            / ICMPv6NDOptSrcLLAddr(lladdr="52:54:00:00:00:02")
            / ICMPv6NDOptPrefixInfo(prefix="fec0::", prefixlen=64)
            / ICMPv6NDOptRDNSS(dns=["fec0::3"])
            / ICMPv6NDOptDNSSL(searchlist=["example.test"])
        ),
    ),
    "ndp_ns": (
        parse_ndp,
        icmpv6_bytes(ICMPv6ND_NS(tgt="fec0::2") / ICMPv6NDOptSrcLLAddr()),
    ),
    "dhcpv6": (
        parse_dhcpv6,
        bytes(
            DHCP6_Solicit(trid=7)
            / DHCP6OptClientId(duid=DUID_LL(lladdr="52:54:00:12:34:56"))
            / DHCP6OptOptReq(reqopts=[23, 24])
            / DHCP6OptIA_NA()
            / DHCP6OptDNSDomains(dnsdomains=["example.test"])
        ),
    ),
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
