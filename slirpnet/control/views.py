"""What the control API shows: namespaces, VMs, flows, leases and DNS, as JSON-ready dicts.

Read at request time from the live objects, so the API costs the data path
nothing.  Times the core keeps are trio clock readings; they are shown as
seconds from now (``expires_in``, ``idle_for``), and wall-clock times as
ISO 8601 UTC.
"""

from __future__ import annotations

import time
from ipaddress import IPv4Address, IPv6Address
from typing import TYPE_CHECKING, Any

from slirpnet.core.flows import DnsFlow, EchoFlow, Flow, TcpFlow, TftpFlow, UdpFlow
from slirpnet.core.forwards import Forward
from slirpnet.core.guestfwd import GuestForward
from slirpnet.core.vm import Vm
from slirpnet.wire.ethernet import format_mac

FLOW_KINDS = ("tcp", "udp", "icmp", "dns", "tftp")  # Flow.kind of each flow type

if TYPE_CHECKING:
    from slirpnet.shell.port import Port
    from slirpnet.shell.runtime import NamespaceRuntime


def iso_time(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def namespace_view(runtime: NamespaceRuntime) -> dict[str, Any]:
    settings = runtime.segment.settings
    return {
        "name": runtime.name,
        "network": str(settings.network),
        "gateway": str(settings.gateway),
        "dns": str(settings.dns),
        "mtu": settings.mtu,
        "restrict": settings.restrict,
        "host_loopback": settings.host_loopback,
        "vms": len(runtime.ports),
    }


def vm_view(runtime: NamespaceRuntime, port: Port) -> dict[str, Any]:
    vm = port.vm
    stats = vm.stats
    dhcp = runtime.segment.dhcp
    leases = sorted(str(lease.address) for lease in dhcp.leases() if lease.mac in vm.macs)
    return {
        "id": vm.id,
        "name": vm.name,
        "macs": sorted(format_mac(mac) for mac in vm.macs),
        "addresses": leases,
        "connected_since": iso_time(port.connected_at),
        "frames_in": stats.frames_in,
        "bytes_in": stats.bytes_in,
        "frames_out": stats.frames_out,
        "bytes_out": stats.bytes_out,
        "drops": dict(sorted(stats.drops.items())),
        "events": dict(sorted(stats.events.items())),
        "flows": {kind: sum(flow.kind == kind for flow in flows(vm)) for kind in FLOW_KINDS},
        "tcp_connecting": len(vm.connecting),  # of the TCP flows: host connects pending
        "tcp_buffered": vm.tcp_buffers.used,  # bytes of its budget the TCP flows hold
        "pcap": str(port.pcap.path) if port.pcap is not None else None,
    }


def flows(vm: Vm) -> list[Flow]:
    return [*vm.flows.values(), *vm.dns_flows]


def endpoint(address: IPv4Address | IPv6Address, port: int) -> str:
    """``address:port``, an IPv6 address in brackets (RFC 3986 §3.2.2)."""
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


def flow_view(flow: Flow, now: float) -> dict[str, Any]:
    guest = endpoint(flow.guest.address, flow.guest.port)
    view: dict[str, Any] = {"vm": flow.vm.id, "guest": guest}
    if isinstance(flow, TcpFlow):
        counters = flow.endpoint.counters
        view |= {
            "protocol": "tcp",
            "destination": endpoint(flow.dst_address, flow.dst_port),
            "state": flow.endpoint.state.value,
            "bytes_to_host": counters.bytes_to_host,
            "bytes_to_guest": counters.bytes_to_guest,
            "retransmits": counters.retransmits,
        }
    elif isinstance(flow, UdpFlow):
        view |= {
            "protocol": "udp",
            "destination": endpoint(flow.dst_address, flow.dst_port),
            "state": "open",
            "expires_in": round(max(0.0, flow.deadline - now), 3),
        }
    elif isinstance(flow, EchoFlow):
        view |= {
            "protocol": "icmp",
            "guest": f"{flow.guest.address} id {flow.guest.port}",
            "destination": str(flow.dst_address),
            "state": "open",
            "expires_in": round(max(0.0, flow.deadline - now), 3),
        }
    elif isinstance(flow, DnsFlow):
        view |= {
            "protocol": "dns",
            "destination": endpoint(flow.host_address, flow.host_port),
            "state": f"asking upstream {flow.attempt + 1}",
        }
    elif isinstance(flow, TftpFlow):  # a read from the gateway's TFTP server: a file
        view |= {"protocol": "tftp", "destination": endpoint(flow.dst_address, flow.port)}
        view |= {"state": "reading", "host": flow.path}
        return view
    view["host"] = endpoint(flow.host_address, flow.host_port)
    if isinstance(flow, TcpFlow | UdpFlow) and flow.forward is not None:
        view["forward"] = str(flow.forward)  # inbound: "host" is the peer
    if isinstance(flow, TcpFlow) and flow.guestfwd is not None:
        view["host"] = str(flow.guestfwd.target)
        view["guestfwd"] = str(flow.guestfwd)
    return view


def leases_view(runtime: NamespaceRuntime, now: float) -> list[dict[str, Any]]:
    connected = {mac: port.vm.id for port in runtime.ports for mac in port.vm.macs}
    return [
        {
            "address": str(lease.address),
            "mac": format_mac(lease.mac),
            "hostname": lease.hostname,
            "state": "bound" if lease.bound and lease.expires > now else "free",
            "expires_in": round(max(0.0, lease.expires - now), 3),
            "vm": connected.get(lease.mac),
        }
        for lease in sorted(runtime.segment.dhcp.leases(), key=lambda lease: lease.address)
    ]


def dns_view(runtime: NamespaceRuntime) -> dict[str, Any]:
    service = runtime.segment.dns
    return {
        "address": str(runtime.segment.settings.dns),
        "upstreams": [str(upstream) for upstream in service.upstreams],
        "records": {
            name: [str(address) for address in addresses]
            for name, addresses in service.records.items()
        },
    }


def guestfwd_view(forward: GuestForward) -> dict[str, Any]:
    return {
        "spec": str(forward),
        "guest": f"{forward.address}:{forward.port}",
        "target": str(forward.target),
    }


def forward_view(forward: Forward) -> dict[str, Any]:
    return {
        "spec": str(forward),
        "protocol": forward.protocol,
        "host": f"{forward.host_address}:{forward.host_port}",
        "guest": f"{forward.guest_address or 'leased'}:{forward.guest_port}",
    }
