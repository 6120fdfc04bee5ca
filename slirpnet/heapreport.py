"""The server's Python heap, for benchmarks: traced on request, written out on SIGUSR1.

``SLIRPNET_HEAP_REPORT=FILE`` in the server's environment starts ``tracemalloc`` as
the command starts, and every SIGUSR1 then writes the traced heap to FILE as JSON:
``{"traced": bytes, "peak": bytes, "objects": n}``, n being the objects the garbage
collector tracks, after a collection so that cycles awaiting one do not count.
Tracing slows every allocation and costs memory of its own, so it is never on unless
asked for; integration/bench/flows.py uses it to weigh an idle TCP flow.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import tracemalloc
from pathlib import Path

import trio

ENV = "SLIRPNET_HEAP_REPORT"


def start() -> Path | None:
    """Start tracing if the environment asks for a report; where to write it, or None."""
    path = os.environ.get(ENV)
    if not path:
        return None
    tracemalloc.start()
    return Path(path)


async def report_on_signal(path: Path) -> None:
    """Write the traced heap to ``path`` on each SIGUSR1, until cancelled."""
    with trio.open_signal_receiver(signal.SIGUSR1) as signals:
        async for _ in signals:
            gc.collect()
            traced, peak = tracemalloc.get_traced_memory()
            figures = {"traced": traced, "peak": peak, "objects": len(gc.get_objects())}
            partial = path.with_name(path.name + ".tmp")
            partial.write_text(json.dumps(figures))
            partial.replace(path)  # a reader never sees half a report
