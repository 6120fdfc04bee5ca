"""The benchmarks in their quick modes: they run, they report, the transfers were sound.

No figure is judged here (a shared machine makes timings noise); only that every
figure was produced, the MTUs were what each backend gives, and the hash-checked
transfers and the idle flows came through.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from integration.conftest import skip_unless_linux_guest
from integration.linux.harness import REPO


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
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(output.read_text())

    assert report["transfers"] == {"slirpnet": [], "slirpnet-1500": [], "libslirp": []}
    assert report["setups"]["slirpnet"]["mtu"] == 65520
    assert report["setups"]["slirpnet-1500"]["mtu"] == 1500
    for key, figure in report["figures"].items():
        assert figure["slirpnet"]["median"] is not None, key
        if key != "heap_per_flow":  # slirpnet's alone
            assert figure["libslirp"]["median"] is not None, key
    flows = report["options"]["flows"]
    for setup in ("slirpnet", "libslirp", "slirpnet-traced"):
        assert report["flows"][setup]["alive"] == flows
    assert "iperf3 guest→host" in result.stdout


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
