"""The ``slirpnet`` command line."""

from __future__ import annotations

import argparse
import logging
import resource
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from slirpnet import __version__, heapreport
from slirpnet.config import (
    DEFAULT_NAMESPACE,
    LOG_FORMATS,
    LOG_LEVELS,
    Address,
    ConfigError,
    ServerConfig,
    default_control_path,
    load_file,
    namespace_from_values,
    parse_address,
    parse_metrics,
    parse_pcap_dir,
    parse_state_dir,
    validate,
    with_default_listener,
)
from slirpnet.control import client
from slirpnet.logs import configure
from slirpnet.shell.activation import inherited_sockets, with_inherited_listeners
from slirpnet.shell.allocator import keep_freed_memory
from slirpnet.shell.leasestore import default_state_dir
from slirpnet.shell.server import qemu_arguments, run_server, suggested_mac

# Flags that map onto config keys, with their help.  Repeatable ones collect lists.
_VALUE_FLAGS = (
    ("--listen", True, "unix:PATH, tcp:HOST:PORT or unixgram:PATH; each connection is a VM"),
    ("--connect", True, "unix:PATH or tcp:HOST:PORT of a QEMU with server=on"),
    ("--forward", True, "tcp|udp:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT (libslirp hostfwd)"),
    ("--stdio", False, "qemu or vde: one VM on stdin/stdout (dpipe vde_plug SWITCH = ...)"),
    ("--net", False, "the guests' IPv4 network (default 10.0.2.0/24)"),
    ("--gateway", False, "the gateway's address, standing for the host (default 10.0.2.2)"),
    ("--dns", False, "the DNS server's address (default 10.0.2.3)"),
    ("--dhcp-start", False, "the first address DHCP leases (default 10.0.2.15)"),
    ("--mtu", False, "the MTU given by DHCP (default 65520; 1500 with --stdio vde)"),
    ("--domain", False, "the domain name given by DHCP"),
    ("--search", True, "a DNS search domain given by DHCP (option 119)"),
    ("--dns-upstream", True, "HOST[:PORT] of a resolver (default: /etc/resolv.conf)"),
    ("--dns-record", True, "NAME=IPV4 answered locally (host.slirpnet.internal is the host)"),
    ("--static-lease", True, "MAC=IPV4, a fixed DHCP lease"),
    ("--udp-idle-timeout", False, "seconds before an idle UDP flow is closed (default 60)"),
    ("--max-flows", False, "flows a VM may hold at once; more TCP connections get a RST (16384)"),
    ("--max-connecting", False, "TCP connects a VM may have pending on the host at once (256)"),
    ("--max-leases", False, "DHCP leases one VM may hold at once (8)"),
    ("--deny", True, "CIDR: guests' flows may not go there (ICMP admin-prohibited)"),
    ("--socket-mode", False, "octal mode of the unix sockets for VMs (default 0600)"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slirpnet",
        description=(
            "User-mode networking for virtual machines: ARP, DHCP, DNS and NAT of a VM's "
            "TCP, UDP and ICMP echo onto ordinary host sockets, with no root and no tap device."
        ),
    )
    parser.add_argument("--version", action="version", version=f"slirpnet {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the server",
        description="Run the server. With no flags it listens on a unix socket and prints "
        "the QEMU arguments that connect a VM to it.",
    )
    for flag, repeatable, text in _VALUE_FLAGS:
        serve.add_argument(flag, action="append" if repeatable else "store", help=text)
    serve.add_argument(
        "--no-host-loopback",
        action="store_true",
        default=None,
        help="the gateway address does not lead to the host's loopback",
    )
    serve.add_argument(
        "--restrict",
        action="store_true",
        default=None,
        help="guests reach only the built-in services and forwards",
    )
    serve.add_argument(
        "--isolate",
        action="store_true",
        default=None,
        help="each VM gets a network of its own, with the same addresses (like -netdev user)",
    )
    serve.add_argument("--control", help="unix:PATH: serve the control API (slirpnet ctl) there")
    serve.add_argument("--metrics", help="HOST:PORT: serve Prometheus metrics at /metrics")
    serve.add_argument("--pcap", help="DIR: capture every VM's frames to a pcap file there")
    serve.add_argument(
        "--state-dir",
        help="DIR: leases kept over a restart (default $XDG_STATE_HOME/slirpnet, "
        "~/.local/state/slirpnet, for root /var/lib/slirpnet)",
    )
    serve.add_argument("--config", type=Path, help="a TOML file with the same keys")
    serve.add_argument("--log-level", choices=LOG_LEVELS, help="default info")
    serve.add_argument("--log-format", choices=LOG_FORMATS, help="default text")
    ctl = commands.add_parser(
        "ctl",
        help="talk to a running server's control API",
        description="Show and change a running server: VMs, flows, leases, DNS, captures.",
    )
    client.add_arguments(ctl, str(default_control_path()))
    return parser


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """Flags alone, or a file; flags and a file together are an error (one truth)."""
    values: dict[str, Any] = {}
    for flag, _, _ in _VALUE_FLAGS:
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            values[flag[2:]] = value
    for flag in ("no-host-loopback", "restrict", "isolate"):
        if getattr(args, flag.replace("-", "_")):
            values[flag] = True
    if args.config is not None:
        if values:
            raise ConfigError("config", f"use either --config or the flags {sorted(values)}")
        config = load_file(args.config)
    else:
        config = validate(ServerConfig((namespace_from_values(DEFAULT_NAMESPACE, values),)))
    return validate(
        ServerConfig(
            config.namespaces,
            log_level=args.log_level or config.log_level,
            log_format=args.log_format or config.log_format,
            control=parse_address(args.control, ("unix",), "control")
            if args.control
            else config.control,
            metrics=parse_metrics(args.metrics) if args.metrics else config.metrics,
            pcap_dir=parse_pcap_dir(args.pcap) if args.pcap else config.pcap_dir,
            state_dir=parse_state_dir(args.state_dir)
            if args.state_dir
            else config.state_dir or default_state_dir(),
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    heap_report = heapreport.start()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "ctl":
        return client.run(args)
    if args.command != "serve":
        parser.print_help()
        return 0
    try:
        config = config_from_args(args)
    except ConfigError as error:
        parser.error(str(error))  # one line, exit 2
    try:
        inherited = inherited_sockets()
    except ConfigError as error:
        parser.error(str(error))
    config = with_default_listener(with_inherited_listeners(config, inherited))
    configure(config.log_level, config.log_format)
    _raise_fd_limit()
    keep_freed_memory()
    try:
        trio.run(_serve_until_signal, config, inherited, heap_report)
    except* ConfigError as group:
        parser.error(str(_first_leaf(group)))
    return 0


def _raise_fd_limit() -> None:
    """Every flow is a host socket: allow as many as the hard limit does.  (The usual
    soft limit, 1024, is there for select(), which trio never uses.)  Out of them
    all the same, new flows are refused and the server goes on."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):  # an unlimited hard limit is more than Linux allows
            pass
        else:
            soft = hard
    logging.getLogger("slirpnet").info("up to %d file descriptors", soft)


async def _serve_until_signal(
    config: ServerConfig, inherited: dict[Address, socket.socket], heap_report: Path | None
) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_on_signal, signals, nursery.cancel_scope)
            if heap_report is not None:
                nursery.start_soon(heapreport.report_on_signal, heap_report)
            await nursery.start(_serve, config, inherited, nursery.cancel_scope)
            # Printed once every listener is bound: the line doubles as a readiness signal.
            if not any(ns.stdio for ns in config.namespaces):
                for line in qemu_lines(config):
                    print(line)
                sys.stdout.flush()


async def _serve(
    config: ServerConfig,
    inherited: dict[Address, socket.socket],
    done: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[object] = trio.TASK_STATUS_IGNORED,
) -> None:
    await run_server(config, inherited=inherited, task_status=task_status)
    done.cancel()  # the stdio VM left


async def _stop_on_signal(signals: Any, scope: trio.CancelScope) -> None:
    async for _ in signals:
        scope.cancel()
        return


def qemu_lines(config: ServerConfig) -> list[str]:
    """For each listener and connect address, the QEMU arguments of a VM that uses it.

    VMs sharing a network need a MAC each (QEMU gives every VM 52:54:00:12:34:56), so
    the line shows where it goes; with ``--isolate`` any MAC will do.
    """
    return [
        f"{namespace.name}: qemu-system-x86_64 ... "
        + qemu_arguments(
            address, server, None if namespace.isolate else suggested_mac(namespace.name, address)
        )
        for namespace in config.namespaces
        for addresses, server in ((namespace.listen, False), (namespace.connect, True))
        for address in addresses
    ]


def _first_leaf(group: BaseExceptionGroup[ConfigError]) -> BaseException:
    """Nested nurseries nest exception groups; the user wants the error inside."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error
