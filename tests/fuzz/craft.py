"""TCP segments a guest could plausibly send on a connection, built fast with our codecs.

Random bytes almost never match a connection's ports and sequence numbers, so on
their own they never get past the SYN.  These frames read the endpoint's state
(RCV.NXT, SND.UNA, SND.MAX) and land near it, in it or just off it, with any
flags, window, urgent pointer and options, so the fuzzer walks every TCP state.

Data is a fixed pattern of the sequence number (``guest_bytes``), and the host's
data one of the stream offset (``host_bytes``): whatever reaches the other side
can be checked byte for byte without remembering what was sent.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

from slirpnet.core.flows import TcpFlow
from slirpnet.core.sequence import seq_add, seq_diff
from slirpnet.core.tcp import TcpEndpoint
from slirpnet.wire.checksum import internet_checksum, pseudo_header_sum
from slirpnet.wire.ipv4 import PROTO_TCP, IPv4Packet

# Source ports of crafted connections; the corpus never sends from them.
CRAFT_PORTS = range(50000, 50004)

# The guest's pattern repeats every 2**16 bytes, a divisor of 2**32, so it is a function
# of the sequence number across the wrap too; the host's is one of the stream offset.
_GUEST_PERIOD = 1 << 16
_HOST_PERIOD = 241
_GUEST_PATTERN = bytes((i * 31 ^ i >> 8) & 0xFF for i in range(_GUEST_PERIOD)) * 3
_HOST_PATTERN = bytes(range(_HOST_PERIOD)) * (70000 // _HOST_PERIOD + 2)
_TCP_HEADER = struct.Struct("!HHIIHHHH")
_ETHERNET = struct.Struct("!6s6sH")
_IPV6 = struct.Struct("!IHBB16s16s")  # RFC 8200 §3, no extension headers

# Option areas a guest may send, from the ordinary to the hostile (the parser must
# survive every one; the last ones are refused).
OPTIONS = (
    b"",
    b"\x02\x04\x05\xb4",  # MSS 1460
    b"\x02\x04\x00\x01\x01\x03\x03\x0e",  # MSS 1, window scale 14
    b"\x01\x01\x08\x0a\x00\x00\x00\x01\x00\x00\x00\x00",  # timestamps, Linux's layout
    b"\x01\x01\x05\x0a\x00\x00\x00\x00\xff\xff\xff\xff",  # a SACK block
    b"\x04\x02\x01\x01\x03\x03\x0f\x00",  # SACK-permitted, window scale 15
    b"\x00\x02\x00\x00",  # EOL, then junk that must be ignored
    b"\x02\x00\x00\x00",  # length 0: a loop
    b"\x08\x01\x00\x00",  # length 1: a loop
    b"\x01\x01\x01\x08",  # kind without a length byte
    b"\x02\x06\x05\xb4",  # MSS of the wrong length
)


# Where hostile segments put their numbers (see ``near``), and their other fields.
SEQ_FROM = ("rcv_nxt", "ahead", "behind", "before", "any")
ACK_FROM = ("snd_max", "snd_una", "snd_nxt", "partial", "beyond", "any")
WINDOWS = (65535, 0, 1, 100, 4096)
URGENT = (0, 1, 0xFFFF)
SIZES = (0, 1, 7, 536, 1460, 3000)


def guest_bytes(seq: int, size: int) -> bytes:
    """The guest's bytes from sequence number ``seq`` on."""
    start = seq % _GUEST_PERIOD
    return _GUEST_PATTERN[start : start + size]


def host_bytes(offset: int, size: int) -> bytes:
    """The host peer's bytes from stream offset ``offset`` on."""
    start = offset % _HOST_PERIOD
    return _HOST_PATTERN[start : start + size]


def tcp_frame(
    *,
    src_mac: bytes,
    dst_mac: bytes,
    src: IPv4Address | IPv6Address,
    dst: IPv4Address | IPv6Address,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    urgent: int = 0,
    options: bytes = b"",
    payload_size: int = 0,
) -> bytes:
    """An Ethernet frame with one TCP segment whose data is ``guest_bytes(seq, ...)``,
    over IPv4 or IPv6 as the addresses are."""
    seq &= 0xFFFFFFFF
    options += bytes(-len(options) % 4)
    payload = guest_bytes(seq, payload_size)
    header_len = 20 + len(options)
    header = bytearray(
        _TCP_HEADER.pack(
            sport, dport, seq, ack & 0xFFFFFFFF, (header_len // 4) << 12 | flags, window, 0, urgent
        )
    )
    header += options
    segment = header + payload
    pseudo = pseudo_header_sum(src, dst, PROTO_TCP, len(segment))
    struct.pack_into("!H", segment, 16, internet_checksum(segment, pseudo))
    if isinstance(src, IPv6Address) and isinstance(dst, IPv6Address):
        header = _IPV6.pack(6 << 28, len(segment), PROTO_TCP, 64, src.packed, dst.packed)
        return _ETHERNET.pack(dst_mac, src_mac, 0x86DD) + header + segment
    assert isinstance(src, IPv4Address) and isinstance(dst, IPv4Address)
    packet = IPv4Packet(src, dst, PROTO_TCP, bytes(segment), dont_fragment=True).encode()
    return _ETHERNET.pack(dst_mac, src_mac, 0x0800) + packet


def near(ep: TcpEndpoint, seq_from: str, ack_from: str, offset: int) -> tuple[int, int]:
    """A sequence and an acknowledgment number at, near or far from the endpoint's."""
    seq = {
        "rcv_nxt": ep.rcv_nxt,
        "ahead": seq_add(ep.rcv_nxt, offset % 70000),
        "behind": seq_add(ep.rcv_nxt, -(offset % 70000)),
        "before": seq_add(ep.rcv_nxt, -1),
        "any": offset * 4099,
    }[seq_from]
    ack = {
        "snd_max": ep.snd_max,
        "snd_una": ep.snd_una,
        "snd_nxt": ep.snd_nxt,
        "partial": seq_add(ep.snd_una, offset % (seq_diff(ep.snd_max, ep.snd_una) + 1)),
        "beyond": seq_add(ep.snd_max, offset),
        "any": offset * 7919,
    }[ack_from]
    return seq & 0xFFFFFFFF, ack & 0xFFFFFFFF


def on_flow(
    flow: TcpFlow,
    gateway_mac: bytes,
    seq: int,
    ack: int,
    flags: int,
    *,
    window: int = 65535,
    urgent: int = 0,
    options: bytes = b"",
    size: int = 0,
) -> bytes:
    """A segment from ``flow``'s guest on that connection."""
    return tcp_frame(
        src_mac=flow.guest.mac,
        dst_mac=gateway_mac,
        src=flow.guest.address,
        dst=flow.dst_address,
        sport=flow.guest.port,
        dport=flow.dst_port,
        seq=seq,
        ack=ack,
        flags=flags,
        window=window,
        urgent=urgent,
        options=options,
        payload_size=size,
    )
