"""A tiny real Linux guest (Debian's kernel, a busybox initramfs) under QEMU, for integration tests.

In a test: take the image from image_or_skip() (in a session fixture), then
``run = await boot_async(image, ["-netdev", "user,id=n0"], "ping -c 1 10.0.2.2", timeout=60)``
and assert on ``run.rc``, ``run.lease`` and ``run.output``.
"""

from integration.guest.build import (
    GuestBuildError,
    GuestImage,
    GuestUnavailableError,
    build_image,
    default_cache_dir,
)
from integration.guest.qemu import DEFAULT_MAC, GuestRun, boot, boot_async, qemu_command

__all__ = [
    "DEFAULT_MAC",
    "GuestBuildError",
    "GuestImage",
    "GuestRun",
    "GuestUnavailableError",
    "boot",
    "boot_async",
    "build_image",
    "default_cache_dir",
    "qemu_command",
]
