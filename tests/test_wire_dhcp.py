"""DHCP: option round trips, scapy as oracle, overload, long options, RFC 3397 names, fuzzing."""

from __future__ import annotations

import contextlib
from ipaddress import IPv4Address
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.dns import dns_encode, dns_get_str

from slirpnet.wire.dhcp import (
    FLAG_BROADCAST,
    MIN_MESSAGE_LEN,
    OP_REPLY,
    OP_REQUEST,
    DhcpMessage,
    DhcpOption,
    MessageType,
    OptionCode,
    decode_names,
    encode_names,
)
from slirpnet.wire.errors import IntegrityError, SanityError, WireError
from slirpnet.wire.ethernet import parse_mac

GUEST = parse_mac("52:54:00:12:34:56")
GATEWAY = IPv4Address("10.0.2.2")
DNS = IPv4Address("10.0.2.3")
LEASE = IPv4Address("10.0.2.15")
XID = 0x3903F326
COOKIE = bytes((99, 130, 83, 99))

# RFC 3397's example: "eng.apple.com." and "marketing.apple.com.", the second compressed.
RFC3397_NAMES = ("eng.apple.com.", "marketing.apple.com.")
RFC3397_BYTES = bytes.fromhex("03656e67056170706c6503636f6d00096d61726b6574696e67c004")


# (built option, accessor, the value the accessor returns)
TYPED: list[tuple[DhcpOption, str, object]] = [
    (DhcpOption.message_type(MessageType.INFORM), "message_type", MessageType.INFORM),
    (
        DhcpOption.subnet_mask(IPv4Address("255.255.255.0")),
        "subnet_mask",
        IPv4Address("255.255.255.0"),
    ),
    (DhcpOption.routers([GATEWAY, DNS]), "routers", (GATEWAY, DNS)),
    (DhcpOption.dns_servers([DNS]), "dns_servers", (DNS,)),
    (DhcpOption.hostname("guest"), "hostname", "guest"),
    (DhcpOption.domain_name("example.org"), "domain_name", "example.org"),
    (DhcpOption.interface_mtu(1500), "interface_mtu", 1500),
    (DhcpOption.requested_ip(LEASE), "requested_ip", LEASE),
    (DhcpOption.lease_time(86400), "lease_time", 86400),
    (DhcpOption.server_id(GATEWAY), "server_id", GATEWAY),
    (DhcpOption.parameter_request_list([1, 3, 6, 119]), "parameter_request_list", (1, 3, 6, 119)),
    (DhcpOption.max_message_size(1500), "max_message_size", 1500),
    (DhcpOption.renewal_time(43200), "renewal_time", 43200),
    (DhcpOption.rebinding_time(75600), "rebinding_time", 75600),
    (DhcpOption.client_id(b"\x01" + GUEST), "client_id", b"\x01" + GUEST),
    (DhcpOption.domain_search(RFC3397_NAMES), "domain_search", RFC3397_NAMES),
]
ACCESSORS = [accessor for _, accessor, _ in TYPED]


def discover(*options: DhcpOption) -> DhcpMessage:
    return DhcpMessage(OP_REQUEST, XID, GUEST, options, flags=FLAG_BROADCAST)


def raw_message(options: bytes, *, sname: bytes = b"", file: bytes = b"") -> bytes:
    """A hand-built BOOTREQUEST from GUEST with the given raw options field."""
    header = bytes((OP_REQUEST, 1, 6, 0)) + XID.to_bytes(4, "big") + bytes(4 + 16)
    return (
        header
        + GUEST.ljust(16, b"\0")
        + sname.ljust(64, b"\0")
        + file.ljust(128, b"\0")
        + COOKIE
        + options
    )


def reason_of(error: type[WireError], data: bytes) -> str:
    with pytest.raises(error) as info:
        DhcpMessage.parse(data)
    return info.value.reason


def scapy_options(raw: bytes) -> dict[Any, Any]:
    return {o[0]: o[1:] for o in BOOTP(raw)[DHCP].options if isinstance(o, tuple)}


# Round trips


@pytest.mark.parametrize(("option", "accessor", "expected"), TYPED, ids=[t[1] for t in TYPED])
def test_every_typed_option_round_trips(
    option: DhcpOption, accessor: str, expected: object
) -> None:
    message = DhcpMessage.parse(discover(option).encode())
    assert message.options == (option,)
    assert getattr(message, accessor) == expected
    for other in ACCESSORS:
        if other != accessor:
            assert getattr(message, other) is None


def test_full_message_round_trips() -> None:
    message = DhcpMessage(
        OP_REPLY,
        XID,
        GUEST,
        [option for option, _, _ in TYPED] + [DhcpOption(224, b""), DhcpOption(250, b"x" * 700)],
        hops=3,
        secs=7,
        flags=FLAG_BROADCAST,
        ciaddr=IPv4Address("10.0.2.16"),
        yiaddr=LEASE,
        siaddr=GATEWAY,
        giaddr=IPv4Address("192.0.2.1"),
        sname=b"boot-server",
        file=b"pxelinux.0",
    )
    raw = message.encode()
    assert DhcpMessage.parse(raw) == message
    assert DhcpMessage.parse(bytearray(raw)) == message
    assert DhcpMessage.parse(memoryview(raw)) == message


def test_encode_pads_to_the_bootp_minimum_after_end() -> None:
    raw = discover(DhcpOption.message_type(MessageType.DISCOVER)).encode()
    assert len(raw) == MIN_MESSAGE_LEN
    assert raw[236:240] == COOKIE
    assert raw[240:244] == bytes((53, 1, 1, 255))
    assert raw[244:] == bytes(MIN_MESSAGE_LEN - 244)


def test_long_option_is_split_and_joined_again() -> None:
    value = bytes(range(256)) * 2 + b"tail"
    raw = discover(DhcpOption(250, value)).encode()
    assert (raw[240], raw[241], raw[242 + 255], raw[243 + 255]) == (250, 255, 250, 255)
    assert DhcpMessage.parse(raw).option(250) == value


def test_repeated_instances_concatenate_in_place_of_the_first() -> None:
    options = bytes((6, 4, 10, 0, 2, 3, 53, 1, 1, 0, 0, 6, 4, 8, 8, 8, 8, 255))
    message = DhcpMessage.parse(raw_message(options))
    assert [option.code for option in message.options] == [6, 53]
    assert message.dns_servers == (DNS, IPv4Address("8.8.8.8"))


def test_missing_end_and_trailing_garbage_after_end_are_tolerated() -> None:
    assert DhcpMessage.parse(raw_message(bytes((53, 1, 3)))).message_type == MessageType.REQUEST
    after_end = raw_message(bytes((53, 1, 3, 255, 1, 200)))
    assert DhcpMessage.parse(after_end).options == (DhcpOption.message_type(MessageType.REQUEST),)


def test_text_options_tolerate_a_trailing_nul() -> None:
    message = discover(DhcpOption(OptionCode.HOSTNAME, b"guest\0"))
    assert DhcpMessage.parse(message.encode()).hostname == "guest"


# scapy as an independent oracle


def test_scapy_discover_parses() -> None:
    raw = bytes(
        BOOTP(op=1, chaddr=GUEST, xid=XID, flags=0x8000, secs=4)
        / DHCP(
            options=[
                ("message-type", "discover"),
                ("client_id", b"\x01" + GUEST),
                ("hostname", b"guest"),
                ("requested_addr", "10.0.2.15"),
                ("max_dhcp_size", 1500),
                ("param_req_list", [1, 3, 6, 15, 26, 119]),
                (119, dns_encode(b"eng.apple.com.") + dns_encode(b"example.org.")),
                "end",
            ]
        )
    )
    message = DhcpMessage.parse(raw)
    assert (message.op, message.xid, message.chaddr, message.secs) == (OP_REQUEST, XID, GUEST, 4)
    assert message.broadcast
    assert message.message_type == MessageType.DISCOVER
    assert message.client_id == b"\x01" + GUEST
    assert message.hostname == "guest"
    assert message.requested_ip == LEASE
    assert message.max_message_size == 1500
    assert message.parameter_request_list == (1, 3, 6, 15, 26, 119)
    assert message.domain_search == ("eng.apple.com.", "example.org.")


@pytest.mark.parametrize("size", [2, 255, 256, 300])
def test_client_identifiers_of_any_length_from_scapy_are_read_whole(size: int) -> None:
    """RFC 2132 §9.14: two bytes at least; past 255 in instances joined (RFC 3396)."""
    identifier = b"\xff" + bytes(n % 251 for n in range(size - 1))
    instances = [("client_id", identifier[i : i + 255]) for i in range(0, size, 255)]
    raw = bytes(
        BOOTP(op=1, xid=XID, chaddr=GUEST)
        / DHCP(options=[("message-type", "discover"), *instances, "end"])
    )
    assert DhcpMessage.parse(raw).client_id == identifier


def test_our_offer_is_dissected_by_scapy() -> None:
    request = discover(DhcpOption.message_type(MessageType.DISCOVER))
    offer = request.reply(
        MessageType.OFFER,
        GATEWAY,
        yiaddr=LEASE,
        siaddr=GATEWAY,
        options=[
            DhcpOption.subnet_mask(IPv4Address("255.255.255.0")),
            DhcpOption.routers([GATEWAY]),
            DhcpOption.dns_servers([DNS]),
            DhcpOption.lease_time(86400),
            DhcpOption.renewal_time(43200),
            DhcpOption.rebinding_time(75600),
            DhcpOption.interface_mtu(1500),
            DhcpOption.domain_name("example.org"),
            DhcpOption.domain_search(RFC3397_NAMES),
        ],
    )
    raw = offer.encode()
    bootp = BOOTP(raw)
    assert (bootp.op, bootp.xid, bootp.flags, bootp.hlen) == (OP_REPLY, XID, 0x8000, 6)
    assert (bootp.yiaddr, bootp.siaddr, bootp.ciaddr) == ("10.0.2.15", "10.0.2.2", "0.0.0.0")
    assert bootp.chaddr[:6] == GUEST
    assert scapy_options(raw) == {
        "message-type": (2,),
        "server_id": ("10.0.2.2",),
        "subnet_mask": ("255.255.255.0",),
        "router": ("10.0.2.2",),
        "name_server": ("10.0.2.3",),
        "lease_time": (86400,),
        "renewal_time": (43200,),
        "rebinding_time": (75600,),
        "interface-mtu": (1500,),
        "domain": (b"example.org",),
        119: (RFC3397_BYTES,),
    }
    assert bootp[DHCP].options[-1] == "end"


def test_scapy_decompresses_our_search_list() -> None:
    names = ("a.example.org.", "b.example.org.", "example.org.", "c.a.example.org.", ".")
    data = encode_names(names)
    decoded, rest = [], data
    while rest:
        name, rest = dns_get_str(rest, full=data)
        decoded.append(name.decode())
    assert tuple(decoded) == names == decode_names(data)
    assert len(data) < sum(len(dns_encode(n.encode())) for n in names)


def test_reply_fields_follow_rfc2131_table_3() -> None:
    request = DhcpMessage(
        OP_REQUEST,
        XID,
        GUEST,
        [DhcpOption.message_type(MessageType.REQUEST)],
        hops=2,
        secs=9,
        ciaddr=LEASE,
        giaddr=IPv4Address("192.0.2.1"),
    )
    ack = request.reply(MessageType.ACK, GATEWAY, yiaddr=LEASE)
    assert (ack.op, ack.xid, ack.chaddr, ack.hops, ack.secs) == (OP_REPLY, XID, GUEST, 0, 0)
    assert (ack.ciaddr, ack.giaddr) == (LEASE, IPv4Address("192.0.2.1"))
    assert (ack.message_type, ack.server_id) == (MessageType.ACK, GATEWAY)
    assert [option.code for option in ack.options] == [53, 54]
    assert request.reply(MessageType.NAK, GATEWAY).ciaddr == IPv4Address(0)


# Option overload (RFC 2132 §9.3), built by hand


def test_overload_reads_file_then_sname() -> None:
    raw = raw_message(
        bytes((52, 1, 3, 53, 1, 5, 6, 4, 10, 0, 2, 3, 255)),
        file=bytes((6, 4, 8, 8, 8, 8, 51, 4, 0, 1, 81, 128, 255)),
        sname=bytes((6, 4, 1, 1, 1, 1, 0, 0, 1, 4, 255, 255, 255, 0, 255)),
    )
    message = DhcpMessage.parse(raw)
    assert message.dns_servers == (DNS, IPv4Address("8.8.8.8"), IPv4Address("1.1.1.1"))
    assert (message.message_type, message.lease_time) == (MessageType.ACK, 86400)
    assert message.subnet_mask == IPv4Address("255.255.255.0")
    assert (message.sname, message.file) == (b"", b"")
    assert OptionCode.OVERLOAD not in [option.code for option in message.options]
    # Re-encoded without overload, and scapy agrees on the result.
    assert scapy_options(message.encode())["name_server"] == ("10.0.2.3", "8.8.8.8", "1.1.1.1")


def test_overload_of_file_only_keeps_sname() -> None:
    raw = raw_message(bytes((52, 1, 1, 255)), file=bytes((12, 5)) + b"guest", sname=b"server")
    message = DhcpMessage.parse(raw)
    assert (message.hostname, message.sname, message.file) == ("guest", b"server", b"")


def test_without_overload_file_and_sname_are_names() -> None:
    message = DhcpMessage.parse(raw_message(bytes((255,)), file=bytes((12, 5)) + b"guest"))
    assert message.hostname is None
    assert message.file == bytes((12, 5)) + b"guest"


@pytest.mark.parametrize(
    ("options", "file"),
    [
        (bytes((52, 1, 4)), b""),
        (bytes((52, 2, 1, 1)), b""),
        (bytes((52, 1, 1)), bytes((52, 1, 2))),
    ],
    ids=["bad_value", "bad_length", "nested"],
)
def test_bad_overload(options: bytes, file: bytes) -> None:
    assert reason_of(SanityError, raw_message(options, file=file)) == "dhcp_bad_overload"


def test_overrun_inside_overloaded_field() -> None:
    raw = raw_message(bytes((52, 1, 2)), sname=b"\x0c\x7f")
    assert reason_of(IntegrityError, raw) == "dhcp_option_overrun"


# Domain search list (RFC 3397, RFC 1035 §4.1.4)


def test_rfc3397_example_encodes_to_the_known_bytes() -> None:
    assert encode_names(RFC3397_NAMES) == RFC3397_BYTES
    assert encode_names(["eng.apple.com", "marketing.apple.com"]) == RFC3397_BYTES


def test_rfc3397_example_split_over_three_instances() -> None:
    chunks = [RFC3397_BYTES[i : i + 9] for i in range(0, 27, 9)]
    options = b"".join(bytes((119, 9)) + chunk for chunk in chunks) + b"\xff"
    assert DhcpMessage.parse(raw_message(options)).domain_search == RFC3397_NAMES


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xc0\x00", "dhcp_bad_pointer"),  # points at itself
        (b"\x01a\xc0\x00", "dhcp_bad_pointer"),  # back to its own start: a loop
        (b"\xc0\x02\x00", "dhcp_bad_pointer"),  # forward
        (b"\x01a\x00\x01b\xc0\x07\x01c\xc0\x03", "dhcp_bad_pointer"),  # into a later name
        (b"\x01a\x00\xc0", "dhcp_name_truncated"),
        (b"\x03ab", "dhcp_name_truncated"),
        (b"\x01a", "dhcp_name_truncated"),
        (b"\x41a\x00", "dhcp_bad_label"),
        (b"\x81a\x00", "dhcp_bad_label"),
        (b"\x03a.b\x00", "dhcp_bad_label"),
        (b"\x02\xc3\xa9\x00", "dhcp_bad_label"),
        (b"".join(b"\x3f" + bytes((c,)) * 63 for c in b"abcd") + b"\0", "dhcp_name_too_long"),
    ],
)
def test_malformed_search_lists(data: bytes, reason: str) -> None:
    with pytest.raises(WireError) as info:
        decode_names(data)
    assert info.value.reason == reason


def test_too_long_name_reached_through_pointers() -> None:
    label = b"\x3f" + b"a" * 63
    data = label + label + b"\x00" + label + label + b"\xc0\x00"
    with pytest.raises(SanityError) as info:
        decode_names(data)
    assert info.value.reason == "dhcp_name_too_long"


def test_pointer_chain_is_bounded() -> None:
    # Each name is a pointer to the previous one: legal, but a deep chain is refused.
    data = b"\x00" + b"".join((0xC000 | max(0, 2 * i - 1)).to_bytes(2, "big") for i in range(200))
    with pytest.raises(IntegrityError) as info:
        decode_names(data)
    assert info.value.reason == "dhcp_bad_pointer"


@pytest.mark.parametrize(
    "name", ["a..b", "a" * 64 + ".org", "é.org", "a b.org", ("a" * 63 + ".") * 4]
)
def test_bad_names_are_not_encoded(name: str) -> None:
    with pytest.raises(ValueError):
        encode_names([name])


# Refusals of the message and of option values


def test_truncated() -> None:
    assert reason_of(IntegrityError, raw_message(b"")[:239]) == "dhcp_truncated"


def test_header_refusals() -> None:
    good = raw_message(b"\xff")
    assert (
        reason_of(SanityError, good[:236] + b"\x63\x82\x53\x64" + good[240:]) == "dhcp_bad_cookie"
    )
    assert reason_of(SanityError, b"\x03" + good[1:]) == "dhcp_bad_op"
    assert reason_of(SanityError, good[:2] + b"\x11" + good[3:]) == "dhcp_hlen_too_long"
    assert reason_of(SanityError, good[:2] + b"\x08" + good[3:]) == "dhcp_hlen_mismatch"
    # Another hardware type may use another length.
    assert DhcpMessage.parse(good[:1] + b"\x20\x00" + good[3:]).chaddr == b""


@pytest.mark.parametrize("options", [b"\x35", b"\x35\x02\x01", b"\x00\x00\x0c\x05abcd"])
def test_option_overrun(options: bytes) -> None:
    assert reason_of(IntegrityError, raw_message(options)) == "dhcp_option_overrun"


@pytest.mark.parametrize(
    ("option", "accessor", "reason"),
    [
        (DhcpOption(1, b"\xff\xff\xff"), "subnet_mask", "dhcp_bad_option_length"),
        (DhcpOption(3, b""), "routers", "dhcp_bad_option_length"),
        (DhcpOption(6, b"\x0a\x00\x02\x03\x08"), "dns_servers", "dhcp_bad_option_length"),
        (DhcpOption(12, b"\0"), "hostname", "dhcp_bad_option_length"),
        (DhcpOption(15, "exämple".encode()), "domain_name", "dhcp_bad_text"),
        (DhcpOption(26, b"\x00\x40"), "interface_mtu", "dhcp_bad_option_value"),
        (DhcpOption(51, b"\x00\x01"), "lease_time", "dhcp_bad_option_length"),
        (DhcpOption(53, b"\x09"), "message_type", "dhcp_bad_message_type"),
        (DhcpOption(53, b"\x01\x01"), "message_type", "dhcp_bad_option_length"),
        (DhcpOption(55, b""), "parameter_request_list", "dhcp_bad_option_length"),
        (DhcpOption(57, b"\x01\x00"), "max_message_size", "dhcp_bad_option_value"),
        (DhcpOption(61, b"\x01"), "client_id", "dhcp_bad_option_length"),  # the type alone
        (DhcpOption(61, b""), "client_id", "dhcp_bad_option_length"),
        (DhcpOption(119, b"\xc0\x00"), "domain_search", "dhcp_bad_pointer"),
    ],
)
def test_malformed_option_values(option: DhcpOption, accessor: str, reason: str) -> None:
    message = DhcpMessage.parse(discover(option).encode())
    with pytest.raises(WireError) as info:
        getattr(message, accessor)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    "build",
    [
        lambda: DhcpOption(0, b""),
        lambda: DhcpOption(52, b"\x01"),
        lambda: DhcpOption(255, b""),
        lambda: DhcpOption.routers([]),
        lambda: DhcpOption.interface_mtu(67),
        lambda: DhcpOption.max_message_size(575),
        lambda: DhcpOption.lease_time(1 << 32),
        lambda: DhcpOption.hostname(""),
        lambda: DhcpOption.client_id(b"\x01"),
        lambda: DhcpOption.parameter_request_list([]),
        lambda: discover(DhcpOption.lease_time(1), DhcpOption.lease_time(2)),
        lambda: DhcpMessage(3, XID, GUEST),
        lambda: DhcpMessage(OP_REQUEST, XID, GUEST + b"\0"),
        lambda: DhcpMessage(OP_REQUEST, XID, b"x" * 17, htype=32),
        lambda: DhcpMessage(OP_REQUEST, XID, GUEST, sname=b"s" * 65),
    ],
)
def test_invalid_messages_cannot_be_built(build: Any) -> None:
    with pytest.raises(ValueError):
        build()


# Fuzzing: nothing but WireError may escape parse or the accessors


def _read_everything(data: bytes) -> None:
    try:
        message = DhcpMessage.parse(data)
    except WireError:
        return
    for accessor in ACCESSORS:
        with contextlib.suppress(WireError):
            getattr(message, accessor)
    # Whatever parsed re-encodes to a message that parses to the same thing.
    assert DhcpMessage.parse(message.encode()) == message


SEED = DhcpMessage(
    OP_REPLY, XID, GUEST, [option for option, _, _ in TYPED], yiaddr=LEASE, sname=b"srv"
).encode()
OVERLOADED_SEED = raw_message(
    bytes((52, 1, 3, 53, 1, 5, 119, 3)) + RFC3397_BYTES[:3] + b"\xff",
    file=bytes((119, 24)) + RFC3397_BYTES[3:] + b"\xff",
    sname=bytes((6, 4, 1, 1, 1, 1, 255)),
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from([SEED, OVERLOADED_SEED])))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
        # Bytes are changed anywhere; the length only after the cookie, since a shift
        # before it merely misaligns the cookie.
        last = len(data) - 1
        at = draw(st.integers(0 if kind in ("flip", "set") else min(240, last), last))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[at] = draw(st.sampled_from([0, 1, 2, 3, 4, 52, 63, 64, 0xC0, 0xFF]))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[at : at + draw(st.integers(1, 8))]
    return bytes(data)


@given(st.binary(max_size=600))
def test_fuzz_random_bytes(data: bytes) -> None:
    _read_everything(data)


@given(st.binary(max_size=300))
def test_fuzz_random_bytes_after_a_valid_header(options: bytes) -> None:
    _read_everything(raw_message(options))


@given(mutated())
def test_fuzz_mutations_of_valid_messages(data: bytes) -> None:
    _read_everything(data)


# Bytes that are mostly lengths, pointers and terminators reach the pointer logic.
NAME_BYTES = st.lists(st.sampled_from([0, 1, 2, 3, 0x61, 0x40, 0xC0, 0xC1]), max_size=80).map(bytes)


@given(st.one_of(st.binary(max_size=300), NAME_BYTES))
def test_fuzz_search_list_decoding(data: bytes) -> None:
    with contextlib.suppress(WireError):
        decode_names(data)


LABEL = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)
NAME = st.lists(LABEL, max_size=5).map(lambda labels: ".".join(labels) + ".")


@given(st.lists(NAME, max_size=6))
def test_search_lists_round_trip(names: list[str]) -> None:
    assert decode_names(encode_names(names)) == tuple(names)


@given(
    st.lists(
        st.tuples(st.integers(1, 254).filter(lambda c: c != 52), st.binary(max_size=600)),
        max_size=6,
        unique_by=lambda o: o[0],
    )
)
def test_arbitrary_options_round_trip(options: list[tuple[int, bytes]]) -> None:
    message = discover(*(DhcpOption(code, value) for code, value in options))
    assert DhcpMessage.parse(message.encode()) == message
