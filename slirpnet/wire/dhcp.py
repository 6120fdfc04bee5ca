"""DHCP and BOOTP messages (RFC 2131 §2 and §4.1, options per RFC 2132).

The codec covers the fixed BOOTP header (RFC 2131 §2, figure 1), the magic
cookie and the options after it (RFC 2132 §2), with the framing rules clients
in the wild rely on:

* Long options (RFC 3396): every instance of a code is concatenated on parse, in
  the order options field, ``file``, ``sname``; values over 255 bytes are split
  into consecutive instances on encode.
* Option overload (RFC 2132 §9.3): parsing reads the options continued in
  ``file`` and/or ``sname`` and consumes option 52, so a parsed message has the
  shape ``encode`` writes.  ``encode`` never overloads: a server answers within
  the client's maximum message size by sending fewer options, not by moving them.
* The 300-byte BOOTP minimum (RFC 1542 §2.1) on encode.
* The domain search list (RFC 3397) with RFC 1035 §4.1.4 name compression.

Typed properties of ``DhcpMessage`` read options and raise a ``WireError`` when
a value is malformed; ``DhcpOption`` classmethods build values, and
``DhcpMessage.reply`` builds a server's answer (RFC 2131 §4.3.1, table 3).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from enum import IntEnum
from ipaddress import IPv4Address

from attrs import field, frozen

from slirpnet.wire.buffer import Bytes, require
from slirpnet.wire.errors import IntegrityError, SanityError

SERVER_PORT = 67
CLIENT_PORT = 68

OP_REQUEST = 1  # BOOTREQUEST
OP_REPLY = 2  # BOOTREPLY
HTYPE_ETHERNET = 1
FLAG_BROADCAST = 0x8000  # RFC 2131 §2, figure 2; the other 15 bits MBZ
MAGIC_COOKIE = bytes((99, 130, 83, 99))  # RFC 2132 §2

MIN_MESSAGE_LEN = 300  # RFC 1542 §2.1
UNSPECIFIED = IPv4Address(0)

_HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s4s")
_CHADDR_LEN = 16
_SNAME_LEN = 64
_FILE_LEN = 128
_OPTION_MAX = 255
_PAD = 0
_END = 255

# RFC 2132 §9.3: which of file (1) and sname (2) carry options.
_OVERLOAD_FILE = 1
_OVERLOAD_SNAME = 2

_MAX_NAME_LEN = 255  # RFC 1035 §2.3.4, counted on the wire
_MAX_LABEL_LEN = 63
_POINTER = 0xC0
# A 255-byte name has at most 127 labels, so an honest encoder never needs more
# jumps than that; the cap bounds the work a hostile list can cause.
_MAX_JUMPS = 127
_MAX_POINTER = 0x3FFF


class MessageType(IntEnum):
    """Option 53 (RFC 2132 §9.6)."""

    DISCOVER = 1
    OFFER = 2
    REQUEST = 3
    DECLINE = 4
    ACK = 5
    NAK = 6
    RELEASE = 7
    INFORM = 8


_MESSAGE_TYPES = frozenset(MessageType)


class OptionCode(IntEnum):
    SUBNET_MASK = 1  # RFC 2132 §3.3
    ROUTER = 3  # §3.5
    DNS_SERVERS = 6  # §3.8
    HOSTNAME = 12  # §3.14
    DOMAIN_NAME = 15  # §3.17
    INTERFACE_MTU = 26  # §5.1
    REQUESTED_IP = 50  # §9.1
    LEASE_TIME = 51  # §9.2
    OVERLOAD = 52  # §9.3
    MESSAGE_TYPE = 53  # §9.6
    SERVER_ID = 54  # §9.7
    PARAMETER_REQUEST_LIST = 55  # §9.8
    MAX_MESSAGE_SIZE = 57  # §9.10
    RENEWAL_TIME = 58  # §9.11, T1
    REBINDING_TIME = 59  # §9.12, T2
    CLIENT_ID = 61  # §9.14
    DOMAIN_SEARCH = 119  # RFC 3397


_MIN_MTU = 68  # RFC 2132 §5.1
_MIN_MAX_MESSAGE_SIZE = 576  # RFC 2132 §9.10


@frozen
class DhcpOption:
    """One option, its instances already joined (RFC 3396); ``encode`` splits it again."""

    code: int
    value: bytes

    def __attrs_post_init__(self) -> None:
        # Pad and End are framing, and overload is decided by the codec, never by a caller.
        if not _PAD < self.code < _END or self.code == OptionCode.OVERLOAD:
            raise ValueError(f"option code {self.code} is not a value-carrying option")

    def encode(self) -> bytes:
        if not self.value:
            return bytes((self.code, 0))
        return b"".join(
            bytes((self.code, len(chunk))) + chunk
            for chunk in (
                self.value[i : i + _OPTION_MAX] for i in range(0, len(self.value), _OPTION_MAX)
            )
        )

    @classmethod
    def subnet_mask(cls, mask: IPv4Address) -> DhcpOption:
        return cls(OptionCode.SUBNET_MASK, mask.packed)

    @classmethod
    def routers(cls, addresses: Iterable[IPv4Address]) -> DhcpOption:
        return cls(OptionCode.ROUTER, _pack_addresses(addresses))

    @classmethod
    def dns_servers(cls, addresses: Iterable[IPv4Address]) -> DhcpOption:
        return cls(OptionCode.DNS_SERVERS, _pack_addresses(addresses))

    @classmethod
    def hostname(cls, name: str) -> DhcpOption:
        return cls(OptionCode.HOSTNAME, _pack_text(name))

    @classmethod
    def domain_name(cls, name: str) -> DhcpOption:
        return cls(OptionCode.DOMAIN_NAME, _pack_text(name))

    @classmethod
    def interface_mtu(cls, mtu: int) -> DhcpOption:
        if mtu < _MIN_MTU:
            raise ValueError(f"MTU {mtu} is below {_MIN_MTU}")
        return cls(OptionCode.INTERFACE_MTU, _pack_uint(mtu, 2))

    @classmethod
    def requested_ip(cls, address: IPv4Address) -> DhcpOption:
        return cls(OptionCode.REQUESTED_IP, address.packed)

    @classmethod
    def lease_time(cls, seconds: int) -> DhcpOption:
        return cls(OptionCode.LEASE_TIME, _pack_uint(seconds, 4))

    @classmethod
    def message_type(cls, kind: MessageType) -> DhcpOption:
        return cls(OptionCode.MESSAGE_TYPE, bytes((kind,)))

    @classmethod
    def server_id(cls, address: IPv4Address) -> DhcpOption:
        return cls(OptionCode.SERVER_ID, address.packed)

    @classmethod
    def parameter_request_list(cls, codes: Iterable[int]) -> DhcpOption:
        value = bytes(codes)
        if not value:
            raise ValueError("an empty parameter request list")
        return cls(OptionCode.PARAMETER_REQUEST_LIST, value)

    @classmethod
    def max_message_size(cls, size: int) -> DhcpOption:
        if size < _MIN_MAX_MESSAGE_SIZE:
            raise ValueError(f"maximum message size {size} is below {_MIN_MAX_MESSAGE_SIZE}")
        return cls(OptionCode.MAX_MESSAGE_SIZE, _pack_uint(size, 2))

    @classmethod
    def renewal_time(cls, seconds: int) -> DhcpOption:
        return cls(OptionCode.RENEWAL_TIME, _pack_uint(seconds, 4))

    @classmethod
    def rebinding_time(cls, seconds: int) -> DhcpOption:
        return cls(OptionCode.REBINDING_TIME, _pack_uint(seconds, 4))

    @classmethod
    def client_id(cls, value: bytes) -> DhcpOption:
        """``value`` is the type byte then the identifier, e.g. ``b"\\x01" + mac`` (§9.14)."""
        if len(value) < 2:
            raise ValueError("a client identifier has at least 2 bytes")
        return cls(OptionCode.CLIENT_ID, value)

    @classmethod
    def domain_search(cls, names: Iterable[str]) -> DhcpOption:
        return cls(OptionCode.DOMAIN_SEARCH, encode_names(names))


def _option_tuple(options: Iterable[DhcpOption]) -> tuple[DhcpOption, ...]:
    return tuple(options)


@frozen
class DhcpMessage:
    """A BOOTP/DHCP message; ``hlen`` is ``len(chaddr)``, the significant hardware address."""

    op: int
    xid: int
    chaddr: bytes
    options: tuple[DhcpOption, ...] = field(default=(), converter=_option_tuple)
    htype: int = HTYPE_ETHERNET
    hops: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: IPv4Address = UNSPECIFIED
    yiaddr: IPv4Address = UNSPECIFIED
    siaddr: IPv4Address = UNSPECIFIED
    giaddr: IPv4Address = UNSPECIFIED
    sname: bytes = b""  # trailing NULs stripped; empty when it carried overloaded options
    file: bytes = b""  # likewise

    def __attrs_post_init__(self) -> None:
        # The same rules parse enforces, so no message we encode is one we would refuse.
        if self.op not in (OP_REQUEST, OP_REPLY):
            raise ValueError(f"op {self.op}")
        hlen_problem = _hlen_problem(self.htype, len(self.chaddr))
        if hlen_problem:
            raise ValueError(f"{hlen_problem}: htype {self.htype} chaddr {self.chaddr.hex()}")
        if len(self.sname) > _SNAME_LEN or len(self.file) > _FILE_LEN:
            raise ValueError("sname or file too long")
        codes = [option.code for option in self.options]
        if len(set(codes)) != len(codes):
            # Repeated instances would be concatenated by the receiver (RFC 3396).
            raise ValueError(f"option codes repeat: {codes}")

    @property
    def broadcast(self) -> bool:
        """The client cannot receive unicast before it is configured (RFC 2131 §4.1)."""
        return bool(self.flags & FLAG_BROADCAST)

    @classmethod
    def parse(cls, data: Bytes) -> DhcpMessage:
        view = memoryview(data)
        require(view, _HEADER.size, "dhcp_truncated", "BOOTP header and magic cookie")
        (
            op,
            htype,
            hlen,
            hops,
            xid,
            secs,
            flags,
            ciaddr,
            yiaddr,
            siaddr,
            giaddr,
            chaddr,
            sname,
            file,
            cookie,
        ) = _HEADER.unpack_from(view)
        if cookie != MAGIC_COOKIE:
            raise SanityError("dhcp_bad_cookie", cookie.hex())
        if op not in (OP_REQUEST, OP_REPLY):
            raise SanityError("dhcp_bad_op", f"op {op}")
        hlen_problem = _hlen_problem(htype, hlen)
        if hlen_problem:
            raise SanityError(hlen_problem, f"htype {htype} hlen {hlen}")

        pieces = list(_scan(view[_HEADER.size :], "options"))
        overload = _overload(pieces)
        # RFC 3396: the options field first, then file, then sname.
        if overload & _OVERLOAD_FILE:
            pieces += _scan_overloaded(file, "file")
            file = b""
        if overload & _OVERLOAD_SNAME:
            pieces += _scan_overloaded(sname, "sname")
            sname = b""
        joined: dict[int, list[bytes]] = {}
        for code, value in pieces:
            joined.setdefault(code, []).append(value)
        joined.pop(OptionCode.OVERLOAD, None)

        return cls(
            op=op,
            xid=xid,
            chaddr=chaddr[:hlen],
            options=tuple(DhcpOption(code, b"".join(parts)) for code, parts in joined.items()),
            htype=htype,
            hops=hops,
            secs=secs,
            flags=flags,
            ciaddr=IPv4Address(ciaddr),
            yiaddr=IPv4Address(yiaddr),
            siaddr=IPv4Address(siaddr),
            giaddr=IPv4Address(giaddr),
            sname=sname.rstrip(b"\0"),
            file=file.rstrip(b"\0"),
        )

    def encode(self) -> bytes:
        header = _HEADER.pack(
            self.op,
            self.htype,
            len(self.chaddr),
            self.hops,
            self.xid,
            self.secs,
            self.flags,
            self.ciaddr.packed,
            self.yiaddr.packed,
            self.siaddr.packed,
            self.giaddr.packed,
            self.chaddr,
            self.sname,
            self.file,
            MAGIC_COOKIE,
        )
        options = b"".join(option.encode() for option in self.options)
        return (header + options + bytes((_END,))).ljust(MIN_MESSAGE_LEN, b"\0")

    def reply(
        self,
        kind: MessageType,
        server_id: IPv4Address,
        *,
        yiaddr: IPv4Address = UNSPECIFIED,
        siaddr: IPv4Address = UNSPECIFIED,
        options: Iterable[DhcpOption] = (),
    ) -> DhcpMessage:
        """A server's OFFER, ACK or NAK to this request, fields per RFC 2131 §4.3.1 table 3.

        Options 53 and 54 come first, then ``options``.  ``ciaddr`` is echoed in an
        ACK (it answers a renewal or an INFORM) and zero otherwise.
        """
        return DhcpMessage(
            op=OP_REPLY,
            xid=self.xid,
            chaddr=self.chaddr,
            options=(
                DhcpOption.message_type(kind),
                DhcpOption.server_id(server_id),
                *options,
            ),
            htype=self.htype,
            flags=self.flags,
            ciaddr=self.ciaddr if kind == MessageType.ACK else UNSPECIFIED,
            yiaddr=yiaddr,
            siaddr=siaddr,
            giaddr=self.giaddr,
        )

    def option(self, code: int) -> bytes | None:
        """The raw value of option ``code``, or None if absent."""
        for option in self.options:
            if option.code == code:
                return option.value
        return None

    @property
    def message_type(self) -> MessageType | None:
        value = self._sized(OptionCode.MESSAGE_TYPE, 1)
        if value is None:
            return None
        if value[0] not in _MESSAGE_TYPES:
            raise SanityError("dhcp_bad_message_type", f"message type {value[0]}")
        return MessageType(value[0])

    @property
    def subnet_mask(self) -> IPv4Address | None:
        return self._address(OptionCode.SUBNET_MASK)

    @property
    def routers(self) -> tuple[IPv4Address, ...] | None:
        return self._addresses(OptionCode.ROUTER)

    @property
    def dns_servers(self) -> tuple[IPv4Address, ...] | None:
        return self._addresses(OptionCode.DNS_SERVERS)

    @property
    def hostname(self) -> str | None:
        return self._text(OptionCode.HOSTNAME)

    @property
    def domain_name(self) -> str | None:
        return self._text(OptionCode.DOMAIN_NAME)

    @property
    def interface_mtu(self) -> int | None:
        return self._uint(OptionCode.INTERFACE_MTU, 2, _MIN_MTU)

    @property
    def requested_ip(self) -> IPv4Address | None:
        return self._address(OptionCode.REQUESTED_IP)

    @property
    def lease_time(self) -> int | None:
        return self._uint(OptionCode.LEASE_TIME, 4)

    @property
    def server_id(self) -> IPv4Address | None:
        return self._address(OptionCode.SERVER_ID)

    @property
    def parameter_request_list(self) -> tuple[int, ...] | None:
        value = self.option(OptionCode.PARAMETER_REQUEST_LIST)
        if value is None:
            return None
        if not value:
            raise SanityError("dhcp_bad_option_length", "empty parameter request list")
        return tuple(value)

    @property
    def max_message_size(self) -> int | None:
        return self._uint(OptionCode.MAX_MESSAGE_SIZE, 2, _MIN_MAX_MESSAGE_SIZE)

    @property
    def renewal_time(self) -> int | None:
        return self._uint(OptionCode.RENEWAL_TIME, 4)

    @property
    def rebinding_time(self) -> int | None:
        return self._uint(OptionCode.REBINDING_TIME, 4)

    @property
    def client_id(self) -> bytes | None:
        value = self.option(OptionCode.CLIENT_ID)
        if value is not None and len(value) < 2:
            raise SanityError("dhcp_bad_option_length", f"client identifier of {len(value)} bytes")
        return value

    @property
    def domain_search(self) -> tuple[str, ...] | None:
        value = self.option(OptionCode.DOMAIN_SEARCH)
        return None if value is None else decode_names(value)

    def _sized(self, code: int, size: int) -> bytes | None:
        value = self.option(code)
        if value is not None and len(value) != size:
            raise SanityError("dhcp_bad_option_length", f"option {code}: {len(value)} bytes")
        return value

    def _address(self, code: int) -> IPv4Address | None:
        value = self._sized(code, 4)
        return None if value is None else IPv4Address(value)

    def _addresses(self, code: int) -> tuple[IPv4Address, ...] | None:
        value = self.option(code)
        if value is None:
            return None
        if not value or len(value) % 4:
            raise SanityError("dhcp_bad_option_length", f"option {code}: {len(value)} bytes")
        return tuple(IPv4Address(value[i : i + 4]) for i in range(0, len(value), 4))

    def _uint(self, code: int, size: int, minimum: int = 0) -> int | None:
        value = self._sized(code, size)
        if value is None:
            return None
        number = int.from_bytes(value, "big")
        if number < minimum:
            raise SanityError("dhcp_bad_option_value", f"option {code}: {number} < {minimum}")
        return number

    def _text(self, code: int) -> str | None:
        value = self.option(code)
        if value is None:
            return None
        # RFC 2132 §2: senders SHOULD NOT add a trailing NUL; receivers MUST drop it.
        text = value.rstrip(b"\0")
        if not text:
            raise SanityError("dhcp_bad_option_length", f"option {code} is empty")
        if not text.isascii():
            raise SanityError("dhcp_bad_text", f"option {code} is not ASCII")
        return text.decode("ascii")


def encode_names(names: Iterable[str]) -> bytes:
    """A search list in RFC 1035 wire form, each name compressed against the earlier ones.

    Names are absolute, with or without the final dot.  Raises ``ValueError`` on
    an empty, over-long or non-ASCII label, or a name over 255 bytes.
    """
    out = bytearray()
    # Offsets of every suffix already written; RFC 3397 §2 makes pointers relative
    # to the start of the option data, so the list is its own compression context.
    offsets: dict[tuple[bytes, ...], int] = {}
    for name in names:
        labels = _labels(name)
        for i in range(len(labels)):
            suffix = labels[i:]
            if suffix in offsets:
                out += (_POINTER << 8 | offsets[suffix]).to_bytes(2, "big")
                break
            if len(out) <= _MAX_POINTER:
                offsets[suffix] = len(out)
            out += bytes((len(labels[i]),)) + labels[i]
        else:
            out.append(0)
    return bytes(out)


def decode_names(data: bytes) -> tuple[str, ...]:
    """The names of an RFC 3397 search list, each absolute with a final dot (``"."`` for root)."""
    names = []
    position = 0
    while position < len(data):
        name, position = _decode_name(data, position)
        names.append(name)
    return tuple(names)


def _decode_name(data: bytes, start: int) -> tuple[str, int]:
    """The name at ``start`` and the offset after it (after its first pointer, if any)."""
    labels: list[str] = []
    wire_len = 1  # the terminating root label
    position = floor = start
    after: int | None = None
    jumps = 0
    while True:
        if position >= len(data):
            raise IntegrityError("dhcp_name_truncated", f"name at {start}")
        length = data[position]
        if length == 0:
            return ".".join(labels) + ".", (position + 1 if after is None else after)
        if length & _POINTER == _POINTER:
            if position + 1 >= len(data):
                raise IntegrityError("dhcp_name_truncated", f"pointer at {position}")
            target = (length & ~_POINTER) << 8 | data[position + 1]
            # RFC 1035 §4.1.4: a pointer names a *prior* occurrence.  Requiring each
            # jump to land before the previous one (or the name's start) rules out
            # loops and forward references.
            jumps += 1
            if target >= floor or jumps > _MAX_JUMPS:
                raise IntegrityError("dhcp_bad_pointer", f"pointer to {target} at {position}")
            if after is None:
                after = position + 2
            position = floor = target
            continue
        if length & _POINTER:
            # 0x40 and 0x80: extended label types, never valid in a search list.
            raise SanityError("dhcp_bad_label", f"label type {length:#04x} at {position}")
        label = data[position + 1 : position + 1 + length]
        if len(label) < length:
            raise IntegrityError("dhcp_name_truncated", f"label at {position}")
        wire_len += 1 + length
        if wire_len > _MAX_NAME_LEN:
            raise SanityError("dhcp_name_too_long", f"name at {start}")
        if not _is_label(label):
            raise SanityError("dhcp_bad_label", f"label at {position}")
        labels.append(label.decode("ascii"))
        position += 1 + length


def _labels(name: str) -> tuple[bytes, ...]:
    text = name.removesuffix(".")
    if not text:
        return ()
    if not text.isascii():
        raise ValueError(f"domain name is not ASCII: {name!r}")
    labels = tuple(label.encode("ascii") for label in text.split("."))
    if not all(0 < len(label) <= _MAX_LABEL_LEN and _is_label(label) for label in labels):
        raise ValueError(f"bad label in domain name {name!r}")
    if sum(1 + len(label) for label in labels) + 1 > _MAX_NAME_LEN:
        raise ValueError(f"domain name longer than {_MAX_NAME_LEN} bytes: {name!r}")
    return labels


def _is_label(label: bytes) -> bool:
    """Printable ASCII without dots: anything else has no faithful text form."""
    return all(0x21 <= byte <= 0x7E and byte != 0x2E for byte in label)


def _hlen_problem(htype: int, hlen: int) -> str | None:
    """The reason ``hlen`` cannot describe ``chaddr`` (RFC 2131 §2: 16 bytes at most)."""
    if hlen > _CHADDR_LEN:
        return "dhcp_hlen_too_long"
    if htype == HTYPE_ETHERNET and hlen != 6:
        return "dhcp_hlen_mismatch"
    return None


def _scan(area: Bytes, where: str) -> Iterator[tuple[int, bytes]]:
    """The (code, value) instances in one field, up to End or the field's end."""
    view = memoryview(area)
    position = 0
    while position < len(view):
        code = view[position]
        if code == _END:
            return
        if code == _PAD:
            position += 1
            continue
        if position + 2 > len(view) or position + 2 + view[position + 1] > len(view):
            raise IntegrityError("dhcp_option_overrun", f"option {code} at {position} in {where}")
        end = position + 2 + view[position + 1]
        yield code, bytes(view[position + 2 : end])
        position = end


def _scan_overloaded(area: bytes, where: str) -> list[tuple[int, bytes]]:
    pieces = list(_scan(area, where))
    if any(code == OptionCode.OVERLOAD for code, _ in pieces):
        # RFC 2131 §4.1: option 52 MUST be in the options field; one here could re-overload.
        raise SanityError("dhcp_bad_overload", f"option 52 inside {where}")
    return pieces


def _overload(pieces: list[tuple[int, bytes]]) -> int:
    values = [value for code, value in pieces if code == OptionCode.OVERLOAD]
    if not values:
        return 0
    value = b"".join(values)
    if len(value) != 1 or value[0] not in (1, 2, 3):
        raise SanityError("dhcp_bad_overload", f"overload value {value.hex()}")
    return value[0]


def _pack_addresses(addresses: Iterable[IPv4Address]) -> bytes:
    value = b"".join(address.packed for address in addresses)
    if not value:
        raise ValueError("an address list needs at least one address")
    return value


def _pack_text(text: str) -> bytes:
    if not text or not text.isascii():
        raise ValueError(f"not a non-empty ASCII string: {text!r}")
    return text.encode("ascii")


def _pack_uint(value: int, size: int) -> bytes:
    if not 0 <= value < 1 << (8 * size):
        raise ValueError(f"{value} does not fit in {size} bytes")
    return value.to_bytes(size, "big")
