"""The test guest from the command line, as docker/Dockerfile.vm and CI jobs use it.

    python3 -m integration.guest build             fetch the kernel and busybox, build the initramfs
    python3 -m integration.guest run NETDEV [--script SH] [--mac MAC] [--timeout S] [--wait S]

``run`` boots the guest with ``-netdev NETDEV`` (its id must be ``n0``), prints the
serial console and exits with the script's status (124 on timeout, 125 when the
guest never finished or the server never listened).  The cache is
``$SLIRPNET_GUEST_CACHE`` or ~/.cache/slirpnet-guest.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys

import trio

from integration.guest.build import GuestImage, build_image, default_cache_dir
from integration.guest.qemu import DEFAULT_MAC, boot_async


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m integration.guest")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="build the guest into the cache and print its files")
    run = commands.add_parser("run", help="boot the guest on a netdev and run a script in it")
    run.add_argument("netdev", help="QEMU -netdev value with id=n0, e.g. stream,id=n0,...")
    run.add_argument("--script", default="", help="shell commands to run once it has a lease")
    run.add_argument("--mac", default=DEFAULT_MAC)
    run.add_argument("--timeout", type=float, default=120.0)
    run.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="S",
        help="wait up to S seconds for the unix socket of a stream client netdev to listen",
    )
    args = parser.parse_args(argv)

    image = build_image(default_cache_dir())
    if args.command == "build":
        print(f"kernel {image.kernel}\ninitramfs {image.initramfs}")
        return 0
    return trio.run(_until_terminated, image, args)


async def _until_terminated(image: GuestImage, args: argparse.Namespace) -> int:
    """_run, stopped (QEMU with it) by SIGTERM: as a container's PID 1 this process would
    otherwise ignore it, and `docker stop` would wait for its SIGKILL."""
    status = 128 + signal.SIGTERM
    with trio.open_signal_receiver(signal.SIGTERM) as terminations:
        async with trio.open_nursery() as nursery:

            async def run_then_stop() -> None:
                nonlocal status
                status = await _run(image, args)
                nursery.cancel_scope.cancel()

            nursery.start_soon(run_then_stop)
            async for _ in terminations:
                nursery.cancel_scope.cancel()
    return status


async def _run(image: GuestImage, args: argparse.Namespace) -> int:
    path = _client_socket(args.netdev)
    if path is not None and args.wait > 0 and not await _listening(path, args.wait):
        print(f"nothing listens on {path} after {args.wait:g} s", file=sys.stderr)
        return 125
    netdev = ["-netdev", args.netdev]
    result = await boot_async(image, netdev, args.script, args.timeout, mac=args.mac)
    sys.stdout.write(result.output)
    if result.timed_out:
        return 124
    return 125 if result.rc is None else result.rc


def _client_socket(netdev: str) -> str | None:
    """The unix socket path a ``stream,server=off`` netdev connects to, else None."""
    kind, *options = netdev.split(",")
    values = dict(option.partition("=")[::2] for option in options)
    if kind == "stream" and values.get("server") == "off" and values.get("addr.type") == "unix":
        return values.get("addr.path")
    return None


async def _listening(path: str, wait: float) -> bool:
    """Whether the socket at `path` accepts a connection within `wait` seconds.

    QEMU's stream client gives up at once when nobody listens, and a compose service may
    start before the server it depends on listens: podman-compose honours
    ``condition: service_healthy`` only from podman 4.6.  A socket file alone proves
    nothing (one left by a server that died is still there), so this connects.
    """
    with trio.move_on_after(wait):
        while True:
            with trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                try:
                    await probe.connect(path)
                    return True
                except OSError:
                    pass
            await trio.sleep(0.2)
    return False


if __name__ == "__main__":
    sys.exit(main())
