"""Goodput on the lossy link: slirpnet against libslirp behind the same relay, in one run.

The guest is the Linux TCP stack in a namespace (integration/linux); the link drops 2%,
reorders 5% and duplicates 1% of frames each way from the same seed for every backend.
Each backend downloads and then uploads ``--size`` MB (one connection, hash-checked)
from and to a loopback server through the gateway.  Run as root from the repository:

    python -m integration.bench.lossy_goodput [--size 10] [--seed 4] [--mtu 1500]

``--mtu`` is slirpnet's (default its own, 65520); libslirp always leases 1500.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import trio

from integration.linux import system
from integration.linux.harness import Backend, open_linux_guest
from integration.linux.relay import Faults, read_stats
from integration.linux.traffic import TransferServer, loopback_server, parallel_transfers

MB = 1 << 20
GATEWAY = "10.0.2.2"


async def goodput(
    backend: Backend, workdir: Path, faults: Faults, size: int, mtu: int | None
) -> tuple[float, float, int]:
    """Download and upload MB/s, each alone, and the MTU the guest was leased."""
    slirpnet_args = ["--mtu", str(mtu)] if mtu is not None and backend == "slirpnet" else []
    async with open_linux_guest(workdir, backend, faults, slirpnet_args=slirpnet_args) as guest:
        server = TransferServer()
        async with loopback_server(server.handle) as port:
            rates = []
            for seed, down, up in ((1000, size, 0), (2000, 0, size)):
                transfers = await parallel_transfers(
                    lambda: guest.connect(GATEWAY, port), server, 1, down, up, seed
                )
                if transfers.problems():
                    raise AssertionError(f"{backend}: {transfers.problems()}")
                rates.append(max(transfers.goodput()) / MB)
        await trio.sleep(0.3)
        counters = read_stats(guest.relay_stats)
        print(f"  {backend}: relay {counters}")
        return rates[0], rates[1], guest.mtu


async def main(size: int, seed: int, mtu: int | None) -> None:
    faults = Faults(loss=0.02, duplicate=0.01, reorder=0.05, seed=seed)
    print(f"lossy link {faults}, {size} MB down then {size} MB up, one connection each")
    results = {}
    with tempfile.TemporaryDirectory(prefix="slirpnet-bench-") as tmp:
        for backend in ("libslirp", "slirpnet"):
            results[backend] = await goodput(backend, Path(tmp) / backend, faults, size * MB, mtu)
    for backend, (down, up, leased) in results.items():
        print(f"{backend:9} MTU {leased:5}: download {down:8.2f} MB/s, upload {up:8.2f} MB/s")
    slow, fast = results["libslirp"], results["slirpnet"]
    print(
        f"slirpnet / libslirp: download x{fast[0] / slow[0]:.1f}, upload x{fast[1] / slow[1]:.1f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10, help="MB each way (default 10)")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--mtu", type=int, help="slirpnet's MTU (default: its own, 65520)")
    args = parser.parse_args()
    reason = system.missing()
    if reason:
        raise SystemExit(f"cannot run: {reason}")
    trio.run(main, args.size, args.seed, args.mtu)
