"""The native module is there when CI says it must be: no silent fallback to the twins.

The differential tests (tests/test_native_*.py) skip without ``slirpnet._native``,
so a wheel built without the extension would pass them all; CI's native run sets
``SLIRPNET_REQUIRE_NATIVE=1`` and this test fails instead.
"""

from __future__ import annotations

import importlib
import os

import pytest


@pytest.mark.skipif(
    os.environ.get("SLIRPNET_REQUIRE_NATIVE") != "1",
    reason="SLIRPNET_REQUIRE_NATIVE=1 is not set: the pure-Python twins may stand in",
)
def test_native_module_is_built() -> None:
    native = importlib.import_module("slirpnet._native")  # ImportError fails the test
    assert native.ones_sum(b"\x00\x01\xf2\x03\xf4\xf5\xf6\xf7") == 0xDDF2  # RFC 1071 §3
