"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from integration.debian import DebianImage
from integration.debian.skip import debian_image_or_skip
from integration.guest import GuestImage
from integration.guest.skip import image_or_skip
from integration.linux import system
from integration.linux.harness import LinuxGuest, open_linux_guest
from integration.linux.relay import Faults

# The lossy link of issue 4: 2% loss, 5% reordering, 1% duplication, in each direction.
LOSSY = Faults(loss=0.02, duplicate=0.01, reorder=0.05, seed=4)


@pytest.fixture(autouse=True)
def own_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's slirpnet keeps its leases in a state directory of the test's own
    (``$XDG_STATE_HOME/slirpnet``), never in the user's: no lease leaks between tests."""
    state_home = tmp_path / "state-home"
    monkeypatch.setenv("XDG_STATE_HOME", str(state_home))
    return state_home / "slirpnet"


@pytest.fixture(scope="session")
def guest_image() -> GuestImage:
    return image_or_skip()


@pytest.fixture(scope="session")
def debian_image() -> DebianImage:
    return debian_image_or_skip()


def skip_unless_linux_guest() -> None:
    reason = system.missing()
    if reason is not None:
        pytest.skip(f"the Linux-stack guest cannot run here: {reason}")


@pytest.fixture
async def linux_guest(tmp_path: Path) -> AsyncIterator[LinuxGuest]:
    """The Linux TCP stack in a namespace, behind slirpnet on a perfect link."""
    skip_unless_linux_guest()
    print(f"slirpnet and QEMU logs: {tmp_path}")
    async with open_linux_guest(tmp_path) as guest:
        yield guest


@pytest.fixture
async def lossy_guest(tmp_path: Path) -> AsyncIterator[LinuxGuest]:
    """The same behind the lossy relay (``LOSSY``)."""
    skip_unless_linux_guest()
    print(f"slirpnet, relay and QEMU logs: {tmp_path}")
    async with open_linux_guest(tmp_path, faults=LOSSY) as guest:
        yield guest


@pytest.fixture
async def lossy_guest_mtu_1500(tmp_path: Path) -> AsyncIterator[LinuxGuest]:
    """The lossy link at Ethernet's MTU: 40 times the frames, so 40 times the faults."""
    skip_unless_linux_guest()
    print(f"slirpnet, relay and QEMU logs: {tmp_path}")
    async with open_linux_guest(tmp_path, faults=LOSSY, slirpnet_args=["--mtu", "1500"]) as guest:
        yield guest
