# The C module slirpnet/_native.c; each function's pure-Python twin has the same type.
import socket
from collections.abc import Sequence
from typing import Any

from slirpnet.wire.buffer import Bytes
from slirpnet.wire.tcpin import Fields

def ones_sum(data: Bytes, start: int = 0) -> int: ...
def tcp_frame(
    head: Bytes,
    src: int,
    dst: int,
    ident: int,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    urgent: int,
    options: Bytes,
    payload: Bytes,
    /,
) -> bytes: ...
def tcp6_frame(
    head: Bytes,
    src: Bytes,
    dst: Bytes,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    urgent: int,
    options: Bytes,
    payload: Bytes,
    /,
) -> bytes: ...
def tcp_frames(
    head: Bytes,
    src: int,
    dst: int,
    ident: int,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    options: Bytes,
    payload: Bytes,
    mss: int,
    last_flags: int,
    /,
) -> list[bytes]: ...
def tcp6_frames(
    head: Bytes,
    src: Bytes,
    dst: Bytes,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    options: Bytes,
    payload: Bytes,
    mss: int,
    last_flags: int,
    /,
) -> list[bytes]: ...
def send_frames(sock: socket.socket, frames: Sequence[Bytes], /) -> int: ...
def recv_frames(sock: socket.socket, count: int, size: int, /) -> list[tuple[bytes, Any]]: ...
def tcp_in(frame: Bytes, mac: Bytes, /) -> Fields | None: ...
