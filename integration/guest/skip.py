"""The guest image for pytest, or a skip naming what this machine lacks."""

from __future__ import annotations

import shutil

import pytest

from integration.guest.build import (
    GuestImage,
    GuestUnavailableError,
    build_image,
    default_cache_dir,
)
from integration.guest.qemu import QEMU


def image_or_skip() -> GuestImage:
    """Build (or take from the cache) the guest; skip when QEMU or the packages are missing.

    integration/install-deps.sh installs what it needs.
    """
    if shutil.which(QEMU) is None:
        pytest.skip(f"{QEMU} is not installed (Debian package qemu-system-x86)")
    try:
        return build_image(default_cache_dir())
    except GuestUnavailableError as missing:
        pytest.skip(f"the test guest cannot be built here: {missing}")
