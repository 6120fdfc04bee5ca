"""The only exceptions the wire layer raises.

Every parser checks integrity first (lengths, checksums: the bytes cannot be a
valid packet) and sanity after (the packet is well formed but carries a value we
refuse).  Each error names a short ``reason`` that the core uses as the key of
its drop counters, so a test can assert exactly why a frame was dropped.
"""

from __future__ import annotations


class WireError(Exception):
    """A frame or packet that cannot be used, with the reason it was refused."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class IntegrityError(WireError):
    """Truncated data, a length field that lies, or a checksum that fails."""


class SanityError(WireError):
    """Well-formed bytes carrying a value this layer does not accept."""
