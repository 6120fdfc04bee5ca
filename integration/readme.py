"""The commands the README prints, for the tests that run them as a reader would."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def section(title: str) -> str:
    """The text of the README's ``## title`` section."""
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def quick_start() -> list[str]:
    """The quick start's commands: install and serve, then test."""
    match = re.search(r"```sh\n(.*?)```", section("Quick start"), re.DOTALL)
    assert match, "README.md's quick start has no sh block"
    commands = [line for line in match.group(1).splitlines() if line.strip()]
    assert len(commands) == 2, commands
    return commands


def quick_start_install() -> str:
    return quick_start()[0]


def quick_start_test() -> str:
    return quick_start()[1]


def toml_example() -> str:
    """The configuration file under "Running the server"."""
    match = re.search(r"```toml\n(.*?)```", section("Running the server"), re.DOTALL)
    assert match, "README.md has no TOML example under Running the server"
    return match.group(1)


def ctl_example() -> list[str]:
    """The ``slirpnet ctl`` lines under "Operating it", as argument lists after ``ctl``."""
    match = re.search(r"```sh\n(slirpnet serve.*?)```", section("Operating it"), re.DOTALL)
    assert match, "README.md has no ctl example under Operating it"
    lines = [line.split() for line in match.group(1).splitlines()]
    return [line[2:] for line in lines if line[:2] == ["slirpnet", "ctl"]]
