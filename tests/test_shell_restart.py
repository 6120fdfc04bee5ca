"""What outlives a VM or the server, and what is each VM's own, through ``run_server``.

``--isolate`` gives each connection a network of its own (``NAME.vmN`` in the control
API); ``--state-dir`` keeps leases over a restart, written atomically, and a corrupt
file is set aside rather than stop the server.  VMs are scripted on unix sockets.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from ipaddress import IPv4Address
from pathlib import Path

import pytest
import trio
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether

from slirpnet.config import (
    Address,
    ConfigError,
    NamespaceConfig,
    ServerConfig,
    namespace_from_values,
)
from slirpnet.core.dhcp import DhcpServer
from slirpnet.core.settings import NetworkSettings, Upstream
from slirpnet.server import run_server
from slirpnet.shell import leasestore
from slirpnet.shell.leasestore import default_state_dir, lease_file
from slirpnet.shell.runtime import NamespaceRuntime
from tests.test_shell import GUEST_MAC, FakeVm

SETTINGS = NetworkSettings(dns_upstreams=(Upstream(IPv4Address("127.0.0.1"), 9),))


def dhcp(kind: str, mac: str = GUEST_MAC, requested: str | None = None) -> Ether:
    options: list[object] = [("message-type", kind)]
    if requested is not None:
        options += [("requested_addr", requested), ("server_id", "10.0.2.2")]
    return (
        Ether(src=mac, dst="ff:ff:ff:ff:ff:ff")
        / IP(src="0.0.0.0", dst="255.255.255.255")
        / UDP(sport=68, dport=67)
        / BOOTP(chaddr=bytes.fromhex(mac.replace(":", "")) + bytes(10), xid=7, flags=0x8000)
        / DHCP(options=[*options, "end"])
    )


async def lease(vm: FakeVm, mac: str = GUEST_MAC) -> str:
    """DISCOVER, OFFER, REQUEST, ACK: the address bound."""
    await vm.send(dhcp("discover", mac))
    offer = await until(vm, is_reply)
    address = str(offer[BOOTP].yiaddr)
    await vm.send(dhcp("request", mac, address))
    ack = await until(vm, is_reply)
    assert ack[DHCP].options[0] == ("message-type", 5), ack.show(dump=True)
    return address


def is_reply(packet: Ether) -> bool:
    """The gateway's DHCP reply (not another VM's request, flooded to all)."""
    return bool(packet.haslayer(BOOTP) and packet[BOOTP].op == 2)


async def until(vm: FakeVm, wanted: object, timeout: float = 5.0) -> Ether:
    assert callable(wanted)
    with trio.fail_after(timeout):
        while True:
            packet = await vm.receive(timeout)
            if wanted(packet):
                return packet


@asynccontextmanager
async def serving(
    config: ServerConfig,
) -> AsyncIterator[dict[str, NamespaceRuntime]]:
    async with trio.open_nursery() as nursery:
        runtimes = await nursery.start(run_server, config)
        yield {runtime.name: runtime for runtime in runtimes}
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def vm_on(path: Path) -> AsyncIterator[FakeVm]:
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.connect(str(path))
    async with trio.SocketStream(sock) as stream:
        yield FakeVm(stream)


def namespace(path: Path, **keys: object) -> NamespaceConfig:
    return namespace_from_values(
        "lab", {"listen": f"unix:{path}", "dns-upstream": "127.0.0.1:9", **keys}
    )


# -- isolation ------------------------------------------------------------------------------


async def test_isolated_vms_with_one_mac_each_get_the_first_address_on_a_network_of_their_own(
    tmp_path: Path,
) -> None:
    path = tmp_path / "vm.sock"
    async with serving(ServerConfig((namespace(path, isolate=True),))) as shared:
        assert shared == {}  # nothing shared: a network comes with each VM
        async with vm_on(path) as first, vm_on(path) as second:
            assert await lease(first) == "10.0.2.15"
            assert await lease(second) == "10.0.2.15"
            # Each is alone: the other's frames never reach it.
            hello = Ether(src=GUEST_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(pdst="10.0.2.99")
            await first.send(hello)
            with trio.move_on_after(0.5) as quiet:
                await second.receive(1.0)
            assert quiet.cancelled_caught


async def test_isolated_networks_are_listed_while_their_vm_is_connected(tmp_path: Path) -> None:
    path = tmp_path / "vm.sock"
    control = tmp_path / "control.sock"
    config = ServerConfig(
        (namespace(path, isolate=True),), control=Address("unix", path=str(control))
    )
    async with serving(config):
        async with vm_on(path) as first, vm_on(path) as second:
            await lease(first)
            await lease(second)
            listed = await _control(control, "/v1/namespaces")
            assert sorted(ns["name"] for ns in listed) == ["lab.vm1", "lab.vm2"]
            leases = await _control(control, "/v1/namespaces/lab.vm2/leases")
            assert [entry["address"] for entry in leases] == ["10.0.2.15"]
            # A forward added at run time to one VM's network reaches that VM alone.
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            spec = {"spec": f"tcp::{port}-:8080"}
            await _control(control, "/v1/namespaces/lab.vm2/forwards", spec)
            client = await trio.open_tcp_stream("127.0.0.1", port)
            syn = await until(second, lambda p: p.haslayer(TCP))
            assert (syn[IP].dst, syn[TCP].dport, syn[TCP].flags) == ("10.0.2.15", 8080, "S")
            with trio.move_on_after(0.5) as quiet:
                await until(first, lambda p: p.haslayer(TCP))
            assert quiet.cancelled_caught
            await client.aclose()
        await trio.sleep(0.2)
        assert await _control(control, "/v1/namespaces") == []


async def _control(path: Path, target: str, body: object = None) -> object:
    """GET ``target`` from the control API, or POST ``body`` to it."""
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.connect(str(path))
    async with trio.SocketStream(sock) as stream:
        data = b"" if body is None else json.dumps(body).encode()
        method = "GET" if body is None else "POST"
        head = f"{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        await stream.send_all(f"{head}Content-Length: {len(data)}\r\n\r\n".encode() + data)
        data = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                data += chunk
    head, _, answer = data.partition(b"\r\n\r\n")
    assert head.startswith((b"HTTP/1.1 200", b"HTTP/1.1 201")), data
    return json.loads(answer)


async def test_on_a_datagram_listener_each_peer_address_is_a_network_of_its_own(
    tmp_path: Path,
) -> None:
    path = tmp_path / "vm.dgram"
    config = ServerConfig(
        (namespace_from_values("lab", {"listen": f"unixgram:{path}", "isolate": True}),)
    )
    async with serving(config):
        offers = []
        for name in ("a", "b"):
            with trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as peer:
                await peer.bind(str(tmp_path / name))
                await peer.sendto(bytes(dhcp("discover")), str(path))
                with trio.fail_after(5):
                    while not is_reply(reply := Ether(await peer.recv(65536))):
                        pass
                offers.append(reply[BOOTP].yiaddr)
    assert offers == ["10.0.2.15", "10.0.2.15"]  # the same MAC: each alone on its network


def test_a_forward_on_an_isolated_namespace_is_one_line_naming_forward() -> None:
    with pytest.raises(ConfigError, match=r"^forward: not with isolate"):
        namespace_from_values("lab", {"isolate": True, "forward": "tcp::2222-:22"})


# -- one MAC on a shared network -------------------------------------------------------------


async def test_a_second_live_vm_with_the_same_mac_gets_nothing_on_a_shared_network(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "vm.sock"
    async with (
        serving(ServerConfig((namespace(path),))) as runtimes,
        vm_on(path) as first,
        vm_on(path) as second,
    ):
        assert await lease(first) == "10.0.2.15"
        with caplog.at_level(logging.WARNING):
            await second.send(dhcp("discover"))
            with trio.move_on_after(1.0) as quiet:
                await until(second, is_reply)
        assert quiet.cancelled_caught
        first_vm, second_vm = (port.vm for port in runtimes["lab"].ports)
        assert first_vm.stats.drops["eth_mac_in_use"] == 0
        assert second_vm.stats.drops["eth_mac_in_use"] == 1
    assert any("mac=" in r.getMessage() and GUEST_MAC in r.getMessage() for r in caplog.records)


# -- leases over a restart ----------------------------------------------------------------


async def test_leases_outlive_the_server_and_a_returning_vm_is_asked_for_its_address(
    tmp_path: Path,
) -> None:
    path, state = tmp_path / "vm.sock", tmp_path / "state"
    config = ServerConfig((namespace(path),), state_dir=state)
    other = "52:54:00:00:00:99"
    async with serving(config), vm_on(path) as vm, vm_on(path) as neighbour:
        assert await lease(neighbour, other) == "10.0.2.15"
        assert await lease(vm) == "10.0.2.16"
        # Saved as soon as bound, the second at most SAVE_INTERVAL after the first: a
        # server killed now would still know both.
        with trio.fail_after(leasestore.SAVE_INTERVAL * 4):
            saved_file = lease_file(state, "lab")
            while not saved_file.exists() or "10.0.2.16" not in saved_file.read_text():
                await trio.sleep(0.01)
    saved = json.loads(lease_file(state, "lab").read_text())
    assert sorted(entry["address"] for entry in saved["leases"]) == ["10.0.2.15", "10.0.2.16"]
    assert [p.name for p in state.iterdir()] == ["lab.leases.json"]  # no temporary left

    async with serving(config), vm_on(path) as vm:
        # At once, before the VM says anything: who has 10.0.2.15, who has .16?
        asked = {str((await until(vm, lambda p: p.haslayer(ARP)))[ARP].pdst) for _ in "ab"}
        assert asked == {"10.0.2.15", "10.0.2.16"}
        # A client come back gets its address, though another asks first.
        async with vm_on(path) as newcomer:
            assert await lease(newcomer, "52:54:00:00:00:77") == "10.0.2.17"
        assert await lease(vm) == "10.0.2.16"


async def test_a_corrupt_lease_file_is_set_aside_and_the_server_runs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, state = tmp_path / "vm.sock", tmp_path / "state"
    state.mkdir()
    lease_file(state, "lab").write_text('{"format": 1, "leases": [{"address": "x"')
    with caplog.at_level(logging.WARNING):
        async with serving(ServerConfig((namespace(path),), state_dir=state)), vm_on(path) as vm:
            assert await lease(vm) == "10.0.2.15"
    assert (state / "lab.leases.json.corrupt").read_text().startswith('{"format": 1')
    assert json.loads(lease_file(state, "lab").read_text())["leases"][0]["address"] == "10.0.2.15"
    (line,) = [r.getMessage() for r in caplog.records if "corrupt" in r.getMessage()]
    assert "lab.leases.json.corrupt" in line


@pytest.mark.parametrize(
    "document",
    [
        {"format": 2, "leases": []},
        {"format": 1, "leases": [{"address": "10.0.2.15"}]},
        {
            "format": 1,
            "leases": [
                {
                    "client": "zz",  # not hex
                    "address": "10.0.2.15",
                    "mac": GUEST_MAC,
                    "hostname": None,
                    "bound": True,
                    "expires": 1,
                }
            ],
        },
        [],
    ],
)
def test_every_malformed_lease_file_is_corrupt_not_an_exception(
    tmp_path: Path, document: object
) -> None:
    path = tmp_path / "lab.leases.json"
    path.write_text(json.dumps(document))
    store = leasestore.LeaseStore(path, DhcpServer(SETTINGS))
    store.restore(0.0)
    assert not path.exists() and path.with_name(path.name + ".corrupt").exists()


def test_a_state_dir_that_cannot_be_made_is_a_warning_not_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "file").write_text("")
    config = ServerConfig((namespace(tmp_path / "vm.sock"),), state_dir=tmp_path / "file" / "x")

    async def main() -> None:
        async with serving(config) as runtimes:
            assert list(runtimes) == ["lab"]

    with caplog.at_level(logging.WARNING):
        trio.run(main)
    assert any("leases will not outlive" in r.getMessage() for r in caplog.records)


def test_the_default_state_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", "/x/state")
    assert default_state_dir() == Path("/x/state/slirpnet")
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setattr(leasestore.os, "geteuid", lambda: 0)
    assert default_state_dir() == Path("/var/lib/slirpnet")
    monkeypatch.setattr(leasestore.os, "geteuid", lambda: 1000)
    monkeypatch.setenv("HOME", "/home/u")
    assert default_state_dir() == Path("/home/u/.local/state/slirpnet")


def test_a_namespace_name_is_one_file_name() -> None:
    assert lease_file(Path("/s"), "../a/b").parent == Path("/s")
