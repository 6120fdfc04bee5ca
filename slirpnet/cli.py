"""The ``slirpnet`` command line."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from slirpnet import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slirpnet",
        description=(
            "User-mode networking for virtual machines: ARP, DHCP, DNS and NAT of a VM's "
            "TCP, UDP and ICMP echo onto ordinary host sockets, with no root and no tap device."
        ),
    )
    parser.add_argument("--version", action="version", version=f"slirpnet {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; argparse exits 2 with a one-line error on a bad flag."""
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help()
    return 0
