"""Lists of domain names, uncompressed (RFC 1035 §3.1), as IPv6's configuration carries them.

The DNSSL option of a router advertisement (RFC 8106 §5.2) and DHCPv6's domain
search list (RFC 3646 §4, RFC 8415 §10) both write names as labels ending in a
zero octet, one after another, and forbid compression; the DNSSL pads the list
with zero octets to the option's 8-byte units.  (DHCPv4's list, RFC 3397, is
compressed: ``wire/dhcp.py`` has its own codec.)  Names read are absolute, with
the final dot, as ``dhcp.decode_names`` gives them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from slirpnet.wire.buffer import Bytes
from slirpnet.wire.errors import IntegrityError, SanityError

_MAX_NAME_LEN: Final = 255  # RFC 1035 §2.3.4, counted on the wire
_MAX_LABEL_LEN: Final = 63


def encode_names(names: Iterable[str]) -> bytes:
    """``names`` (with or without the final dot) as labels; ``ValueError`` on an empty
    name, a bad or over-long label, or a name over 255 bytes."""
    out = bytearray()
    for name in names:
        text = name.removesuffix(".")
        if not text or not text.isascii():
            raise ValueError(f"not a non-empty ASCII domain name: {name!r}")
        labels = [label.encode("ascii") for label in text.split(".")]
        if not all(0 < len(label) <= _MAX_LABEL_LEN and _is_label(label) for label in labels):
            raise ValueError(f"bad label in domain name {name!r}")
        encoded = b"".join(bytes((len(label),)) + label for label in labels) + b"\0"
        if len(encoded) > _MAX_NAME_LEN:
            raise ValueError(f"domain name longer than {_MAX_NAME_LEN} bytes: {name!r}")
        out += encoded
    return bytes(out)


def decode_names(data: Bytes, prefix: str, *, padded: bool = False) -> tuple[str, ...]:
    """The names in ``data``; errors are ``WireError`` with reasons ``{prefix}_...``.

    ``padded``: a zero octet where a name would start begins the padding, which must
    be zeros to the end (RFC 8106 §5.2).  Without it, such an octet is the root name.
    """
    view = memoryview(data)
    names: list[str] = []
    position = 0
    while position < len(view):
        if padded and view[position] == 0:
            if any(view[position:]):
                raise SanityError(f"{prefix}_bad_padding", f"non-zero padding after {position}")
            break
        labels: list[str] = []
        wire_len = 1  # the terminating zero octet
        while True:
            if position >= len(view):
                raise IntegrityError(f"{prefix}_name_truncated", f"name ends at {position}")
            length = view[position]
            position += 1
            if length == 0:
                break
            if length > _MAX_LABEL_LEN:
                # Compression pointers (forbidden here) and extended label types.
                raise SanityError(f"{prefix}_bad_label", f"label byte {length:#04x}")
            label = bytes(view[position : position + length])
            if len(label) < length:
                raise IntegrityError(f"{prefix}_name_truncated", f"label at {position - 1}")
            wire_len += 1 + length
            if wire_len > _MAX_NAME_LEN:
                raise SanityError(f"{prefix}_name_too_long", f"name before {position}")
            if not _is_label(label):
                raise SanityError(f"{prefix}_bad_label", f"label at {position - 1}")
            labels.append(label.decode("ascii"))
            position += length
        names.append(".".join(labels) + ".")
    return tuple(names)


def _is_label(label: bytes) -> bool:
    """Printable ASCII without dots: anything else has no faithful text form."""
    return all(0x21 <= byte <= 0x7E and byte != 0x2E for byte in label)
