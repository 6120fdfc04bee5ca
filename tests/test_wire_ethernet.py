"""Ethernet II: round trips, scapy as oracle, and refusal of tagged and 802.3 frames."""

from __future__ import annotations

import pytest
from scapy.layers.l2 import ARP, Dot1Q, Ether

from slirpnet.wire.errors import IntegrityError, SanityError
from slirpnet.wire.ethernet import (
    BROADCAST,
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    EthernetFrame,
    format_mac,
    is_multicast,
    parse_mac,
)

GUEST = parse_mac("52:54:00:12:34:56")
GATEWAY = parse_mac("52:55:0a:00:02:02")


def test_round_trip() -> None:
    frame = EthernetFrame(BROADCAST, GUEST, ETHERTYPE_IPV4, b"payload")
    assert EthernetFrame.parse(frame.encode()) == frame


def test_scapy_built_frame_parses() -> None:
    raw = bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src="52:54:00:12:34:56") / ARP())
    frame = EthernetFrame.parse(raw)
    assert frame.dst == BROADCAST
    assert frame.src == GUEST
    assert frame.ethertype == ETHERTYPE_ARP
    assert bytes(frame.payload) == raw[14:]


def test_scapy_dissects_our_frame() -> None:
    raw = EthernetFrame(GATEWAY, GUEST, ETHERTYPE_ARP, bytes(ARP())).encode()
    dissected = Ether(raw)
    assert dissected.dst == "52:55:0a:00:02:02"
    assert dissected.src == "52:54:00:12:34:56"
    assert dissected.type == ETHERTYPE_ARP
    assert ARP in dissected


def test_payload_is_a_view_not_a_copy() -> None:
    raw = bytearray(EthernetFrame(BROADCAST, GUEST, ETHERTYPE_IPV4, b"abc").encode())
    frame = EthernetFrame.parse(raw)
    raw[14] = ord("x")
    assert bytes(frame.payload) == b"xbc"


@pytest.mark.parametrize("length", [0, 1, 13])
def test_truncated(length: int) -> None:
    with pytest.raises(IntegrityError) as info:
        EthernetFrame.parse(b"\x00" * length)
    assert info.value.reason == "eth_truncated"


def test_vlan_tagged_frame_is_refused() -> None:
    raw = bytes(Ether(src="52:54:00:12:34:56") / Dot1Q(vlan=5) / ARP())
    with pytest.raises(SanityError) as info:
        EthernetFrame.parse(raw)
    assert info.value.reason == "eth_vlan_tagged"


def test_8023_length_field_is_refused() -> None:
    with pytest.raises(SanityError) as info:
        EthernetFrame.parse(BROADCAST + GUEST + b"\x00\x2e" + b"\0" * 46)
    assert info.value.reason == "eth_not_ethernet_ii"


def test_mac_helpers() -> None:
    assert format_mac(GUEST) == "52:54:00:12:34:56"
    assert parse_mac("52-54-00-12-34-56") == GUEST
    assert is_multicast(BROADCAST)
    assert is_multicast(parse_mac("01:00:5e:00:00:01"))
    assert not is_multicast(GUEST)
    for bad in ("52:54:00:12:34", "52:54:00:12:34:5g", "525400123456"):
        with pytest.raises(ValueError):
            parse_mac(bad)
