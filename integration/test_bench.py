"""The benchmarks in their quick modes: they run, they report, the transfers were sound.

No figure is judged here (a shared machine makes timings noise); only that every
figure was produced for every setup that should have it, the MTUs were what each setup
asks (the guest that keeps 1500 under a lease of 65520 too), the pure setups ran no
native code, and the hash-checked transfers and the idle flows came through.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from integration.bench.compare import ORDER, SETUPS
from integration.conftest import skip_unless_linux_guest
from integration.linux.harness import REPO

FLOW_WEIGHTS = ("rss_per_flow", "heap_per_flow")


def test_quick_comparison_reports_every_figure(tmp_path: Path) -> None:
    skip_unless_linux_guest()
    if shutil.which("iperf3") is None:
        pytest.skip("iperf3 is not installed (see integration/install-deps.sh)")
    output = tmp_path / "compare.json"
    result = subprocess.run(
        [sys.executable, "-m", "integration.bench.compare", "--quick", "--json", str(output)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    print(result.stdout)  # the table, for the log
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(output.read_text())

    assert report["transfers"] == {name: [] for name in SETUPS}
    setups = report["setups"]
    mtus = {name: (setup["mtu"], setup["lease_mtu"]) for name, setup in setups.items()}
    assert mtus == {
        "slirpnet": (65520, "65520"),
        "slirpnet-1500": (1500, "1500"),
        "slirpnet-guest1500": (1500, "65520"),  # the guest kept 1500 despite the offer
        "slirpnet-stream-1500": (1500, "1500"),
        "slirpnet-pure": (65520, "65520"),
        "slirpnet-pure-1500": (1500, "1500"),
        "libslirp": (1500, mtus["libslirp"][1]),  # whatever libslirp offers, if anything
        "slirpnet-ipv6": (65520, "65520"),  # and IPv6's from the advertisement (check_mtu)
        "libslirp-ipv6": (1500, mtus["libslirp-ipv6"][1]),
    }
    assert setups["slirpnet-pure"]["native_code"] == []
    assert setups["slirpnet-pure-1500"]["native_code"] == []
    # The guest that kept 1500 got and sent frames of 1500 (and Ethernet's 14) from a
    # server that offered 65520: slirpnet heeds the guest's MSS.
    assert max(setups["slirpnet-guest1500"]["frame_bytes"].values()) <= 1514

    figures = report["figures"]
    assert set(figures) == set(ORDER)
    for key, figure in figures.items():
        assert figure["slirpnet"]["median"] is not None, key
        if key != "heap_per_flow":  # slirpnet's alone
            assert figure["libslirp"]["median"] is not None, key
        # The pure build has every throughput, request and CPU figure but the guest's 1500,
        # the stream's and IPv6's.
        pure = not key.endswith(("_g1500", "_s1500", "_v6")) and key not in {
            "flows_alive",
            *FLOW_WEIGHTS,
        }
        assert (figure["pure"]["median"] is not None) == pure, key
    for key in ("g2h", "h2g"):
        assert figures[key]["target"] == ">= 1.5x"
        assert figures[f"{key}_1500"]["target"] == figures[f"{key}_g1500"]["target"]
        assert figures[f"{key}_1500"]["target"] == figures[f"{key}_s1500"]["target"]
    assert figures["g2h_1500"]["target"] == ">= 1.0x"
    assert figures["h2g_g1500"]["target"] == ">= 0.6x"
    assert "stretch" in figures["h2g_g1500"]["note"]
    assert figures["rtt_median"]["target"] == ">= 0.8x"
    assert figures["connect_rate"]["target"] == ">= 1.0x"
    flows = report["options"]["flows"]
    for setup in ("slirpnet", "libslirp", "slirpnet-traced"):
        assert report["flows"][setup]["alive"] == flows
    assert "iperf3 host→guest, guest keeps 1500" in result.stdout
    assert "iperf3 guest→host over IPv6" in result.stdout
    assert "iperf3 host→guest MTU 1500, -netdev stream" in result.stdout


def test_core_micro_benchmark_reports_every_scenario(tmp_path: Path) -> None:
    output = tmp_path / "core.json"
    subprocess.run(
        [sys.executable, "-m", "integration.bench.core", "--quick", "--json", str(output)],
        cwd=REPO,
        check=True,
        timeout=300,
    )
    figures = json.loads(output.read_text())
    assert len(figures) == 11  # data both ways at two MTUs, a pure ACK, three codecs at two
    assert sum("tcp_frame" in figure["scenario"] for figure in figures) == 2
    assert all(figure["frames"] > 0 and figure["per_second"] > 0 for figure in figures)
