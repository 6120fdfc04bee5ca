"""The fuzz state machine for as long as asked: ``python -m tests.fuzz.long --minutes 10``.

Runs batches of ``SegmentMachine`` examples with fresh seeds until the time is up,
printing after each batch, and at the end, the frames fed, frames per second and
examples run.  A failure stops the run with hypothesis's shrunk reproduction
(the steps, ready to turn into a regression test) and exit status 1; it is also
saved in ``.hypothesis/``, so ``pytest tests/test_fuzz_segment.py`` run from the
same directory replays it first.

``--backend hypothesis-urandom`` draws from the OS's random source: faster, but
what it finds is not shrunk.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from tests.fuzz import machine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.long", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to run")
    parser.add_argument("--steps", type=int, default=100, help="steps per example")
    parser.add_argument("--batch", type=int, default=200, help="examples per batch")
    parser.add_argument("--backend", default="hypothesis", help="hypothesis's data source")
    args = parser.parse_args(argv)
    logging.getLogger("slirpnet").setLevel(logging.ERROR)  # DNS upstreams "failing", etc.
    batch = settings(
        max_examples=args.batch,
        stateful_step_count=args.steps,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        backend=args.backend,
    )
    start = time.monotonic()
    end = start + args.minutes * 60
    examples = 0
    try:
        while time.monotonic() < end:
            run_state_machine_as_test(machine.SegmentMachine, settings=batch)
            examples += args.batch
            _report("ok", examples, time.monotonic() - start)
    except Exception:
        _report("FAILED", examples, time.monotonic() - start)
        raise
    return 0


def _report(status: str, examples: int, elapsed: float) -> None:
    frames = machine.TALLY.frames
    print(
        f"{status}: {frames} frames in {elapsed / 60:.1f} min, {frames / elapsed:.0f} frames/s, "
        f"{examples} examples",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
