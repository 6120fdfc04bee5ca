"""slirpnet against libslirp, side by side: throughput, streams, requests, idle flows, CPU.

Run as root from the repository (it needs namespaces, taps, QEMU and iperf3):

    python -m integration.bench.compare [--quick] [--json FILE] [--check] [--setups A,B,...]

Each setup serves the real Linux TCP stack in a namespace (integration/linux):

- ``slirpnet``: its own MTU (65520, offered by DHCP and applied by the guest);
- ``slirpnet-1500``: the server run with ``--mtu 1500``;
- ``slirpnet-guest1500``: the server at its own MTU, but the guest keeps 1500 as real
  guests do (systemd-networkd's UseMTU=no, Windows, iPXE): the lease says 65520;
- ``slirpnet-stream-1500``: ``slirpnet-1500`` with QEMU's side ``-netdev stream``, as a
  VM's NIC is usually wired (README's quick start), not ``-netdev dgram``, whose socket
  queues ten datagrams (net.unix.max_dgram_qlen) and QEMU reads one a poll;
- ``slirpnet-pure``, ``slirpnet-pure-1500``: the first two with ``SLIRPNET_PURE=1``, the
  pure-Python reference of a native build, in a column of their own ("pure");
- ``libslirp``: QEMU's ``-netdev user`` (MTU 1500), the reference of every speed-up;
- ``slirpnet-ipv6``, ``libslirp-ipv6``: the first and the last with IPv6 on, the guest's
  address from SLAAC, iperf3 and the hash-checked transfer to the host's ::1 through
  fec0::2 (the rows "over IPv6"; libslirp, too, maps its gateway fec0::2 to ::1).

Every measurement runs the setups in turn, round after round, the order reversed every
other round, so that the machine's other work falls on all of them alike; the table
compares medians.  ``--setups`` picks some (default: all).  ``--check`` exits 1 when a
target is missed or a transfer came through damaged.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio

from integration.bench.figures import LIBSLIRP, NATIVE, PURE, Figure, table
from integration.bench.flows import HeldFlows, hold_flows
from integration.bench.iperf import guest_mtu, iperf_server, run_iperf
from integration.bench.procstat import native_code, raise_file_limit
from integration.bench.requests import answer_once, connection_rate, echo_server, round_trip
from integration.linux import system
from integration.linux.harness import REPO, Backend, LinuxGuest, open_linux_guest
from integration.linux.traffic import TransferServer, loopback_server, parallel_transfers
from slirpnet import heapreport

MB = 1 << 20
GB = 1e9
GATEWAY = "10.0.2.2"
GATEWAY6 = "fec0::2"
PARTS = ("iperf", "streams", "requests", "flows")
PURE_VARIABLE = "SLIRPNET_PURE"  # slirpnet/pure.py's: the pure-Python code of a native build
# The MTU rows a setup's iperf3 figures go to: its own MTU, the server's --mtu 1500, and
# the guest keeping 1500 on a server at its own MTU.
# "_v6": its own MTU over IPv6.
ROWS = {
    "": "",
    "_1500": " MTU 1500",
    "_g1500": ", guest keeps 1500",
    "_s1500": " MTU 1500, -netdev stream",
    "_v6": " over IPv6",
}
# The table's order: throughput, requests, flows, then costs.
ORDER = (
    *("g2h", "h2g", "g2h_1500", "h2g_1500", "g2h_g1500", "h2g_g1500"),
    *("g2h_s1500", "h2g_s1500", "g2h_v6", "h2g_v6"),
    *("g2h_p4", "h2g_p4"),
    *("connect_rate", "rtt_median", "rtt_p99", "flows_alive", "heap_per_flow", "rss_per_flow"),
    *("cpu_g2h", "cpu_g2h_total", "cpu_h2g", "cpu_h2g_total"),
    *("cpu_g2h_1500", "cpu_h2g_1500", "cpu_g2h_g1500", "cpu_h2g_g1500"),
    *("cpu_g2h_s1500", "cpu_h2g_s1500"),
    *("cpu_g2h_v6", "cpu_h2g_v6"),
)


@dataclass(frozen=True)
class Spec:
    """A setup: how its backend and guest are started, and where its figures go."""

    name: str
    backend: Backend
    column: str  # in the table: NATIVE, PURE or LIBSLIRP
    rows: tuple[str, ...]  # of ROWS
    interface_mtu: int  # the guest's interface must have it...
    lease_mtu: int | None  # ...and the lease offer this (None: not checked)
    args: tuple[str, ...] = ()  # slirpnet's
    apply_mtu: bool = True  # does the guest take the lease's MTU
    ipv6: bool = False  # SLAAC in the guest, and its traffic to fec0::2 (the host's ::1)
    stream: bool = False  # QEMU's side -netdev stream, not dgram

    @property
    def gateway(self) -> str:
        return GATEWAY6 if self.ipv6 else GATEWAY

    @property
    def env(self) -> dict[str, str]:
        """slirpnet's environment: pure or native whatever the caller's environment says."""
        return {PURE_VARIABLE: "1" if self.column == PURE else "0"}


SPECS = (
    Spec("slirpnet", "slirpnet", NATIVE, ("",), 65520, 65520),
    Spec("slirpnet-1500", "slirpnet", NATIVE, ("_1500",), 1500, 1500, ("--mtu", "1500")),
    Spec("slirpnet-guest1500", "slirpnet", NATIVE, ("_g1500",), 1500, 65520, apply_mtu=False),
    Spec(
        "slirpnet-stream-1500",
        "slirpnet",
        NATIVE,
        ("_s1500",),
        1500,
        1500,
        ("--mtu", "1500"),
        stream=True,
    ),
    Spec("slirpnet-pure", "slirpnet", PURE, ("",), 65520, 65520),
    Spec("slirpnet-pure-1500", "slirpnet", PURE, ("_1500",), 1500, 1500, ("--mtu", "1500")),
    Spec("libslirp", "libslirp", LIBSLIRP, ("", "_1500", "_g1500", "_s1500"), 1500, None),
    Spec("slirpnet-ipv6", "slirpnet", NATIVE, ("_v6",), 65520, 65520, ipv6=True),
    Spec("libslirp-ipv6", "libslirp", LIBSLIRP, ("_v6",), 1500, None, ipv6=True),
)
SETUPS = tuple(spec.name for spec in SPECS)


@dataclass(frozen=True)
class Options:
    seconds: float = 5.0  # per iperf3 run
    rounds: int = 3
    flows: int = 10_000
    idle: float = 5.0  # how long the flows are held before they are checked
    connect_seconds: float = 3.0
    round_trips: int = 2000
    transfer_mb: int = 16
    parts: tuple[str, ...] = PARTS
    setups: tuple[str, ...] = SETUPS


QUICK = Options(
    seconds=1.0, rounds=1, flows=200, idle=1.0, connect_seconds=1.0, round_trips=200, transfer_mb=2
)


class SetupError(RuntimeError):
    """A setup is not what it claims to be (its MTUs, or its code); no figure of it is true."""


@dataclass
class Setup:
    spec: Spec
    guest: LinuxGuest
    mtu: int = 0  # of the guest's interface
    frame_bytes: dict[str, float] = field(default_factory=dict)  # mean data frame, by direction
    native: list[str] = field(default_factory=list)  # slirpnet's compiled code it has loaded

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def column(self) -> str:
        return self.spec.column

    @property
    def backend_pid(self) -> int:
        """The process that does the backend's work: slirpnet's, or QEMU's for libslirp."""
        return self.guest.pids["slirpnet" if self.spec.backend == "slirpnet" else "qemu"]

    @property
    def own_mtu(self) -> bool:
        """Measured at the backend's own MTU: the setups of requests and streams."""
        return "" in self.spec.rows

    def check_mtu(self) -> None:
        spec, lease = self.spec, self.guest.lease.get("mtu")
        if self.mtu != spec.interface_mtu or (
            spec.lease_mtu is not None and lease != str(spec.lease_mtu)
        ):
            raise SetupError(
                f"{self.name}: the guest's interface has MTU {self.mtu} and the lease offers "
                f"{lease or 'none'}; expected {spec.interface_mtu} and {spec.lease_mtu}"
            )
        slaac = self.guest.slaac
        if spec.ipv6 and (slaac is None or slaac.mtu != spec.interface_mtu):
            raise SetupError(
                f"{self.name}: the guest's IPv6 MTU is {slaac and slaac.mtu}; "
                f"expected {spec.interface_mtu}"
            )

    def check_code(self) -> None:
        """Note the compiled code slirpnet runs; a pure setup must run none."""
        if self.spec.backend != "slirpnet":
            return
        self.native = native_code(self.backend_pid, REPO / "slirpnet")  # what the harness runs
        if self.column == PURE and self.native:
            raise SetupError(
                f"{self.name}: {PURE_VARIABLE}=1, yet slirpnet runs {', '.join(self.native)}"
            )


@dataclass
class Results:
    setups: list[Setup] = field(default_factory=list)
    figures: dict[str, Figure] = field(default_factory=dict)
    transfers: dict[str, list[str]] = field(default_factory=dict)  # problems, by setup
    flows: dict[str, HeldFlows] = field(default_factory=dict)

    def figure(self, key: str, label: str, unit: str, higher_is_better: bool = True) -> Figure:
        if key not in self.figures:
            self.figures[key] = Figure(key, label, unit, higher_is_better)
        return self.figures[key]


def alternate(setups: list[Setup], rounds: int) -> Iterator[Setup]:
    """Each setup once per round; every other round in reverse order."""
    for number in range(rounds):
        yield from (setups if number % 2 == 0 else reversed(setups))


async def check_transfers(setups: list[Setup], size: int, results: Results) -> None:
    """One hash-checked connection per setup carrying ``size`` bytes each way at once."""
    server = TransferServer()
    async with (
        loopback_server(server.handle) as port,
        loopback_server(server.handle, host="::1") as port6,
    ):
        for number, setup in enumerate(setups):
            connect = partial(
                setup.guest.connect, setup.spec.gateway, port6 if setup.spec.ipv6 else port
            )
            with trio.fail_after(300):
                transfers = await parallel_transfers(
                    connect, server, 1, size, size, 1000 * (number + 1)
                )
            results.transfers[setup.name] = transfers.problems()


def feeds(setup: Setup, setups: list[Setup]) -> list[str]:
    """The MTU rows ``setup``'s iperf3 figures go to: libslirp's are the slirpnet rows
    some setup has (its own MTU when it runs alone)."""
    if setup.column != LIBSLIRP:
        return list(setup.spec.rows)
    wanted = {row for other in setups if other.column != LIBSLIRP for row in other.spec.rows}
    return [row for row in setup.spec.rows if row in (wanted or {setup.spec.rows[0]})]


async def measure_iperf(
    setups: list[Setup], ports: Mapping[bool, int], options: Options, results: Results
) -> None:
    """One stream each way, with CPU per GB and the frames' real size; ``ports`` are the
    iperf3 servers' on 127.0.0.1 and on ::1, by ``Spec.ipv6``."""
    for reverse in (False, True):
        way = "host→guest" if reverse else "guest→host"
        key = "h2g" if reverse else "g2h"
        for setup in alternate(setups, options.rounds):
            run = await run_iperf(
                setup.guest,
                ports[setup.spec.ipv6],
                setup.guest.pids,
                reverse=reverse,
                seconds=options.seconds,
                gateway=setup.spec.gateway,
            )
            setup.frame_bytes[key] = run.frame_bytes
            gigabytes = run.received / GB
            own = run.cpu["slirpnet" if setup.spec.backend == "slirpnet" else "qemu"]
            for row in feeds(setup, setups):
                results.figure(f"{key}{row}", f"iperf3 {way}{ROWS[row]}", "Gbit/s").add(
                    setup.column, run.bits_per_second / 1e9
                )
                results.figure(f"cpu_{key}{row}", f"CPU {way}{ROWS[row]}", "s/GB", False).add(
                    setup.column, own / gigabytes
                )
                if row == "":
                    results.figure(
                        f"cpu_{key}_total", f"CPU {way}, backend + QEMU", "s/GB", False
                    ).add(setup.column, sum(run.cpu.values()) / gigabytes)


async def measure_streams(
    setups: list[Setup], port: int, options: Options, results: Results
) -> None:
    """Four streams at once each way."""
    for reverse in (False, True):
        way = "host→guest" if reverse else "guest→host"
        key = "h2g" if reverse else "g2h"
        for setup in alternate(setups, options.rounds):
            run = await run_iperf(
                setup.guest, port, {}, reverse=reverse, streams=4, seconds=options.seconds
            )
            results.figure(f"{key}_p4", f"iperf3 {way}, 4 streams", "Gbit/s").add(
                setup.column, run.bits_per_second / 1e9
            )


async def measure_requests(setups: list[Setup], options: Options, results: Results) -> None:
    async with echo_server() as port, echo_server(answer_once) as answer_port:
        for setup in alternate(setups, options.rounds):
            rate = await connection_rate(setup.guest, answer_port, options.connect_seconds)
            results.figure("connect_rate", "connect, request, close", "per s").add(
                setup.column, rate["per_second"]
            )
            trips = await round_trip(setup.guest, port, options.round_trips)
            results.figure("rtt_median", "request/response, median", "µs", False).add(
                setup.column, trips["median_us"]
            )
            results.figure("rtt_p99", "request/response, 99th percentile", "µs", False).add(
                setup.column, trips["p99_us"]
            )


async def measure_flows(
    setups: list[Setup], traced: Setup | None, heap_file: Path, options: Options, results: Results
) -> None:
    """Idle flows in one VM: RSS on untraced backends, the Python heap on a traced slirpnet."""
    for setup in setups:
        held = await hold_flows(setup.guest, setup.backend_pid, options.flows, options.idle)
        results.flows[setup.name] = held
        results.figure("flows_alive", f"idle flows alive of {options.flows}", "flows").add(
            setup.column, held.alive
        )
        results.figure("rss_per_flow", "RSS per idle flow", "KiB", False).add(
            setup.column, held.rss_per_flow / 1024
        )
    if traced is None:
        return
    held = await hold_flows(
        traced.guest, traced.backend_pid, options.flows, options.idle, heap_report=heap_file
    )
    results.flows[traced.name] = held
    assert held.heap_per_flow is not None
    results.figure("heap_per_flow", "Python heap per idle flow", "KiB", False).add(
        traced.column, held.heap_per_flow / 1024
    )


# The speed-ups over libslirp asked for (issue 12), with a stretch goal where there is one.
SPEEDUP_TARGETS: Mapping[str, tuple[float, str]] = {
    **{key: (1.5, "") for key in ("g2h", "h2g")},
    **{key: (1.0, "") for key in ("g2h_1500", "g2h_g1500", "g2h_s1500", "connect_rate")},
    **{
        key: (0.6, "stretch target: 1.0x libslirp")
        for key in ("h2g_1500", "h2g_g1500", "h2g_s1500")
    },
    "rtt_median": (0.8, ""),
}


def set_targets(results: Results, options: Options) -> None:
    """Mark each figure that has a target met or missed (speed-ups: when both ran)."""
    figures = results.figures
    for key, (least, note) in SPEEDUP_TARGETS.items():
        figure = figures.get(key)
        if figure is not None and figure.samples.get(NATIVE) and figure.samples.get(LIBSLIRP):
            figure.expect(f">= {least:.1f}x", (figure.speedup() or 0.0) >= least, note)
    for key in ("g2h", "h2g"):
        if f"{key}_p4" in figures and key in figures:
            total, single = figures[f"{key}_p4"].median(NATIVE), figures[key].median(NATIVE)
            if total is not None and single is not None:
                figures[f"{key}_p4"].expect(">= 1 stream", total >= single)
    if "flows_alive" in figures and figures["flows_alive"].samples.get(NATIVE):
        figures["flows_alive"].expect(
            f"all {options.flows}", figures["flows_alive"].median(NATIVE) == options.flows
        )
    if "heap_per_flow" in figures:
        heap = figures["heap_per_flow"].median(NATIVE)
        figures["heap_per_flow"].expect("< 16 KiB", heap is not None and heap < 16)


async def run(options: Options, workdir: Path) -> Results:
    # Each of this process, the backend and the probe holds a descriptor per flow.
    limit = raise_file_limit(options.flows + 1024)  # inherited by slirpnet, QEMU and the probe
    if limit < options.flows + 1024:
        print(f"warning: {limit} descriptors per process may be too few for the flows")
    results = Results()
    async with AsyncExitStack() as stack:

        async def start(spec: Spec, env: Mapping[str, str] | None = None) -> Setup:
            guest = await stack.enter_async_context(
                open_linux_guest(
                    workdir / spec.name,
                    spec.backend,
                    log_level="warning",
                    slirpnet_args=spec.args,
                    slirpnet_env={**spec.env, **(env or {})},
                    apply_mtu=spec.apply_mtu,
                    ipv6_enabled=spec.ipv6,
                    stream=spec.stream,
                )
            )
            setup = Setup(spec, guest, mtu=guest_mtu(guest))
            setup.check_mtu()
            return setup

        setups = results.setups = [
            await start(spec) for spec in SPECS if spec.name in options.setups
        ]
        await check_transfers(setups, options.transfer_mb * MB, results)
        for setup in setups:
            setup.check_code()  # now that the transfers have run the TCP code
        own_mtu = [setup for setup in setups if setup.own_mtu]
        port = await stack.enter_async_context(iperf_server())
        ports = {False: port}
        if any(setup.spec.ipv6 for setup in setups):
            ports[True] = await stack.enter_async_context(iperf_server("::1"))
        if "iperf" in options.parts:
            await measure_iperf(setups, ports, options, results)
        if "streams" in options.parts:
            await measure_streams(own_mtu, port, options, results)
        if "requests" in options.parts:
            await measure_requests(own_mtu, options, results)
        if "flows" in options.parts:
            # slirpnet's native build and libslirp; the heap in a traced slirpnet of its own.
            held = [setup for setup in own_mtu if setup.column != PURE]
            heap_file = workdir / "heap.json"
            traced = None
            if any(setup.column == NATIVE for setup in held):
                traced = await start(
                    Spec("slirpnet-traced", "slirpnet", NATIVE, ("",), 65520, 65520),
                    env={heapreport.ENV: str(heap_file)},
                )
            await measure_flows(held, traced, heap_file, options, results)
        set_targets(results, options)
    return results


def machine() -> dict[str, Any]:
    """What the figures came from."""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "qemu": _first_line("qemu-system-x86_64", "--version"),
        "iperf3": _first_line("iperf3", "--version"),
        "tcp_congestion_control": Path("/proc/sys/net/ipv4/tcp_congestion_control")
        .read_text()
        .strip(),
        "load_average": os.getloadavg(),
    }


def _first_line(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.split("\n")[0]


def report(results: Results, options: Options, started: str, where: dict[str, Any]) -> str:
    lines = [
        f"slirpnet vs libslirp, {started}: {where['cpu']}, {where['cores']} cores, "
        f"Linux {where['kernel']}, Python {where['python']}, {where['qemu']}",
        f"medians of {options.rounds} round(s), iperf3 runs of {options.seconds:g} s; "
        "speed-up: slirpnet's native build over libslirp (targets are speed-ups),",
        "vs pure: native over pure Python (SLIRPNET_PURE=1); above 1, the native build is ahead",
        "",
        table(sorted(results.figures.values(), key=lambda figure: ORDER.index(figure.key))),
        "",
    ]
    for setup in results.setups:
        frames = ", ".join(f"{way} {size:,.0f} B" for way, size in setup.frame_bytes.items())
        lease = setup.guest.lease.get("mtu", "none")
        if setup.guest.slaac is not None:
            lease += f", IPv6 MTU {setup.guest.slaac.mtu}"
        code = ""
        if setup.spec.backend == "slirpnet":
            code = f"; native: {', '.join(setup.native)}" if setup.native else "; pure Python"
        lines.append(
            f"{setup.name}: guest MTU {setup.mtu} (lease {lease}){code}; "
            f"mean data frame {frames or '-'}"
        )
    if any(s.column == NATIVE and not s.native for s in results.setups):
        lines.append(
            "note: a native setup of slirpnet ran no compiled code (no native build here?): "
            "its column and 'pure' ran the same code"
        )
    for name, problems in results.transfers.items():
        verdict = "; ".join(problems) if problems else "intact (SHA-256)"
        lines.append(f"{name}: {options.transfer_mb} MB each way at once, {verdict}")
    for name, held in results.flows.items():
        heap = "" if held.heap_per_flow is None else f", heap {held.heap_per_flow / 1024:.1f} KiB"
        lines.append(
            f"{name}: {held.opened}/{held.wanted} flows opened in {held.open_seconds:.1f} s "
            f"(failures {held.errors or 'none'}), {held.alive} alive after the hold; "
            f"per flow RSS {held.rss_per_flow / 1024:.1f} KiB{heap}, "
            f"{held.files_per_flow:.2f} descriptors"
        )
    lines.append(
        "CPU: the backend's process: slirpnet's, or QEMU's for libslirp (libslirp, the hub "
        "and the tap); '+ QEMU' adds slirpnet's QEMU (hub, tap, datagram socket)."
    )
    return "\n".join(lines)


def to_json(results: Results, options: Options, started: str, where: dict[str, Any]) -> Any:
    return {
        "date": started,
        "machine": where,
        "options": asdict(options),
        "setups": {
            s.name: {
                "column": s.column,
                "mtu": s.mtu,
                "lease_mtu": s.guest.lease.get("mtu"),
                "native_code": s.native,
                "frame_bytes": s.frame_bytes,
            }
            for s in results.setups
        },
        "transfers": results.transfers,
        "figures": {key: figure.to_json() for key, figure in results.figures.items()},
        "flows": {name: asdict(held) for name, held in results.flows.items()},
        "all_met": all_met(results),
    }


def all_met(results: Results) -> bool:
    return all(f.met is not False for f in results.figures.values()) and not any(
        results.transfers.values()
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast, rough run: proves the tool")
    parser.add_argument("--json", type=Path, help="write every sample and figure here")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--seconds", type=float, help="per iperf3 run (default 5)")
    parser.add_argument("--rounds", type=int, help="rounds of each measurement (default 3)")
    parser.add_argument("--flows", type=int, help="idle flows to hold (default 10000)")
    parser.add_argument("--only", help=f"a comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--setups", help=f"a comma-separated subset of {','.join(SETUPS)}")
    args = parser.parse_args()
    changes: dict[str, Any] = {
        name: getattr(args, name)
        for name in ("seconds", "rounds", "flows")
        if getattr(args, name) is not None
    }
    for option, given, choices, name in (
        ("--only", args.only, PARTS, "parts"),
        ("--setups", args.setups, SETUPS, "setups"),
    ):
        if given is not None:
            unknown = [item for item in given.split(",") if item not in choices]
            if unknown:
                print(
                    f"{option}: {unknown[0]!r} is not one of {','.join(choices)}", file=sys.stderr
                )
                return 2
            changes[name] = tuple(item for item in choices if item in given.split(","))
    reason = system.missing()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    options = QUICK if args.quick else Options()
    options = Options(**{**asdict(options), **changes})
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    where = machine()
    with tempfile.TemporaryDirectory(prefix="slirpnet-compare-") as tmp:
        results = trio.run(run, options, Path(tmp))
    where["load_average_after"] = os.getloadavg()
    print(report(results, options, started, where))
    if args.json:
        args.json.write_text(json.dumps(to_json(results, options, started, where), indent=2))
    if args.check and not all_met(results):
        print("targets missed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
