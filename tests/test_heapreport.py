"""The benchmark's heap hook: off unless asked for, a JSON report on each SIGUSR1."""

from __future__ import annotations

import json
import os
import signal
import tracemalloc
from pathlib import Path

import pytest
import trio
import trio.testing

from slirpnet import heapreport


def test_nothing_is_traced_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(heapreport.ENV, raising=False)
    assert heapreport.start() is None
    assert not tracemalloc.is_tracing()


async def test_sigusr1_writes_the_traced_heap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "heap.json"
    monkeypatch.setenv(heapreport.ENV, str(path))
    assert heapreport.start() == path
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(heapreport.report_on_signal, path)
            await trio.testing.wait_all_tasks_blocked()
            os.kill(os.getpid(), signal.SIGUSR1)
            with trio.fail_after(10):
                while not path.exists():
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    finally:
        tracemalloc.stop()
    figures = json.loads(path.read_text())
    assert 0 < figures["traced"] <= figures["peak"]
    assert figures["objects"] > 0
