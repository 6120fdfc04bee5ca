"""The soak of ``integration/soak.py``, short enough for CI: half a minute of a guest
opening and closing connections, and VMs coming and going, then everything flat.

The ten-minute run is by hand: ``python -m integration.soak --minutes 10``.
"""

from __future__ import annotations

from pathlib import Path

from integration.conftest import skip_unless_linux_guest
from integration.soak import run_soak

SECONDS = 30.0


async def test_a_short_soak_ends_as_flat_as_it_began(tmp_path: Path) -> None:
    skip_unless_linux_guest()
    soak = await run_soak(tmp_path, SECONDS, every=5.0)
    print(soak.summary())
    assert soak.problems() == [], soak.summary()
    # The load really ran: hundreds of connections and flows came and went.
    assert soak.operations["tcp"] >= 100 and soak.operations["udp"] >= 100, soak.operations
    assert soak.operations["vm"] >= 5 and soak.operations["tcp refused"] >= 20, soak.operations
    assert max(sample.flows for sample in soak.samples) > 0
