"""`pip install .` both ways: with no C compiler the install still works, in pure Python,
and says so; with one, it builds the native parts.

Each install goes into a fresh venv from a copy of the repository (no in-place build
of the tree is used), and the installed command is run from elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# What a copy of the repository leaves out: builds in place and tool state.
_LEFT_OUT = shutil.ignore_patterns(
    "*.so", "build", ".tox", ".tox-venv", ".venv", ".git", "__pycache__", "*.egg-info"
)


def _install(tmp_path: Path, env: dict[str, str]) -> Path:
    """A venv of its own with slirpnet installed from a copy of the repository, as a
    user's ``pip install .`` does it (the build's requirements and the dependencies
    from the index); returns its bin directory."""
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=_LEFT_OUT)
    home = tmp_path / "venv"
    venv.create(home, with_pip=True)
    result = subprocess.run(
        [
            home / "bin" / "python",
            *("-m", "pip", "install", "--quiet", "."),
        ],
        cwd=source,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return home / "bin"


def _version(bin_dir: Path, tmp_path: Path) -> str:
    result = subprocess.run(
        [bin_dir / "slirpnet", "--version"],
        cwd=tmp_path,  # away from the repository's own slirpnet/
        env={key: value for key, value in os.environ.items() if not key.startswith("SLIRPNET_")},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


def test_without_a_compiler_the_install_works_and_says_it_is_pure(tmp_path: Path) -> None:
    bin_dir = _install(tmp_path, {"CC": "/bin/false"})
    version = _version(bin_dir, tmp_path)
    assert "(pure Python: no native build; install gcc" in version, version
    server = subprocess.Popen(
        [
            bin_dir / "slirpnet",
            "serve",
            "--listen",
            f"unix:{tmp_path}/vm.sock",
            "--control",
            "none",
        ],
        cwd=tmp_path,
        env={**os.environ, "XDG_RUNTIME_DIR": str(tmp_path), "XDG_STATE_HOME": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    assert "qemu-system-x86_64" in server.stdout.readline()  # listening
    server.terminate()
    _, errors = server.communicate(timeout=30)
    assert errors.count("running pure Python: no native build") == 1, errors


def test_with_a_compiler_the_install_is_native(tmp_path: Path) -> None:
    if shutil.which("gcc") is None:
        pytest.skip("no gcc here (integration/install-deps.sh installs it)")
    if not (Path(sys.base_prefix) / "include").exists():
        pytest.skip("no Python headers here (python3-dev)")
    version = _version(_install(tmp_path, {}), tmp_path)
    assert "(native: C module and " in version, version
