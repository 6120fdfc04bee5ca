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


def add_arguments(parser: argparse.ArgumentParser, default_socket: str) -> None:
    parser.add_argument(
        "--socket",
        default=os.environ.get("SLIRPNET_CONTROL", default_socket),
        help=f"the server's --control socket (default $SLIRPNET_CONTROL or {default_socket})",
    )
    parser.add_argument("--json", action="store_true", help="print the API's JSON")
    parser.add_argument("-n", "--namespace", default="default", help="default: default")
    what = parser.add_subparsers(dest="what", metavar="WHAT", required=True)
    what.add_parser("namespaces", help="list namespaces")
    what.add_parser("vms", help="list VMs: MACs, addresses, traffic, drops")
    flows = what.add_parser("flows", help="list flows with state and counters")
    flows.add_argument("--vm", help="only this VM's (its id, from `vms`)")
    what.add_parser("leases", help="list DHCP leases")
    what.add_parser("dns", help="show DNS upstreams and local records")
    record = what.add_parser("record", help="add or remove a local DNS record")
    record_ops = record.add_subparsers(dest="op", metavar="OP", required=True)
    add = record_ops.add_parser("add", help="NAME IPV4")
    add.add_argument("name")
    add.add_argument("address")
    remove = record_ops.add_parser("rm", help="NAME")
    remove.add_argument("name")
    what.add_parser("forwards", help="list port forwards")
    forward = what.add_parser("forward", help="add or remove a port forward")
    forward_ops = forward.add_subparsers(dest="op", metavar="OP", required=True)
    forward_ops.add_parser("add", help="SPEC, e.g. tcp::2222-:22").add_argument("spec")
    forward_ops.add_parser("rm", help="SPEC").add_argument("spec")
    pcap = what.add_parser("pcap", help="start or stop capturing a VM's frames")
    pcap_ops = pcap.add_subparsers(dest="op", metavar="OP", required=True)
    start = pcap_ops.add_parser("start", help="VM [PATH]")
    start.add_argument("vm")
    start.add_argument("path", nargs="?", help="default: the server's --pcap directory")
    stop = pcap_ops.add_parser("stop", help="VM")
    stop.add_argument("vm")


def run(args: argparse.Namespace) -> int:
    """Carry out ``slirpnet ctl``; 0 on success, 1 when the server refused, 2 unreachable."""
    ns = "/namespaces/" + quote(args.namespace, safe="")
    calls: dict[str, tuple[str, str, object]] = {
        "namespaces": ("GET", "/namespaces", None),
        "vms": ("GET", ns + "/vms", None),
        "leases": ("GET", ns + "/leases", None),
        "dns": ("GET", ns + "/dns", None),
        "forwards": ("GET", ns + "/forwards", None),
    }
    if args.what in calls:
        method, path, body = calls[args.what]
    elif args.what == "flows":
        method, body = "GET", None
        path = ns + (f"/vms/{quote(args.vm, safe='')}/flows" if args.vm else "/flows")
    elif args.what == "forward":
        if args.op == "add":
            method, path, body = "POST", ns + "/forwards", {"spec": args.spec}
        else:
            method, path, body = "DELETE", f"{ns}/forwards/{quote(args.spec, safe='')}", None
    elif args.what == "record":
        path = f"{ns}/dns/records/{quote(args.name, safe='')}"
        method, body = ("PUT", {"address": args.address}) if args.op == "add" else ("DELETE", None)
    else:  # pcap
        path = f"{ns}/vms/{quote(args.vm, safe='')}/pcap"
        if args.op == "start":
            method, body = "PUT", ({"path": args.path} if args.path else {})
        else:
            method, body = "DELETE", None
    try:
        answer = request(args.socket, method, path, body)
    except ControlError as error:
        print(f"slirpnet ctl: {error}", file=sys.stderr)
        return 2 if error.status == 0 else 1
    print(json.dumps(answer, indent=1) if args.json else render(answer))
    return 0


def render(answer: Any) -> str:
    """A table for a list of objects, ``key: value`` lines for one object."""
    if isinstance(answer, list):
        if not answer:
            return "(none)"
        columns = list(dict.fromkeys(key for row in answer for key in row))
        return table(columns, [[_cell(row.get(key)) for key in columns] for row in answer])
    if isinstance(answer, dict):
        width = max((len(key) for key in answer), default=0)
        return "\n".join(f"{key:<{width}}  {_cell(value)}" for key, value in answer.items())
    return str(answer)


def table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "-"
    return str(value)
