"""DHCPv6 client/server messages (RFC 8415 §8, options per §21 and RFC 3646).

A message is a type, a 24-bit transaction id and options (code, length, value),
unpadded and in any order (§21.1).  Parsing checks every option it knows the
shape of at once, so the typed properties of a parsed message cannot fail: the
client and server identifiers (DUIDs, §11), the option request (ORO), elapsed
time, rapid commit, the IA options (presence only: slirpnet assigns no addresses
by DHCPv6), and the DNS options of RFC 3646 (servers, and the search list as
uncompressed names, §10).  Relay messages (§9) have another shape and are refused.

``check_for_server`` applies §16's rules on which identifiers a client message
must and must not carry; ``reply`` builds a server's Reply or Advertise (§18.3).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from enum import IntEnum
from ipaddress import IPv6Address
from typing import Final

from attrs import field, frozen

from slirpnet.wire.buffer import Bytes, require
from slirpnet.wire.dnsnames import decode_names, encode_names
from slirpnet.wire.errors import IntegrityError, SanityError

CLIENT_PORT: Final = 546  # §7.2
SERVER_PORT: Final = 547
ALL_DHCP_RELAY_AGENTS_AND_SERVERS = IPv6Address("ff02::1:2")  # §7.1

HEADER_LEN: Final = 4
_OPTION_HEAD = struct.Struct("!HH")
_MAX_OPTION_LEN: Final = 0xFFFF
_DUID_LL: Final = 3  # §11.4
_HTYPE_ETHERNET: Final = 1
_MAX_DUID_LEN: Final = 130  # §11.1: 128 bytes after the 2-byte type


class MessageType(IntEnum):
    """§7.3: the client and server messages (relay messages are refused)."""

    SOLICIT = 1
    ADVERTISE = 2
    REQUEST = 3
    CONFIRM = 4
    RENEW = 5
    REBIND = 6
    REPLY = 7
    RELEASE = 8
    DECLINE = 9
    RECONFIGURE = 10
    INFORMATION_REQUEST = 11


_MESSAGE_TYPES = frozenset(MessageType)


class OptionCode(IntEnum):
    CLIENT_ID = 1  # §21.2
    SERVER_ID = 2  # §21.3
    IA_NA = 3  # §21.4
    IA_TA = 4  # §21.5
    ORO = 6  # §21.7
    PREFERENCE = 7  # §21.8
    ELAPSED_TIME = 8  # §21.9
    STATUS_CODE = 13  # §21.13
    RAPID_COMMIT = 14  # §21.14
    DNS_SERVERS = 23  # RFC 3646 §3
    DOMAIN_LIST = 24  # RFC 3646 §4
    IA_PD = 25  # §21.21
    INFORMATION_REFRESH_TIME = 32  # §21.23


class StatusCode(IntEnum):
    """§21.13."""

    SUCCESS = 0
    UNSPEC_FAIL = 1
    NO_ADDRS_AVAIL = 2
    NO_BINDING = 3
    NOT_ON_LINK = 4
    USE_MULTICAST = 5
    NO_PREFIX_AVAIL = 6


_OPTION_CODES = frozenset(OptionCode)
_IA_CODES = frozenset((OptionCode.IA_NA, OptionCode.IA_TA, OptionCode.IA_PD))
# The least each IA option holds: IAID, T1, T2 (IA_TA has only the IAID).
_IA_MIN_LEN = {OptionCode.IA_NA: 12, OptionCode.IA_TA: 4, OptionCode.IA_PD: 12}
_FIXED_LEN = {
    OptionCode.PREFERENCE: 1,
    OptionCode.ELAPSED_TIME: 2,
    OptionCode.RAPID_COMMIT: 0,
    OptionCode.INFORMATION_REFRESH_TIME: 4,
}

# §16: what a server requires of each client message before answering it.
_NEEDS_CLIENT_ID = frozenset(
    (
        MessageType.SOLICIT,
        MessageType.REQUEST,
        MessageType.CONFIRM,
        MessageType.RENEW,
        MessageType.REBIND,
        MessageType.RELEASE,
        MessageType.DECLINE,
    )
)
_NEEDS_SERVER_ID = frozenset(
    (MessageType.REQUEST, MessageType.RENEW, MessageType.RELEASE, MessageType.DECLINE)
)
_NO_SERVER_ID = frozenset((MessageType.SOLICIT, MessageType.CONFIRM, MessageType.REBIND))
_FROM_SERVERS = frozenset((MessageType.ADVERTISE, MessageType.REPLY, MessageType.RECONFIGURE))


def duid_ll(mac: bytes) -> bytes:
    """The DUID-LL of an Ethernet MAC (§11.4): the server identifier of a gateway."""
    return struct.pack("!HH", _DUID_LL, _HTYPE_ETHERNET) + mac


@frozen
class Dhcpv6Option:
    code: int
    value: bytes

    def encode(self) -> bytes:
        if len(self.value) > _MAX_OPTION_LEN:
            raise ValueError(f"option {self.code} of {len(self.value)} bytes")
        return _OPTION_HEAD.pack(self.code, len(self.value)) + self.value

    @classmethod
    def client_id(cls, duid: bytes) -> Dhcpv6Option:
        return cls(OptionCode.CLIENT_ID, _duid(duid))

    @classmethod
    def server_id(cls, duid: bytes) -> Dhcpv6Option:
        return cls(OptionCode.SERVER_ID, _duid(duid))

    @classmethod
    def option_request(cls, codes: Iterable[int]) -> Dhcpv6Option:
        return cls(OptionCode.ORO, b"".join(code.to_bytes(2, "big") for code in codes))

    @classmethod
    def elapsed_time(cls, hundredths: int) -> Dhcpv6Option:
        """§21.9: how long the client has been trying, in hundredths of a second; 0xFFFF
        stands for any longer time."""
        return cls(OptionCode.ELAPSED_TIME, min(hundredths, 0xFFFF).to_bytes(2, "big"))

    @classmethod
    def rapid_commit(cls) -> Dhcpv6Option:
        return cls(OptionCode.RAPID_COMMIT, b"")

    @classmethod
    def status_code(cls, status: StatusCode, message: str = "") -> Dhcpv6Option:
        """§21.13: the message is UTF-8 for a human."""
        return cls(OptionCode.STATUS_CODE, status.to_bytes(2, "big") + message.encode())

    @classmethod
    def information_refresh_time(cls, seconds: int) -> Dhcpv6Option:
        """§21.23: when a stateless client should ask again (at least 600 s, §7.6)."""
        return cls(OptionCode.INFORMATION_REFRESH_TIME, seconds.to_bytes(4, "big"))

    @classmethod
    def dns_servers(cls, addresses: Iterable[IPv6Address]) -> Dhcpv6Option:
        value = b"".join(address.packed for address in addresses)
        if not value:
            raise ValueError("a DNS servers option needs at least one address")
        return cls(OptionCode.DNS_SERVERS, value)

    @classmethod
    def domain_list(cls, names: Iterable[str]) -> Dhcpv6Option:
        value = encode_names(names)
        if not value:
            raise ValueError("a domain search list needs at least one name")
        return cls(OptionCode.DOMAIN_LIST, value)


def _option_tuple(options: Iterable[Dhcpv6Option]) -> tuple[Dhcpv6Option, ...]:
    return tuple(options)


@frozen
class Dhcpv6Message:
    msg_type: int
    transaction_id: int  # 24 bits
    options: tuple[Dhcpv6Option, ...] = field(default=(), converter=_option_tuple)

    @classmethod
    def parse(cls, data: Bytes) -> Dhcpv6Message:
        view = memoryview(data)
        require(view, HEADER_LEN, "dhcpv6_truncated", "DHCPv6 header")
        msg_type = view[0]
        if msg_type not in _MESSAGE_TYPES:
            raise SanityError("dhcpv6_unsupported_type", f"message type {msg_type}")
        options = []
        seen: set[int] = set()
        position = HEADER_LEN
        while position < len(view):
            if position + _OPTION_HEAD.size > len(view):
                raise IntegrityError("dhcpv6_option_overrun", f"option header at {position}")
            code, length = _OPTION_HEAD.unpack_from(view, position)
            start = position + _OPTION_HEAD.size
            if start + length > len(view):
                raise IntegrityError("dhcpv6_option_overrun", f"option {code} at {position}")
            value = bytes(view[start : start + length])
            if code in _OPTION_CODES:
                _check_option(code, value, seen)
            options.append(Dhcpv6Option(code, value))
            position = start + length
        return cls(msg_type, int.from_bytes(view[1:4], "big"), options)

    def encode(self) -> bytes:
        header = bytes((self.msg_type,)) + self.transaction_id.to_bytes(3, "big")
        return header + b"".join(option.encode() for option in self.options)

    def reply(
        self,
        server_duid: bytes,
        options: Iterable[Dhcpv6Option] = (),
        *,
        msg_type: MessageType = MessageType.REPLY,
    ) -> Dhcpv6Message:
        """A server's Reply (or Advertise) to this message (§18.3): the transaction id, our
        server identifier, the client identifier copied when sent, then ``options``."""
        head = [Dhcpv6Option.server_id(server_duid)]
        client_id = self.client_id
        if client_id is not None:
            head.append(Dhcpv6Option.client_id(client_id))
        return Dhcpv6Message(msg_type, self.transaction_id, (*head, *options))

    def check_for_server(self, server_duid: bytes) -> None:
        """Raise ``SanityError`` if a server whose DUID is ``server_duid`` must discard this
        message (§16.2-16.12): the identifiers it must or must not carry, an Information-
        request with an IA option (§16.12), or a message only servers send."""
        if self.msg_type in _FROM_SERVERS:
            raise SanityError("dhcpv6_server_message", f"message type {self.msg_type}")
        client_id, server_id = self.client_id, self.server_id
        if client_id is None and self.msg_type in _NEEDS_CLIENT_ID:
            raise SanityError("dhcpv6_missing_client_id", f"message type {self.msg_type}")
        if server_id is None:
            if self.msg_type in _NEEDS_SERVER_ID:
                raise SanityError("dhcpv6_missing_server_id", f"message type {self.msg_type}")
        elif self.msg_type in _NO_SERVER_ID:
            raise SanityError("dhcpv6_unexpected_server_id", f"message type {self.msg_type}")
        elif server_id != server_duid:
            raise SanityError("dhcpv6_other_server", server_id.hex())
        if self.msg_type == MessageType.INFORMATION_REQUEST and self.has_ia:
            raise SanityError("dhcpv6_ia_in_information_request")

    def option(self, code: int) -> bytes | None:
        """The value of the first option ``code``, or None if absent."""
        for option in self.options:
            if option.code == code:
                return option.value
        return None

    @property
    def client_id(self) -> bytes | None:
        return self.option(OptionCode.CLIENT_ID)

    @property
    def server_id(self) -> bytes | None:
        return self.option(OptionCode.SERVER_ID)

    @property
    def option_request(self) -> tuple[int, ...]:
        """The option codes the client asks for (§21.7), empty without an ORO."""
        value = self.option(OptionCode.ORO) or b""
        return tuple(int.from_bytes(value[i : i + 2], "big") for i in range(0, len(value), 2))

    @property
    def elapsed_time(self) -> int | None:
        value = self.option(OptionCode.ELAPSED_TIME)
        return None if value is None else int.from_bytes(value, "big")

    @property
    def rapid_commit(self) -> bool:
        return self.option(OptionCode.RAPID_COMMIT) is not None

    @property
    def has_ia_na(self) -> bool:
        return self.option(OptionCode.IA_NA) is not None

    @property
    def has_ia(self) -> bool:
        """Any identity association: for addresses (IA_NA, IA_TA) or prefixes (IA_PD)."""
        return any(option.code in _IA_CODES for option in self.options)

    @property
    def status(self) -> tuple[int, str] | None:
        value = self.option(OptionCode.STATUS_CODE)
        if value is None:
            return None
        return int.from_bytes(value[:2], "big"), value[2:].decode(errors="replace")

    @property
    def dns_servers(self) -> tuple[IPv6Address, ...] | None:
        value = self.option(OptionCode.DNS_SERVERS)
        if value is None:
            return None
        return tuple(IPv6Address(value[i : i + 16]) for i in range(0, len(value), 16))

    @property
    def domain_list(self) -> tuple[str, ...] | None:
        value = self.option(OptionCode.DOMAIN_LIST)
        return None if value is None else decode_names(value, "dhcpv6")


def _check_option(code: int, value: bytes, seen: set[int]) -> None:
    """Raise unless ``value`` has the shape option ``code`` needs."""
    if code in _IA_CODES:
        # §21.4, 21.5, 21.21: a client may ask for several IAs, of any kind.
        if len(value) < _IA_MIN_LEN[OptionCode(code)]:
            raise SanityError("dhcpv6_bad_option_length", f"option {code}: {len(value)} bytes")
        return
    if code in seen:
        # §21: "each option ... may appear only once"; two client ids would be a guess.
        raise SanityError("dhcpv6_repeated_option", f"option {code}")
    seen.add(code)
    if code in (OptionCode.CLIENT_ID, OptionCode.SERVER_ID):
        if not 2 < len(value) <= _MAX_DUID_LEN:
            raise SanityError("dhcpv6_bad_duid", f"option {code}: {len(value)} bytes")
    elif code == OptionCode.DOMAIN_LIST:
        decode_names(value, "dhcpv6")
    elif code in _FIXED_LEN:
        if len(value) != _FIXED_LEN[OptionCode(code)]:
            raise SanityError("dhcpv6_bad_option_length", f"option {code}: {len(value)} bytes")
    elif (
        (code == OptionCode.ORO and len(value) % 2)
        or (code == OptionCode.DNS_SERVERS and len(value) % 16)
        or (code == OptionCode.STATUS_CODE and len(value) < 2)
    ):
        raise SanityError("dhcpv6_bad_option_length", f"option {code}: {len(value)} bytes")


def _duid(duid: bytes) -> bytes:
    if not 2 < len(duid) <= _MAX_DUID_LEN:
        raise ValueError(f"a DUID of {len(duid)} bytes")
    return duid
