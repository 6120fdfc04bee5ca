"""docker/: what can be checked without a Docker engine (this machine has only the client).

The compose file parses and wires the two services to one socket volume; the
commands it gives are run here for real, outside containers, with the volume's
path moved to a temporary directory: slirpnet's as a slirpnet invocation, the
VM's through the same guest harness the image is built with.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from integration.guest.skip import image_or_skip
from slirpnet.cli import build_parser, config_from_args

DOCKER = Path(__file__).resolve().parent.parent / "docker"
VOLUME = "/run/slirpnet"


def compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def instructions(dockerfile: str) -> dict[str, list[str]]:
    """The Dockerfile's instructions by keyword, continuation lines joined."""
    found: dict[str, list[str]] = {}
    text = (DOCKER / dockerfile).read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.setdefault(keyword, []).append(rest.strip())
    return found


def test_the_services_share_the_socket_volume() -> None:
    services = compose()["services"]
    assert set(services) == {"slirpnet", "vm"}
    for service in services.values():
        assert service["volumes"] == [f"sockets:{VOLUME}"]
    assert services["vm"]["depends_on"] == {"slirpnet": {"condition": "service_healthy"}}
    assert services["slirpnet"]["build"]["dockerfile"] == "docker/Dockerfile"
    assert services["vm"]["build"]["dockerfile"] == "docker/Dockerfile.vm"


def test_the_images_run_the_commands_tested_here() -> None:
    server = instructions("Dockerfile")
    assert json.loads(server["ENTRYPOINT"][0]) == ["slirpnet"]
    vm = instructions("Dockerfile.vm")
    assert json.loads(vm["ENTRYPOINT"][0]) == ["python3", "-m", "integration.guest", "run"]
    # The image builds its guest with the integration tests' own builder.
    assert "python3 -m integration.guest build" in " ".join(vm["RUN"])
    default_netdev = json.loads(vm["CMD"][0])[0]
    assert default_netdev == compose()["services"]["vm"]["command"][0]


def test_the_slirpnet_command_is_a_valid_invocation() -> None:
    command = compose()["services"]["slirpnet"]["command"]
    config = config_from_args(build_parser().parse_args(command))
    (namespace,) = config.namespaces
    assert [str(a) for a in namespace.listen] == [f"unix:{VOLUME}/vm.sock"]
    assert config.control is not None and config.control.path == f"{VOLUME}/control.sock"
    netdev = compose()["services"]["vm"]["command"][0]
    assert f"addr.path={VOLUME}/vm.sock" in netdev.split(",")


def test_the_compose_services_work_together(tmp_path: Path) -> None:
    image_or_skip()
    services = compose()["services"]

    def here(argument: str) -> str:
        return argument.replace(VOLUME, str(tmp_path))

    # The container would ask its own resolv.conf's servers; here nothing may leave loopback.
    no_upstream = ["--dns-upstream", "127.0.0.1:9"]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "slirpnet",
            *map(here, services["slirpnet"]["command"]),
            *no_upstream,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        check = services["slirpnet"]["healthcheck"]["test"]
        assert check[:2] == ["CMD", "slirpnet"]
        health = [sys.executable, "-m", "slirpnet", *map(here, check[2:])]
        deadline = time.monotonic() + 30
        while subprocess.run(health, capture_output=True, check=False).returncode != 0:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            assert time.monotonic() < deadline, "slirpnet never became healthy"
            time.sleep(0.2)
        vm = subprocess.run(
            [
                sys.executable,
                "-m",
                "integration.guest",
                "run",
                *map(here, services["vm"]["command"]),
            ],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
            cwd=Path(__file__).resolve().parent.parent,
            env={**os.environ},
        )
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert vm.returncode == 0, vm.stdout[-3000:]
    assert "\nVM-OK\n" in vm.stdout.replace("\r", "")


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.vm"])
def test_the_images_run_as_the_socket_owner(dockerfile: str) -> None:
    # Unix sockets are owner-only: both containers must be the same uid.
    assert instructions(dockerfile)["USER"] == ["1000"]
