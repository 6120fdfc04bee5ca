"""The installed ``slirpnet`` command and ``python -m slirpnet``, run as a user would."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from slirpnet import __version__


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def console_script() -> str:
    path = shutil.which("slirpnet")
    if path is None:
        pytest.skip("the slirpnet console script is not installed (run under tox or pip install)")
    return path


def test_version_from_console_script() -> None:
    result = run(console_script(), "--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"slirpnet {__version__}"


def test_help_from_module() -> None:
    result = run(sys.executable, "-m", "slirpnet", "--help")
    assert result.returncode == 0
    assert "usage: slirpnet" in result.stdout


def test_bad_flag_is_a_one_line_error_and_exit_2() -> None:
    result = run(sys.executable, "-m", "slirpnet", "--no-such-flag")
    assert result.returncode == 2
    assert "--no-such-flag" in result.stderr.strip().splitlines()[-1]
