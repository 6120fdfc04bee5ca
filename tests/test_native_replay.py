"""The atheris harness's seeds and random inputs through the built module: the same
differential check tests/test_native_asan.py runs under the sanitizers, here without
them (so it runs where gcc's libasan is missing too)."""

from __future__ import annotations

import pytest

from tests.fuzz.atheris_native import check, replay, seeds

native = pytest.importorskip("slirpnet._native", reason="slirpnet._native is not built")


def test_seeds_and_random_inputs_agree() -> None:
    assert replay(native, 2000, 1206) == len(list(seeds())) + 2000


def test_a_difference_is_caught() -> None:
    """The harness is not blind: a native function that differs fails the check."""

    class Skewed:
        def __getattr__(self, name: str) -> object:
            return getattr(native, name)

        @staticmethod
        def ones_sum(data: bytes, start: int = 0) -> int:
            return int(native.ones_sum(data, start)) ^ 1

    with pytest.raises(AssertionError, match="ones_sum"):
        check(Skewed(), bytes([0, 0, 4]) + b"abcd")
