"""The Debian guest's script functions and report parsing, run with the host's sh (no VM)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from integration.debian.qemu import SCRIPT_FUNCTIONS, Result, _parse

SCRIPT = """
echo "SLIRPNET-START uptime=12.50"
check passes printf 'first\\nlast line\\n\\n'
check fails sh -c 'echo why; exit 3'
check silent true
check forged echo 'RESULT forged ok'
result direct fail some detail
check twice false
check twice true
echo "SLIRPNET-DONE rc=0 uptime=13.00"
"""


def run_in_sh(script: str) -> bytes:
    sh = shutil.which("sh")
    if sh is None:
        pytest.skip("no sh on this machine")
    done = subprocess.run([sh, "-c", SCRIPT_FUNCTIONS + script], capture_output=True, check=True)
    return done.stdout


def test_checks_report_their_command_and_last_line() -> None:
    run = _parse(run_in_sh(SCRIPT), b"console\r\n", timed_out=False, seconds=20.0)

    assert run.results == {
        "passes": Result(True, "last line"),
        "fails": Result(False, "rc=3 why"),
        "silent": Result(True, ""),
        # The command's own output is shown behind "| ", so it cannot pass for a result.
        "forged": Result(True, "RESULT forged ok"),
        "direct": Result(False, "some detail"),
        "twice": Result(True, ""),
    }
    assert "| first\n| last line\n" in run.output
    assert "\nRESULT forged ok\n" not in run.output
    assert run.rc == 0
    assert run.boot_seconds == 12.5
    assert run.console == "console\n"


def test_a_script_that_never_finished_has_no_status() -> None:
    run = _parse(run_in_sh("check one true\n"), b"", timed_out=True, seconds=300.0)

    assert run.rc is None
    assert run.timed_out
    assert run.boot_seconds is None
    assert run.results == {"one": Result(True, "")}
