"""TFTP packets (RFC 1350 §5), with option negotiation (RFC 2347).

Five packets of RFC 1350 and one of RFC 2347, each opening with a 2-byte opcode:

* RRQ/WRQ: a file name and a mode, each a NUL-terminated string, then (RFC 2347
  §2) option name and value pairs, NUL-terminated too.  Modes and option names
  are case-insensitive: they are kept lower-cased.  The name is kept as the bytes
  sent (it is a path, judged by the server, not here).
* DATA: a block number and up to a block of data; ACK: a block number.
* ERROR: a code and a NUL-terminated message.
* OACK (RFC 2347 §2): option name and value pairs.

The options understood elsewhere are blksize (RFC 2348), timeout and tsize
(RFC 2349) and windowsize (RFC 7440); the codec carries any option as text.
Option names and values are ASCII; a name given twice, an empty name or a
name without a value is malformed.  Every refusal is a ``WireError`` naming
its reason.
"""

from __future__ import annotations

import struct
from enum import IntEnum

from attrs import frozen

from slirpnet.wire.buffer import Bytes, require
from slirpnet.wire.errors import IntegrityError, SanityError

SERVER_PORT = 69  # RFC 1350 §4: a request goes to port 69; the rest of a transfer elsewhere
DEFAULT_BLOCK_SIZE = 512  # RFC 1350 §2
MIN_BLOCK_SIZE = 8  # RFC 2348 §2
MAX_BLOCK_SIZE = 65464  # RFC 2348 §2
MIN_TIMEOUT = 1  # RFC 2349 §2, seconds
MAX_TIMEOUT = 255
MIN_WINDOW_SIZE = 1  # RFC 7440 §3
MAX_WINDOW_SIZE = 65535
MODES = ("netascii", "octet", "mail")  # RFC 1350 §1

_OPCODE = struct.Struct("!H")
_BLOCK = struct.Struct("!HH")  # opcode, then a block number (or an error code)


class Opcode(IntEnum):
    RRQ = 1
    WRQ = 2
    DATA = 3
    ACK = 4
    ERROR = 5
    OACK = 6  # RFC 2347 §2


class ErrorCode(IntEnum):
    """RFC 1350 appendix "Error Codes", and 8 from RFC 2347 §2."""

    NOT_DEFINED = 0
    FILE_NOT_FOUND = 1
    ACCESS_VIOLATION = 2
    DISK_FULL = 3
    ILLEGAL_OPERATION = 4
    UNKNOWN_TID = 5
    FILE_EXISTS = 6
    NO_SUCH_USER = 7
    OPTION_REFUSED = 8


Options = tuple[tuple[str, str], ...]  # (name lower-cased, value), in the order sent


@frozen
class Request:
    """RRQ or WRQ."""

    opcode: Opcode
    filename: bytes
    mode: str
    options: Options = ()

    def encode(self) -> bytes:
        return b"".join(
            (
                _OPCODE.pack(self.opcode),
                self.filename,
                b"\0",
                self.mode.encode("ascii"),
                b"\0",
                _encode_options(self.options),
            )
        )


@frozen
class Data:
    block: int
    payload: bytes

    def encode(self) -> bytes:
        return _BLOCK.pack(Opcode.DATA, self.block) + self.payload


@frozen
class Ack:
    block: int

    def encode(self) -> bytes:
        return _BLOCK.pack(Opcode.ACK, self.block)


@frozen
class Error:
    code: int
    message: str

    def encode(self) -> bytes:
        return _BLOCK.pack(Opcode.ERROR, self.code) + self.message.encode("ascii") + b"\0"


@frozen
class OptionAck:
    options: Options

    def encode(self) -> bytes:
        return _OPCODE.pack(Opcode.OACK) + _encode_options(self.options)


Packet = Request | Data | Ack | Error | OptionAck


def parse(data: Bytes) -> Packet:
    """One TFTP packet, the whole of a UDP datagram's payload."""
    view = memoryview(data)
    require(view, _OPCODE.size, "tftp_truncated", "opcode")
    opcode = _OPCODE.unpack_from(view)[0]
    if opcode in (Opcode.RRQ, Opcode.WRQ):
        strings = _strings(view[2:])
        if len(strings) < 2:
            raise IntegrityError("tftp_truncated", "a request without its mode")
        filename, mode = strings[0], _ascii(strings[1], "mode").lower()
        if not filename:
            raise SanityError("tftp_bad_filename", "empty file name")
        if mode not in MODES:
            raise SanityError("tftp_bad_mode", repr(mode))
        return Request(Opcode(opcode), filename, mode, _options(strings[2:]))
    if opcode in (Opcode.DATA, Opcode.ACK, Opcode.ERROR):
        require(view, _BLOCK.size, "tftp_truncated", f"opcode {opcode}")
        number = _BLOCK.unpack_from(view)[1]
        rest = view[_BLOCK.size :]
        if opcode == Opcode.DATA:
            if len(rest) > MAX_BLOCK_SIZE:
                raise SanityError("tftp_block_too_large", f"{len(rest)} bytes")
            return Data(number, bytes(rest))
        if opcode == Opcode.ACK:
            if rest:
                raise SanityError("tftp_bad_length", f"an ACK with {len(rest)} bytes more")
            return Ack(number)
        if not rest:
            raise IntegrityError("tftp_truncated", "an error without its message")
        strings = _strings(rest)
        if len(strings) != 1:
            raise SanityError("tftp_bad_length", "an error message followed by more")
        return Error(number, bytes(strings[0]).decode("ascii", errors="replace"))
    if opcode == Opcode.OACK:
        return OptionAck(_options(_strings(view[2:])))
    raise SanityError("tftp_bad_opcode", f"opcode {opcode}")


def _strings(view: memoryview) -> list[bytes]:
    """The NUL-terminated strings filling ``view``; its last byte must be a NUL."""
    if not view:
        return []
    raw = bytes(view)
    if raw[-1] != 0:
        raise IntegrityError("tftp_unterminated", "a string without its NUL")
    return raw[:-1].split(b"\0")


def _ascii(value: bytes, what: str) -> str:
    if not value.isascii():
        raise SanityError("tftp_bad_option", f"{what} is not ASCII")
    return value.decode("ascii")


def _options(strings: list[bytes]) -> Options:
    """RFC 2347 §2: pairs of option name and value, names case-insensitive."""
    if len(strings) % 2:
        raise SanityError("tftp_bad_option", f"option {strings[-1]!r} without a value")
    options: list[tuple[str, str]] = []
    for index in range(0, len(strings), 2):
        name = _ascii(strings[index], "an option name").lower()
        if not name:
            raise SanityError("tftp_bad_option", "an empty option name")
        if any(name == seen for seen, _ in options):
            raise SanityError("tftp_bad_option", f"option {name} given twice")
        options.append((name, _ascii(strings[index + 1], f"option {name}'s value")))
    return tuple(options)


def _encode_options(options: Options) -> bytes:
    return b"".join(f"{name}\0{value}\0".encode("ascii") for name, value in options)
