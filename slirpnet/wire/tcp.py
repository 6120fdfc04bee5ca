"""TCP segments (RFC 9293 §3.1) and the options a modern stack negotiates.

Options understood: maximum segment size (RFC 9293 §3.7.1), window scale and
timestamps (RFC 7323 §2.2, §3.2), SACK-permitted and SACK blocks (RFC 2018 §2,
§3).  Any other option is skipped by its length (RFC 9293 MUST-5).  An option
length that cannot be walked (below 2, or past the header) is an integrity
error: RFC 9293 MUST-7 asks us to survive it, and the segment is unusable.  A
known option of the wrong length is well formed but illegal, a sanity error.  A
window scale above 14 is used as 14 (RFC 7323 §2.3), not refused.

The reserved bits beside the data offset are ignored on receipt and sent as
zero (RFC 9293 §3.1).  The checksum covers the IPv4 or IPv6 (RFC 8200 §8.1)
pseudo-header, the header and the payload, whose length is what the IP codec
handed us.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Final

from slirpnet import native
from slirpnet.wire.buffer import Bytes, require
from slirpnet.wire.checksum import pseudo_header_sum
from slirpnet.wire.errors import IntegrityError, SanityError
from slirpnet.wire.tcpframe import header_words

PROTOCOL: Final = 6
HEADER_LEN: Final = 20
MAX_OPTIONS_LEN: Final = 40  # a 4-bit data offset counts at most 60 header bytes
MAX_WINDOW_SCALE: Final = 14  # RFC 7323 §2.3

FIN: Final = 0x01
SYN: Final = 0x02
RST: Final = 0x04
PSH: Final = 0x08
ACK: Final = 0x10
URG: Final = 0x20
ECE: Final = 0x40
CWR: Final = 0x80

_FLAG_NAMES = (
    (FIN, "FIN"),
    (SYN, "SYN"),
    (RST, "RST"),
    (PSH, "PSH"),
    (ACK, "ACK"),
    (URG, "URG"),
    (ECE, "ECE"),
    (CWR, "CWR"),
)

OPT_EOL: Final = 0
OPT_NOP: Final = 1
OPT_MSS: Final = 2
OPT_WINDOW_SCALE: Final = 3
OPT_SACK_PERMITTED: Final = 4
OPT_SACK: Final = 5
OPT_TIMESTAMPS: Final = 8

# Source port, destination port, sequence, acknowledgment, data offset + reserved
# + flags, window, checksum, urgent pointer.
_HEADER = struct.Struct("!HHIIHHHH")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_PAIR = struct.Struct("!II")  # timestamps (TSval, TSecr) and each SACK block (left, right)
_MSS_OPTION = struct.Struct("!BBH")
_WINDOW_SCALE_OPTION = struct.Struct("!BBBB")

# Option blocks as Linux writes them, each padded with NOPs to 4 bytes.
_NOP_NOP_TIMESTAMPS = bytes((OPT_NOP, OPT_NOP, OPT_TIMESTAMPS, 10))
_SACK_PERMITTED_TIMESTAMPS = bytes((OPT_SACK_PERMITTED, 2, OPT_TIMESTAMPS, 10))
_NOP_NOP_SACK_PERMITTED = bytes((OPT_NOP, OPT_NOP, OPT_SACK_PERMITTED, 2))
# Linux sends exactly NOP, NOP, timestamps on every established segment.
_TIMESTAMPS_ONLY = _U32.unpack(_NOP_NOP_TIMESTAMPS)[0]

# Required lengths of the fixed-size options we understand.
_OPTION_LENGTHS = {
    OPT_MSS: 4,
    OPT_WINDOW_SCALE: 3,
    OPT_SACK_PERMITTED: 2,
    OPT_TIMESTAMPS: 10,
}


def flag_names(flags: int) -> str:
    """``"SYN|ACK"`` for ``SYN | ACK``, in header bit order; ``""`` when no flag is set."""
    return "|".join(name for bit, name in _FLAG_NAMES if flags & bit)


# Segments and their options are values: nothing changes one once made.  They are
# not frozen dataclasses, though: compiled by mypyc, a frozen dataclass's __init__
# sets each field through object.__setattr__, several times the cost of the native
# __init__ written out here (the dataclass adds only __eq__ and __repr__).
@dataclass(init=False)
class TcpOptions:
    """The options of one segment; ``None``/``False``/``()`` where an option is absent."""

    mss: int | None
    window_scale: int | None
    sack_permitted: bool
    sack_blocks: tuple[tuple[int, int], ...]
    timestamps: tuple[int, int] | None  # (TSval, TSecr)

    def __init__(
        self,
        mss: int | None = None,
        window_scale: int | None = None,
        sack_permitted: bool = False,
        sack_blocks: tuple[tuple[int, int], ...] = (),
        timestamps: tuple[int, int] | None = None,
    ) -> None:
        self.mss = mss
        self.window_scale = window_scale
        self.sack_permitted = sack_permitted
        self.sack_blocks = sack_blocks
        self.timestamps = timestamps

    @classmethod
    def parse(cls, data: Bytes) -> TcpOptions:
        """The options area between the fixed header and the data offset."""
        view = memoryview(data)
        end = len(view)
        if end == 12 and _U32.unpack_from(view)[0] == _TIMESTAMPS_ONLY:
            return TcpOptions(timestamps=_PAIR.unpack_from(view, 4))
        mss = window_scale = None
        sack_permitted = False
        sack_blocks: tuple[tuple[int, int], ...] = ()
        timestamps = None
        i = 0
        while i < end:
            kind = view[i]
            if kind == OPT_EOL:
                break
            if kind == OPT_NOP:
                i += 1
                continue
            if i + 1 == end:
                raise IntegrityError("tcp_option_overrun", f"option {kind} has no length byte")
            length = view[i + 1]
            if length < 2:
                raise IntegrityError("tcp_option_loop", f"option {kind} has length {length}")
            if i + length > end:
                raise IntegrityError(
                    "tcp_option_overrun", f"option {kind} of {length} bytes at {i} of {end}"
                )
            if kind == OPT_SACK:
                legal = length >= 10 and (length - 2) % 8 == 0  # one or more 8-byte blocks
            else:
                legal = _OPTION_LENGTHS.get(kind, length) == length
            if not legal:
                raise SanityError("tcp_bad_option_length", f"option {kind} has length {length}")
            if kind == OPT_MSS:
                mss = _U16.unpack_from(view, i + 2)[0]
            elif kind == OPT_WINDOW_SCALE:
                window_scale = min(view[i + 2], MAX_WINDOW_SCALE)
            elif kind == OPT_SACK_PERMITTED:
                sack_permitted = True
            elif kind == OPT_SACK:
                sack_blocks = tuple(_PAIR.iter_unpack(view[i + 2 : i + length]))
            elif kind == OPT_TIMESTAMPS:
                timestamps = _PAIR.unpack_from(view, i + 2)
            i += length
        return TcpOptions(mss, window_scale, sack_permitted, sack_blocks, timestamps)

    def encode(self) -> bytes:
        """Linux's order and padding: MSS, SACK-permitted + timestamps, NOP + window scale, SACK.

        Raises ``ValueError`` past the 40 bytes a header can hold.
        """
        parts: list[bytes] = []
        if self.mss is not None:
            parts.append(_MSS_OPTION.pack(OPT_MSS, 4, self.mss))
        if self.timestamps is not None:
            # SACK-permitted rides in the two bytes the timestamps would pad with NOPs.
            parts.append(_SACK_PERMITTED_TIMESTAMPS if self.sack_permitted else _NOP_NOP_TIMESTAMPS)
            parts.append(_PAIR.pack(*self.timestamps))
        elif self.sack_permitted:
            parts.append(_NOP_NOP_SACK_PERMITTED)
        if self.window_scale is not None:
            parts.append(_WINDOW_SCALE_OPTION.pack(OPT_NOP, OPT_WINDOW_SCALE, 3, self.window_scale))
        if self.sack_blocks:
            parts.append(bytes((OPT_NOP, OPT_NOP, OPT_SACK, 2 + 8 * len(self.sack_blocks))))
            parts.extend(_PAIR.pack(left, right) for left, right in self.sack_blocks)
        encoded = b"".join(parts)
        if len(encoded) > MAX_OPTIONS_LEN:
            raise ValueError(f"{len(encoded)} bytes of TCP options exceed {MAX_OPTIONS_LEN}")
        return encoded


NO_OPTIONS: Final = TcpOptions()


@dataclass(init=False)
class TcpSegment:
    src_port: int
    dst_port: int
    seq: int
    ack: int
    flags: int
    window: int  # as sent: not yet shifted by the window scale
    urgent: int
    options: TcpOptions
    payload: Bytes

    def __init__(
        self,
        src_port: int,
        dst_port: int,
        seq: int,
        ack: int,
        flags: int,
        window: int,
        urgent: int = 0,
        options: TcpOptions = NO_OPTIONS,
        payload: Bytes = b"",
    ) -> None:
        self.src_port = src_port
        self.dst_port = dst_port
        self.seq = seq
        self.ack = ack
        self.flags = flags
        self.window = window
        self.urgent = urgent
        self.options = options
        self.payload = payload

    @classmethod
    def parse(
        cls,
        data: Bytes,
        src: IPv4Address | IPv6Address,
        dst: IPv4Address | IPv6Address,
        *,
        verify_checksum: bool = True,
    ) -> TcpSegment:
        view = memoryview(data)
        require(view, HEADER_LEN, "tcp_truncated", "TCP header")
        sport, dport, seq, ack, offset_flags, window, checksum, urgent = _HEADER.unpack_from(view)
        # Checked first: a corrupted data offset is better reported as corruption.
        if (
            verify_checksum
            and native.ones_sum(view, pseudo_header_sum(src, dst, PROTOCOL, len(view))) != 0xFFFF
        ):
            raise IntegrityError("tcp_bad_checksum", f"checksum field {checksum:#06x}")
        return cls.from_fields(view, sport, dport, seq, ack, offset_flags, window, urgent)

    @classmethod
    def from_fields(
        cls,
        view: memoryview,
        sport: int,
        dport: int,
        seq: int,
        ack: int,
        offset_flags: int,
        window: int,
        urgent: int,
    ) -> TcpSegment:
        """The segment in ``view`` whose fixed header is already unpacked into these
        fields (by ``parse``, or a caller's own ``struct``): the data offset says where
        the options end and the payload begins (RFC 9293 §3.1)."""
        header_len = (offset_flags >> 12) * 4
        if header_len == HEADER_LEN:
            options = NO_OPTIONS
        elif HEADER_LEN < header_len <= len(view):
            options = TcpOptions.parse(view[HEADER_LEN:header_len])
        else:
            raise IntegrityError(
                "tcp_bad_data_offset", f"header of {header_len} bytes, {len(view)} bytes held"
            )
        return TcpSegment(
            sport,
            dport,
            seq,
            ack,
            offset_flags & 0xFF,
            window,
            urgent,
            options,
            view[header_len:],
        )

    def encode(self, src: IPv4Address | IPv6Address, dst: IPv4Address | IPv6Address) -> bytes:
        options = b"" if self.options is NO_OPTIONS else self.options.encode()
        header_len = HEADER_LEN + len(options)
        offset_flags = (header_len // 4) << 12 | self.flags
        payload = self.payload
        pseudo = pseudo_header_sum(src, dst, PROTOCOL, header_len + len(payload))
        start = header_words(
            self.src_port,
            self.dst_port,
            self.seq,
            self.ack,
            offset_flags,
            self.window,
            self.urgent,
            options,
        )
        start += pseudo
        header = _HEADER.pack(
            self.src_port,
            self.dst_port,
            self.seq,
            self.ack,
            offset_flags,
            self.window,
            native.internet_checksum(payload, start),
            self.urgent,
        )
        return b"".join((header, options, payload))

    @property
    def is_fin(self) -> bool:
        return bool(self.flags & FIN)

    @property
    def is_syn(self) -> bool:
        return bool(self.flags & SYN)

    @property
    def is_rst(self) -> bool:
        return bool(self.flags & RST)

    @property
    def is_psh(self) -> bool:
        return bool(self.flags & PSH)

    @property
    def is_ack(self) -> bool:
        return bool(self.flags & ACK)

    @property
    def is_urg(self) -> bool:
        return bool(self.flags & URG)

    @property
    def is_ece(self) -> bool:
        return bool(self.flags & ECE)

    @property
    def is_cwr(self) -> bool:
        return bool(self.flags & CWR)
