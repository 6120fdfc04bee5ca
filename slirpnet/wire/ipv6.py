"""IPv6 packets (RFC 8200 §3) and their extension headers (§4).

Parsing honours the payload length, so Ethernet padding is never data, and walks
the extension headers to the upper layer: ``next_header`` is the upper-layer
protocol and ``payload`` its data.  The walk is bounded: Hop-by-Hop only first
(§4.1), Routing at most once and Destination Options at most twice (§4.1's
order), so at most four headers are read, each inside the payload.  Fragments
are refused (``ipv6_fragment``): only the source fragments in IPv6 (§5), and a
guest that honours the link's MTU has no cause to.  Jumbograms (RFC 2675) are
refused too: no link slirpnet serves carries one.

Encoding writes no extension headers: the gateway never needs one.  The helpers
at the end give the addresses the core answers on: the link-local address of a
MAC (RFC 4291 App. A), solicited-node groups (RFC 4291 §2.7.1) and the Ethernet
address of a multicast group (RFC 2464 §7).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from functools import lru_cache
from ipaddress import IPv6Address
from typing import Final

from attrs import frozen

from slirpnet.wire.buffer import Bytes, require
from slirpnet.wire.errors import IntegrityError, SanityError

# Next-header values (IANA "Assigned Internet Protocol Numbers").
PROTO_HOP_BY_HOP: Final = 0
PROTO_TCP: Final = 6
PROTO_UDP: Final = 17
PROTO_ROUTING: Final = 43
PROTO_FRAGMENT: Final = 44
PROTO_ICMPV6: Final = 58
PROTO_NONE: Final = 59  # §4.7: nothing follows
PROTO_DESTINATION_OPTIONS: Final = 60

HEADER_LEN: Final = 40
DEFAULT_HOP_LIMIT: Final = 64
MIN_MTU: Final = 1280  # §5
MAX_PAYLOAD_LEN: Final = 0xFFFF

ALL_NODES = IPv6Address("ff02::1")  # RFC 4291 §2.7.1
ALL_ROUTERS = IPv6Address("ff02::2")
UNSPECIFIED = IPv6Address("::")

_HEADER = struct.Struct("!IHBB16s16s")  # version/class/flow, length, next header, hops
_OPTION_PAD1 = 0  # §4.2
_OPTION_PADN = 1
_OPTION_JUMBO = 0xC2  # RFC 2675 §2
_SOLICITED_NODE = int(IPv6Address("ff02::1:ff00:0"))
_LINK_LOCAL = int(IPv6Address("fe80::"))


@lru_cache(maxsize=1024)
def _address(packed: bytes) -> IPv6Address:
    """A guest's few addresses come again and again: build each one once."""
    return IPv6Address(packed)


@frozen
class IPv6Packet:
    src: IPv6Address
    dst: IPv6Address
    next_header: int  # the upper-layer protocol, after any extension headers
    payload: Bytes  # the upper-layer data, extension headers skipped
    hop_limit: int = DEFAULT_HOP_LIMIT
    traffic_class: int = 0
    flow_label: int = 0

    @classmethod
    def parse(cls, data: Bytes) -> IPv6Packet:
        view = memoryview(data)
        require(view, HEADER_LEN, "ipv6_truncated", "IPv6 header")
        first, payload_len, next_header, hop_limit, src, dst = _HEADER.unpack_from(view)
        if first >> 28 != 6:
            raise SanityError("ipv6_bad_version", f"version {first >> 28}")
        if payload_len == 0 and next_header == PROTO_HOP_BY_HOP:
            # RFC 2675 §3: a jumbogram's length is in a Hop-by-Hop option, beyond the
            # zero payload length; look for it in what is held to name the refusal.
            _refuse_jumbogram(view)
        end = HEADER_LEN + payload_len
        require(view, end, "ipv6_truncated", f"payload length {payload_len}")
        protocol, start = upper_layer(view, next_header, HEADER_LEN, end)
        return cls(
            src=_address(src),
            dst=_address(dst),
            next_header=protocol,
            payload=view[start:end],
            hop_limit=hop_limit,
            traffic_class=(first >> 20) & 0xFF,
            flow_label=first & 0xFFFFF,
        )

    def encode_header(self) -> bytes:
        """The fixed header alone, for a payload of ``len(self.payload)`` bytes."""
        length = memoryview(self.payload).nbytes
        if length > MAX_PAYLOAD_LEN:
            raise ValueError(f"an IPv6 payload of {length} bytes needs a jumbogram")
        first = 6 << 28 | self.traffic_class << 20 | self.flow_label
        return _HEADER.pack(
            first, length, self.next_header, self.hop_limit, self.src.packed, self.dst.packed
        )

    def encode(self) -> bytes:
        return b"".join((self.encode_header(), self.payload))


def upper_layer(view: memoryview, next_header: int, offset: int, end: int) -> tuple[int, int]:
    """Walk the extension headers from ``offset`` up to ``end``: the upper-layer protocol
    and the offset of its data.  Raises ``WireError`` for a header refused or overrunning.

    Each header may come only where §4.1 puts it (Hop-by-Hop first, Routing once,
    Destination Options twice), so the walk reads four headers at most.
    """
    walked = 0
    seen_routing = False
    destination_options = 0
    while True:
        if next_header == PROTO_FRAGMENT:
            raise SanityError("ipv6_fragment", f"fragment header at {offset}")
        if next_header == PROTO_HOP_BY_HOP:
            if walked:
                # §4.1: Hop-by-Hop must immediately follow the IPv6 header.
                raise SanityError("ipv6_misplaced_hop_by_hop", f"at {offset}")
        elif next_header == PROTO_ROUTING:
            if seen_routing:
                raise SanityError("ipv6_repeated_header", f"second Routing header at {offset}")
            seen_routing = True
        elif next_header == PROTO_DESTINATION_OPTIONS:
            destination_options += 1
            if destination_options > 2:
                raise SanityError("ipv6_repeated_header", f"third Destination Options at {offset}")
        else:
            return next_header, offset
        if offset + 2 > end:
            raise IntegrityError("ipv6_ext_overrun", f"header {next_header} at {offset}")
        header_end = offset + (view[offset + 1] + 1) * 8  # §4.3-4.6: in 8-byte units
        if header_end > end:
            raise IntegrityError("ipv6_ext_overrun", f"header {next_header} at {offset}")
        if next_header == PROTO_ROUTING:
            # §4.4: we know no routing type, and one with segments left is meant for a
            # node on the way to act on; ours would have to forward, so it is refused.
            if view[offset + 3]:
                raise SanityError("ipv6_routing_header", f"type {view[offset + 2]}")
        else:
            _check_options(view[offset + 2 : header_end])
        next_header = view[offset]
        offset = header_end
        walked += 1


def _option_kinds(options: memoryview) -> Iterator[int]:
    """The option types of a Hop-by-Hop or Destination Options header (RFC 8200 §4.2)."""
    position = 0
    while position < len(options):
        kind = options[position]
        yield kind
        if kind == _OPTION_PAD1:
            position += 1
            continue
        if position + 2 > len(options) or position + 2 + options[position + 1] > len(options):
            raise IntegrityError("ipv6_option_overrun", f"option {kind:#04x} at {position}")
        position += 2 + options[position + 1]


def _check_options(options: memoryview) -> None:
    for kind in _option_kinds(options):
        if kind == _OPTION_JUMBO:
            raise SanityError("ipv6_jumbogram")
        # §4.2: the two high bits say what to do with an option one does not know;
        # only 00 says skip it, the others all discard the packet.
        if kind >> 6 and kind != _OPTION_PADN:
            raise SanityError("ipv6_unknown_option", f"option {kind:#04x}")


def _refuse_jumbogram(view: memoryview) -> None:
    """Raise ``ipv6_jumbogram`` if the Hop-by-Hop header held after a zero payload length
    has the Jumbo Payload option; otherwise return, and the walk reports the overrun."""
    if len(view) < HEADER_LEN + 2:
        return
    end = min(len(view), HEADER_LEN + (view[HEADER_LEN + 1] + 1) * 8)
    try:
        if _OPTION_JUMBO in _option_kinds(view[HEADER_LEN + 2 : end]):
            raise SanityError("ipv6_jumbogram", "payload length 0")
    except IntegrityError:
        return


def link_local(mac: bytes) -> IPv6Address:
    """fe80::/64 with the modified EUI-64 interface identifier of ``mac`` (RFC 4291 App. A,
    RFC 2464 §4-5): ff:fe in the middle, the universal/local bit flipped."""
    eui = bytes((mac[0] ^ 0x02,)) + mac[1:3] + b"\xff\xfe" + mac[3:6]
    return IPv6Address(_LINK_LOCAL | int.from_bytes(eui, "big"))


def solicited_node(address: IPv6Address) -> IPv6Address:
    """The solicited-node multicast group of ``address`` (RFC 4291 §2.7.1)."""
    return IPv6Address(_SOLICITED_NODE | int(address) & 0xFFFFFF)


def multicast_mac(group: IPv6Address) -> bytes:
    """The Ethernet destination of an IPv6 multicast packet: 33:33 and the low 32 bits
    of the group (RFC 2464 §7)."""
    return b"\x33\x33" + group.packed[12:]
