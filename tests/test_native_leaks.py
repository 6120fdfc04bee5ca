"""No reference or memory leaks in ``_native``, on success and on every error path.

A release build has no ``sys.gettotalrefcount``, so two things are watched instead:
the reference counts of the arguments (a buffer not released keeps its object
alive) and the memory tracemalloc sees (a result or an exception object not freed
grows it by at least its size on every call).
"""

from __future__ import annotations

import contextlib
import gc
import socket
import sys
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

native = pytest.importorskip("slirpnet._native", reason="slirpnet._native is not built")

CALLS = 3000
SLACK = 20_000  # bytes: less than one leaked object per call


def exercise(call: Callable[[], Any]) -> None:
    with contextlib.suppress(OSError, TypeError, ValueError, OverflowError, BufferError):
        call()


def assert_no_leak(call: Callable[[], Any], *watched: object) -> None:
    for _ in range(200):
        exercise(call)
    counts = [sys.getrefcount(item) for item in watched]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(CALLS):
            exercise(call)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < SLACK
    assert [sys.getrefcount(item) for item in watched] == counts


HEAD = bytes(14)
PAYLOAD = bytearray(range(256)) * 20
OPTIONS = bytes(12)
SRC6, DST6 = bytes(range(16)), bytes(range(16, 32))
V4 = (HEAD, 1, 2, 3, 4, 5, 6, 7, 8, 9)  # head, addresses, ident, ports ... window
V6 = (HEAD, SRC6, DST6, 4, 5, 6, 7, 8, 9)
MAC = bytes(range(6))
GUEST_FRAME = native.tcp_frame(MAC + bytes(6) + b"\x08\x00", *V4[1:], 0, OPTIONS, PAYLOAD)
FRAME_CALLS: list[tuple[str, str, tuple[Any, ...]]] = [
    ("ones_sum", "ones_sum", (PAYLOAD, 2**300)),
    ("ones_sum bad start", "ones_sum", (PAYLOAD, -(2**300))),
    ("ones_sum strided", "ones_sum", (memoryview(PAYLOAD)[::2],)),
    ("tcp_frame", "tcp_frame", (*V4, 0, OPTIONS, PAYLOAD)),
    ("tcp_frame range", "tcp_frame", (*V4, -1, OPTIONS, PAYLOAD)),
    ("tcp_frame options", "tcp_frame", (*V4, 0, b"x", PAYLOAD)),
    ("tcp_frame long", "tcp_frame", (*V4, 0, OPTIONS, bytes(65500))),
    ("tcp_frame payload", "tcp_frame", (*V4, 0, OPTIONS, "x")),
    ("tcp6_frame", "tcp6_frame", (*V6, 0, OPTIONS, PAYLOAD)),
    ("tcp6_frame address", "tcp6_frame", (HEAD, SRC6, b"", *V6[3:], 0, OPTIONS, PAYLOAD)),
    ("tcp_frames", "tcp_frames", (*V4, OPTIONS, PAYLOAD, 1000, 1)),
    ("tcp_frames mss", "tcp_frames", (*V4, OPTIONS, PAYLOAD, 0, 1)),
    ("tcp6_frames", "tcp6_frames", (*V6, OPTIONS, PAYLOAD, 999, 1)),
    ("tcp6_frames head", "tcp6_frames", (3, *V6[1:], OPTIONS, PAYLOAD, 9, 1)),
    ("tcp_in", "tcp_in", (GUEST_FRAME, MAC)),
    ("tcp_in other mac", "tcp_in", (GUEST_FRAME, HEAD)),
    ("tcp_in bad mac", "tcp_in", (GUEST_FRAME, "mac")),
    ("tcp_in bad frame", "tcp_in", ("frame", MAC)),
]


@pytest.mark.parametrize(
    ("function", "args"), [c[1:] for c in FRAME_CALLS], ids=[c[0] for c in FRAME_CALLS]
)
def test_frame_builders_do_not_leak(function: str, args: tuple[Any, ...]) -> None:
    call = getattr(native, function)
    assert_no_leak(lambda: call(*args), HEAD, PAYLOAD, OPTIONS, SRC6, DST6, GUEST_FRAME, MAC)


def test_keyword_errors_do_not_leak() -> None:
    assert_no_leak(lambda: native.ones_sum(data=PAYLOAD, begin=1), PAYLOAD)
    assert_no_leak(lambda: native.ones_sum(PAYLOAD, data=PAYLOAD), PAYLOAD)


def test_datagram_io_does_not_leak() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    frames = [bytes(100), bytearray(200), memoryview(bytes(300))]
    bad = [bytes(10), "not a buffer"]
    with a, b:
        a.setblocking(False)
        b.setblocking(False)

        def round_trip() -> None:
            assert native.send_frames(a, frames) == 3
            assert len(native.recv_frames(b, 10, 250)) == 3

        assert_no_leak(round_trip, a, b, *frames)
        assert_no_leak(lambda: native.send_frames(a, bad), a, *bad)
        native.recv_frames(b, 10**6, 10)
        assert_no_leak(lambda: native.recv_frames(b, 10, 100), b)  # nothing waits
    closed = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    closed.close()
    assert_no_leak(lambda: native.send_frames(closed, frames), closed, *frames)
    assert_no_leak(lambda: native.recv_frames(closed, 1, 10), closed)
