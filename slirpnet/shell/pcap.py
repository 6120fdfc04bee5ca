"""Packet capture: a VM's frames, both ways, in the classic pcap format tcpdump and Wireshark read.

The format is libpcap's (https://wiki.wireshark.org/Development/LibpcapFileFormat):
a 24-byte global header, then per frame a 16-byte record header (seconds,
microseconds, captured length, original length) and the frame.  Link type 1 is
Ethernet, which is exactly what a VM's NIC exchanges with us.

A capture is bounded: when the file reaches ``max_bytes`` it is renamed to
``PATH.1`` (replacing an older one) and a fresh file starts, so a long run keeps
its most recent traffic in at most twice the limit.  Frames are cut to
``snaplen`` bytes, as tcpdump's ``-s`` does.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import BinaryIO

MAGIC = 0xA1B2C3D4  # microsecond timestamps
LINKTYPE_ETHERNET = 1
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_SNAPLEN = 65535

_GLOBAL = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")


class PcapWriter:
    def __init__(
        self, path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, snaplen: int = DEFAULT_SNAPLEN
    ) -> None:
        if max_bytes < _GLOBAL.size + _RECORD.size:
            raise ValueError(f"max_bytes {max_bytes} cannot hold one frame")
        self.path = path
        self.max_bytes = max_bytes
        self.snaplen = snaplen
        self.frames = 0  # written since the capture started, across rotations
        self._file = self._start()

    def _start(self) -> BinaryIO:
        # Owner-only: a capture holds everything the guest said.
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        file = os.fdopen(fd, "wb")
        file.write(_GLOBAL.pack(MAGIC, 2, 4, 0, 0, self.snaplen, LINKTYPE_ETHERNET))
        file.flush()  # a reader that comes before the first frame finds a capture, empty
        self._size = _GLOBAL.size
        return file

    def write(self, frame: bytes, timestamp: float) -> None:
        captured = frame[: self.snaplen]
        record = _RECORD.size + len(captured)
        if self._size + record > self.max_bytes:
            self._rotate()
        seconds = int(timestamp)
        micros = int((timestamp - seconds) * 1_000_000)
        self._file.write(_RECORD.pack(seconds, micros, len(captured), len(frame)))
        self._file.write(captured)
        self._size += record
        self.frames += 1

    def _rotate(self) -> None:
        self._file.close()
        self.path.replace(self.path.with_name(self.path.name + ".1"))
        self._file = self._start()

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()
