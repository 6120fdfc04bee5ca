"""Instructions per frame through the core, counted by callgrind: stable on a busy machine.

Run: python -m integration.bench.instructions [--frames N] [--json FILE]

Wall-clock figures (``integration.bench.core``) move with whatever else the machine
runs; instruction counts do not, so each lever of the native build can be weighed on
a shared machine.  Each scenario runs in a child process under valgrind's callgrind,
once with the installed build and once with ``SLIRPNET_PURE=1``.  The child makes
exactly the core's calls through ``itertools.starmap`` and callgrind collects only
inside starmap's step (``--toggle-collect``): building the guest's frames and ACKs is
not counted, nor are imports.  The scenarios are those of ``integration.bench.core``:
data each way at MTU 65520 and 1500, and a guest's pure ACK on an idle flow.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Callable
from itertools import starmap
from pathlib import Path

from integration.bench.core import READ_CHUNK, Lab, _fitting, _guest_acks
from slirpnet.core.flows import SendFlow
from slirpnet.core.sequence import seq_diff
from slirpnet.wire import tcp

SCENARIOS = ("g2h-65520", "h2g-65520", "g2h-1500", "h2g-1500", "ack")
COUNTED = "starmap_next"  # the C function inside which callgrind counts
BUILDS = {"native": {}, "pure": {"SLIRPNET_PURE": "1"}}


def counted(work: Callable[[], object]) -> None:
    """Call ``work`` where callgrind counts: inside starmap's step, and nowhere else."""
    deque(starmap(work, ((),)), maxlen=0)


def guest_to_host(mtu: int, frames: int) -> int:
    lab = Lab(mtu)
    endpoint = lab.flow.endpoint
    payload = os.urandom(lab.payload_size)
    done = 0
    while done < frames:
        room = seq_diff(endpoint.rcv_adv, endpoint.rcv_nxt)
        batch = [lab.frame(tcp.ACK | tcp.PSH, payload) for _ in range(_fitting(room, payload))]

        def feed(batch: list[bytes] = batch) -> None:
            for frame in batch:
                lab.receive(frame)
            lab.segment.send_delayed_acks(lab.now)
            actions = lab.segment.take_actions()
            written = sum(len(a.payload) for a in actions if isinstance(a, SendFlow))
            lab.segment.flow_written(lab.flow, written, lab.now)
            lab.vm.take_frames()

        counted(feed)
        done += len(batch)
    return done


def host_to_guest(mtu: int, frames: int) -> int:
    lab = Lab(mtu)
    chunk = os.urandom(READ_CHUNK)
    done = 0
    out: list[bytes] = []
    while done < frames:

        def read() -> None:
            lab.segment.flow_received(lab.flow, chunk, lab.now)
            out[:] = lab.vm.take_frames()

        counted(read)
        done += len(out)
        acks = _guest_acks(lab, out)

        def acknowledge(acks: list[bytes] = acks) -> None:
            for ack in acks:
                lab.receive(ack)
            lab.segment.take_actions()

        counted(acknowledge)
    return done


def pure_acks(frames: int) -> int:
    lab = Lab(1500)
    ack = lab.frame(tcp.ACK)

    def acknowledge() -> None:
        for _ in range(frames):
            lab.receive(ack)

    counted(acknowledge)
    assert not lab.vm.outbox and not lab.segment.take_actions()
    return frames


def child(scenario: str, frames: int) -> int:
    """Run one scenario; returns the frames that went through."""
    if scenario == "ack":
        return pure_acks(frames)
    way, mtu = scenario.split("-")
    run = guest_to_host if way == "g2h" else host_to_guest
    return run(int(mtu), frames)


def measure(scenario: str, frames: int, env: dict[str, str], workdir: Path) -> float:
    """Instructions per frame of ``scenario`` in a child under callgrind."""
    out = workdir / f"callgrind.{scenario}"
    result = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--toggle-collect={COUNTED}",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-m",
            "integration.bench.instructions",
            "--child",
            scenario,
            "--frames",
            str(frames),
        ],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    passed = int(result.stdout.split()[-1])
    return _total(out) / passed


def _total(path: Path) -> int:
    for line in path.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise ValueError(f"no totals in {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=4000, help="frames per scenario")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="a comma-separated subset")
    parser.add_argument("--builds", default="native,pure", help="native, pure or both")
    parser.add_argument("--child", choices=SCENARIOS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(child(args.child, args.frames))
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed")
    scenarios = [name for name in args.scenarios.split(",") if name in SCENARIOS]
    builds = {name: env for name, env in BUILDS.items() if name in args.builds.split(",")}
    figures: dict[str, dict[str, float]] = {}
    print(
        f"{'scenario':<12}" + "".join(f"{name:>12}" for name in builds) + "  (instructions/frame)"
    )
    with tempfile.TemporaryDirectory(prefix="slirpnet-instructions-") as tmp:
        for scenario in scenarios:
            row = {
                name: measure(scenario, args.frames, env, Path(tmp)) for name, env in builds.items()
            }
            figures[scenario] = row
            ratio = f"{row['pure'] / row['native']:>11.2f}x" if len(row) == 2 else ""
            print(f"{scenario:<12}" + "".join(f"{v:>12,.0f}" for v in row.values()) + ratio)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
