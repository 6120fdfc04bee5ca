"""DHCP for network boot (core/netboot.py): boot file, next server, options 66, 67 and 60,
asked as QEMU's iPXE and a UEFI HTTP boot client ask, dissected with scapy."""

from __future__ import annotations

from typing import Any

import pytest
from scapy.layers.dhcp import BOOTP
from scapy.packet import Packet

from slirpnet.core.segment import Segment
from slirpnet.core.settings import NetworkSettings
from slirpnet.wire.dhcp import MessageType
from tests.test_core_dhcp import GATEWAY, Client, kind, mac, options

PXE_CLASS = b"PXEClient:Arch:00000:UNDI:002001"
HTTP_CLASS = b"HTTPClient:Arch:00016:UNDI:003001"  # what EDK2's HTTP boot sends (x64)


def boot_segment(**settings: Any) -> Segment:
    return Segment(NetworkSettings(**settings))


def offer_and_ack(
    segment: Segment, vendor_class: bytes | None = None, *, code: Any = "vendor_class_id"
) -> list[Packet]:
    """DISCOVER and REQUEST with option ``code`` (the vendor class unless said) set to
    ``vendor_class``: the OFFER and the ACK."""
    client = Client(segment, mac(1))
    extra = [] if vendor_class is None else [(code, vendor_class)]
    offer = client.send("discover", 0.0, options=extra)
    assert kind(offer) == MessageType.OFFER
    ack = client.send(
        "request",
        0.0,
        options=[("requested_addr", offer[BOOTP].yiaddr), ("server_id", GATEWAY), *extra],
    )
    assert kind(ack) == MessageType.ACK
    return [offer, ack]


def test_without_a_boot_file_nothing_changes() -> None:
    for reply in offer_and_ack(boot_segment(), PXE_CLASS):
        assert reply[BOOTP].siaddr == "0.0.0.0"
        assert reply[BOOTP].file.rstrip(b"\0") == b""
        assert not {"boot-file-name", "tftp_server_name", "vendor_class_id"} & set(options(reply))


def test_a_boot_file_in_the_file_field_and_option_67() -> None:
    segment = boot_segment(tftp_root="/srv/tftp", bootfile="pxe/boot.ipxe")
    for reply in offer_and_ack(segment, PXE_CLASS):
        assert reply[BOOTP].siaddr == GATEWAY  # the next server: where TFTP is
        assert reply[BOOTP].file.rstrip(b"\0") == b"pxe/boot.ipxe"
        assert options(reply)["boot-file-name"] == b"pxe/boot.ipxe"
        # A PXE client gets no PXEClient class back: it would look for a boot server.
        assert "vendor_class_id" not in options(reply)
        assert "tftp_server_name" not in options(reply)


def test_a_tftp_root_alone_names_the_next_server() -> None:
    for reply in offer_and_ack(boot_segment(tftp_root="/srv/tftp")):
        assert reply[BOOTP].siaddr == GATEWAY
        assert reply[BOOTP].file.rstrip(b"\0") == b""
        assert "boot-file-name" not in options(reply)


def test_option_66() -> None:
    segment = boot_segment(bootfile="boot.ipxe", tftp_server_name="10.0.2.2")
    for reply in offer_and_ack(segment):
        assert options(reply)["tftp_server_name"] == b"10.0.2.2"


def test_an_http_url_as_it_is() -> None:
    url = "http://10.0.2.2:8080/boot.ipxe"
    for reply in offer_and_ack(boot_segment(bootfile=url), PXE_CLASS):
        assert reply[BOOTP].file.rstrip(b"\0") == url.encode()
        assert options(reply)["boot-file-name"] == url.encode()
        assert "vendor_class_id" not in options(reply)


@pytest.mark.parametrize("url", ["http://10.0.2.2/efi/boot.efi", "HTTPS://host.test/x.efi"])
def test_uefi_http_boot_is_answered_httpclient(url: str) -> None:
    """UEFI 2.10 §24.7.2: an HTTP boot client takes only an offer saying HTTPClient."""
    for reply in offer_and_ack(boot_segment(bootfile=url), HTTP_CLASS):
        assert options(reply)["vendor_class_id"] == b"HTTPClient"
        assert options(reply)["boot-file-name"] == url.encode()


def test_no_httpclient_for_a_tftp_boot_file() -> None:
    for reply in offer_and_ack(boot_segment(bootfile="boot.efi"), HTTP_CLASS):
        assert "vendor_class_id" not in options(reply)


def test_a_long_url_goes_in_option_67_only() -> None:
    url = "http://10.0.2.2:8080/" + "a" * 150 + ".ipxe"
    for reply in offer_and_ack(boot_segment(bootfile=url)):
        assert reply[BOOTP].file.rstrip(b"\0") == b""  # 128 bytes hold no more
        assert options(reply)["boot-file-name"] == url.encode()


def test_inform_gets_the_boot_file_too() -> None:
    segment = boot_segment(bootfile="boot.ipxe")
    reply = Client(segment, mac(2)).inform("10.0.2.15")
    assert kind(reply) == MessageType.ACK
    assert reply is not None
    assert reply[BOOTP].file.rstrip(b"\0") == b"boot.ipxe"
    assert options(reply)["boot-file-name"] == b"boot.ipxe"


def test_ipxe_is_told_not_to_wait_for_proxydhcp() -> None:
    """iPXE sends its option 175; answered with 175.176 = 1 it takes the first offer."""
    ipxe_features = bytes((0xEB, 3, 1, 0, 0, 0x13, 1, 1))  # 175's content, as iPXE sends it
    for reply in offer_and_ack(boot_segment(bootfile="boot.ipxe"), ipxe_features, code=175):
        assert options(reply)[175] == bytes((176, 1, 1))
    for reply in offer_and_ack(boot_segment(bootfile="boot.ipxe"), PXE_CLASS):
        assert 175 not in options(reply)  # to other clients nothing of iPXE's
