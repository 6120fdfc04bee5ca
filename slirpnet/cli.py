"""The ``slirpnet`` command line."""

from __future__ import annotations

import argparse
import difflib
import gc
import logging
import os
import resource
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import trio

from slirpnet import __version__, heapreport, native
from slirpnet.config import (
    DEFAULT_NAMESPACE,
    LOG_FORMATS,
    LOG_LEVELS,
    Address,
    ConfigError,
    ServerConfig,
    default_control,
    default_control_path,
    load_file,
    namespace_from_values,
    parse_control,
    parse_metrics,
    parse_pcap_dir,
    parse_state_dir,
    validate,
    with_default_listener,
)
from slirpnet.control import client
from slirpnet.logs import HeldLogs, configure
from slirpnet.server import qemu_arguments, run_server, suggested_mac
from slirpnet.shell.activation import inherited_sockets, with_inherited_listeners
from slirpnet.shell.allocator import keep_freed_memory
from slirpnet.shell.leasestore import default_state_dir

# Flags that map onto config keys, with their help.  Repeatable ones collect lists.
_VALUE_FLAGS = (
    # First: the other flags add to what it says.
    ("--user", False, "QEMU's options: 'user,id=n0,net=10.0.9.0/24,hostfwd=tcp::2222-:22'"),
    ("--listen", True, "unix:PATH, tcp:HOST:PORT or unixgram:PATH; each connection is a VM"),
    ("--connect", True, "unix:PATH or tcp:HOST:PORT of a QEMU with server=on"),
    ("--forward", True, "tcp|udp:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT (libslirp hostfwd)"),
    (
        "--guestfwd",
        True,
        "[tcp]:[ADDR]:PORT-tcp:HOST:PORT|unix:PATH|cmd:COMMAND (libslirp guestfwd)",
    ),
    ("--stdio", False, "qemu or vde: one VM on stdin/stdout (dpipe vde_plug SWITCH = ...)"),
    ("--net", False, "the guests' IPv4 network (default 10.0.2.0/24)"),
    ("--gateway", False, "the gateway's address, standing for the host (default 10.0.2.2)"),
    ("--dns", False, "the DNS server's address (default 10.0.2.3)"),
    ("--net6", False, "the guests' IPv6 network, a /64 (default fec0::/64)"),
    ("--gateway6", False, "the gateway's IPv6 address, for the host's ::1 (default fec0::2)"),
    ("--dns6", False, "the DNS server's IPv6 address (default fec0::3)"),
    ("--dhcp-start", False, "the first address DHCP leases (default 10.0.2.15)"),
    ("--mtu", False, "the MTU given by DHCP (default 65520; 1500 with --stdio vde)"),
    ("--domain", False, "the domain name given by DHCP"),
    ("--search", True, "a DNS search domain given by DHCP (option 119)"),
    ("--dns-upstream", True, "HOST[:PORT] of a resolver, [::1]:53 (default: /etc/resolv.conf)"),
    ("--dns-record", True, "NAME=IPV4 or IPV6 answered locally (host.slirpnet.internal: the host)"),
    ("--static-lease", True, "MAC=IPV4, a fixed DHCP lease"),
    ("--hostname", False, "the host name DHCP gives every guest (option 12)"),
    ("--vm-hostname", True, "MAC=NAME, the host name DHCP gives that guest"),
    ("--tftp", False, "a directory served read-only by TFTP on the gateway"),
    ("--bootfile", False, "the boot file DHCP names: a path under --tftp, or an http(s) URL"),
    ("--tftp-server-name", False, "the TFTP server's name DHCP gives (option 66)"),
    ("--udp-idle-timeout", False, "seconds before an idle UDP flow is closed (default 60)"),
    ("--max-flows", False, "flows a VM may hold at once; more TCP connections get a RST (16384)"),
    ("--max-connecting", False, "TCP connects a VM may have pending on the host at once (256)"),
    ("--max-leases", False, "DHCP leases one VM may hold at once (8)"),
    ("--deny", True, "IPv4 or IPv6 CIDR: guests' flows may not go there (admin-prohibited)"),
    ("--socket-mode", False, "octal mode of the unix sockets for VMs (default 0600)"),
)


# serve --help in groups; a flag in none of them is listed under "other".
_GROUPS = (
    ("VMs", "where VMs plug in", ("--listen", "--connect", "--stdio", "--socket-mode")),
    (
        "network",
        "the guests' network and what they may reach",
        (
            "--net",
            "--gateway",
            "--net6",
            "--gateway6",
            "--no-ipv6",
            "--mtu",
            "--isolate",
            "--restrict",
            "--no-host-loopback",
            "--deny",
        ),
    ),
    (
        "DHCP",
        None,
        (
            "--dhcp-start",
            "--domain",
            "--search",
            "--static-lease",
            "--hostname",
            "--vm-hostname",
        ),
    ),
    ("network boot", None, ("--tftp", "--bootfile", "--tftp-server-name")),
    ("DNS", None, ("--dns", "--dns6", "--dns-upstream", "--dns-record")),
    (
        "forwards",
        "host ports that reach a guest, guest addresses that reach the host",
        ("--forward", "--guestfwd"),
    ),
    (
        "from QEMU",
        "what -netdev user,... said to QEMU; flags may add to it, not say it again",
        ("--user",),
    ),
    (
        "limits",
        "per VM",
        ("--max-flows", "--max-connecting", "--max-leases", "--udp-idle-timeout"),
    ),
    (
        "operation",
        None,
        (
            "--config",
            "--control",
            "--metrics",
            "--pcap",
            "--state-dir",
            "--log-level",
            "--log-format",
        ),
    ),
)

_SERVE_EXAMPLES = """\
examples:
  slirpnet serve
      one network on $XDG_RUNTIME_DIR/slirpnet.sock; prints the QEMU arguments
  slirpnet serve --forward tcp::2222-:22 --dns-record db.test=10.0.2.2
      host port 2222 reaches the VM's ssh; the guests resolve db.test to the host
  slirpnet serve --listen unix:/run/slirpnet/vm.sock --net 10.9.0.0/24 --restrict
  slirpnet serve --user 'net=192.168.76.0/24,hostfwd=tcp::2222-:22,dnssearch=example.test'
      what -netdev user,... said to QEMU; the forward listens on 127.0.0.1 only
  slirpnet serve --config slirpnet.toml
      several namespaces, each a network of its own (the TOML keys are the flags')

The control API (slirpnet ctl) is on $XDG_RUNTIME_DIR/slirpnet-control.sock unless
--control says otherwise. Flags marked (repeatable) may be given more than once."""


class _Parser(argparse.ArgumentParser):
    """Every mistake in one line, ``slirpnet: error: ...`` and exit 2: no usage first,
    and "did you mean" for a near-miss flag or command."""

    def error(self, message: str) -> NoReturn:
        fail(message + self._suggestion(message))

    def _suggestion(self, message: str) -> str:
        if message.startswith("unrecognized arguments:"):
            words = message.partition(":")[2].split()
            known = [o for a in _all_actions(self) for o in a.option_strings]
            for word in words:
                if word.startswith("--"):
                    close = difflib.get_close_matches(word.partition("=")[0], known, n=1)
                    if close:
                        return f" (did you mean {close[0]}?)"
        elif "invalid choice:" in message:
            word = message.partition("invalid choice: ")[2].split("'")[1]
            choices = [c for a in _all_actions(self) for c in (a.choices or ())]
            close = difflib.get_close_matches(word, [str(c) for c in choices], n=1)
            if close:
                return f" (did you mean {close[0]}?)"
        return ""


def _all_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The parser's actions and its subcommands', since an unknown flag is reported by the
    top parser whichever subcommand it was meant for."""
    actions = list(parser._actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                actions += _all_actions(sub)
    return actions


def fail(message: str) -> NoReturn:
    print(f"slirpnet: error: {message}", file=sys.stderr)
    sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="slirpnet",
        allow_abbrev=False,  # a flag's prefix would be a different flag's slip
        description=(
            "User-mode networking for virtual machines: ARP, DHCP, DNS and NAT of a VM's "
            "TCP, UDP and ICMP echo onto ordinary host sockets, with no root and no tap device."
        ),
    )
    parser.add_argument(
        "--version", action="version", version=f"slirpnet {__version__} ({native.describe()})"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the server",
        usage="%(prog)s [FLAG ...]",
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the server. With no flags it listens on a unix socket and prints\n"
        "the QEMU arguments that connect a VM to it.",
        epilog=_SERVE_EXAMPLES,
    )
    _add_serve_flags(serve)
    ctl = commands.add_parser(
        "ctl",
        help="talk to a running server's control API",
        allow_abbrev=False,
        description="Show and change a running server: VMs, flows, leases, DNS, captures.",
    )
    client.add_arguments(ctl, str(default_control_path()))
    return parser


# What each value looks like, for --help; a flag not here shows VALUE.
_METAVARS = {
    "--listen": "ADDRESS",
    "--connect": "ADDRESS",
    "--stdio": "qemu|vde",
    "--socket-mode": "MODE",
    "--net": "CIDR",
    "--net6": "CIDR6",
    "--gateway6": "IPV6",
    "--dns6": "IPV6",
    "--deny": "CIDR",
    "--hostname": "NAME",
    "--vm-hostname": "MAC=NAME",
    "--tftp": "DIR",
    "--bootfile": "PATH|URL",
    "--tftp-server-name": "NAME",
    "--user": "OPTIONS",
    "--mtu": "BYTES",
    "--domain": "NAME",
    "--search": "DOMAIN",
    "--static-lease": "MAC=IPV4",
    "--dns-upstream": "HOST[:PORT]",
    "--dns-record": "NAME=ADDRESS",
    "--forward": "SPEC",
    "--guestfwd": "SPEC",
    "--udp-idle-timeout": "SECONDS",
    "--max-flows": "N",
    "--max-connecting": "N",
    "--max-leases": "N",
}


def _add_serve_flags(serve: argparse.ArgumentParser) -> None:
    flags: dict[str, dict[str, Any]] = {
        flag: {
            "action": "append" if repeatable else "store",
            "metavar": _METAVARS.get(flag, "IPV4" if "address" in text else "VALUE"),
            "help": f"{text} (repeatable)" if repeatable else text,
        }
        for flag, repeatable, text in _VALUE_FLAGS
    }
    flags["--no-host-loopback"] = {
        "action": "store_true",
        "default": None,
        "help": "the gateway address does not lead to the host's loopback",
    }
    flags["--no-ipv6"] = {
        "action": "store_true",
        "default": None,
        "help": "IPv4 only: IPv6 frames go unanswered",
    }
    flags["--restrict"] = {
        "action": "store_true",
        "default": None,
        "help": "guests reach only the built-in services and forwards",
    }
    flags["--control"] = {
        "metavar": "unix:PATH|none",
        "help": "where the control API (slirpnet ctl) listens; none for nowhere (default: below)",
    }
    flags["--metrics"] = {
        "metavar": "HOST:PORT",
        "help": "serve Prometheus metrics at /metrics there",
    }
    flags["--isolate"] = {
        "action": "store_true",
        "default": None,
        "help": "each VM gets a network of its own, with the same addresses (like -netdev user)",
    }
    flags["--pcap"] = {"metavar": "DIR", "help": "capture every VM's frames to a pcap file there"}
    flags["--state-dir"] = {
        "metavar": "DIR",
        "help": "leases kept over a restart (default $XDG_STATE_HOME/slirpnet, "
        "~/.local/state/slirpnet, for root /var/lib/slirpnet)",
    }
    flags["--config"] = {"type": Path, "metavar": "FILE", "help": "a TOML file with the same keys"}
    flags["--log-level"] = {"choices": LOG_LEVELS, "help": "default info"}
    flags["--log-format"] = {"choices": LOG_FORMATS, "help": "default text"}
    grouped = [flag for _, _, members in _GROUPS for flag in members]
    other = tuple(flag for flag in flags if flag not in grouped)
    for title, description, members in (*_GROUPS, ("other", None, other)):
        group = serve.add_argument_group(title, description)
        for flag in members:
            if flag in flags:
                group.add_argument(flag, **flags[flag])


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """Flags alone, or a file; flags and a file together are an error (one truth)."""
    values: dict[str, Any] = {}
    for flag, _, _ in _VALUE_FLAGS:
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            values[flag[2:]] = value
    for flag in ("no-host-loopback", "restrict", "isolate", "no-ipv6"):
        if getattr(args, flag.replace("-", "_")):
            values[flag] = True
    if args.config is not None:
        if values:
            raise ConfigError("config", f"use either --config or the flags {sorted(values)}")
        config = load_file(args.config)
    else:
        config = validate(ServerConfig((namespace_from_values(DEFAULT_NAMESPACE, values),)))
    if args.control is not None:
        control, optional = parse_control(args.control), False
    elif args.config is not None:
        control, optional = config.control, config.control_optional
    else:
        control, optional = default_control(), True
    return validate(
        ServerConfig(
            config.namespaces,
            log_level=args.log_level or config.log_level,
            log_format=args.log_format or config.log_format,
            control=control,
            control_optional=optional,
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
        return _quiet_on_closed_pipe(client.run, args)
    if args.command != "serve":
        parser.print_help()
        return 0
    try:
        config = config_from_args(args)
        inherited = inherited_sockets()
    except ConfigError as error:
        fail(str(error))
    config = with_default_listener(with_inherited_listeners(config, inherited))
    # Held back until every socket is bound: a mistake found binding is then the one line
    # printed, and a server that starts logs as before.
    held = configure(config.log_level, config.log_format, hold=True)
    _raise_fd_limit()
    _say_what_runs()
    keep_freed_memory()
    # What start-up made (modules, settings) lives as long as the server: the collector's
    # full passes need not walk it again.  They had taken 3% of a connection's cost.
    gc.freeze()
    try:
        trio.run(_serve_until_signal, config, inherited, heap_report, held)
    except* ConfigError as group:
        held.discard()
        fail(str(_first_leaf(group)))
    finally:
        held.release()  # whatever else stopped it, what was logged is shown
    return 0


def _quiet_on_closed_pipe(
    run: Callable[[argparse.Namespace], int], args: argparse.Namespace
) -> int:
    """``slirpnet ctl vms | head``: a reader that stops early is no error of ours."""
    try:
        code = run(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout again at exit: point it at nothing, so that it stays quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return code


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


def _say_what_runs() -> None:
    """Once at start: a build that is not native moves a fifth as much at MTU 1500."""
    if native.is_native():
        logging.getLogger("slirpnet").info("running %s", native.describe())
    else:
        logging.getLogger("slirpnet").warning(
            "running %s: several times slower per frame than the native build", native.describe()
        )


async def _serve_until_signal(
    config: ServerConfig,
    inherited: dict[Address, socket.socket],
    heap_report: Path | None,
    held: HeldLogs,
) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_on_signal, signals, nursery.cancel_scope)
            if heap_report is not None:
                nursery.start_soon(heapreport.report_on_signal, heap_report)
            await nursery.start(_serve, config, inherited, nursery.cancel_scope)
            held.release()
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
