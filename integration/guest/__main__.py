"""The test guest from the command line, as docker/Dockerfile.vm and CI jobs use it.

    python3 -m integration.guest build             fetch the kernel and busybox, build the initramfs
    python3 -m integration.guest run NETDEV [--script SH] [--mac MAC] [--timeout S]

``run`` boots the guest with ``-netdev NETDEV`` (its id must be ``n0``), prints the
serial console and exits with the script's status (124 on timeout, 125 when the
guest never finished).  The cache is ``$SLIRPNET_GUEST_CACHE`` or ~/.cache/slirpnet-guest.
"""

from __future__ import annotations

import argparse
import sys

from integration.guest.build import build_image, default_cache_dir
from integration.guest.qemu import DEFAULT_MAC, boot


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m integration.guest")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="build the guest into the cache and print its files")
    run = commands.add_parser("run", help="boot the guest on a netdev and run a script in it")
    run.add_argument("netdev", help="QEMU -netdev value with id=n0, e.g. stream,id=n0,...")
    run.add_argument("--script", default="", help="shell commands to run once it has a lease")
    run.add_argument("--mac", default=DEFAULT_MAC)
    run.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)

    image = build_image(default_cache_dir())
    if args.command == "build":
        print(f"kernel {image.kernel}\ninitramfs {image.initramfs}")
        return 0
    result = boot(image, ["-netdev", args.netdev], args.script, args.timeout, mac=args.mac)
    sys.stdout.write(result.output)
    if result.timed_out:
        return 124
    return 125 if result.rc is None else result.rc


if __name__ == "__main__":
    sys.exit(main())
