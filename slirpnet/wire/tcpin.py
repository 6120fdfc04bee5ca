"""A guest's TCP frame read in one step: the pure-Python twin of ``slirpnet._native.tcp_in``.

The fast path (``core/fastpath.py``) asks of every frame whether it is the common
case: Ethernet to the gateway's MAC, an IPv4 header without options or fragments
(RFC 791 §3.1) carrying TCP, both checksums right (RFC 1071; the TCP one over the
pseudo-header, RFC 9293 §3.1), a data offset within the segment.  ``tcp_in`` answers
with the fields the fast path needs, or None for anything else, which the general
path then parses, counts and answers.  The native twin gives the same tuple for the
same bytes and raises the same exception type (``TypeError`` for what is not a
buffer).
"""

from __future__ import annotations

import struct
from typing import Final

from slirpnet.wire import ethernet, ipv4
from slirpnet.wire.buffer import Bytes
from slirpnet.wire.checksum import ones_sum

# src_mac, src, dst, sport, dport, seq, ack, offset_flags, window, urgent, end:
# the addresses as 32-bit ints, ``end`` where the segment ends in the frame (it
# begins at ``TCP_AT``; Ethernet padding may follow it).
Fields = tuple[bytes, int, int, int, int, int, int, int, int, int, int]

TCP_AT: Final = ethernet.HEADER_LEN + ipv4.MIN_HEADER_LEN  # an IPv4 header without options
# wire.tcp's HEADER_LEN: that module imports slirpnet.native, which imports this one.
TCP_HEADER_LEN: Final = 20
# Ethernet, an IPv4 header without options, the fixed TCP header.
_ETH_IPV4_TCP = struct.Struct("!6s6sHBBHHHBBHIIHHIIHHHH")
# The reserved flag, MF and the fragment offset: DF alone may be set.
_NOT_WHOLE: Final = 0xBFFF


def tcp_in(frame: Bytes, mac: Bytes) -> Fields | None:
    """The fields of a valid TCP segment over option-free, unfragmented IPv4 in
    ``frame``, sent to ``mac``; None for any other frame."""
    frame, mac = memoryview(frame), memoryview(mac)  # a TypeError for what is no buffer
    if len(frame) < TCP_AT + TCP_HEADER_LEN:
        return None
    (
        dst_mac,
        src_mac,
        ethertype,
        ver_ihl,
        tos,
        total_len,
        ident,
        flags_frag,
        ttl,
        protocol,
        ip_checksum,
        src,
        dst,
        sport,
        dport,
        seq,
        ack,
        offset_flags,
        window,
        _,
        urgent,
    ) = _ETH_IPV4_TCP.unpack_from(frame)
    end = ethernet.HEADER_LEN + total_len
    if (
        mac != dst_mac
        or ethertype != ethernet.ETHERTYPE_IPV4
        or ver_ihl != 0x45
        or protocol != ipv4.PROTO_TCP
        or flags_frag & _NOT_WHOLE
        or not TCP_AT + TCP_HEADER_LEN <= end <= len(frame)
    ):
        return None
    # RFC 1071: the header's words, checksum included, sum to negative zero, i.e.
    # to a non-zero multiple of 0xFFFF (the version word makes the sum non-zero).
    words = (ver_ihl << 8 | tos) + total_len + ident + flags_frag + (ttl << 8 | protocol)
    if (words + ip_checksum + src + dst) % 0xFFFF:
        return None
    segment = frame[TCP_AT:end]
    if ones_sum(segment, src + dst + ipv4.PROTO_TCP + len(segment)) != 0xFFFF:
        return None
    # RFC 9293 §3.1: the data offset counts the header, options included.
    if not TCP_HEADER_LEN <= (offset_flags >> 12) * 4 <= len(segment):
        return None
    return (src_mac, src, dst, sport, dport, seq, ack, offset_flags, window, urgent, end)
