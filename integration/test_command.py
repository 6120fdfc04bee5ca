"""The installed ``slirpnet`` command and ``python -m slirpnet``, run as a user would."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from integration.readme import toml_example
from slirpnet import __version__, native


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def console_script() -> str:
    path = shutil.which("slirpnet")
    if path is None:
        pytest.skip("the slirpnet console script is not installed (run under tox or pip install)")
    return path


def test_version_from_console_script() -> None:
    result = run(console_script(), "--version")
    assert result.returncode == 0
    # The version, then what runs: CI's integration run has the native build.
    assert result.stdout.strip() == f"slirpnet {__version__} ({native.describe()})"
    assert result.stdout.split("(")[1].startswith("native:"), result.stdout


def test_help_from_module() -> None:
    result = run(sys.executable, "-m", "slirpnet", "--help")
    assert result.returncode == 0
    assert "usage: slirpnet" in result.stdout


def test_bad_flag_is_a_one_line_error_and_exit_2() -> None:
    result = run(sys.executable, "-m", "slirpnet", "--no-such-flag")
    assert result.returncode == 2
    assert "--no-such-flag" in result.stderr.strip().splitlines()[-1]


def one_line_error(*argv: str, cwd: Path | None = None) -> str:
    """Run ``slirpnet ARGV``, which must fail with one line on stderr and exit 2."""
    result = subprocess.run(
        [sys.executable, "-m", "slirpnet", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )
    assert (result.returncode, result.stdout) == (2, ""), result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@contextmanager
def live_unix_socket(path: Path) -> Iterator[None]:
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(str(path))
        live.listen()
        yield


def test_every_mistake_is_one_line(tmp_path: Path) -> None:
    upstream = ("--dns-upstream", "127.0.0.1:9")
    assert one_line_error("serve", "--static-leases", "x") == (
        "slirpnet: error: unrecognized arguments: --static-leases x (did you mean --static-lease?)"
    )
    config = tmp_path / "slirpnet.toml"
    config.write_text("static-leases = ['52:54:00:00:0a:01=10.0.2.21']\n")
    assert one_line_error("serve", "--config", str(config)) == (
        "slirpnet: error: static-leases: unknown key (did you mean static-lease?)"
    )
    config.write_text("[namespace.a]\nlisten = 'unix:/x'\n[namespace.b]\nlisten = 'unix:/x'\n")
    assert one_line_error("serve", "--config", str(config)) == (
        "slirpnet: error: listen: unix:/x is used by namespace a already"
    )
    assert one_line_error("serve", "--metrics", "9464") == (
        "slirpnet: error: metrics: '9464' is not HOST:PORT, like 127.0.0.1:9464"
    )
    (tmp_path / "file").write_text("")
    assert one_line_error("serve", "--pcap", str(tmp_path / "file")) == (
        f"slirpnet: error: pcap: '{tmp_path / 'file'}' is not a directory"
    )
    # Found while binding, after the log has begun: still the one line.
    held = tmp_path / "held.sock"
    with live_unix_socket(held):
        assert one_line_error("serve", "--listen", f"unix:{held}", *upstream) == (
            f"slirpnet: error: listen: {held} is in use by a running server"
        )
        assert one_line_error(
            "serve", "--listen", f"unix:{tmp_path / 'vm.sock'}", "--control", f"unix:{held}"
        ) == (f"slirpnet: error: control: {held} is in use by a running server")
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        line = one_line_error("serve", "--listen", f"tcp:127.0.0.1:{port}", *upstream)
        assert line.startswith(f"slirpnet: error: listen: tcp:127.0.0.1:{port}: "), line
    line = one_line_error("serve", "--listen", f"unix:{tmp_path / 'file' / 'vm.sock'}")
    assert line.startswith("slirpnet: error: listen: "), line
    # ctl: a mistake of its own, and no server to talk to.
    assert one_line_error("ctl", "vms", "--jsn").startswith(
        "slirpnet: error: unrecognized arguments: --jsn (did you mean --json?)"
    )
    assert one_line_error("ctl", "vms", cwd=tmp_path).startswith(
        f"slirpnet ctl: no server's control socket at {tmp_path}/slirpnet-control.sock: "
        "start one with `slirpnet serve`"
    )


def test_the_readmes_toml_example_runs_as_written(tmp_path: Path) -> None:
    """In a private /run (and network, for its 127.0.0.1:7001), where /run/slirpnet is not."""
    if os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("nsenter")):
        pytest.skip("a private /run takes root, unshare and nsenter (util-linux)")
    config = tmp_path / "slirpnet.toml"
    config.write_text(toml_example())
    shell = 'mount -t tmpfs tmpfs /run && ip link set lo up && exec "$@"'
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    server = subprocess.Popen(
        [
            *("unshare", "--mount", "--net", "sh", "-c", shell, "sh"),
            *(sys.executable, "-m", "slirpnet", "serve", "--config", str(config)),
        ],
        cwd=tmp_path,  # its control socket, outside the private /run, where ctl looks
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        printed = [server.stdout.readline() for _ in range(3)]
        assert [line.split(":")[0] for line in printed] == ["web", "lab", "lab"], (
            printed,
            server.stderr.read() if server.poll() is not None and server.stderr else "",
        )
        inside = ["nsenter", "--target", str(server.pid), "--mount", "--net"]
        made = subprocess.run(
            [*inside, "stat", "-c", "%a %F", "/run/slirpnet", "/run/slirpnet/web.sock"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert made.stdout.splitlines() == ["700 directory", "600 socket"]
        shown = subprocess.run(
            [sys.executable, "-m", "slirpnet", "ctl", "namespaces"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        assert [line.split()[0] for line in shown.stdout.splitlines()[1:]] == ["web", "lab"]
    finally:
        server.terminate()
        _, errors = server.communicate(timeout=30)
    assert server.returncode == 0, errors


def test_a_second_server_serves_without_the_default_control_socket(tmp_path: Path) -> None:
    """The default place is the first server's; the second says so and serves its VMs."""
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}  # both in cwd
    servers = []
    try:
        for name in ("first", "second"):
            server = subprocess.Popen(
                [sys.executable, "-m", "slirpnet", "serve", "--listen", f"unix:{name}.sock"],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            servers.append(server)
            assert server.stdout is not None
            assert server.stdout.readline().startswith("default: qemu-system-x86_64 ... ")
        shown = subprocess.run(
            [sys.executable, "-m", "slirpnet", "ctl", "namespaces", "--json"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        assert '"name": "default"' in shown.stdout
    finally:
        for server in servers:
            server.terminate()
    first, second = (server.communicate(timeout=30)[1] for server in servers)
    control = tmp_path / "slirpnet-control.sock"
    assert f"control API on unix:{control}" in first
    assert f"no control API: control: {control} is in use by a running server" in second
    assert [server.returncode for server in servers] == [0, 0]
    assert not control.exists()  # removed by the first, whose it was
