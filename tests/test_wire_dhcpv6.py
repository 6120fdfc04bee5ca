"""DHCPv6: client messages from scapy, our replies dissected by scapy, RFC 8415 §16 checks,
malformed options, and the uncompressed name lists it shares with NDP's DNSSL."""

from __future__ import annotations

from ipaddress import IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.dhcp6 import (
    DUID_LL,
    DHCP6_Advertise,
    DHCP6_InfoRequest,
    DHCP6_Reply,
    DHCP6_Request,
    DHCP6_Solicit,
    DHCP6OptClientId,
    DHCP6OptDNSDomains,
    DHCP6OptDNSServers,
    DHCP6OptElapsedTime,
    DHCP6OptIA_NA,
    DHCP6OptIA_PD,
    DHCP6OptOptReq,
    DHCP6OptRapidCommit,
    DHCP6OptServerId,
    DHCP6OptStatusCode,
)
from scapy.layers.dns import dns_encode
from scapy.layers.inet import UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Packet

from slirpnet.wire import dhcpv6
from slirpnet.wire.dhcpv6 import (
    Dhcpv6Message,
    Dhcpv6Option,
    MessageType,
    OptionCode,
    StatusCode,
    duid_ll,
)
from slirpnet.wire.dnsnames import decode_names, encode_names
from slirpnet.wire.errors import IntegrityError, SanityError, WireError
from slirpnet.wire.ipv6 import IPv6Packet
from slirpnet.wire.udp import UdpDatagram

GUEST_MAC = bytes.fromhex("525400123456")
GATEWAY_MAC = bytes.fromhex("525400000002")
GUEST_LL = IPv6Address("fe80::5054:ff:fe12:3456")
GATEWAY_LL = IPv6Address("fe80::5054:ff:fe00:2")
DNS = IPv6Address("fec0::3")
SERVER_DUID = duid_ll(GATEWAY_MAC)
CLIENT_DUID = duid_ll(GUEST_MAC)
XID = 0xABCDEF


def from_client(message: Packet) -> Dhcpv6Message:
    """``message`` as a guest sends it (IPv6, UDP 546 to 547), read back layer by layer."""
    frame = IPv6(src=str(GUEST_LL), dst=str(dhcpv6.ALL_DHCP_RELAY_AGENTS_AND_SERVERS))
    raw = bytes(frame / UDP(sport=546, dport=547) / message)
    packet = IPv6Packet.parse(raw)
    datagram = UdpDatagram.parse(packet.payload, packet.src, packet.dst)
    return Dhcpv6Message.parse(datagram.payload)


def to_client(message: Dhcpv6Message) -> Packet:
    """``message`` sent the way the core will, as scapy dissects it (checksum checked)."""
    datagram = UdpDatagram(547, 546, message.encode()).encode(GATEWAY_LL, GUEST_LL)
    packet = IPv6(IPv6Packet(GATEWAY_LL, GUEST_LL, 17, datagram).encode())
    checksum = packet[UDP].chksum
    del packet[UDP].chksum
    assert IPv6(bytes(packet))[UDP].chksum == checksum
    return packet


def reason_for(data: bytes) -> str:
    with pytest.raises((IntegrityError, SanityError)) as info:
        Dhcpv6Message.parse(data)
    return info.value.reason


def test_duid_ll_matches_scapy() -> None:
    assert bytes(DUID_LL(lladdr=GATEWAY_MAC.hex(":"))) == SERVER_DUID


def test_information_request_from_scapy() -> None:
    message = from_client(
        DHCP6_InfoRequest(trid=XID)
        / DHCP6OptClientId(duid=DUID_LL(lladdr=GUEST_MAC.hex(":")))
        / DHCP6OptOptReq(reqopts=[23, 24, 32])
        / DHCP6OptElapsedTime(elapsedtime=250)
    )
    assert (message.msg_type, message.transaction_id) == (MessageType.INFORMATION_REQUEST, XID)
    assert message.client_id == CLIENT_DUID
    assert message.server_id is None
    assert message.option_request == (23, 24, 32)
    assert message.elapsed_time == 250
    assert not message.rapid_commit
    assert not message.has_ia_na
    message.check_for_server(SERVER_DUID)


def test_solicit_from_scapy() -> None:
    message = from_client(
        DHCP6_Solicit(trid=1)
        / DHCP6OptClientId(duid=DUID_LL(lladdr=GUEST_MAC.hex(":")))
        / DHCP6OptRapidCommit()
        / DHCP6OptIA_NA(iaid=5)
        / DHCP6OptElapsedTime()
        / DHCP6OptOptReq()
    )
    assert message.msg_type == MessageType.SOLICIT
    assert message.rapid_commit and message.has_ia_na and message.has_ia
    assert message.option_request == (23, 24)
    message.check_for_server(SERVER_DUID)


def test_reply_to_an_information_request_is_dissected_by_scapy() -> None:
    request = from_client(
        DHCP6_InfoRequest(trid=XID)
        / DHCP6OptClientId(duid=DUID_LL(lladdr=GUEST_MAC.hex(":")))
        / DHCP6OptOptReq(reqopts=[23, 24])
    )
    reply = request.reply(
        SERVER_DUID,
        [
            Dhcpv6Option.dns_servers([DNS]),
            Dhcpv6Option.domain_list(["example.test", "lab.example.test."]),
            Dhcpv6Option.information_refresh_time(86400),
        ],
    )
    dissected = to_client(reply)[DHCP6_Reply]
    assert dissected.trid == XID
    assert dissected[DHCP6OptServerId].duid.lladdr == GATEWAY_MAC.hex(":")
    assert dissected[DHCP6OptClientId].duid.lladdr == GUEST_MAC.hex(":")
    assert dissected[DHCP6OptDNSServers].dnsservers == [str(DNS)]
    assert dissected[DHCP6OptDNSDomains].dnsdomains == ["example.test.", "lab.example.test."]
    # And read back: the typed accessors of what we built.
    again = Dhcpv6Message.parse(reply.encode())
    assert again == reply
    assert again.dns_servers == (DNS,)
    assert again.domain_list == ("example.test.", "lab.example.test.")
    assert again.server_id == SERVER_DUID and again.client_id == CLIENT_DUID


def test_reply_without_a_client_id_copies_none() -> None:
    request = from_client(DHCP6_InfoRequest(trid=XID))
    reply = request.reply(SERVER_DUID)
    assert reply.client_id is None
    assert DHCP6OptClientId not in to_client(reply)


def test_advertise_with_no_addresses() -> None:
    solicit = from_client(
        DHCP6_Solicit(trid=XID)
        / DHCP6OptClientId(duid=DUID_LL(lladdr=GUEST_MAC.hex(":")))
        / DHCP6OptIA_NA(iaid=1)
    )
    advertise = solicit.reply(
        SERVER_DUID,
        [Dhcpv6Option.status_code(StatusCode.NO_ADDRS_AVAIL, "stateless only")],
        msg_type=MessageType.ADVERTISE,
    )
    dissected = to_client(advertise)[DHCP6_Advertise]
    assert dissected[DHCP6OptStatusCode].statuscode == 2
    assert dissected[DHCP6OptStatusCode].statusmsg == b"stateless only"
    assert Dhcpv6Message.parse(advertise.encode()).status == (2, "stateless only")


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (DHCP6_InfoRequest(), None),
        (DHCP6_InfoRequest() / DHCP6OptServerId(duid=DUID_LL(lladdr="52:54:00:00:00:02")), None),
        (
            DHCP6_InfoRequest() / DHCP6OptServerId(duid=DUID_LL(lladdr="52:54:00:00:00:09")),
            "dhcpv6_other_server",
        ),
        (DHCP6_InfoRequest() / DHCP6OptIA_NA(), "dhcpv6_ia_in_information_request"),
        (DHCP6_InfoRequest() / DHCP6OptIA_PD(), "dhcpv6_ia_in_information_request"),
        (DHCP6_Solicit(), "dhcpv6_missing_client_id"),
        (
            DHCP6_Solicit()
            / DHCP6OptClientId(duid=DUID_LL(lladdr="52:54:00:12:34:56"))
            / DHCP6OptServerId(duid=DUID_LL(lladdr="52:54:00:00:00:02")),
            "dhcpv6_unexpected_server_id",
        ),
        (
            DHCP6_Request() / DHCP6OptClientId(duid=DUID_LL(lladdr="52:54:00:12:34:56")),
            "dhcpv6_missing_server_id",
        ),
        (DHCP6_Reply(), "dhcpv6_server_message"),
    ],
)
def test_check_for_server(message: Packet, reason: str | None) -> None:
    parsed = from_client(message)
    if reason is None:
        parsed.check_for_server(SERVER_DUID)
    else:
        with pytest.raises(SanityError) as info:
            parsed.check_for_server(SERVER_DUID)
        assert info.value.reason == reason


# --- refusals ----------------------------------------------------------------------------

GOOD = bytes(
    DHCP6_InfoRequest(trid=XID)
    / DHCP6OptClientId(duid=DUID_LL(lladdr=GUEST_MAC.hex(":")))
    / DHCP6OptOptReq(reqopts=[23, 24])
    / DHCP6OptElapsedTime()
)
OPTION_STARTS = (4, 4 + 4 + 10, 4 + 14 + 8)


@pytest.mark.parametrize("length", range(len(GOOD)))
def test_every_truncation(length: int) -> None:
    if length < 4:
        assert reason_for(GOOD[:length]) == "dhcpv6_truncated"
    elif length in OPTION_STARTS:
        # Cut between options: a shorter message, well formed.
        assert Dhcpv6Message.parse(GOOD[:length]).encode() == GOOD[:length]
    else:
        assert reason_for(GOOD[:length]) == "dhcpv6_option_overrun"


def option(code: int, value: bytes) -> bytes:
    return code.to_bytes(2, "big") + len(value).to_bytes(2, "big") + value


def header(msg_type: int = 11) -> bytes:
    return bytes((msg_type,)) + XID.to_bytes(3, "big")


@pytest.mark.parametrize(
    ("code", "value"),
    [
        (OptionCode.ORO, b"\x00\x17\x00"),
        (OptionCode.ELAPSED_TIME, b"\x00"),
        (OptionCode.ELAPSED_TIME, b"\x00\x00\x00"),
        (OptionCode.RAPID_COMMIT, b"\x00"),
        (OptionCode.IA_NA, bytes(11)),
        (OptionCode.IA_TA, bytes(3)),
        (OptionCode.IA_PD, bytes(11)),
        (OptionCode.PREFERENCE, b""),
        (OptionCode.STATUS_CODE, b"\x00"),
        (OptionCode.DNS_SERVERS, bytes(15)),
        (OptionCode.INFORMATION_REFRESH_TIME, bytes(3)),
    ],
)
def test_option_of_the_wrong_length(code: int, value: bytes) -> None:
    assert reason_for(header() + option(code, value)) == "dhcpv6_bad_option_length"


def test_bad_duids() -> None:
    for code in (OptionCode.CLIENT_ID, OptionCode.SERVER_ID):
        assert reason_for(header() + option(code, b"\x00\x03")) == "dhcpv6_bad_duid"
        assert reason_for(header() + option(code, bytes(131))) == "dhcpv6_bad_duid"
    assert Dhcpv6Message.parse(header() + option(1, bytes(130))).client_id == bytes(130)


def test_repeated_options() -> None:
    client = option(OptionCode.CLIENT_ID, CLIENT_DUID)
    assert reason_for(header() + client + client) == "dhcpv6_repeated_option"
    # Several IAs are allowed (RFC 8415 §21.4).
    ia = option(OptionCode.IA_NA, bytes(12))
    assert Dhcpv6Message.parse(header(1) + client + ia + ia).has_ia_na


def test_unknown_options_are_kept_unchecked() -> None:
    message = Dhcpv6Message.parse(header() + option(999, b"x") + option(16, b""))
    assert [o.code for o in message.options] == [999, 16]


def test_unsupported_message_types() -> None:
    for msg_type in (0, 12, 13, 14, 255):  # relay messages have another shape
        assert reason_for(header(msg_type)) == "dhcpv6_unsupported_type"


def test_domain_list_names() -> None:
    assert reason_for(header() + option(24, b"\x07example")) == "dhcpv6_name_truncated"
    assert reason_for(header() + option(24, b"\x04test\xc0\x04")) == "dhcpv6_bad_label"
    assert reason_for(header() + option(24, b"\x03a b\x00")) == "dhcpv6_bad_label"
    assert reason_for(header() + option(24, (b"\x3f" + b"a" * 63) * 4 + b"\x00")) == (
        "dhcpv6_name_too_long"
    )


def test_option_builders_refuse_nonsense() -> None:
    with pytest.raises(ValueError):
        Dhcpv6Option.dns_servers([])
    with pytest.raises(ValueError):
        Dhcpv6Option.domain_list([])
    with pytest.raises(ValueError):
        Dhcpv6Option.server_id(b"\x00")
    with pytest.raises(ValueError):
        Dhcpv6Option(99, bytes(0x10000)).encode()


# --- round trips -------------------------------------------------------------------------

labels = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=63)
names = st.lists(labels, min_size=1, max_size=3).map(lambda parts: ".".join(parts) + ".")
duids = st.binary(min_size=3, max_size=130)
options = st.lists(
    st.one_of(
        st.builds(Dhcpv6Option.client_id, duids),
        st.builds(Dhcpv6Option.server_id, duids),
        st.builds(Dhcpv6Option.option_request, st.lists(st.integers(0, 0xFFFF), max_size=5)),
        st.builds(Dhcpv6Option.elapsed_time, st.integers(0, 0xFFFF)),
        st.just(Dhcpv6Option.rapid_commit()),
        st.builds(
            Dhcpv6Option.dns_servers,
            st.lists(st.integers(0, 2**128 - 1).map(IPv6Address), min_size=1, max_size=3),
        ),
        st.builds(Dhcpv6Option.domain_list, st.lists(names, min_size=1, max_size=3)),
        st.builds(Dhcpv6Option, st.integers(100, 0xFFFF), st.binary(max_size=20)),
    ),
    max_size=6,
    unique_by=lambda o: o.code,
)


@given(st.sampled_from(list(MessageType)), st.integers(0, 0xFFFFFF), options)
def test_hypothesis_round_trip(msg_type: MessageType, xid: int, opts: list[Dhcpv6Option]) -> None:
    message = Dhcpv6Message(msg_type, xid, opts)
    assert Dhcpv6Message.parse(message.encode()) == message


@given(st.lists(names, max_size=5))
def test_hypothesis_names_match_scapy(domains: list[str]) -> None:
    encoded = encode_names(domains)
    assert encoded == b"".join(dns_encode(name.encode()) for name in domains)
    assert decode_names(encoded, "test") == tuple(domains)
    assert decode_names(encoded + bytes(7), "test", padded=True) == tuple(domains)


def test_root_name_is_read_only_unpadded() -> None:
    assert decode_names(b"\x00", "test") == (".",)
    assert decode_names(b"\x00\x00", "test", padded=True) == ()


@given(st.binary(max_size=60), st.booleans())
def test_hypothesis_names_raise_only_wire_errors(data: bytes, padded: bool) -> None:
    try:
        decoded = decode_names(data, "test", padded=padded)
    except WireError as error:
        assert error.reason.startswith("test_")
    else:
        # What decodes is what we would write: the same names, then zeros if padded.
        written = b"".join(b"\0" if name == "." else encode_names([name]) for name in decoded)
        assert data == (written.ljust(len(data), b"\0") if padded else written)
