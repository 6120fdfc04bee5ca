"""Coverage-guided fuzzing of ``slirpnet._native`` against its pure-Python twins.

    pip install atheris        # or the "fuzz" extra
    python -m tests.fuzz.atheris_native --seeds native-corpus
    python -m tests.fuzz.atheris_native native-corpus -max_total_time=600

The first command writes the seed inputs; the second fuzzes from them.  Coverage
comes from the Python side (the decoder and the twins); the C module is plain, unless
it is built with clang's ``-fsanitize=fuzzer-no-link`` as atheris documents for
native extensions.  An input names a function and its arguments (``check``); the
native function and its pure twin are called with the same arguments and must give
equal results or raise exceptions of the same type, so any difference is an
``AssertionError`` that libFuzzer saves as ``crash-*``.  Replay one with
``python -m tests.fuzz.atheris_native FILE``.

``check`` takes the native module as an argument, so tests/test_native_asan.py
replays ``seeds`` and random inputs through a module built with AddressSanitizer.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import random
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from slirpnet import dgramio
from slirpnet.wire import checksum, tcpframe, tcpin

# ones_sum, tcp_frame, tcp6_frame, tcp_frames, tcp6_frames, send, recv, tcp_in
FUNCTIONS = 8
GATEWAY_MAC = bytes.fromhex("525500000002")

# Values around every range the functions check.
EDGES = (
    0,
    1,
    -1,
    0xFF,
    0xFFF,
    0x1000,
    0xFFFF,
    0x10000,
    0xFFFFFFFF,
    0x100000000,
    2**63 - 1,
    2**63,
    2**64 - 1,
    2**64,
    -(2**64),
    2**200 + 7,
)


class Reader:
    """Arguments from fuzz bytes; past the end every read gives zeros."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, size: int) -> bytes:
        chunk = self.data[self.at : self.at + size]
        self.at += size
        return chunk.ljust(size, b"\0")

    def byte(self) -> int:
        return self.take(1)[0]

    def number(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def integer(self) -> Any:
        """An int anywhere near a checked range, now and then not an int at all."""
        mode = self.byte() % 8
        if mode == 0:
            return self.byte()
        if mode in (1, 2):
            return EDGES[self.byte() % len(EDGES)]
        if mode == 3:
            return self.number(2)
        if mode == 4:
            return self.number(4)
        if mode == 5:
            return self.number(self.byte() % 40) - (1 << 8)
        if mode == 6:
            return (self.byte() & 1) == 1  # a bool is an int
        return [1.5, "1", None, 2.0][self.byte() % 4]

    def buffer(self, limit: int = 0x11000) -> Any:
        """Bytes, a bytearray or a memoryview at an offset: literal or generated."""
        kind = self.byte()
        if kind & 0x80:
            size = self.number(3) % limit
            data = random.Random(self.number(4)).randbytes(size)
        else:
            data = self.take(self.byte())
        view = kind % 4
        if view == 1:
            return bytearray(data)
        if view == 2:
            offset = kind >> 2 & 7
            return memoryview(bytes(offset) + data)[offset:]
        if view == 3 and kind & 0x40:
            return "text"  # not a buffer
        return data

    def options(self) -> Any:
        if self.byte() % 4 == 0:
            return self.buffer(64)
        return self.take(4 * (self.byte() % 11))


def outcome(function: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    """What a call gives: its value or the type of what it raised."""
    try:
        return "value", function(*args)
    except Exception as error:  # what matters is its type, compared with the twin's
        return "raised", type(error)


def same(native: Callable[..., Any], pure: Callable[..., Any], *args: Any) -> Any:
    expected = outcome(pure, *args)
    got = outcome(native, *args)
    assert got == expected, (
        f"{native.__name__}{args!r:.300}: native {got!r:.200} != {expected!r:.200}"
    )
    return got


def check(native: ModuleType, data: bytes) -> None:
    """Call one native function and its twin with the arguments ``data`` encodes."""
    r = Reader(data)
    which = r.byte() % FUNCTIONS
    if which == 0:
        same(native.ones_sum, checksum.ones_sum, r.buffer(), _start(r))
    elif which == 1:
        head, ints = r.buffer(64), [r.integer() for _ in range(10)]
        same(native.tcp_frame, tcpframe.tcp_frame, head, *ints, r.options(), r.buffer())
    elif which == 2:
        head, src, dst = r.buffer(64), _address(r), _address(r)
        ints = [r.integer() for _ in range(7)]
        same(native.tcp6_frame, tcpframe.tcp6_frame, head, src, dst, *ints, r.options(), r.buffer())
    elif which == 3:
        head, ints = r.buffer(64), [r.integer() for _ in range(9)]
        options, payload, mss = r.options(), r.buffer(), _mss(r)
        same(
            native.tcp_frames, tcpframe.tcp_frames, head, *ints, options, payload, mss, r.integer()
        )
    elif which == 4:
        head, src, dst = r.buffer(64), _address(r), _address(r)
        ints = [r.integer() for _ in range(6)]
        options, payload, mss = r.options(), r.buffer(), _mss(r)
        same(
            native.tcp6_frames,
            tcpframe.tcp6_frames,
            head,
            src,
            dst,
            *ints,
            options,
            payload,
            mss,
            r.integer(),
        )
    elif which == 5:
        frames = [r.buffer(0x3000) for _ in range(r.byte() % 24)]
        _same_sends(native.send_frames, dgramio.send_frames, frames, r.byte())
    elif which == 6:
        _same_receives(native.recv_frames, dgramio.recv_frames, r)
    else:
        mac = GATEWAY_MAC if r.byte() % 8 else r.buffer(8)
        frame = r.buffer(0x3000)
        how = r.byte()
        if how & 1 and isinstance(frame, bytes | bytearray | memoryview):
            frame = plausible(bytes(frame), GATEWAY_MAC, how)
        same(native.tcp_in, tcpin.tcp_in, frame, mac)


def plausible(data: bytes, mac: bytes, how: int) -> bytes:
    """``data`` made into a frame that passes most of ``tcp_in``'s checks, so that
    random bytes reach the last ones: ``how``'s bits say which to leave as they are."""
    frame = bytearray(data.ljust(54, b"\0"))
    frame[0:6] = mac
    frame[12:16] = b"\x08\x00\x45" + frame[15:16]
    frame[23] = 6
    if how & 2:
        frame[20] &= 0x40  # DF alone
        frame[21] = 0
    if how & 4:
        frame[16:18] = min(len(frame) - 14 - (how >> 6), 0xFFFF).to_bytes(2, "big")
    if how & 8:
        frame[46] = (frame[46] & 0x0F) | (5 + (how >> 4 & 3)) << 4
    frame[24:26] = b"\0\0"
    frame[24:26] = (~checksum.ones_sum(frame[14:34]) & 0xFFFF).to_bytes(2, "big")
    end = 14 + int.from_bytes(frame[16:18], "big")
    if 54 <= end <= len(frame) and how & 0x10:
        pseudo = checksum.ones_sum(frame[26:34], 6 + end - 34)
        frame[50:52] = b"\0\0"
        frame[50:52] = (~checksum.ones_sum(frame[34:end], pseudo) & 0xFFFF).to_bytes(2, "big")
    return bytes(frame)


def _start(r: Reader) -> int:
    """A sum to start from: a non-negative int, the one thing the pure ``ones_sum``
    is defined for (tests/test_native_checksum.py checks what the native one refuses)."""
    if r.byte() % 4 == 0:
        return r.number(r.byte() % 64)  # up to 504 bits, as header sums with options
    start = r.integer()
    return abs(start) if isinstance(start, int) else 0


def _address(r: Reader) -> Any:
    return r.take(16) if r.byte() % 8 else r.buffer(20)


def _mss(r: Reader) -> Any:
    # Small sizes only for small payloads: 65535 one-byte frames make a slow input.
    return r.integer() if r.byte() % 4 == 0 else 64 + r.number(2)


@contextlib.contextmanager
def _pair(family_kind: int) -> Iterator[tuple[socket.socket, socket.socket]]:
    """A sender and a receiver: a unix socketpair, abstract-bound unix sockets, or
    UDP on 127.0.0.1 or ::1."""
    kind = family_kind % 4
    sockets: list[socket.socket] = []
    try:
        if kind == 0:
            a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            sockets += (a, b)
        else:
            family = (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6)[kind - 1]
            a = socket.socket(family, socket.SOCK_DGRAM)
            sockets.append(a)
            b = socket.socket(family, socket.SOCK_DGRAM)
            sockets.append(b)
            if kind == 1:
                tag = f"slirpnet-native-{os.getpid()}"
                a.bind(f"\0{tag}-a")
                b.bind(f"\0{tag}-b")
            else:
                host = "127.0.0.1" if kind == 2 else "::1"
                a.bind((host, 0))
                b.bind((host, 0))
            a.connect(b.getsockname())
        for sock in sockets:
            sock.setblocking(False)
        yield a, b
    finally:
        for sock in sockets:
            sock.close()


def _drain(sock: socket.socket) -> list[bytes]:
    received = []
    with contextlib.suppress(BlockingIOError):
        while True:
            received.append(sock.recv(0x10000))
    return received


def _same_sends(
    native: Callable[..., Any], pure: Callable[..., Any], frames: list[Any], kind: int
) -> None:
    """Both twins send the same frames on one pair: the same count, the same datagrams."""
    with _pair(kind) as (a, b):
        results = [(outcome(send, a, frames), _drain(b)) for send in (pure, native)]
    assert results[1] == results[0], f"send_frames: {results[1]!r:.300} != {results[0]!r:.300}"


def _same_receives(native: Callable[..., Any], pure: Callable[..., Any], r: Reader) -> None:
    """Both twins receive the same datagrams, sent the same way on one pair."""
    kind, count, size = r.byte(), r.integer(), r.integer()
    if isinstance(size, int) and size > 0x20000:
        size = 0x20000  # each twin allocates what it is asked for
    frames = [r.take(r.number(2) % 0x2000) for _ in range(r.byte() % 12)]
    results = []
    with _pair(kind) as (a, b):
        for receive in (pure, native):
            for frame in frames:
                a.send(frame)
            results.append((outcome(receive, b, count, size), _drain(b)))
    assert results[1] == results[0], f"recv_frames: {results[1]!r:.300} != {results[0]!r:.300}"


def _int(value: int) -> bytes:
    return bytes([4]) + value.to_bytes(4, "big")  # ``Reader.integer``'s 4-byte mode


def _generated(size: int) -> bytes:
    return bytes([0x80]) + size.to_bytes(3, "big") + b"\0\0\0\x07"  # ``Reader.buffer``


def seeds() -> Iterator[bytes]:
    """Inputs that reach every function: random ones, then typical frames."""
    rng = random.Random(12)
    for which in range(FUNCTIONS):
        for _ in range(24):
            yield bytes([which]) + rng.randbytes(rng.choice((8, 40, 120, 400)))
    head = bytes([0, 14]) + rng.randbytes(14)
    fields = (0x0A000202, 0x0A000001, 7, 40000, 80, 0xFFFFFF00, 99, 0x18, 65535)
    options = bytes([1, 3]) + bytes.fromhex("0101080a0000000100000002")
    address = bytes([1]) + bytes(15) + bytes([1])
    for size in (0, 1, 1447, 1448, 65495, 65535):
        payload = _generated(size)
        yield bytes([0]) + payload + bytes([1, 0])
        yield bytes([1]) + head + b"".join(map(_int, fields)) + _int(0) + options + payload
        yield (
            bytes([2])
            + head
            + address * 2
            + b"".join(map(_int, fields[3:]))
            + _int(0)
            + (options + payload)
        )
        mss = bytes([1]) + (1448 - 64).to_bytes(2, "big")
        yield bytes([3]) + head + b"".join(map(_int, fields)) + options + payload + mss + _int(9)
        yield (
            bytes([4])
            + head
            + address * 2
            + b"".join(map(_int, fields[3:]))
            + options
            + (payload + mss + _int(9))
        )
    yield from tcp_in_seeds()


def tcp_in_seeds() -> Iterator[bytes]:
    """Inputs for ``tcp_in``: frames as a guest sends them (whole, then cut short), and
    generated ones made plausible in every way ``plausible`` knows."""
    ether = GATEWAY_MAC + bytes.fromhex("525400123456 0800")
    options = bytes.fromhex("020405b4 01030307")
    for payload, opts in ((b"", b""), (b"y" * 7, options), (b"z" * 180, b"")):
        frame = tcpframe.tcp_frame(
            ether, 0x0A00020F, 0x0A000202, 1, 40000, 80, 7, 9, 0x18, 512, 0, opts, payload
        )
        for cut in (0, 1, 21):
            data = frame[: len(frame) - cut]
            yield bytes([7, 1, 0, len(data)]) + data + bytes([0])  # a literal buffer
    for how in range(1, 256, 2):
        size = (54, 60, 1514, 9000)[how % 4]
        yield bytes([7, 1, 0x80]) + size.to_bytes(3, "big") + how.to_bytes(4, "big") + bytes([how])


def run(data: bytes) -> None:
    """atheris's entry point, on the installed native module."""
    check(importlib.import_module("slirpnet._native"), data)


def replay(native: ModuleType, count: int, seed: int) -> int:
    """``seeds`` and ``count`` random inputs through ``native``: how many were checked."""
    checked = 0
    for data in seeds():
        check(native, data)
        checked += 1
    rng = random.Random(seed)
    for _ in range(count):
        check(native, rng.randbytes(rng.randrange(1, 300)))
        checked += 1
    return checked


def main() -> None:
    if sys.argv[1:2] == ["--seeds"]:
        directory = Path(sys.argv[2])
        directory.mkdir(parents=True, exist_ok=True)
        for number, seed in enumerate(seeds()):
            (directory / f"seed-{number:04d}").write_bytes(seed)
        return
    import atheris  # noqa: PLC0415 (only the fuzzing run needs it)

    atheris.instrument_all()  # the twins and this decoder: the C module is not Python
    atheris.Setup(sys.argv, run)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
