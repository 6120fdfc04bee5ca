"""What DHCP tells a booting guest: the boot file and where to fetch it.  No I/O.

With ``settings.bootfile`` (libslirp's ``bootfile=``) a reply names it twice, in
the BOOTP ``file`` field (RFC 2131 §2, what PXE ROMs read) and as option 67
(RFC 2132 §9.5), and gives the gateway as next server (``siaddr``, where the
TFTP server is; set with a TFTP root too, for a guest that picks its own file).
``settings.tftp_server_name`` is option 66 (RFC 2132 §9.4).

A boot file that is an http(s) URL is given as it is: iPXE and UEFI fetch it
over HTTP.  A UEFI HTTP boot client says so with a vendor class (option 60)
starting ``HTTPClient`` and takes only an offer that answers ``HTTPClient`` in
option 60 (UEFI specification 2.10 §24.7.2, "HTTP Boot Discovery"); PXE
clients are answered without it, so a ``PXEClient`` offer never makes them
look for a boot server of their own.

iPXE (which says so with its option 175) waits 2 s or more after an offer for
ProxyDHCP offers that never come here, unless the offer carries its "no
ProxyDHCP" setting (option 175's 176 set to 1, iPXE's include/ipxe/dhcp.h): a
reply to iPXE carries it, and iPXE's DHCP takes one exchange instead of 3 s.
"""

from __future__ import annotations

import attrs

from slirpnet.core.settings import NetworkSettings
from slirpnet.wire.dhcp import DhcpMessage, DhcpOption

TFTP_SERVER_NAME = 66  # RFC 2132 §9.4
BOOTFILE_NAME = 67  # RFC 2132 §9.5
VENDOR_CLASS = 60  # RFC 2132 §9.13
HTTP_CLIENT = b"HTTPClient"
IPXE_ENCAPSULATED = 175  # iPXE's own options, encapsulated (include/ipxe/dhcp.h)
_NO_PROXYDHCP = bytes((176, 1, 1))  # its sub-option 176, "no-pxedhcp", set
_FILE_FIELD = 128  # RFC 2131 §2: the file field, NUL-terminated by the clients that read it


def is_url(bootfile: str) -> bool:
    return bootfile.lower().startswith(("http://", "https://"))


def boot_options(settings: NetworkSettings, request: DhcpMessage) -> list[DhcpOption]:
    """The options a reply to ``request`` carries for network boot."""
    bootfile = settings.bootfile
    options = []
    if request.option(IPXE_ENCAPSULATED) is not None:
        options.append(DhcpOption(IPXE_ENCAPSULATED, _NO_PROXYDHCP))
    if settings.tftp_server_name:
        options.append(DhcpOption(TFTP_SERVER_NAME, settings.tftp_server_name.encode()))
    if bootfile:
        options.append(DhcpOption(BOOTFILE_NAME, bootfile.encode()))
        vendor = request.option(VENDOR_CLASS) or b""
        if is_url(bootfile) and vendor.startswith(HTTP_CLIENT):
            options.append(DhcpOption(VENDOR_CLASS, HTTP_CLIENT))
    return options


def with_boot_fields(settings: NetworkSettings, reply: DhcpMessage) -> DhcpMessage:
    """``reply`` with the next server and, when it fits, the boot file in its fields."""
    if settings.bootfile is None and settings.tftp_root is None:
        return reply
    name = (settings.bootfile or "").encode()
    return attrs.evolve(
        reply, siaddr=settings.gateway, file=name if len(name) < _FILE_FIELD else b""
    )
