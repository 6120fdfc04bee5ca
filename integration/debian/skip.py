"""The Debian guest for pytest, or a skip naming what this machine lacks."""

from __future__ import annotations

import shutil

import pytest

from integration.debian.build import DebianImage, build_image
from integration.debian.qemu import QEMU
from integration.guest.build import GuestUnavailableError


def debian_image_or_skip() -> DebianImage:
    """Build (or take from the cache) the guest; skip when QEMU, debootstrap, root or apt's
    packages are missing.  integration/install-deps.sh installs what it needs."""
    if shutil.which(QEMU) is None:
        pytest.skip(f"{QEMU} is not installed (Debian package qemu-system-x86)")
    try:
        return build_image()
    except GuestUnavailableError as missing:
        pytest.skip(f"the Debian guest cannot be built here: {missing}")
