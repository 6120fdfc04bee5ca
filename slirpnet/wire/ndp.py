"""Neighbor Discovery (RFC 4861 §4): router and neighbor solicitations and advertisements.

Each message is read from an ``Icmpv6Message`` already parsed (its checksum
verified) and turned back into one with ``to_icmpv6``, ready to encode.  Parsing
applies the checks RFC 4861 puts on the message itself (§6.1.1, §6.1.2, §7.1.1,
§7.1.2: code 0, the fixed part present, no option of length zero, a unicast
target); ``check_ip`` applies those on the IPv6 header around it (hop limit 255,
what an unspecified source may send) for the core to call.

Options (§4.6) are kept in order as typed values: link-layer addresses (Ethernet
only, RFC 2464 §6), prefix information, MTU, and the DNS options of RFC 8106 §5.
Unknown options are skipped (§4.6); a known one of the wrong size drops the message.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from ipaddress import IPv6Address, IPv6Network
from typing import Final

from attrs import field, frozen

from slirpnet.wire import icmpv6, ipv6
from slirpnet.wire.buffer import require
from slirpnet.wire.dnsnames import decode_names, encode_names
from slirpnet.wire.errors import IntegrityError, SanityError
from slirpnet.wire.icmpv6 import Icmpv6Message

# §6.1.1 and the rest: a node accepts Neighbor Discovery only with this hop limit,
# which no router can have decremented, and sends it so.
HOP_LIMIT: Final = 255
INFINITE_LIFETIME: Final = 0xFFFFFFFF

# Option types (§4.6; RFC 8106 §5).
OPTION_SOURCE_LINK_LAYER: Final = 1
OPTION_TARGET_LINK_LAYER: Final = 2
OPTION_PREFIX_INFORMATION: Final = 3
OPTION_MTU: Final = 5
OPTION_RDNSS: Final = 25
OPTION_DNSSL: Final = 31

# Router-advertisement flags (§4.2) and neighbor-advertisement flags (§4.4).
FLAG_MANAGED: Final = 0x80
FLAG_OTHER: Final = 0x40
FLAG_ROUTER: Final = 0x80
FLAG_SOLICITED: Final = 0x40
FLAG_OVERRIDE: Final = 0x20
# Prefix-information flags (§4.6.2).
FLAG_ON_LINK: Final = 0x80
FLAG_AUTONOMOUS: Final = 0x40

_UNIT: Final = 8  # option lengths count 8-byte units
_MAC_LEN: Final = 6
_TARGET_LEN: Final = 16
_RA_FIXED_LEN: Final = 8  # reachable time, retrans timer

_LINK_LAYER = struct.Struct("!BB6s")
_PREFIX = struct.Struct("!BBBBIII16s")
_MTU = struct.Struct("!BBHI")
_DNS_HEAD = struct.Struct("!BBHI")  # type, length, reserved, lifetime (RFC 8106 §5.1, §5.2)
_RA_TIMERS = struct.Struct("!II")


@frozen
class SourceLinkLayerAddress:
    """§4.6.1: the sender's MAC."""

    mac: bytes

    def encode(self) -> bytes:
        return _LINK_LAYER.pack(OPTION_SOURCE_LINK_LAYER, 1, self.mac)


@frozen
class TargetLinkLayerAddress:
    """§4.6.1: the target's MAC."""

    mac: bytes

    def encode(self) -> bytes:
        return _LINK_LAYER.pack(OPTION_TARGET_LINK_LAYER, 1, self.mac)


@frozen
class PrefixInformation:
    """§4.6.2: a prefix on the link (L) and for address autoconfiguration (A, RFC 4862)."""

    prefix: IPv6Network
    on_link: bool = True
    autonomous: bool = True
    valid_lifetime: int = INFINITE_LIFETIME
    preferred_lifetime: int = INFINITE_LIFETIME

    def encode(self) -> bytes:
        flags = (FLAG_ON_LINK if self.on_link else 0) | (FLAG_AUTONOMOUS if self.autonomous else 0)
        return _PREFIX.pack(
            OPTION_PREFIX_INFORMATION,
            4,
            self.prefix.prefixlen,
            flags,
            self.valid_lifetime,
            self.preferred_lifetime,
            0,
            self.prefix.network_address.packed,
        )


@frozen
class Mtu:
    """§4.6.4: the link's MTU."""

    mtu: int

    def encode(self) -> bytes:
        return _MTU.pack(OPTION_MTU, 1, 0, self.mtu)


@frozen
class RecursiveDnsServers:
    """RFC 8106 §5.1 (RDNSS): resolvers' addresses, usable for ``lifetime`` seconds."""

    servers: tuple[IPv6Address, ...]
    lifetime: int

    def encode(self) -> bytes:
        if not self.servers:
            raise ValueError("an RDNSS option needs at least one address")
        units = 1 + 2 * len(self.servers)
        head = _DNS_HEAD.pack(OPTION_RDNSS, units, 0, self.lifetime)
        return head + b"".join(server.packed for server in self.servers)


@frozen
class DnsSearchList:
    """RFC 8106 §5.2 (DNSSL): domains to search, usable for ``lifetime`` seconds."""

    domains: tuple[str, ...]
    lifetime: int

    def encode(self) -> bytes:
        names = encode_names(self.domains)
        if not names:
            raise ValueError("a DNSSL option needs at least one domain")
        size = -(-(_DNS_HEAD.size + len(names)) // _UNIT) * _UNIT  # zero-padded to 8 bytes
        head = _DNS_HEAD.pack(OPTION_DNSSL, size // _UNIT, 0, self.lifetime)
        return (head + names).ljust(size, b"\0")


NdpOption = (
    SourceLinkLayerAddress
    | TargetLinkLayerAddress
    | PrefixInformation
    | Mtu
    | RecursiveDnsServers
    | DnsSearchList
)


def _option_tuple(options: Iterable[NdpOption]) -> tuple[NdpOption, ...]:
    return tuple(options)


class _Options:
    """The typed views of a message's options, for the messages below."""

    __slots__ = ()
    options: tuple[NdpOption, ...]

    @property
    def source_mac(self) -> bytes | None:
        """The first source link-layer address option's MAC, if any."""
        return next(
            (o.mac for o in self.options if isinstance(o, SourceLinkLayerAddress)),
            None,
        )

    @property
    def target_mac(self) -> bytes | None:
        """The first target link-layer address option's MAC, if any."""
        return next(
            (o.mac for o in self.options if isinstance(o, TargetLinkLayerAddress)),
            None,
        )

    @property
    def mtu(self) -> int | None:
        return next((o.mtu for o in self.options if isinstance(o, Mtu)), None)

    @property
    def prefixes(self) -> tuple[PrefixInformation, ...]:
        return tuple(o for o in self.options if isinstance(o, PrefixInformation))

    @property
    def dns_servers(self) -> tuple[RecursiveDnsServers, ...]:
        return tuple(o for o in self.options if isinstance(o, RecursiveDnsServers))

    @property
    def search_lists(self) -> tuple[DnsSearchList, ...]:
        return tuple(o for o in self.options if isinstance(o, DnsSearchList))

    def _encode_options(self) -> bytes:
        return b"".join(option.encode() for option in self.options)


@frozen
class RouterSolicitation(_Options):
    """§4.1: a host asks routers to advertise now."""

    options: tuple[NdpOption, ...] = field(default=(), converter=_option_tuple)

    @classmethod
    def parse(cls, message: Icmpv6Message) -> RouterSolicitation:
        body = _body(message, icmpv6.TYPE_ROUTER_SOLICITATION, 0)
        return cls(parse_options(body))

    def to_icmpv6(self) -> Icmpv6Message:
        return Icmpv6Message(icmpv6.TYPE_ROUTER_SOLICITATION, 0, 0, self._encode_options())


@frozen
class RouterAdvertisement(_Options):
    """§4.2: a router's parameters; defaults as §6.2.1's for a router that sets none."""

    cur_hop_limit: int = ipv6.DEFAULT_HOP_LIMIT
    managed: bool = False  # M: addresses from DHCPv6
    other: bool = False  # O: other configuration (DNS) from DHCPv6
    router_lifetime: int = 1800  # seconds as a default router; 0: not one
    reachable_time: int = 0  # milliseconds; 0: unspecified
    retrans_timer: int = 0  # milliseconds; 0: unspecified
    options: tuple[NdpOption, ...] = field(default=(), converter=_option_tuple)

    @classmethod
    def parse(cls, message: Icmpv6Message) -> RouterAdvertisement:
        body = _body(message, icmpv6.TYPE_ROUTER_ADVERTISEMENT, _RA_FIXED_LEN)
        reachable, retrans = _RA_TIMERS.unpack_from(body)
        flags = message.rest >> 16 & 0xFF
        return cls(
            cur_hop_limit=message.rest >> 24,
            managed=bool(flags & FLAG_MANAGED),
            other=bool(flags & FLAG_OTHER),
            router_lifetime=message.rest & 0xFFFF,
            reachable_time=reachable,
            retrans_timer=retrans,
            options=parse_options(body[_RA_FIXED_LEN:]),
        )

    def to_icmpv6(self) -> Icmpv6Message:
        flags = (FLAG_MANAGED if self.managed else 0) | (FLAG_OTHER if self.other else 0)
        rest = self.cur_hop_limit << 24 | flags << 16 | self.router_lifetime
        body = _RA_TIMERS.pack(self.reachable_time, self.retrans_timer) + self._encode_options()
        return Icmpv6Message(icmpv6.TYPE_ROUTER_ADVERTISEMENT, 0, rest, body)


@frozen
class NeighborSolicitation(_Options):
    """§4.3: who has ``target``?  From the unspecified address: is anyone using it (DAD)?"""

    target: IPv6Address
    options: tuple[NdpOption, ...] = field(default=(), converter=_option_tuple)

    @classmethod
    def parse(cls, message: Icmpv6Message) -> NeighborSolicitation:
        body = _body(message, icmpv6.TYPE_NEIGHBOR_SOLICITATION, _TARGET_LEN)
        return cls(_target(body), parse_options(body[_TARGET_LEN:]))

    def to_icmpv6(self) -> Icmpv6Message:
        body = self.target.packed + self._encode_options()
        return Icmpv6Message(icmpv6.TYPE_NEIGHBOR_SOLICITATION, 0, 0, body)

    def advertise(
        self, mac: bytes, *, router: bool, solicited: bool = True, override: bool = True
    ) -> NeighborAdvertisement:
        """The answer that ``self.target`` is at ``mac`` (§7.2.4).

        ``solicited`` must be False when the solicitation came from the unspecified
        address (the answer then goes to all-nodes); ``override`` False for an
        address answered as a proxy.
        """
        return NeighborAdvertisement(
            self.target, router, solicited, override, (TargetLinkLayerAddress(mac),)
        )


@frozen
class NeighborAdvertisement(_Options):
    """§4.4: ``target`` is at the target link-layer address option's MAC."""

    target: IPv6Address
    router: bool = False
    solicited: bool = False
    override: bool = False
    options: tuple[NdpOption, ...] = field(default=(), converter=_option_tuple)

    @classmethod
    def parse(cls, message: Icmpv6Message) -> NeighborAdvertisement:
        body = _body(message, icmpv6.TYPE_NEIGHBOR_ADVERTISEMENT, _TARGET_LEN)
        flags = message.rest >> 24
        return cls(
            _target(body),
            router=bool(flags & FLAG_ROUTER),
            solicited=bool(flags & FLAG_SOLICITED),
            override=bool(flags & FLAG_OVERRIDE),
            options=parse_options(body[_TARGET_LEN:]),
        )

    def to_icmpv6(self) -> Icmpv6Message:
        flags = (
            (FLAG_ROUTER if self.router else 0)
            | (FLAG_SOLICITED if self.solicited else 0)
            | (FLAG_OVERRIDE if self.override else 0)
        )
        body = self.target.packed + self._encode_options()
        return Icmpv6Message(icmpv6.TYPE_NEIGHBOR_ADVERTISEMENT, 0, flags << 24, body)


NdpMessage = RouterSolicitation | RouterAdvertisement | NeighborSolicitation | NeighborAdvertisement

_MESSAGES: dict[int, Callable[[Icmpv6Message], NdpMessage]] = {
    icmpv6.TYPE_ROUTER_SOLICITATION: RouterSolicitation.parse,
    icmpv6.TYPE_ROUTER_ADVERTISEMENT: RouterAdvertisement.parse,
    icmpv6.TYPE_NEIGHBOR_SOLICITATION: NeighborSolicitation.parse,
    icmpv6.TYPE_NEIGHBOR_ADVERTISEMENT: NeighborAdvertisement.parse,
}


def parse(message: Icmpv6Message) -> NdpMessage:
    """The Neighbor Discovery message ``message`` carries (Redirect is not read)."""
    parser = _MESSAGES.get(message.type)
    if parser is None:
        raise SanityError("ndp_unsupported_type", f"ICMPv6 type {message.type}")
    return parser(message)


def check_ip(packet: ipv6.IPv6Packet, message: NdpMessage) -> None:
    """The checks of §6.1 and §7.1 on the IPv6 header that carried ``message``."""
    if packet.hop_limit != HOP_LIMIT:
        raise SanityError("ndp_bad_hop_limit", f"hop limit {packet.hop_limit}")
    unspecified = packet.src == ipv6.UNSPECIFIED
    if isinstance(message, RouterSolicitation | NeighborSolicitation):
        if unspecified and message.source_mac is not None:
            # §6.1.1, §7.1.1: an address being tested must not be bound to a MAC yet.
            raise SanityError("ndp_unspecified_source_lladdr")
        # A solicited-node group is its own solicited-node group: ff02::1:ff00:0/104.
        if (
            isinstance(message, NeighborSolicitation)
            and unspecified
            and packet.dst != ipv6.solicited_node(packet.dst)
        ):
            raise SanityError("ndp_dad_not_solicited_node", f"to {packet.dst}")
    elif isinstance(message, RouterAdvertisement):
        if not packet.src.is_link_local:
            raise SanityError("ndp_ra_not_link_local", f"from {packet.src}")  # §6.1.2
    elif message.solicited and packet.dst.is_multicast:
        raise SanityError("ndp_solicited_to_multicast")  # §7.1.2


def parse_options(data: memoryview) -> tuple[NdpOption, ...]:
    """The options in ``data``, known ones typed, unknown ones skipped (§4.6)."""
    options: list[NdpOption] = []
    position = 0
    while position < len(data):
        if position + 2 > len(data):
            raise IntegrityError("ndp_option_overrun", f"option header at {position}")
        kind, units = data[position], data[position + 1]
        if units == 0:
            # §4.6: nodes MUST silently discard an ND packet with such an option.
            raise IntegrityError("ndp_zero_option_length", f"option {kind} at {position}")
        end = position + units * _UNIT
        if end > len(data):
            raise IntegrityError("ndp_option_overrun", f"option {kind} at {position}")
        reader = _OPTIONS.get(kind)
        if reader is not None:
            options.append(reader(data[position:end]))
        position = end
    return tuple(options)


def _body(message: Icmpv6Message, type_: int, fixed: int) -> memoryview:
    """The message body after ``rest``, checked to be of ``type_``, code 0 and to hold
    the ``fixed`` bytes before the options."""
    if message.type != type_:
        raise SanityError("ndp_unexpected_type", f"ICMPv6 type {message.type}, not {type_}")
    if message.code != 0:
        raise SanityError("ndp_bad_code", f"code {message.code}")
    body = memoryview(message.payload)
    require(body, fixed, "ndp_truncated", f"ICMPv6 type {type_}")
    return body


def _target(body: memoryview) -> IPv6Address:
    target = IPv6Address(bytes(body[:_TARGET_LEN]))
    if target.is_multicast:
        raise SanityError("ndp_multicast_target", str(target))  # §7.1.1, §7.1.2
    return target


def _sized(option: memoryview, units: int) -> None:
    if len(option) != units * _UNIT:
        raise SanityError("ndp_bad_option_length", f"option {option[0]}: {len(option)} bytes")


def _source_link_layer(option: memoryview) -> NdpOption:
    _sized(option, 1)
    return SourceLinkLayerAddress(bytes(option[2 : 2 + _MAC_LEN]))


def _target_link_layer(option: memoryview) -> NdpOption:
    _sized(option, 1)
    return TargetLinkLayerAddress(bytes(option[2 : 2 + _MAC_LEN]))


def _prefix_information(option: memoryview) -> NdpOption:
    _sized(option, 4)
    _type, _len, length, flags, valid, preferred, _reserved, prefix = _PREFIX.unpack_from(option)
    if length > 128:
        raise SanityError("ndp_bad_prefix_length", f"prefix length {length}")
    # §4.6.2: the bits past the prefix length are ignored by the receiver.
    network = IPv6Network((prefix, length), strict=False)
    return PrefixInformation(
        network, bool(flags & FLAG_ON_LINK), bool(flags & FLAG_AUTONOMOUS), valid, preferred
    )


def _mtu(option: memoryview) -> NdpOption:
    _sized(option, 1)
    return Mtu(_MTU.unpack_from(option)[3])


def _rdnss(option: memoryview) -> NdpOption:
    # RFC 8106 §5.1: the head's unit, then two per address.
    if len(option) < 3 * _UNIT or len(option) % (2 * _UNIT) != _UNIT:
        raise SanityError("ndp_bad_option_length", f"RDNSS of {len(option)} bytes")
    lifetime = _DNS_HEAD.unpack_from(option)[3]
    servers = tuple(IPv6Address(bytes(option[i : i + 16])) for i in range(_UNIT, len(option), 16))
    return RecursiveDnsServers(servers, lifetime)


def _dnssl(option: memoryview) -> NdpOption:
    if len(option) < 2 * _UNIT:  # RFC 8106 §5.2: the head and at least one unit of names
        raise SanityError("ndp_bad_option_length", f"DNSSL of {len(option)} bytes")
    lifetime = _DNS_HEAD.unpack_from(option)[3]
    return DnsSearchList(decode_names(option[_UNIT:], "ndp", padded=True), lifetime)


_OPTIONS: dict[int, Callable[[memoryview], NdpOption]] = {
    OPTION_SOURCE_LINK_LAYER: _source_link_layer,
    OPTION_TARGET_LINK_LAYER: _target_link_layer,
    OPTION_PREFIX_INFORMATION: _prefix_information,
    OPTION_MTU: _mtu,
    OPTION_RDNSS: _rdnss,
    OPTION_DNSSL: _dnssl,
}
