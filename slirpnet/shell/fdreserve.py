"""Running out of file descriptors: telling it apart, and refusing a connection anyway.

When ``accept()`` fails with EMFILE or ENFILE the connection stays in the backlog:
the client hangs, and the listener wakes up for it again at once.  A listener keeps
one descriptor in reserve; out of them, it lets the reserve go, accepts the waiting
connection with it and closes that at once with a RST (a clear refusal), then takes
the reserve back (the trick of libev and nginx).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager

_EXHAUSTED = frozenset((errno.EMFILE, errno.ENFILE))
_LINGER_ABORT = struct.pack("ii", 1, 0)  # close with a RST
LOG_INTERVAL = 60.0  # refusals come in bursts: one line a minute says enough


def out_of_fds(error: OSError) -> bool:
    """The process (EMFILE) or the system (ENFILE) has no file descriptor left."""
    return error.errno in _EXHAUSTED


class FdReserve:
    """One descriptor (of /dev/null) held for when there are no others."""

    def __init__(self) -> None:
        self._fd: int | None = None
        self._take()
        self.refused = 0  # connections refused for want of descriptors
        self._logged_at: float | None = None

    def refusal(self, now: float) -> bool:
        """Count a refusal; True when it should be logged (at most once a minute)."""
        self.refused += 1
        if self._logged_at is not None and now < self._logged_at + LOG_INTERVAL:
            return False
        self._logged_at = now
        return True

    @contextmanager
    def released(self) -> Iterator[None]:
        """The reserve is free for the body; taken back after it, if it can be."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        try:
            yield
        finally:
            self._take()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _take(self) -> None:
        try:
            self._fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self._fd = None  # taken back at the next release


def reset(sock: socket.socket) -> None:
    """Close ``sock`` with a RST rather than a FIN: the peer hears "refused" at once."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ABORT)
    sock.close()
