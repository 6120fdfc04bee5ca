"""The common case in one step each way: an established flow's TCP segments.

In: ``established_segment`` reads a frame from the guest in one step (IPv4:
``native.tcp_in``; IPv6: one struct) and says whether it is a valid TCP segment
(Ethernet + IPv4 without options or fragments, both checksums right; or Ethernet +
IPv6 with no extension header, the TCP checksum right) to the gateway's MAC; the
caller then looks the flow up and hands the segment to its endpoint, without the
Ethernet and IPv4 objects of the general path.
Anything else, malformed frames included, is left to the general path, which counts
and answers it.  ``superseded`` lets a batch skip a plain cumulative ACK that the next
frame makes stale.

Out: ``send_segments`` builds an endpoint's segments into frames with the native
builders (``slirpnet.native``), from a head (Ethernet header and both addresses)
cached on the flow; a ``SegmentRun`` is cut into its frames in one call (software
segmentation).
"""

from __future__ import annotations

import struct
from typing import Final

from slirpnet import native
from slirpnet.core.addr import V4_MAPPED
from slirpnet.core.flows import PROTO_TCP, FlowKey, TcpFlow
from slirpnet.core.frames import Frames
from slirpnet.core.sequence import seq_lt
from slirpnet.core.tcp import SegmentRun
from slirpnet.core.vm import Vm
from slirpnet.wire import ethernet, ipv4, tcp
from slirpnet.wire.errors import WireError

_TCP_AT: Final = ethernet.HEADER_LEN + ipv4.MIN_HEADER_LEN
_FAST_MIN: Final = _TCP_AT + tcp.HEADER_LEN
# A plain ACK: IPv4's total length, and where its acknowledgment number lies.
_PLAIN_ACK_TOTAL_LEN: Final = ipv4.MIN_HEADER_LEN + tcp.HEADER_LEN
_ETHERNET_MIN_FRAME: Final = 60  # a short frame may come padded to Ethernet's minimum
_ACK_AT: Final = _TCP_AT + 8
_ACK_FIELD = struct.Struct("!I")
# The same for IPv6: the fixed header (RFC 8200 §3) with TCP as its next header.
_ETH_IPV6_TCP = struct.Struct("!6s6sHIHBB16s16sHHIIHHHH")
_TCP6_AT: Final = ethernet.HEADER_LEN + 40
_FAST6_MIN: Final = _TCP6_AT + tcp.HEADER_LEN
_ETHERTYPE_IPV6: Final = 0x86DD


class Established:
    """A segment ``established_segment`` found: from ``src_mac``, for the flow ``key``."""

    __slots__ = ("key", "segment", "src", "src_mac")

    def __init__(self, src_mac: bytes, src: int, key: FlowKey, segment: tcp.TcpSegment) -> None:
        self.src_mac = src_mac
        self.src = src  # the source address in key_int's space
        self.key = key
        self.segment = segment


def established_segment(frame: bytes, gateway_mac: bytes) -> Established | None:
    """A valid TCP segment to ``gateway_mac`` over option-free IPv4 or header-only IPv6,
    or None for the general path."""
    if len(frame) < _FAST_MIN:
        return None
    if frame[12] == 0x86 and frame[13] == 0xDD:
        return _established_segment6(frame, gateway_mac)
    fields = native.tcp_in(frame, gateway_mac)  # every check but the options' (wire/tcpin.py)
    if fields is None:
        return None
    src_mac, src, dst, src_port, dst_port, seq, ack, offset_flags, window, urgent, end = fields
    try:
        segment = tcp.TcpSegment.from_fields(
            memoryview(frame)[_TCP_AT:end],
            src_port,
            dst_port,
            seq,
            ack,
            offset_flags,
            window,
            urgent,
        )
    except WireError:
        return None
    src |= V4_MAPPED
    return Established(src_mac, src, (PROTO_TCP, src, src_port, dst | V4_MAPPED, dst_port), segment)


def _established_segment6(frame: bytes, gateway_mac: bytes) -> Established | None:
    if len(frame) < _FAST6_MIN:
        return None
    (
        dst_mac,
        src_mac,
        ethertype,
        first,
        payload_len,
        next_header,
        _,
        src_packed,
        dst_packed,
        src_port,
        dst_port,
        seq,
        ack,
        offset_flags,
        window,
        _,
        urgent,
    ) = _ETH_IPV6_TCP.unpack_from(frame)
    if (
        dst_mac != gateway_mac
        or ethertype != _ETHERTYPE_IPV6
        or first >> 28 != 6
        or next_header != tcp.PROTOCOL
        or not tcp.HEADER_LEN <= payload_len <= len(frame) - _TCP6_AT
    ):
        return None
    src = int.from_bytes(src_packed, "big")
    dst = int.from_bytes(dst_packed, "big")
    if src >> 32 == V4_MAPPED >> 32 or dst >> 32 == V4_MAPPED >> 32:
        return None  # IPv4-mapped: IPv4 flows' keys; the general path refuses the source
    view = memoryview(frame)[_TCP6_AT : _TCP6_AT + payload_len]
    # RFC 8200 §8.1: the pseudo-header's addresses, summed whole (congruent mod 0xFFFF).
    start = (src + dst) % 0xFFFF + tcp.PROTOCOL + payload_len
    if native.ones_sum(view, start) != 0xFFFF:
        return None
    try:
        segment = tcp.TcpSegment.from_fields(
            view, src_port, dst_port, seq, ack, offset_flags, window, urgent
        )
    except WireError:
        return None
    return Established(src_mac, src, (PROTO_TCP, src, src_port, dst, dst_port), segment)


def _is_plain_ack(frame: bytes) -> bool:
    """Ethernet + IPv4 without options or fragments + TCP with no options, no data and
    no flag but ACK: what a guest sends to acknowledge our data (the checksums are
    checked when the frame is handled, not here)."""
    return (
        _FAST_MIN <= len(frame) <= _ETHERNET_MIN_FRAME
        and frame[12] == 0x08
        and frame[13] == 0x00
        and frame[14] == 0x45
        and frame[16] == 0
        and frame[17] == _PLAIN_ACK_TOTAL_LEN
        and frame[23] == ipv4.PROTO_TCP
        and frame[20] & 0x3F == 0
        and frame[21] == 0
        and frame[46] == 0x50
        and frame[47] == tcp.ACK
    )


def superseded(frame: bytes, following: bytes) -> bool:
    """``frame`` is a plain ACK and ``following`` one of the same connection from the
    same MAC, with the same sequence number and an acknowledgment number beyond."""
    if not (_is_plain_ack(frame) and _is_plain_ack(following)):
        return False
    if frame[:12] != following[:12] or frame[26:42] != following[26:42]:
        return False  # other MACs, addresses, ports or sequence number
    ack = _ACK_FIELD.unpack_from(frame, _ACK_AT)[0]
    return seq_lt(ack, _ACK_FIELD.unpack_from(following, _ACK_AT)[0])


def send_segments(flow: TcpFlow, frames: Frames) -> None:
    """Frame the segments ``flow.endpoint`` produced and send them to its VM."""
    endpoint = flow.endpoint
    vm: Vm = flow.vm
    head = flow.frame_head
    if head is None:
        src, dst = flow.dst_address, flow.guest.address
        ethertype = ethernet.ETHERTYPE_IPV4 if src.version == 4 else ethernet.ETHERTYPE_IPV6
        mac = frames.ethernet(flow.guest.mac, ethertype)
        head = flow.frame_head = (mac, int(src), int(dst), src.packed, dst.packed)
    mac, src_int, dst_int, src_packed, dst_packed = head
    if len(src_packed) == 16:
        for segment in endpoint.segments:
            if isinstance(segment, SegmentRun):
                for frame in native.tcp6_frames(
                    mac,
                    src_packed,
                    dst_packed,
                    segment.src_port,
                    segment.dst_port,
                    segment.seq,
                    segment.ack,
                    segment.flags,
                    segment.window,
                    b"",
                    segment.payload,
                    segment.mss,
                    segment.last_flags,
                ):
                    vm.send(frame)
                continue
            options = segment.options
            vm.send(
                native.tcp6_frame(
                    mac,
                    src_packed,
                    dst_packed,
                    segment.src_port,
                    segment.dst_port,
                    segment.seq,
                    segment.ack,
                    segment.flags,
                    segment.window,
                    segment.urgent,
                    b"" if options is tcp.NO_OPTIONS else options.encode(),
                    segment.payload,
                )
            )
        return
    for segment in endpoint.segments:
        if isinstance(segment, SegmentRun):
            count = len(segment.payload) // segment.mss
            for frame in native.tcp_frames(
                mac,
                src_int,
                dst_int,
                frames.next_idents(count),
                segment.src_port,
                segment.dst_port,
                segment.seq,
                segment.ack,
                segment.flags,
                segment.window,
                b"",
                segment.payload,
                segment.mss,
                segment.last_flags,
            ):
                vm.send(frame)
            continue
        options = segment.options
        vm.send(
            native.tcp_frame(
                mac,
                src_int,
                dst_int,
                frames.next_ident(),
                segment.src_port,
                segment.dst_port,
                segment.seq,
                segment.ack,
                segment.flags,
                segment.window,
                segment.urgent,
                b"" if options is tcp.NO_OPTIONS else options.encode(),
                segment.payload,
            )
        )
