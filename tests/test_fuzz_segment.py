"""The fuzz state machine (``tests/fuzz/machine.py``), bounded for CI.

``SLIRPNET_FUZZ_EXAMPLES`` and ``SLIRPNET_FUZZ_STEPS`` make it run longer;
``python -m tests.fuzz.long --minutes 10`` runs it for minutes and reports frames
per second.
"""

from __future__ import annotations

import os

from hypothesis import settings

from tests.fuzz.machine import SegmentMachine

EXAMPLES = int(os.environ.get("SLIRPNET_FUZZ_EXAMPLES", "600"))
STEPS = int(os.environ.get("SLIRPNET_FUZZ_STEPS", "50"))

TestSegmentMachine = SegmentMachine.TestCase
TestSegmentMachine.settings = settings(max_examples=EXAMPLES, stateful_step_count=STEPS)
