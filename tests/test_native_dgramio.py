"""``_native.send_frames``/``recv_frames`` against their twins in ``slirpnet.dgramio``,
on real sockets: unix datagram pairs (unbound, path and abstract names) and UDP on
loopback.  Each twin runs on the same sockets in turn, so addresses compare equal."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slirpnet import dgramio

native = pytest.importorskip("slirpnet._native", reason="slirpnet._native is not built")

TWINS = (dgramio, native)  # the pure one first: it says what is expected


def outcome(function: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    try:
        return "value", function(*args)
    except OSError as error:
        return "raised", (type(error), error.errno)
    except (TypeError, ValueError, OverflowError) as error:
        return "raised", type(error)


def drain(sock: socket.socket) -> list[tuple[bytes, Any]]:
    received = []
    with contextlib.suppress(BlockingIOError):
        while True:
            received.append(sock.recvfrom(0x10000))
    return received


@contextlib.contextmanager
def opened(*sockets: socket.socket) -> Iterator[None]:
    try:
        for sock in sockets:
            sock.setblocking(False)
        yield
    finally:
        for sock in sockets:
            sock.close()


@contextlib.contextmanager
def pair(kind: str, tmp_path: Path) -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected sender and its receiver."""
    if kind == "socketpair":
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        with opened(a, b):
            yield a, b
        return
    family = {"path": socket.AF_UNIX, "abstract": socket.AF_UNIX, "udp4": socket.AF_INET}
    a = socket.socket(family.get(kind, socket.AF_INET6), socket.SOCK_DGRAM)
    b = socket.socket(a.family, socket.SOCK_DGRAM)
    with opened(a, b):
        if kind == "path":
            a.bind(str(tmp_path / "a"))
            b.bind(str(tmp_path / "b"))
        elif kind == "abstract":
            a.bind(f"\0slirpnet-test-{os.getpid()}-a")
            b.bind(f"\0slirpnet-test-{os.getpid()}-b")
        else:
            host = "127.0.0.1" if kind == "udp4" else "::1"
            a.bind((host, 0))
            b.bind((host, 0))
        a.connect(b.getsockname())
        yield a, b


KINDS = ["socketpair", "path", "abstract", "udp4", "udp6"]


def sends(kind: str, tmp_path: Path, frames: list[Any]) -> list[Any]:
    """What each twin's send_frames returns, and what the receiver got."""
    with pair(kind, tmp_path) as (a, b):
        return [(outcome(twin.send_frames, a, frames), drain(b)) for twin in TWINS]


def receives(kind: str, tmp_path: Path, frames: list[bytes], count: Any, size: Any) -> list[Any]:
    """What each twin's recv_frames returns after the same datagrams, and what is left."""
    results = []
    with pair(kind, tmp_path) as (a, b):
        for twin in TWINS:
            for frame in frames:
                a.send(frame)
            results.append((outcome(twin.recv_frames, b, count, size), drain(b)))
    return results


@pytest.mark.parametrize("kind", KINDS)
def test_send_frames(kind: str, tmp_path: Path) -> None:
    frames: list[Any] = [bytes([i]) * (i * 97 % 1515) for i in range(70)]  # two batches
    frames[3] = bytearray(frames[3])
    frames[4] = memoryview(b"xx" + frames[4])[2:]
    pure, fast = sends(kind, tmp_path, frames[:8] if kind in ("path", "abstract") else frames)
    assert fast == pure
    count = pure[0][1]
    assert count > 0
    assert [data for data, _ in pure[1]] == [bytes(frame) for frame in frames[:count]]


@pytest.mark.parametrize(("kind", "number"), [("socketpair", 400), ("path", 32)])
def test_send_stops_at_a_full_queue(kind: str, number: int, tmp_path: Path) -> None:
    """EAGAIN mid-batch: a unix datagram receiver queues net.unix.max_dgram_qlen (10 by
    default) datagrams from a sender it is not connected to; a socketpair's sender is
    held back by its send buffer."""
    frames = [bytes([i % 256]) * 1514 for i in range(number)]
    results = []
    with pair(kind, tmp_path) as (a, b):
        for twin in TWINS:
            results += (outcome(twin.send_frames, a, frames), outcome(twin.send_frames, a, frames))
            results.append(drain(b))
    assert results[3:] == results[:3]
    count = results[0][1]
    assert 0 < count < number
    assert results[1] == ("value", 0)  # still full: nothing more goes
    assert [data for data, _ in results[2]] == frames[:count]


def test_send_errors(tmp_path: Path) -> None:
    # A frame that is not a buffer: the frames before it go out, then TypeError.
    pure, fast = sends("socketpair", tmp_path, [b"a", b"b", "text", b"c"])
    assert fast == pure == (("raised", TypeError), [(b"a", None), (b"b", None)])
    # A peer gone: the error, nothing sent.
    for twin in TWINS:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        b.close()
        with opened(a):
            assert outcome(twin.send_frames, a, [b"x", b"y"])[1][1] == errno.ECONNREFUSED
    # Too long for the socket: EMSGSIZE before anything went out, else the count.
    for twin in TWINS:
        with pair("udp4", tmp_path) as (a, b):
            huge = bytes(70000)
            assert outcome(twin.send_frames, a, [huge])[1][1] == errno.EMSGSIZE
            assert twin.send_frames(a, [b"ok", huge, b"never"]) == 1
            assert drain(b) == [(b"ok", a.getsockname())]
    assert native.send_frames(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM), []) == 0


@given(st.lists(st.integers(0, 3000), max_size=40), st.integers(0, 2**16))
def test_send_frames_any(sizes: list[int], seed: int) -> None:
    frames = [(seed + i).to_bytes(3, "big") * (size // 3) for i, size in enumerate(sizes)]
    pure, fast = sends("socketpair", Path("/nonexistent"), frames)
    assert fast == pure


@pytest.mark.parametrize("kind", KINDS)
def test_recv_frames(kind: str, tmp_path: Path) -> None:
    frames = [bytes([i]) * (i * 131 % 1600) for i in range(9)]
    pure, fast = receives(kind, tmp_path, frames, 64, 0x10000)
    assert fast == pure
    assert [data for data, _ in pure[0][1]] == frames
    assert pure[1] == []


def test_recv_addresses(tmp_path: Path) -> None:
    """Each sender as CPython names it: a path as str, an abstract name as bytes (with
    its NUL), an unbound sender as None, IPv4 and IPv6 tuples."""
    b = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    senders = [socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(4)]
    with opened(b, *senders):
        b.bind(str(tmp_path / "receiver"))
        senders[0].bind(str(tmp_path / "s\u00e9nder"))
        senders[1].bind(b"\0abstract\xff" + bytes([os.getpid() % 256]))
        senders[2].bind("")  # autobind: a 5-character abstract name
        expected = []
        for twin in TWINS:
            for sender in senders:
                sender.sendto(b"hi", str(tmp_path / "receiver"))
            got = twin.recv_frames(b, 10, 100)
            expected.append(got)
        assert expected[1] == expected[0]
        addresses = [address for _, address in expected[0]]
        assert addresses[0] == str(tmp_path / "s\u00e9nder")
        assert addresses[1] == senders[1].getsockname()
        assert isinstance(addresses[2], bytes) and addresses[2][0] == 0
        assert addresses[3] is None
    for host, family in (("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)):
        r, s = socket.socket(family, socket.SOCK_DGRAM), socket.socket(family, socket.SOCK_DGRAM)
        with opened(r, s):
            r.bind((host, 0))
            s.bind((host, 0))
            results = []
            for twin in TWINS:
                s.sendto(b"x", r.getsockname())
                results.append(twin.recv_frames(r, 4, 10))
            assert results[0] == results[1] == [(b"x", s.getsockname())]


@pytest.mark.parametrize(
    ("count", "size"),
    [(0, 100), (3, 100), (100, 5), (100, 0), (20, 5_000_000), (-1, 10), (2, -1), (2**70, 7)],
)
def test_recv_counts_and_truncation(count: int, size: int, tmp_path: Path) -> None:
    frames = [bytes([i + 1]) * (10 * i) for i in range(12)]
    pure, fast = receives("socketpair", tmp_path, frames, count, size)
    assert fast == pure
    if count >= 0 and size >= 0:
        got = pure[0][1]
        assert [data for data, _ in got] == [frame[:size] for frame in frames[: len(got)]]
        assert len(got) == min(count, 12)
        assert len(pure[1]) == 12 - len(got)


def test_recv_many_batches(tmp_path: Path) -> None:
    frames = [i.to_bytes(2, "big") for i in range(150)]
    pure, fast = receives("udp4", tmp_path, frames, 140, 2048)
    assert fast == pure
    assert [data for data, _ in pure[0][1]] == frames[:140]
    assert len(pure[1]) == 10


def test_recv_nothing_and_errors() -> None:
    for twin in TWINS:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        with opened(a, b):
            assert twin.recv_frames(b, 10, 100) == []
    # An ICMP port unreachable for a connected UDP socket: ECONNREFUSED on the next call.
    for twin in TWINS:
        gone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        gone.bind(("127.0.0.1", 0))
        address = gone.getsockname()
        gone.close()
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with opened(s):
            s.connect(address)
            s.send(b"x")
            for _ in range(100):  # the ICMP error arrives through the loopback softirq
                result = outcome(twin.recv_frames, s, 10, 100)
                if result != ("value", []):
                    break
                time.sleep(0.01)
            assert result == ("raised", (ConnectionRefusedError, errno.ECONNREFUSED))
    with pytest.raises(TypeError):
        native.recv_frames(socket.socket(), 1.0, 10)


@given(st.lists(st.integers(0, 3000), max_size=14), st.integers(0, 20), st.integers(0, 4000))
def test_recv_frames_any(sizes: list[int], count: int, size: int) -> None:
    frames = [bytes([i % 256]) * n for i, n in enumerate(sizes)]
    pure, fast = receives("socketpair", Path("/nonexistent"), frames, count, size)
    assert fast == pure
