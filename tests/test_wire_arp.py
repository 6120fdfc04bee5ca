"""ARP: round trips, scapy as oracle, probes, padding and refusals."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from scapy.layers.l2 import ARP

from slirpnet.wire.arp import OP_REPLY, OP_REQUEST, ArpPacket
from slirpnet.wire.errors import IntegrityError, SanityError
from slirpnet.wire.ethernet import parse_mac

GUEST = parse_mac("52:54:00:12:34:56")
GATEWAY = parse_mac("52:55:0a:00:02:02")


def test_scapy_request_parses_and_padding_is_ignored() -> None:
    raw = bytes(ARP(op=1, hwsrc="52:54:00:12:34:56", psrc="10.0.2.15", pdst="10.0.2.2"))
    packet = ArpPacket.parse(raw + b"\0" * 18)
    assert packet == ArpPacket(
        OP_REQUEST, GUEST, IPv4Address("10.0.2.15"), b"\0" * 6, IPv4Address("10.0.2.2")
    )
    assert not packet.is_probe


def test_reply_is_dissected_by_scapy() -> None:
    request = ArpPacket(
        OP_REQUEST, GUEST, IPv4Address("10.0.2.15"), b"\0" * 6, IPv4Address("10.0.2.2")
    )
    dissected = ARP(request.reply(GATEWAY).encode())
    assert dissected.op == OP_REPLY
    assert (dissected.hwsrc, dissected.psrc) == ("52:55:0a:00:02:02", "10.0.2.2")
    assert (dissected.hwdst, dissected.pdst) == ("52:54:00:12:34:56", "10.0.2.15")


def test_round_trip() -> None:
    packet = ArpPacket(OP_REPLY, GATEWAY, IPv4Address("10.0.2.2"), GUEST, IPv4Address("10.0.2.15"))
    assert ArpPacket.parse(packet.encode()) == packet


def test_probe() -> None:
    raw = bytes(ARP(op=1, hwsrc="52:54:00:12:34:56", psrc="0.0.0.0", pdst="10.0.2.15"))
    assert ArpPacket.parse(raw).is_probe


def test_truncated() -> None:
    with pytest.raises(IntegrityError) as info:
        ArpPacket.parse(bytes(ARP())[:27])
    assert info.value.reason == "arp_truncated"


@pytest.mark.parametrize("header", ["0006 0800 06 04", "0001 86dd 06 04", "0001 0800 08 04"])
def test_not_ipv4_over_ethernet(header: str) -> None:
    raw = bytes.fromhex(header) + bytes(ARP(op=1, psrc="10.0.2.15", pdst="10.0.2.2"))[6:]
    with pytest.raises(SanityError) as info:
        ArpPacket.parse(raw)
    assert info.value.reason == "arp_not_ipv4_ethernet"


def test_bad_operation() -> None:
    with pytest.raises(SanityError) as info:
        ArpPacket.parse(bytes(ARP(op=3)))
    assert info.value.reason == "arp_bad_op"
