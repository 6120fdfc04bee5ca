"""A container engine for the compose tests: Docker where an engine runs, else podman.

Docker builds on the registry's base images, as a user's machine does.  podman, from Debian,
is set up here the way these machines need (integration/install-deps.sh installs it):

- runc, not crun: crun refuses this kernel's hybrid cgroups;
- ``default_ulimits = []``: podman's default ulimits ask for more than the host allows;
- netavark with aardvark-dns, so that compose services find each other by name;
- storage, networks and state of the tests' own under the cache directory, apart from any
  other podman use on the machine;
- the base images debootstrapped from the host's Debian mirror (no registry is reachable)
  and tagged, in that storage only, with the names the Dockerfiles start ``FROM``.

podman runs healthchecks from systemd timers, and podman-compose waits for
``condition: service_healthy`` only from podman 4.6 (Debian bookworm has 4.3): `healthy`
runs a container's healthcheck by hand instead.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

DOCKER_DIR = Path(__file__).resolve().parent.parent / "docker"
# The FROM names of docker/Dockerfile and docker/Dockerfile.vm (their ARG defaults).
BASE_NAMES = (
    "docker.io/library/python:3.11-slim-bookworm",
    "docker.io/library/debian:bookworm-slim",
)
SUITE = "bookworm"
# What both Dockerfiles need of the base: python:3.11-slim has python3 and its venv module.
BASE_PACKAGES = ("python3", "python3-venv")
# Bumped when the base tree is made differently in a way the hashed inputs do not show.
_BASE_LAYOUT = "1"
# Where Debian keeps local certificate authorities; the base trusts what the host trusts,
# so that pip in the image reaches PyPI through whatever the host reaches it through.
_LOCAL_CAS = Path("/usr/local/share/ca-certificates")
_SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))
_DEFAULT_MIRROR = "http://deb.debian.org/debian"


class EngineUnavailableError(RuntimeError):
    """No container engine can run here; tests skip on it."""


@dataclass(frozen=True)
class Engine:
    cli: str  # "docker" or "podman"
    compose_command: tuple[str, ...]  # ("docker", "compose") or (".../podman-compose",)
    env: dict[str, str] = field(default_factory=dict)  # added to the environment

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.cli, *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def compose(
        self, project: str, files: list[Path], *args: str
    ) -> tuple[list[str], dict[str, str]]:
        """The command line and environment of ``compose -p PROJECT -f FILE... ARGS``."""
        command = [*self.compose_command, "-p", project]
        for path in files:
            command += ["-f", str(path)]
        return [*command, *args], {**os.environ, **self.env}

    def container(self, project: str, service: str) -> str | None:
        """The id of the service's running container, if it runs."""
        ids = self.run(
            "ps",
            "-q",
            "--filter",
            f"label=com.docker.compose.project={project}",
            "--filter",
            f"label=com.docker.compose.service={service}",
        ).stdout.split()
        return ids[0] if ids else None

    def healthy(self, container: str) -> bool:
        """Whether the container's healthcheck passes (podman: runs it now)."""
        if self.cli == "podman":
            return self.run("healthcheck", "run", container, timeout=60).returncode == 0
        status = self.run("inspect", "--format", "{{.State.Health.Status}}", container)
        return status.stdout.strip() == "healthy"


def default_cache_dir() -> Path:
    override = os.environ.get("SLIRPNET_COMPOSE_CACHE")
    return Path(override) if override else Path.home() / ".cache" / "slirpnet-compose"


def find_engine(cache_dir: Path) -> Engine:
    """Docker when its engine answers, else podman set up here; raises EngineUnavailableError."""
    reasons = []
    if shutil.which("docker") is not None:
        if not _succeeds(["docker", "info"]):
            reasons.append("`docker info` finds no Docker engine")
        elif not _succeeds(["docker", "compose", "version"]):
            reasons.append("docker has no compose plugin")
        else:
            return Engine("docker", ("docker", "compose"))
    else:
        reasons.append("docker is not installed")
    missing = [tool for tool in ("podman", "runc", "debootstrap") if shutil.which(tool) is None]
    compose = _podman_compose()
    if compose is None:
        missing.append("podman-compose (pip install -e '.[test]')")
    if missing:
        reasons.append(f"not on PATH: {', '.join(missing)} (integration/install-deps.sh)")
    elif os.geteuid() != 0:
        reasons.append("podman here runs as root (debootstrap and rootful networks)")
    else:
        return _podman(cache_dir, compose)  # type: ignore[arg-type]
    raise EngineUnavailableError("; ".join(reasons))


def _succeeds(argv: list[str]) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=60, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _podman_compose() -> str | None:
    # The test extra's podman-compose, next to this Python, before any older one on PATH
    # (Debian's 1.0.3 goes on after a failed build and leaves containers running).
    beside = Path(sys.executable).parent / "podman-compose"
    return str(beside) if beside.is_file() else shutil.which("podman-compose")


def _podman(cache_dir: Path, compose: str) -> Engine:
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = cache_dir.resolve()
    # State that must not outlive a reboot (locks, the running containers' files), one per
    # storage: two storages sharing it would corrupt each other.
    run_dir = Path("/run/slirpnet-compose-test") / hashlib.sha256(bytes(cache_dir)).hexdigest()[:16]
    conf = cache_dir / "containers.conf"
    conf.write_text(
        "[containers]\n"
        "default_ulimits = []\n"
        "[engine]\n"
        'runtime = "runc"\n'
        f'tmp_dir = "{run_dir}/libpod"\n'
        "[network]\n"
        'network_backend = "netavark"\n'
        f'network_config_dir = "{cache_dir}/networks"\n'
    )
    storage = cache_dir / "storage.conf"
    storage.write_text(
        "[storage]\n"
        'driver = "overlay"\n'
        f'graphroot = "{cache_dir}/storage"\n'
        f'runroot = "{run_dir}/storage"\n'
    )
    (cache_dir / "networks").mkdir(exist_ok=True)
    engine = Engine(
        "podman",
        (compose,),
        {"CONTAINERS_CONF": str(conf), "CONTAINERS_STORAGE_CONF": str(storage)},
    )
    _provide_bases(engine, cache_dir)
    return engine


def _provide_bases(engine: Engine, cache_dir: Path) -> None:
    """Import the debootstrapped base and tag it with BASE_NAMES, unless it is there already."""
    mirror = debian_mirror()
    cas = sorted(_LOCAL_CAS.glob("*.crt"))
    inputs = [_BASE_LAYOUT, SUITE, mirror, *BASE_PACKAGES]
    inputs += [hashlib.sha256(path.read_bytes()).hexdigest() for path in cas]
    key = hashlib.sha256("\n".join(inputs).encode()).hexdigest()[:16]
    image = f"localhost/slirpnet-test-base:{key}"
    if engine.run("image", "exists", image).returncode != 0:
        tree = _base_tree(cache_dir / "base", key, mirror, cas)
        # pip in a venv trusts its own certifi, not the system's store: point it there.
        _check(
            engine.run(
                "import",
                "--change",
                "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt",
                str(tree),
                image,
            )
        )
    for name in BASE_NAMES:
        _check(engine.run("tag", image, name))


def _base_tree(directory: Path, key: str, mirror: str, cas: list[Path]) -> Path:
    """A tarball of a minimal Debian SUITE with BASE_PACKAGES, built once per key."""
    tarball = directory / f"{SUITE}-{key}.tar"
    if tarball.is_file():
        return tarball
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        root = Path(tmp) / "root"
        _check_run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                SUITE,
                str(root),
                mirror,
            ],
            timeout=900,
        )
        for ca in cas:
            shutil.copyfile(ca, root / "usr/local/share/ca-certificates" / ca.name)
        _check_run(["chroot", str(root), "update-ca-certificates"])
        # What apt downloaded and its lists: the Dockerfiles run apt-get update themselves.
        for leftover in [
            *(root / "var/cache/apt/archives").glob("*.deb"),
            *(root / "var/lib/apt/lists").glob("*_*"),
        ]:
            leftover.unlink()
        partial = Path(tmp) / "base.tar"
        with tarfile.open(partial, "w") as archive:
            archive.add(root, arcname=".")
        partial.rename(tarball)
    return tarball


def debian_mirror() -> str:
    """The host's Debian mirror (deb822 or one-line sources), else deb.debian.org."""
    for path in _SOURCES:
        if not path.is_file():
            continue
        text = path.read_text()
        for stanza in text.split("\n\n"):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.MULTILINE)
            suites = re.search(r"^Suites:(.*)$", stanza, re.MULTILINE)
            if uris and suites and SUITE in suites.group(1).split():
                return uris.group(1)
        line = re.search(rf"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+{SUITE}\s", text, re.MULTILINE)
        if line:
            return line.group(1)
    return _DEFAULT_MIRROR


def _check(result: subprocess.CompletedProcess[str]) -> None:
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, result.args))} failed: {result.stderr[-2000:]}")


def _check_run(argv: list[str], timeout: float = 300) -> None:
    _check(subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False))


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.3) -> bool:
    """Whether `predicate()` turned true within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
