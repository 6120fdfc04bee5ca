"""``SLIRPNET_PURE=1``: run the pure-Python reference even where a native build is installed.

The mypyc-compiled modules sit beside their sources as extension modules, which
Python's importer prefers.  With the variable set, a finder placed ahead of the
usual ones loads every ``slirpnet`` module from its ``.py`` file instead, and
``slirpnet.native`` leaves the C module alone: the tests run the same code both
ways from one install (tox's ``py-pure``).  It must be installed before any
compiled module is imported, so ``slirpnet/__init__.py`` does it first.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType

VARIABLE = "SLIRPNET_PURE"


def requested() -> bool:
    return os.environ.get(VARIABLE, "") not in ("", "0")


class SourceFinder(MetaPathFinder):
    """Finds ``slirpnet.*`` modules by their source files only; packages and anything
    without a ``.py`` file are left to the usual finders."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if path is None or not fullname.startswith("slirpnet."):
            return None
        name = fullname.rpartition(".")[2]
        for entry in path:
            source = os.path.join(entry, name + ".py")
            if os.path.isfile(source):
                return importlib.util.spec_from_file_location(fullname, source)
        return None


def install() -> None:
    """Put the source finder first, once, if ``SLIRPNET_PURE`` asks for it."""
    if requested() and not any(isinstance(f, SourceFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, SourceFinder())
