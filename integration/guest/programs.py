"""Small static programs for the test guest, built from C here with the host's gcc."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from integration.guest.build import GuestBuildError, GuestUnavailableError, default_cache_dir

_HERE = Path(__file__).resolve().parent


def guest_program(name: str) -> bytes:
    """``NAME.c`` of this directory as a static executable, cached by its source's digest."""
    source = _HERE / f"{name}.c"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    binary = default_cache_dir() / "programs" / f"{name}-{digest}"
    if not binary.is_file():
        gcc = shutil.which("gcc")
        if gcc is None:
            raise GuestUnavailableError("gcc is not installed (Debian packages gcc, libc6-dev)")
        binary.parent.mkdir(parents=True, exist_ok=True)
        staging = binary.with_suffix(".tmp")
        built = subprocess.run(
            [gcc, "-static", "-Os", "-o", str(staging), str(source)],
            capture_output=True,
            text=True,
            check=False,
        )
        if built.returncode != 0:
            raise GuestBuildError(f"gcc could not build {source}: {built.stderr.strip()}")
        staging.replace(binary)
    return binary.read_bytes()
