"""Coverage-guided fuzzing of the core and the framers with atheris (libFuzzer), by hand.

    pip install atheris        # or the "fuzz" extra
    python -m tests.fuzz.atheris_core --seeds fuzz-corpus
    python -m tests.fuzz.atheris_core fuzz-corpus -max_total_time=600

The first command writes the seed inputs (``records.seeds``: the corpus of both IP
families, TCP handshakes over both, fragments, router and DHCPv6 servers' messages
from a guest in every disguise); the second fuzzes from them,
adding what reaches new code to the directory.  Inputs are ``records`` byte
strings; the package is instrumented so libFuzzer sees its branches, and every
check of the state machine applies, so any exception is a crash that libFuzzer
saves as ``crash-*``.  Replay one with ``python -m tests.fuzz.atheris_core FILE``.
"""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path

import atheris

DRIVER = "tests.fuzz.records"  # imported late: the package must load instrumented


def main() -> None:
    if sys.argv[1:2] == ["--seeds"]:
        directory = Path(sys.argv[2])
        directory.mkdir(parents=True, exist_ok=True)
        for number, seed in enumerate(importlib.import_module(DRIVER).seeds()):
            (directory / f"seed-{number:04d}").write_bytes(seed)
        return
    logging.getLogger("slirpnet").setLevel(logging.ERROR)
    with atheris.instrument_imports(include=["slirpnet"]):
        driver = importlib.import_module(DRIVER)
    atheris.Setup(sys.argv, driver.run)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
