"""The optional native build: the C module ``slirpnet._native`` and the hot modules
compiled with mypyc from their typed source.

Everything else about the package is in pyproject.toml.  Without a C compiler (or
without mypy at build time) the install still succeeds with the pure-Python code,
which ``slirpnet --version`` then names; ``SLIRPNET_PURE_BUILD=1`` asks for that
build on purpose.  The native parts are all or nothing: a mypyc module needs the
shared library built with it, so one failure removes every native output.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

try:
    from mypyc.build import mypycify
except ImportError:  # no mypy in the build environment: no compiled modules
    mypycify = None

# The per-frame modules (see docs/ARCHITECTURE.md, "Native code").  Each keeps its
# pure source as the reference: SLIRPNET_PURE=1 at run time imports that instead.
MYPYC_MODULES = [
    "slirpnet/wire/checksum.py",
    "slirpnet/wire/tcp.py",
    "slirpnet/core/sequence.py",
    "slirpnet/core/budget.py",
    "slirpnet/core/stats.py",
    "slirpnet/core/vm.py",
    "slirpnet/core/flows.py",
    "slirpnet/core/sendbuffer.py",
    "slirpnet/core/reassembly.py",
    "slirpnet/core/tcp.py",
    "slirpnet/core/addr.py",
    "slirpnet/core/policy.py",
    "slirpnet/core/flowtable.py",
    "slirpnet/core/frames.py",
    "slirpnet/core/fastpath.py",
    "slirpnet/core/switch.py",
    "slirpnet/core/neighbours.py",
    "slirpnet/core/gatewayports.py",
    "slirpnet/core/nat_tcp.py",
    "slirpnet/core/nat_udp.py",
    "slirpnet/core/ipv4layer.py",
    "slirpnet/core/ipv6layer.py",
    "slirpnet/core/gatewayudp.py",
    "slirpnet/core/segment.py",
]


# The C module: CPython's API and libc only; sendmmsg/recvmmsg make it Linux's.
NATIVE = Extension(
    "slirpnet._native",
    ["slirpnet/_native.c"],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra"],
)


def say(message: str) -> None:
    print(f"slirpnet build: {message}", file=sys.stderr)


def native_extensions() -> list[Extension]:
    if os.environ.get("SLIRPNET_PURE_BUILD"):
        say("SLIRPNET_PURE_BUILD is set: pure Python only")
        return []
    if not sys.platform.startswith("linux"):
        say(f"no native build on {sys.platform}: pure Python only")
        return []
    if mypycify is None:
        say("no mypyc: the C module alone")
        return [NATIVE]
    try:
        # The package's __init__ pulls in the shell, and so trio, which the build need not have.
        return [NATIVE, *mypycify(["--ignore-missing-imports", *MYPYC_MODULES], opt_level="3")]
    except (Exception, SystemExit) as error:  # mypyc type-checks first, exiting on errors
        say(f"mypyc failed ({error}): the C module alone")
        return [NATIVE]


class OptionalBuildExt(build_ext):
    """build_ext that falls back to pure Python when compiling fails, and says so."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as error:  # no compiler, no headers, a compile error
            say(f"the native build failed ({error}); installing the slower pure-Python code")
            say("to build it: install a C compiler and the Python headers (gcc, python3-dev)")
            for output in self.get_outputs():
                Path(output).unlink(missing_ok=True)
            self.extensions = []


setup(ext_modules=native_extensions(), cmdclass={"build_ext": OptionalBuildExt})
