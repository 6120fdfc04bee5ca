"""docker/: both images built and the compose files run for real, as README.md says.

With Docker where an engine runs, else with podman (integration/containers.py sets it up;
integration/install-deps.sh installs it): ``compose up --build --exit-code-from SERVICE``,
whose exit status is the test's verdict, then ``compose down -v``.  The first build takes a
few minutes (debootstrap, apt and pip in the images); later ones reuse the cached layers.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from integration.containers import (
    DOCKER_DIR,
    Engine,
    EngineUnavailableError,
    default_cache_dir,
    find_engine,
    wait_for,
)
from slirpnet.cli import build_parser, config_from_args
from slirpnet.config import load_file

REPO = DOCKER_DIR.parent
COMPOSE = DOCKER_DIR / "compose.yaml"
LAB = DOCKER_DIR / "compose.lab.yaml"
VOLUME = "/run/slirpnet"
PROJECT = "slirpnet-test"
# Building from nothing: debootstrap is done before; apt and pip in the images, a guest build.
UP_TIMEOUT = 900
SERVER_IMAGE = "localhost/slirpnet-test-server"
BUILD_STAGE = "slirpnet-test-build"


def services(path: Path) -> dict:  # type: ignore[type-arg]
    return yaml.safe_load(path.read_text())["services"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def engine() -> Engine:
    try:
        return find_engine(default_cache_dir())
    except EngineUnavailableError as why:
        pytest.skip(f"no container engine can run here: {why}")


@dataclass(frozen=True)
class Up:
    rc: int
    output: str  # every service's output, as compose interleaves it


def up(
    engine: Engine,
    files: list[Path],
    service: str,
    log: Path,
    during: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> Up:
    """``compose up --build --exit-code-from SERVICE``; `during` runs meanwhile."""
    down(engine, files)  # what a run killed half way left behind
    command, env = engine.compose(PROJECT, files, "up", "--build", "--exit-code-from", service)
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, cwd=REPO, stdout=out, stderr=out)
        try:
            if during is not None:
                during(process)
            rc = process.wait(timeout=UP_TIMEOUT)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            down(engine, files)
    return Up(rc, log.read_text(errors="replace"))


def down(engine: Engine, files: list[Path]) -> None:
    command, env = engine.compose(PROJECT, files, "down", "--volumes", "--timeout", "1")
    subprocess.run(command, env=env, cwd=REPO, capture_output=True, timeout=120, check=False)


def running(engine: Engine, process: subprocess.Popen[bytes], service: str) -> str:
    """The service's container id once it runs; fails if `up` ends first."""
    found: list[str] = []

    def started() -> bool:
        found[:] = [engine.container(PROJECT, service) or ""]
        return bool(found[0]) or process.poll() is not None

    assert wait_for(started, UP_TIMEOUT), f"{service} never started"
    assert found[0], f"compose up ended (status {process.poll()}) before {service} ran"
    return found[0]


def test_the_compose_services_are_valid_slirpnet_configs() -> None:
    command = services(COMPOSE)["slirpnet"]["command"]
    config = config_from_args(build_parser().parse_args(command))
    (namespace,) = config.namespaces
    assert [str(a) for a in namespace.listen] == [f"unix:{VOLUME}/vm.sock"]
    assert config.control is not None and config.control.path == f"{VOLUME}/control.sock"
    netdev = services(COMPOSE)["vm"]["command"][0]
    assert f"addr.path={VOLUME}/vm.sock" in netdev.split(",")
    # The lab's file, where the compose file mounts it: a namespace and a forward per VM.
    lab = load_file(DOCKER_DIR / "lab.toml")
    listeners = {ns.name: [str(a) for a in ns.listen] for ns in lab.namespaces}
    assert listeners == {name: [f"unix:{VOLUME}/{name}.sock"] for name in ("vm1", "vm2")}
    forwards = [str(f) for ns in lab.namespaces for f in ns.forwards]
    assert forwards == ["tcp:0.0.0.0:8081-:80", "tcp:0.0.0.0:8082-:80"]
    assert services(LAB)["slirpnet"]["volumes"][1] == "./lab.toml:/etc/slirpnet/lab.toml:ro"


def test_a_vm_leases_resolves_and_pings_through_compose(engine: Engine, tmp_path: Path) -> None:
    vm = services(COMPOSE)["vm"]
    # What the README promises: no /dev/kvm (TCG), no capability, no privileged mode.
    assert vm["cap_drop"] == ["ALL"] and "devices" not in vm and not vm.get("privileged")
    seen: dict[str, str] = {}

    def check_server(process: subprocess.Popen[bytes]) -> None:
        server = running(engine, process, "slirpnet")
        assert wait_for(lambda: engine.healthy(server), 60), "the healthcheck never passed"
        seen["sockets"] = engine.run(
            "exec", server, "stat", "-c", "%n %U %a", f"{VOLUME}/vm.sock", f"{VOLUME}/control.sock"
        ).stdout

    result = up(engine, [COMPOSE], "vm", tmp_path / "compose.log", check_server)

    assert result.rc == 0, result.output[-5000:]
    assert "LEASE ip=10.0.2.15 " in result.output
    assert "1 packets transmitted, 1 packets received" in result.output
    assert "VM-OK" in result.output
    assert "GUEST-DONE rc=0" in result.output
    # Owner-only sockets in the shared volume, the VM's container the same uid as slirpnet's.
    assert seen["sockets"].splitlines() == [
        f"{VOLUME}/vm.sock slirpnet 600",
        f"{VOLUME}/control.sock slirpnet 600",
    ]


def test_a_failing_vm_script_fails_compose_up(engine: Engine, tmp_path: Path) -> None:
    netdev = services(COMPOSE)["vm"]["command"][0]
    override = tmp_path / "failing.yaml"
    script = "ping -c 1 10.0.2.2 && echo SCRIPT-RAN && exit 3"
    override.write_text(
        yaml.safe_dump({"services": {"vm": {"command": [netdev, "--script", script]}}})
    )

    result = up(engine, [COMPOSE, override], "vm", tmp_path / "compose.log")

    assert "SCRIPT-RAN" in result.output, result.output[-5000:]
    assert "GUEST-DONE rc=3" in result.output
    assert result.rc == 3, result.output[-5000:]


def test_isolated_vms_serve_another_service_through_forwards(
    engine: Engine, tmp_path: Path
) -> None:
    result = up(engine, [LAB], "client", tmp_path / "compose.log")

    assert result.rc == 0, result.output[-5000:]
    # Both VMs (MACs of their own) lease 10.0.2.15: on one network the second would get
    # 10.0.2.16.  Each forward reaches its own VM's httpd from the client's container.
    for name in ("vm1", "vm2"):
        assert re.search(rf"client.*\|.*{name} 10\.0\.2\.15$", result.output, re.MULTILINE), (
            result.output[-5000:]
        )


def test_the_server_image_builds_with_a_compiler_and_runs_the_native_build(
    engine: Engine,
) -> None:
    # The build stage, where `pip install` compiles slirpnet's native modules when it can.
    dockerfile = str(DOCKER_DIR / "Dockerfile")
    built = engine.run("build", "--target", "build", "-f", dockerfile, "-t", BUILD_STAGE, str(REPO))
    assert built.returncode == 0, built.stderr[-3000:]
    headers = "import sysconfig; print(sysconfig.get_path('include'))"
    check = f'cc --version && test -f "$(python3 -c "{headers}")/Python.h" && echo HEADERS'
    probe = engine.run("run", "--rm", BUILD_STAGE, "sh", "-c", check)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.splitlines()[-1] == "HEADERS"
    # The image itself (the build stage's layers again): slirpnet names what it runs.
    built = engine.run("build", "-f", dockerfile, "-t", SERVER_IMAGE, str(REPO))
    assert built.returncode == 0, built.stderr[-3000:]
    version = engine.run("run", "--rm", SERVER_IMAGE, "--version")
    assert version.returncode == 0, version.stderr
    assert "(native: C module and " in version.stdout, version.stdout
