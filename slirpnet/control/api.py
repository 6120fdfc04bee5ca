"""The run-time control API: JSON over HTTP, served on a unix socket (``--control unix:PATH``).

Resources, all under ``/v1``::

    GET    /namespaces                            every namespace, with its VM count
    GET    /namespaces/NS                         one namespace
    GET    /namespaces/NS/vms                     its VMs: MACs, addresses, traffic, drops
    GET    /namespaces/NS/vms/ID                  one VM
    GET    /namespaces/NS/vms/ID/flows            one VM's flows, with state and counters
    GET    /namespaces/NS/flows                   every flow of the namespace
    GET    /namespaces/NS/leases                  DHCP leases
    GET    /namespaces/NS/dns                     DNS upstreams and local records
    GET    /namespaces/NS/forwards                its port forwards
    POST   /namespaces/NS/forwards                {"spec": "tcp::2222-:22"} (a range adds several)
    DELETE /namespaces/NS/forwards/SPEC
    GET    /namespaces/NS/guestfwds               its guest forwards
    POST   /namespaces/NS/guestfwds               {"spec": "tcp:10.0.2.100:4321-cmd:cat"}
    DELETE /namespaces/NS/guestfwds/[tcp]:[ADDR]:PORT
    PUT    /namespaces/NS/dns/records/NAME        {"address": "10.0.2.9"}
    DELETE /namespaces/NS/dns/records/NAME
    PUT    /namespaces/NS/vms/ID/pcap             {"path": "..."} (optional: --pcap DIR)
    DELETE /namespaces/NS/vms/ID/pcap

Errors are HTTP statuses with ``{"error": "...", "status": N}``: 404 for what
does not exist, 400 for a body that is wrong (naming the field), 405 for a
method a resource does not take, 409 for a conflict with the current state.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from attrs import evolve

from slirpnet.config import (
    ConfigError,
    check_forwards,
    parse_forward,
    parse_guestfwd,
    parse_record,
)
from slirpnet.control import views
from slirpnet.control.http import HttpError, Request, Response
from slirpnet.core import dnsrecords
from slirpnet.core.guestfwd import parse_key
from slirpnet.shell.forwards import ForwardError

if TYPE_CHECKING:
    from slirpnet.shell.port import Port
    from slirpnet.shell.runtime import NamespaceRuntime

Route = Callable[["ControlApi", Request, list[str]], Response]
_ROUTES: list[tuple[re.Pattern[str], dict[str, Route]]] = []


def _route(pattern: str, method: str) -> Callable[[Route], Route]:
    regex = re.compile("^/v1" + pattern.replace("{}", "([^/]+)") + "/?$")

    def register(handler: Route) -> Route:
        for known, methods in _ROUTES:
            if known.pattern == regex.pattern:
                methods[method] = handler
                return handler
        _ROUTES.append((regex, {method: handler}))
        return handler

    return register


class ControlApi:
    def __init__(self, runtimes: Mapping[str, NamespaceRuntime], pcap_dir: Path | None) -> None:
        self.runtimes = runtimes
        self.pcap_dir = pcap_dir

    def __call__(self, request: Request) -> Response:
        for regex, methods in _ROUTES:
            match = regex.match(request.path)
            if match is None:
                continue
            handler = methods.get(request.method)
            if handler is None:
                allowed = ", ".join(sorted(methods))
                raise HttpError(405, f"{request.method} not allowed on {request.path}: {allowed}")
            return handler(self, request, list(match.groups()))
        raise HttpError(404, f"no such resource: {request.path}")

    def runtime(self, name: str) -> NamespaceRuntime:
        runtime = self.runtimes.get(name)
        if runtime is None:
            raise HttpError(404, f"no namespace {name!r}")
        return runtime

    def port(self, runtime: NamespaceRuntime, vm_id: str) -> Port:
        for port in runtime.ports:
            if str(port.vm.id) == vm_id:
                return port
        raise HttpError(404, f"no VM {vm_id} in namespace {runtime.name!r}")


def _field(body: Any, name: str) -> Any:
    if not isinstance(body, dict):
        raise HttpError(400, "the body must be a JSON object")
    if name not in body:
        raise HttpError(400, f"{name}: missing")
    return body[name]


# -- reading -------------------------------------------------------------------------------


@_route("/namespaces", "GET")
def _namespaces(api: ControlApi, request: Request, args: list[str]) -> Response:
    return Response.json([views.namespace_view(runtime) for runtime in api.runtimes.values()])


@_route("/namespaces/{}", "GET")
def _namespace(api: ControlApi, request: Request, args: list[str]) -> Response:
    return Response.json(views.namespace_view(api.runtime(args[0])))


@_route("/namespaces/{}/vms", "GET")
def _vms(api: ControlApi, request: Request, args: list[str]) -> Response:
    runtime = api.runtime(args[0])
    return Response.json([views.vm_view(runtime, port) for port in runtime.ports])


@_route("/namespaces/{}/vms/{}", "GET")
def _vm(api: ControlApi, request: Request, args: list[str]) -> Response:
    runtime = api.runtime(args[0])
    return Response.json(views.vm_view(runtime, api.port(runtime, args[1])))


@_route("/namespaces/{}/vms/{}/flows", "GET")
def _vm_flows(api: ControlApi, request: Request, args: list[str]) -> Response:
    runtime = api.runtime(args[0])
    vm = api.port(runtime, args[1]).vm
    now = trio.current_time()
    return Response.json([views.flow_view(flow, now) for flow in views.flows(vm)])


@_route("/namespaces/{}/flows", "GET")
def _flows(api: ControlApi, request: Request, args: list[str]) -> Response:
    runtime = api.runtime(args[0])
    now = trio.current_time()
    return Response.json(
        [views.flow_view(flow, now) for port in runtime.ports for flow in views.flows(port.vm)]
    )


@_route("/namespaces/{}/leases", "GET")
def _leases(api: ControlApi, request: Request, args: list[str]) -> Response:
    return Response.json(views.leases_view(api.runtime(args[0]), trio.current_time()))


@_route("/namespaces/{}/dns", "GET")
def _dns(api: ControlApi, request: Request, args: list[str]) -> Response:
    return Response.json(views.dns_view(api.runtime(args[0])))


# -- changing ------------------------------------------------------------------------------


@_route("/namespaces/{}/dns/records/{}", "PUT")
def _put_record(api: ControlApi, request: Request, args: list[str]) -> Response:
    runtime = api.runtime(args[0])
    address = _field(request.json(), "address")
    try:
        name, parsed = parse_record(f"{args[1]}={address}", "address")
    except ConfigError as error:
        raise HttpError(400, str(error)) from None
    name = runtime.segment.dns.records.set(name, parsed)
    return Response.json({"name": name, "address": str(parsed)})


@_route("/namespaces/{}/dns/records/{}", "DELETE")
def _delete_record(api: ControlApi, request: Request, args: list[str]) -> Response:
    records = api.runtime(args[0]).segment.dns.records
    name = dnsrecords.key(args[1])
    if not records.remove(name):
        raise HttpError(404, f"no local record {name!r}")
    return Response.json({"deleted": name})


@_route("/namespaces/{}/vms/{}/pcap", "PUT")
def _start_pcap(api: ControlApi, request: Request, args: list[str]) -> Response:
    runtime = api.runtime(args[0])
    port = api.port(runtime, args[1])
    body = request.json()
    if port.pcap is not None:
        raise HttpError(409, f"VM {args[1]} is being captured to {port.pcap.path} already")
    if isinstance(body, dict) and "path" in body:
        if not isinstance(body["path"], str):
            raise HttpError(400, "path: must be a string")
        path = Path(body["path"])
    elif api.pcap_dir is not None:
        path = api.pcap_dir / f"{runtime.name}-vm{port.vm.id}.pcap"
    else:
        raise HttpError(400, "path: missing, and the server has no --pcap directory")
    try:
        port.start_capture(path)
    except OSError as error:
        raise HttpError(400, f"path: cannot write {path}: {error.strerror}") from None
    return Response.json({"vm": port.vm.id, "pcap": str(path)})


@_route("/namespaces/{}/vms/{}/pcap", "DELETE")
def _stop_pcap(api: ControlApi, request: Request, args: list[str]) -> Response:
    port = api.port(api.runtime(args[0]), args[1])
    if port.pcap is None:
        raise HttpError(404, f"VM {args[1]} is not being captured")
    path = port.pcap.path
    frames = port.pcap.frames
    port.stop_capture()
    return Response.json({"vm": port.vm.id, "pcap": str(path), "frames": frames})


@_route("/namespaces/{}/forwards", "GET")
def _forwards(api: ControlApi, request: Request, args: list[str]) -> Response:
    return Response.json([views.forward_view(f) for f in api.runtime(args[0]).forwards.active])


@_route("/namespaces/{}/forwards", "POST")
def _add_forward(api: ControlApi, request: Request, args: list[str]) -> Response:
    runtime = api.runtime(args[0])
    spec = _field(request.json(), "spec")
    if not isinstance(spec, str):
        raise HttpError(400, "spec: must be a string")
    try:
        forwards = parse_forward(spec, "spec")
        check_forwards(forwards, runtime.segment.settings, "spec")
    except ConfigError as error:
        raise HttpError(400, str(error)) from None
    added = []
    try:
        for forward in forwards:
            runtime.forwards.add(forward)
            added.append(forward)
    except ForwardError as error:
        for forward in added:  # all of a range or none of it
            runtime.forwards.remove(forward)
        raise HttpError(409, str(error)) from None
    return Response.json([views.forward_view(f) for f in added], 201)


@_route("/namespaces/{}/forwards/{}", "DELETE")
def _delete_forward(api: ControlApi, request: Request, args: list[str]) -> Response:
    runtime = api.runtime(args[0])
    try:
        forwards = parse_forward(args[1], "spec")
    except ConfigError as error:
        raise HttpError(400, str(error)) from None
    missing = [str(f) for f in forwards if f not in runtime.forwards.active]
    if missing:
        raise HttpError(404, f"no forward {', '.join(missing)}")
    for forward in forwards:
        runtime.forwards.remove(forward)
    return Response.json({"deleted": [str(f) for f in forwards]})


@_route("/namespaces/{}/guestfwds", "GET")
def _guestfwds(api: ControlApi, request: Request, args: list[str]) -> Response:
    forwards = api.runtime(args[0]).segment.guest_forwards
    return Response.json([views.guestfwd_view(forward) for forward in forwards])


@_route("/namespaces/{}/guestfwds", "POST")
def _add_guestfwd(api: ControlApi, request: Request, args: list[str]) -> Response:
    segment = api.runtime(args[0]).segment
    spec = _field(request.json(), "spec")
    if not isinstance(spec, str):
        raise HttpError(400, "spec: must be a string")
    try:
        forward = parse_guestfwd(spec, "spec")
        evolve(segment.settings, guest_forwards=(forward,))  # checks it against the network
    except ConfigError as error:
        raise HttpError(400, str(error)) from None
    except ValueError as error:
        raise HttpError(400, "spec: " + str(error).partition(": ")[2]) from None
    address = forward.within(segment.settings.network).address
    now = trio.current_time()
    for lease in segment.dhcp.leases():
        if lease.address == address and lease.bound and lease.expires > now:
            raise HttpError(409, f"spec: {address} is leased to a guest")
    try:
        added = segment.guest_forwards.add(forward)
    except KeyError as error:
        raise HttpError(409, f"spec: {error.args[0]}") from None
    return Response.json(views.guestfwd_view(added), 201)


@_route("/namespaces/{}/guestfwds/{}", "DELETE")
def _delete_guestfwd(api: ControlApi, request: Request, args: list[str]) -> Response:
    forwards = api.runtime(args[0]).segment.guest_forwards
    try:
        address, port = parse_key(args[1].partition("-")[0])  # a whole spec will do too
        removed = forwards.remove(address, port)
    except ValueError as error:
        raise HttpError(400, f"spec: {error}") from None
    except KeyError:
        raise HttpError(404, f"no guestfwd {args[1]}") from None
    return Response.json({"deleted": str(removed)})
