"""Prometheus metrics (``--metrics HOST:PORT``), read from the live objects at scrape time.

A custom collector rather than counters bumped on the data path: the core
already counts everything per VM, so a scrape sums those counts and the data
path pays nothing.  Counters stay monotonic when VMs leave because each segment
keeps the totals of its departed VMs (``Segment.totals``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from slirpnet.control.http import HttpError, Request, Response
from slirpnet.control.views import flow_view, flows

if TYPE_CHECKING:
    from slirpnet.shell.runtime import NamespaceRuntime

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class SlirpnetCollector(Collector):
    def __init__(self, runtimes: Mapping[str, NamespaceRuntime]) -> None:
        self.runtimes = runtimes

    def collect(self) -> Iterable[Metric]:
        ns = ["namespace"]
        vms = GaugeMetricFamily("slirpnet_vms", "VMs connected", labels=ns)
        flow_gauge = GaugeMetricFamily(
            "slirpnet_flows", "Open NAT flows", labels=[*ns, "protocol", "state"]
        )
        frames = CounterMetricFamily(
            "slirpnet_frames", "Ethernet frames, by direction", labels=[*ns, "direction"]
        )
        octets = CounterMetricFamily(
            "slirpnet_bytes", "Ethernet bytes, by direction", labels=[*ns, "direction"]
        )
        drops = CounterMetricFamily(
            "slirpnet_drops", "Frames not used, by reason", labels=[*ns, "reason"]
        )
        leases = GaugeMetricFamily("slirpnet_dhcp_leases", "DHCP leases", labels=[*ns, "state"])
        queries = CounterMetricFamily("slirpnet_dns_queries", "DNS queries from VMs", labels=ns)
        upstream_failures = CounterMetricFamily(
            "slirpnet_dns_upstream_failures",
            "DNS queries an upstream resolver did not answer",
            labels=ns,
        )
        retransmits = CounterMetricFamily(
            "slirpnet_tcp_retransmits", "TCP segments sent to VMs again", labels=ns
        )
        events = CounterMetricFamily(
            "slirpnet_events", "Other things counted, by name", labels=[*ns, "event"]
        )
        for name, runtime in self.runtimes.items():
            segment = runtime.segment
            now = trio.current_time()
            totals = segment.totals()
            vms.add_metric([name], len(segment.vms))
            states: Counter[tuple[str, str]] = Counter()
            live_retransmits = 0
            for vm in segment.vms:
                for flow in flows(vm):
                    view = flow_view(flow, now)
                    states[view["protocol"], view["state"]] += 1
                    live_retransmits += view.get("retransmits", 0)
            for (protocol, state), count in sorted(states.items()):
                flow_gauge.add_metric([name, protocol, state], count)
            frames.add_metric([name, "from_vm"], totals.frames_in)
            frames.add_metric([name, "to_vm"], totals.frames_out)
            octets.add_metric([name, "from_vm"], totals.bytes_in)
            octets.add_metric([name, "to_vm"], totals.bytes_out)
            for reason, count in sorted(totals.drops.items()):
                drops.add_metric([name, reason], count)
            bound = sum(1 for lease in segment.dhcp.leases() if lease.bound and lease.expires > now)
            leases.add_metric([name, "bound"], bound)
            leases.add_metric([name, "free"], len(segment.dhcp.leases()) - bound)
            queries.add_metric([name], totals.events["dns_query"])
            upstream_failures.add_metric([name], totals.events["dns_upstream_failed"])
            retransmits.add_metric([name], totals.events["tcp_retransmits"] + live_retransmits)
            for event, count in sorted(totals.events.items()):
                events.add_metric([name, event], count)
        yield from (vms, flow_gauge, frames, octets, drops, leases)
        yield from (queries, upstream_failures, retransmits, events)


class MetricsEndpoint:
    """``GET /metrics`` in the Prometheus text format; nothing else."""

    def __init__(self, runtimes: Mapping[str, NamespaceRuntime]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SlirpnetCollector(runtimes))

    def __call__(self, request: Request) -> Response:
        if request.path != "/metrics":
            raise HttpError(404, "metrics are at /metrics")
        if request.method != "GET":
            raise HttpError(405, "GET only")
        return Response(200, generate_latest(self.registry), CONTENT_TYPE)
