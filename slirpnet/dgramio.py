"""Batched datagram I/O for ``-netdev dgram`` VMs: the pure-Python twins of
``slirpnet._native.send_frames`` and ``recv_frames``.

The native twins do the same with one ``sendmmsg``/``recvmmsg`` per batch (Linux)
instead of one system call per frame; both never block (``MSG_DONTWAIT``).
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Sequence
from typing import Any

from slirpnet.wire.buffer import Bytes


def send_frames(sock: socket.socket, frames: Sequence[Bytes], /) -> int:
    """Send each frame as one datagram, in order; return how many went out.

    Stops at the first frame the kernel will not take now.  Any other error raises
    if nothing went out yet, else the count so far is returned (a lasting error
    recurs on the next call).
    """
    sent = 0
    for frame in frames:
        try:
            sock.send(frame, socket.MSG_DONTWAIT)
        except BlockingIOError:
            break
        except OSError:
            if sent:
                break
            raise
        sent += 1
    return sent


def recv_frames(sock: socket.socket, count: int, size: int, /) -> list[tuple[bytes, Any]]:
    """Up to ``count`` datagrams waiting on ``sock``, each as ``recvfrom(size)`` gives
    it (truncated to ``size``, with the sender's address); ``[]`` when none waits.

    An error after some datagrams came in ends the batch; a lasting one recurs on
    the next call.
    """
    if not isinstance(count, int) or not isinstance(size, int):
        raise TypeError("count and size must be ints")
    if count < 0:
        raise ValueError("negative count")
    if size < 0:
        raise ValueError("negative buffersize in recvfrom")
    if size > sys.maxsize:
        raise OverflowError("size does not fit a C ssize_t")  # as recvfrom says
    frames: list[tuple[bytes, Any]] = []
    while len(frames) < count:
        try:
            frames.append(sock.recvfrom(size, socket.MSG_DONTWAIT))
        except BlockingIOError:
            break
        except OSError:
            if frames:
                break
            raise
    return frames
