"""Build the Debian guest into its cache and say how long it took.

    python3 -m integration.debian build

The cache is ``$SLIRPNET_GUEST_CACHE/debian`` or ~/.cache/slirpnet-guest/debian.
"""

from __future__ import annotations

import argparse
import sys
import time

from integration.debian.build import build_image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m integration.debian")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="build (or find in the cache) the kernel, initramfs, image")
    parser.parse_args(argv)
    started = time.monotonic()
    image = build_image()
    print(f"kernel {image.kernel}\ninitramfs {image.initramfs}\nrootfs {image.rootfs}")
    print(f"{time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
