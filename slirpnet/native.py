"""The one boundary between slirpnet and its native code: everything else calls these names.

The per-frame work leaves the interpreter in two ways, both built by ``pip install .``
(setup.py) and both optional:

- the C module ``slirpnet._native``: the Internet checksum, whole TCP frames from a
  flow's fields (one or many: software segmentation), a guest's TCP frame read and
  checked in one step, and batched datagram I/O;
- the hot modules compiled with mypyc from their own typed source.

Each C function has a pure-Python twin, the readable reference (``wire.checksum``,
``wire.tcpframe``, ``wire.tcpin``, ``dgramio``); the tests prove they agree byte for byte.  Here the
C function is taken when the module was built, the twin otherwise, and the rest of
slirpnet does not know which runs.  ``SLIRPNET_PURE=1`` takes the twins, and the
sources of the compiled modules (``slirpnet.pure``), even where a native build is
installed.
"""

from __future__ import annotations

import importlib
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from types import ModuleType

from slirpnet import dgramio, pure
from slirpnet.wire import checksum, tcpframe, tcpin
from slirpnet.wire.buffer import Bytes


def _load() -> ModuleType | None:
    if pure.requested():
        return None
    try:  # by name: it is there only where it was built, and it imports nothing of ours
        return importlib.import_module("slirpnet._native")
    except ImportError:
        return None


_c = _load()

# Each name has its twin's type (slirpnet/_native.pyi says the same of the C ones).
ones_sum = checksum.ones_sum
tcp_frame = tcpframe.tcp_frame
tcp_frames = tcpframe.tcp_frames
tcp6_frame = tcpframe.tcp6_frame
tcp6_frames = tcpframe.tcp6_frames
tcp_in = tcpin.tcp_in
send_frames = dgramio.send_frames
recv_frames = dgramio.recv_frames
if _c is not None:
    ones_sum = _c.ones_sum
    tcp_frame = _c.tcp_frame
    tcp_frames = _c.tcp_frames
    tcp6_frame = _c.tcp6_frame
    tcp6_frames = _c.tcp6_frames
    tcp_in = _c.tcp_in
    send_frames = _c.send_frames
    recv_frames = _c.recv_frames


def internet_checksum(data: Bytes, start: int = 0) -> int:
    """The value for a checksum field (RFC 1071): the complement of ``ones_sum``."""
    return ~ones_sum(data, start) & 0xFFFF


def compiled_modules() -> list[str]:
    """The slirpnet modules running as mypyc-compiled code in this process."""
    return sorted(
        name
        for name, module in list(sys.modules.items())
        if name.startswith("slirpnet.")
        and name != "slirpnet._native"
        and Path(getattr(module, "__file__", "") or "").suffix == ".so"
    )


def built_modules() -> list[str]:
    """The slirpnet modules this install has compiled with mypyc, imported or not."""
    package = Path(__file__).parent
    return sorted(
        {
            ".".join(("slirpnet", *path.relative_to(package).parts[:-1], path.name.split(".")[0]))
            for suffix in EXTENSION_SUFFIXES
            for path in package.rglob(f"*{suffix}")
            if path.name.split(".")[0] != "_native"
        }
    )


def is_native() -> bool:
    """Both parts of the native build are in use: the C module and compiled modules."""
    return _c is not None and bool(compiled_modules())


def describe() -> str:
    """What runs, for ``slirpnet --version`` and the server's first log line."""
    if pure.requested():
        return f"pure Python: {pure.VARIABLE} is set"
    parts = []
    if _c is not None:
        parts.append("C module")
    built = built_modules()
    if built:
        parts.append(f"{len(built)} modules compiled with mypyc")
    if not parts:
        return (
            "pure Python: no native build; install gcc and the Python headers "
            "(python3-dev), then reinstall"
        )
    kind = "native" if len(parts) == 2 else "partly native"
    return f"{kind}: {' and '.join(parts)}"


__all__ = [
    "built_modules",
    "compiled_modules",
    "describe",
    "internet_checksum",
    "is_native",
    "ones_sum",
    "recv_frames",
    "send_frames",
    "tcp6_frame",
    "tcp6_frames",
    "tcp_frame",
    "tcp_frames",
    "tcp_in",
]
