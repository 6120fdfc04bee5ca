"""Byte-buffer helpers shared by the codecs."""

from __future__ import annotations

from slirpnet.wire.errors import IntegrityError

# What parsers accept: slicing a memoryview shares memory, so a 64 KiB payload is
# never copied on its way up the layers.
Bytes = bytes | bytearray | memoryview


def require(data: memoryview, length: int, reason: str, what: str) -> None:
    """Raise ``IntegrityError(reason)`` unless ``data`` holds at least ``length`` bytes."""
    if len(data) < length:
        raise IntegrityError(reason, f"{what} needs {length} bytes, got {len(data)}")
