"""``slirpnet ctl``: the control API's client, with tables for people and ``--json`` for scripts."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

TIMEOUT = 10.0


class ControlError(Exception):
    """The server said no (``status`` is its HTTP status), or could not be reached (0)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=TIMEOUT)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(TIMEOUT)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def request(socket_path: str, method: str, path: str, body: object = None) -> Any:
    """One API call; the decoded JSON answer, or ``ControlError``."""
    connection = _UnixConnection(socket_path)
    try:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        connection.request(method, "/v1" + path, body=payload, headers=headers)
        response = connection.getresponse()
        data = response.read()
    except (FileNotFoundError, ConnectionRefusedError):
        raise ControlError(
            0,
            f"no server's control socket at {socket_path}: start one with `slirpnet serve` "
            "(it opens it there unless --control says otherwise), or give --socket PATH",
        ) from None
    except OSError as error:
        raise ControlError(0, f"cannot reach the control socket {socket_path}: {error}") from None
    finally:
        connection.close()
    try:
        decoded = json.loads(data)
    except ValueError:
        raise ControlError(response.status, f"not JSON: {data[:200]!r}") from None
    if response.status >= 400:
        message = decoded.get("error") if isinstance(decoded, dict) else None
        raise ControlError(response.status, message or f"HTTP {response.status}")
    return decoded


# -- the command line ------------------------------------------------------------------------

WIDTH = 100  # of a table for people: the widest columns are cut to fit


def add_arguments(parser: argparse.ArgumentParser, default_socket: str) -> None:
    """``slirpnet ctl``'s arguments.  Its options work anywhere on the line (``ctl vms
    --json``), so every subcommand takes them too, without a default of its own."""
    _options(parser, default_socket)
    what = parser.add_subparsers(dest="what", metavar="WHAT", required=True)

    def command(
        parent: argparse._SubParsersAction[argparse.ArgumentParser], name: str, text: str
    ) -> argparse.ArgumentParser:
        aliases = ["remove"] if name == "rm" else []
        sub = parent.add_parser(name, help=text, aliases=aliases, allow_abbrev=False)
        _options(sub, None)
        return sub

    command(what, "namespaces", "list namespaces")
    command(what, "vms", "list VMs: MACs, addresses, traffic, drops")
    flows = command(what, "flows", "list flows with state and counters")
    flows.add_argument("--vm", help="only this VM's (its id, from `vms`)")
    command(what, "leases", "list DHCP leases")
    command(what, "dns", "show DNS upstreams and local records")
    record = command(what, "record", "add or remove a local DNS record")
    record_ops = record.add_subparsers(dest="op", metavar="OP", required=True)
    add = command(record_ops, "add", "NAME IPV4")
    add.add_argument("name")
    add.add_argument("address")
    command(record_ops, "rm", "NAME").add_argument("name")
    command(what, "forwards", "list port forwards")
    forward = command(what, "forward", "add or remove a port forward")
    forward_ops = forward.add_subparsers(dest="op", metavar="OP", required=True)
    command(forward_ops, "add", "SPEC, e.g. tcp::2222-:22").add_argument("spec")
    command(forward_ops, "rm", "SPEC").add_argument("spec")
    command(what, "guestfwds", "list guest forwards")
    guestfwd = command(what, "guestfwd", "add or remove a guest forward")
    guestfwd_ops = guestfwd.add_subparsers(dest="op", metavar="OP", required=True)
    command(guestfwd_ops, "add", "SPEC, e.g. tcp:10.0.2.100:4321-cmd:cat").add_argument("spec")
    command(guestfwd_ops, "rm", "[tcp]:ADDR:PORT, or the SPEC").add_argument("spec")
    pcap = command(what, "pcap", "start or stop capturing a VM's frames")
    pcap_ops = pcap.add_subparsers(dest="op", metavar="OP", required=True)
    start = command(pcap_ops, "start", "VM [PATH]")
    start.add_argument("vm")
    start.add_argument("path", nargs="?", help="default: the server's --pcap directory")
    command(pcap_ops, "stop", "VM").add_argument("vm")


def _options(parser: argparse.ArgumentParser, default_socket: str | None) -> None:
    """The options, with their defaults on ``ctl`` itself (``default_socket``) and none on
    a subcommand, so that one given before the subcommand is not undone after it."""
    if default_socket is None:
        defaults: dict[str, Any] = {"default": argparse.SUPPRESS}
        socket_help = json_help = ns_help = argparse.SUPPRESS
    else:
        defaults = {}
        socket_help = (
            "the server's control socket "
            f"(default $SLIRPNET_CONTROL or {default_socket}, where serve opens it)"
        )
        json_help = "print the API's JSON"
        ns_help = "the namespace (default: the server's only one)"
    parser.add_argument(
        "--socket",
        **(defaults or {"default": os.environ.get("SLIRPNET_CONTROL", default_socket)}),
        help=socket_help,
    )
    parser.add_argument(
        "--json", action="store_true", **(defaults or {"default": False}), help=json_help
    )
    parser.add_argument("-n", "--namespace", **(defaults or {"default": None}), help=ns_help)


def run(args: argparse.Namespace) -> int:
    """Carry out ``slirpnet ctl``; 0 on success, 1 when the server refused, 2 unreachable."""
    try:
        answer = request(args.socket, *_call(args))
    except ControlError as error:
        print(f"slirpnet ctl: {error}", file=sys.stderr)
        return 2 if error.status == 0 else 1
    print(json.dumps(answer, indent=1) if args.json else render(answer, args.what))
    return 0


def _call(args: argparse.Namespace) -> tuple[str, str, object]:
    """The API call a command line asks for: method, path and body."""
    if args.what == "namespaces":
        return "GET", "/namespaces", None
    ns = "/namespaces/" + quote(args.namespace or _only_namespace(args.socket), safe="")
    listings = {
        "vms": "/vms",
        "leases": "/leases",
        "dns": "/dns",
        "forwards": "/forwards",
        "guestfwds": "/guestfwds",
    }
    if args.what in listings:
        return "GET", ns + listings[args.what], None
    if args.what == "flows":
        return "GET", ns + (f"/vms/{quote(args.vm, safe='')}/flows" if args.vm else "/flows"), None
    if args.what == "forward":
        if args.op == "add":
            return "POST", ns + "/forwards", {"spec": args.spec}
        return "DELETE", f"{ns}/forwards/{quote(args.spec, safe='')}", None
    if args.what == "guestfwd":
        if args.op == "add":
            return "POST", ns + "/guestfwds", {"spec": args.spec}
        # Named by its address and port: the target may hold a "/", which a path cannot.
        key = args.spec.partition("-")[0]
        return "DELETE", f"{ns}/guestfwds/{quote(key, safe='')}", None
    if args.what == "record":
        path = f"{ns}/dns/records/{quote(args.name, safe='')}"
        return (
            ("PUT", path, {"address": args.address}) if args.op == "add" else ("DELETE", path, None)
        )
    path = f"{ns}/vms/{quote(args.vm, safe='')}/pcap"  # pcap
    if args.op == "start":
        return "PUT", path, ({"path": args.path} if args.path else {})
    return "DELETE", path, None


def _only_namespace(socket_path: str) -> str:
    """With no ``-n``: the server's namespace, when it has just one."""
    names = [namespace["name"] for namespace in request(socket_path, "GET", "/namespaces")]
    if len(names) != 1:
        raise ControlError(400, f"the server has namespaces {', '.join(names)}: say which with -n")
    return str(names[0])


def render(answer: Any, what: str = "") -> str:
    """A table for a list of objects, ``key: value`` lines for one object."""
    if isinstance(answer, list):
        if not answer:
            return "(none)"
        if what in _ROWS:
            answer = [_ROWS[what](row) for row in answer]
        columns = list(dict.fromkeys(key for row in answer for key in row))
        return table(columns, [[_cell(row.get(key)) for key in columns] for row in answer])
    if isinstance(answer, dict):
        width = max((len(key) for key in answer), default=0)
        return "\n".join(f"{key:<{width}}  {_cell(value)}" for key, value in answer.items())
    return str(answer)


def _vm_row(vm: dict[str, Any]) -> dict[str, Any]:
    """A VM in one line for people: its counters summed (``--json`` has them all, and
    more: bytes, drops and events by reason, the capture)."""
    return {
        "id": vm["id"],
        "name": vm["name"],
        "mac": vm["macs"],
        "address": vm["addresses"],
        "frames_in": vm["frames_in"],
        "frames_out": vm["frames_out"],
        "flows": sum(vm["flows"].values()),
        "drops": sum(vm["drops"].values()),
    }


def _flow_row(flow: dict[str, Any]) -> dict[str, Any]:
    """A flow in one line for people: who, where, how far (``--json`` has the rest)."""
    return {
        "vm": flow["vm"],
        "proto": flow["protocol"],
        "guest": flow["guest"],
        "destination": flow["destination"],
        "state": flow["state"],
        "to_host": flow.get("bytes_to_host", "-"),
        "to_guest": flow.get("bytes_to_guest", "-"),
    }


_ROWS = {"vms": _vm_row, "flows": _flow_row}


def table(columns: Sequence[str], rows: Sequence[Sequence[str]], width: int = WIDTH) -> str:
    """Columns two spaces apart; past ``width``, the widest are cut (ending in "~")."""
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(columns)]
    floors = [min(len(c), 6) for c in columns]  # a header is cut last
    while sum(widths) + 2 * (len(widths) - 1) > width:
        widest = max(range(len(widths)), key=lambda i: widths[i] - floors[i])
        if widths[widest] <= floors[widest]:
            break  # as narrow as it goes: wider than asked, rather than unreadable
        widths[widest] -= 1
    lines = ["  ".join(_fit(c.upper(), w).ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += [
        "  ".join(_fit(v, w).ljust(w) for v, w in zip(row, widths, strict=True)) for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


def _cell(value: object, separator: str = ",") -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        # A list in it (a name's addresses) is spaced: commas part the entries.
        return ",".join(f"{k}={_cell(v, ' ')}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return separator.join(str(v) for v in value) or "-"
    return str(value)
