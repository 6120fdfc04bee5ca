"""TFTP codec: scapy as the oracle both ways, every refusal under its reason, fuzzing."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.tftp import (
    TFTP,
    TFTP_ACK,
    TFTP_DATA,
    TFTP_ERROR,
    TFTP_OACK,
    TFTP_RRQ,
    TFTP_WRQ,
    TFTP_Option,
    TFTP_Options,
)
from scapy.packet import Packet

from slirpnet.wire import tftp
from slirpnet.wire.errors import IntegrityError, SanityError, WireError
from slirpnet.wire.tftp import Ack, Data, Error, ErrorCode, Opcode, OptionAck, Request


def scapy_options(*pairs: tuple[bytes, bytes]) -> Packet:
    return TFTP_Options(options=[TFTP_Option(oname=name, value=value) for name, value in pairs])


def test_rrq_from_scapy_with_options() -> None:
    packet = (
        TFTP()
        / TFTP_RRQ(filename=b"pxe/boot.ipxe", mode=b"OCTET")
        / scapy_options((b"BlkSize", b"1432"), (b"tsize", b"0"), (b"windowsize", b"8"))
    )
    parsed = tftp.parse(bytes(packet))
    assert parsed == Request(
        Opcode.RRQ,
        b"pxe/boot.ipxe",
        "octet",  # RFC 1350 §5: modes are case-insensitive, as are option names (RFC 2347)
        (("blksize", "1432"), ("tsize", "0"), ("windowsize", "8")),
    )


def test_wrq_from_scapy() -> None:
    packet = TFTP() / TFTP_WRQ(filename=b"upload", mode=b"netascii")
    assert tftp.parse(bytes(packet)) == Request(Opcode.WRQ, b"upload", "netascii")


def test_request_encodes_as_scapy_builds_it() -> None:
    request = Request(Opcode.RRQ, b"kernel", "octet", (("blksize", "512"),))
    expected = (
        TFTP() / TFTP_RRQ(filename=b"kernel", mode=b"octet") / scapy_options((b"blksize", b"512"))
    )
    assert request.encode() == bytes(expected)
    assert tftp.parse(request.encode()) == request


@pytest.mark.parametrize("size", [0, 1, 511, 512, 1432, tftp.MAX_BLOCK_SIZE])
def test_data_both_ways(size: int) -> None:
    payload = bytes(i * 7 & 0xFF for i in range(size))
    data = Data(65535, payload)
    scapy = TFTP(data.encode())
    assert (scapy.op, scapy[TFTP_DATA].block, bytes(scapy[TFTP_DATA].payload)) == (
        3,
        65535,
        payload,
    )
    assert tftp.parse(bytes(TFTP() / TFTP_DATA(block=65535) / payload)) == data


def test_ack_both_ways() -> None:
    assert Ack(70).encode() == bytes(TFTP() / TFTP_ACK(block=70))
    assert tftp.parse(bytes(TFTP() / TFTP_ACK(block=0))) == Ack(0)


def test_error_both_ways() -> None:
    error = Error(ErrorCode.ACCESS_VIOLATION, "access violation")
    assert error.encode() == bytes(TFTP() / TFTP_ERROR(errorcode=2, errormsg=b"access violation"))
    assert tftp.parse(bytes(TFTP() / TFTP_ERROR(errorcode=1, errormsg=b""))) == Error(1, "")


def test_oack_both_ways() -> None:
    oack = OptionAck((("blksize", "1468"), ("tsize", "20480")))
    expected = TFTP() / TFTP_OACK() / scapy_options((b"blksize", b"1468"), (b"tsize", b"20480"))
    assert oack.encode() == bytes(expected)
    assert tftp.parse(oack.encode()) == oack
    dissected = TFTP(oack.encode())
    assert [(o.oname, o.value) for o in dissected[TFTP_Options].options] == [
        (b"blksize", b"1468"),
        (b"tsize", b"20480"),
    ]


@pytest.mark.parametrize(
    ("data", "error", "reason"),
    [
        (b"", IntegrityError, "tftp_truncated"),
        (b"\x00", IntegrityError, "tftp_truncated"),
        (b"\x00\x07xx", SanityError, "tftp_bad_opcode"),
        (b"\x00\x00", SanityError, "tftp_bad_opcode"),
        (b"\x00\x01file", IntegrityError, "tftp_unterminated"),
        (b"\x00\x01file\x00octet", IntegrityError, "tftp_unterminated"),
        (b"\x00\x01file\x00", IntegrityError, "tftp_truncated"),
        (b"\x00\x01", IntegrityError, "tftp_truncated"),
        (b"\x00\x01\x00octet\x00", SanityError, "tftp_bad_filename"),
        (b"\x00\x01file\x00binary\x00", SanityError, "tftp_bad_mode"),
        # A NUL inside the name ends it: what follows is taken as the mode, and refused.
        (b"\x00\x01file\x00.txt\x00octet\x00", SanityError, "tftp_bad_mode"),
        (b"\x00\x01file\x00octet\x00blksize\x00", SanityError, "tftp_bad_option"),
        (b"\x00\x01f\x00octet\x00\x00512\x00", SanityError, "tftp_bad_option"),
        (b"\x00\x01f\x00octet\x00tsize\x000\x00TSIZE\x000\x00", SanityError, "tftp_bad_option"),
        (b"\x00\x01f\x00octet\x00blks\xe9ze\x00512\x00", SanityError, "tftp_bad_option"),
        (b"\x00\x01f\x00oct\xe9t\x00", SanityError, "tftp_bad_option"),
        (b"\x00\x03\x00", IntegrityError, "tftp_truncated"),
        (b"\x00\x03\x00\x01" + bytes(tftp.MAX_BLOCK_SIZE + 1), SanityError, "tftp_block_too_large"),
        (b"\x00\x04\x00", IntegrityError, "tftp_truncated"),
        (b"\x00\x04\x00\x01\x00", SanityError, "tftp_bad_length"),
        (b"\x00\x05\x00\x01", IntegrityError, "tftp_truncated"),
        (b"\x00\x05\x00\x01oops", IntegrityError, "tftp_unterminated"),
        (b"\x00\x05\x00\x01oops\x00more\x00", SanityError, "tftp_bad_length"),
        (b"\x00\x06blksize\x00", SanityError, "tftp_bad_option"),
    ],
)
def test_malformed(data: bytes, error: type[WireError], reason: str) -> None:
    with pytest.raises(error) as raised:
        tftp.parse(data)
    assert raised.value.reason == reason


def test_oack_without_options_parses_empty() -> None:
    assert tftp.parse(b"\x00\x06") == OptionAck(())


def test_parse_takes_a_memoryview() -> None:
    frame = bytearray(b"xx" + Ack(9).encode())
    assert tftp.parse(memoryview(frame)[2:]) == Ack(9)


packets = st.one_of(
    st.builds(
        Request,
        st.sampled_from([Opcode.RRQ, Opcode.WRQ]),
        st.binary(min_size=1, max_size=64).filter(lambda name: b"\0" not in name),
        st.sampled_from(tftp.MODES),
        st.lists(
            st.tuples(
                st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=10),
                st.text("0123456789abc", max_size=8),
            ),
            max_size=5,
            unique_by=lambda pair: pair[0],
        ).map(tuple),
    ),
    st.builds(Data, st.integers(0, 65535), st.binary(max_size=600)),
    st.builds(Ack, st.integers(0, 65535)),
    st.builds(Error, st.integers(0, 65535), st.text("abc xyz", max_size=30)),
    st.builds(
        OptionAck,
        st.lists(
            st.tuples(st.text("abc", min_size=1, max_size=5), st.text("0123", max_size=5)),
            max_size=4,
            unique_by=lambda pair: pair[0],
        ).map(tuple),
    ),
)


@given(packets)
def test_round_trip_any_packet(packet: tftp.Packet) -> None:
    encoded = packet.encode()
    assert tftp.parse(encoded) == packet
    assert bytes(TFTP(encoded)) == encoded  # and scapy reads the same bytes back


@given(st.binary(max_size=200))
def test_random_bytes_parse_or_raise_wire_errors(data: bytes) -> None:
    with contextlib.suppress(WireError):
        tftp.parse(data)
