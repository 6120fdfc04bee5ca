"""Forwards on real host sockets, with a scripted guest on a socket pair, and through the API."""

from __future__ import annotations

import json
import logging
import socket

import pytest
import trio
import trio.testing
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from slirpnet.control.http import HttpError, Request
from slirpnet.core.forwards import parse_forwards
from slirpnet.core.settings import NetworkSettings
from slirpnet.shell.forwards import ForwardError
from tests.test_control import api_on, lease
from tests.test_shell import GATEWAY_MAC, GUEST_MAC, running


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_forward_without_a_vm_refuses_at_once() -> None:
    port = free_port()
    async with running(NetworkSettings()) as (runtime, _):
        runtime.forwards.add(parse_forwards(f"tcp::{port}-:22")[0])
        client = trio.socket.socket()
        with trio.fail_after(2), pytest.raises(ConnectionResetError):
            await client.connect(("127.0.0.1", port))
            await client.recv(1)  # the RST may come just after the handshake
        client.close()


async def test_a_forward_on_ipv6_loopback_without_a_vm_refuses_and_says_from_where(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="slirpnet.shell.forwards")
    with socket.socket(socket.AF_INET6) as probe:
        probe.bind(("::1", 0))
        port = int(probe.getsockname()[1])
    async with running(NetworkSettings()) as (runtime, _):
        runtime.forwards.add(parse_forwards(f"tcp:[::1]:{port}-[fec0::15]:22")[0])
        client = trio.socket.socket(socket.AF_INET6)
        with trio.fail_after(2), pytest.raises(ConnectionResetError):
            await client.connect(("::1", port))
            await client.recv(1)
        client.close()
    # An IPv6 peer's address has four parts; the log line takes the first two.
    client_port = client_port_of(caplog.messages)
    assert f"no VM to take a connection from ::1:{client_port}" in "\n".join(caplog.messages)


def client_port_of(messages: list[str]) -> str:
    (line,) = [message for message in messages if "no VM to take a connection" in message]
    return line.rsplit(":", 1)[1]


async def test_tcp_reaches_the_guest_and_a_closed_guest_port_resets_the_client() -> None:
    port = free_port()
    async with running(NetworkSettings()) as (runtime, vm):
        await lease(vm)
        runtime.forwards.add(parse_forwards(f"tcp::{port}-:8080")[0])
        client = trio.socket.socket()
        with trio.fail_after(5):
            await client.connect(("127.0.0.1", port))
            syn = await vm.receive()
        assert syn[IP].src == "10.0.2.2" and syn[IP].dst == "10.0.2.15"
        assert syn[TCP].flags == "S" and syn[TCP].dport == 8080
        reset = TCP(sport=8080, dport=syn[TCP].sport, flags="RA", ack=syn[TCP].seq + 1)
        await vm.send(
            Ether(src=GUEST_MAC, dst=GATEWAY_MAC) / IP(src="10.0.2.15", dst="10.0.2.2") / reset
        )
        with trio.fail_after(5), pytest.raises(ConnectionResetError):
            await client.recv(1)
        client.close()


async def test_udp_reaches_the_guest_and_its_reply_the_peer() -> None:
    port = free_port(socket.SOCK_DGRAM)
    async with running(NetworkSettings()) as (runtime, vm):
        await lease(vm)
        runtime.forwards.add(parse_forwards(f"udp::{port}-:5353")[0])
        peer = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await peer.bind(("127.0.0.1", 0))
        await peer.sendto(b"question", ("127.0.0.1", port))
        with trio.fail_after(5):
            datagram = await vm.receive()
        assert (datagram[IP].src, datagram[UDP].dport) == ("10.0.2.2", 5353)
        assert bytes(datagram[UDP].payload) == b"question"
        answer = UDP(sport=5353, dport=datagram[UDP].sport) / b"answer"
        await vm.send(
            Ether(src=GUEST_MAC, dst=GATEWAY_MAC) / IP(src="10.0.2.15", dst="10.0.2.2") / answer
        )
        with trio.fail_after(5):
            data, source = await peer.recvfrom(100)
        assert (data, source) == (b"answer", ("127.0.0.1", port))
        peer.close()


async def test_a_taken_host_port_is_an_error_naming_the_forward() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with running(NetworkSettings()) as (runtime, _):
            forward = parse_forwards(f"tcp::{port}-:22")[0]
            with pytest.raises(ForwardError, match=rf"^forward: tcp:127.0.0.1:{port}-:22: "):
                runtime.forwards.add(forward)
            assert runtime.forwards.active == []


async def test_forwards_added_and_removed_through_the_api() -> None:
    first = free_port()
    async with api_on(NetworkSettings()) as (api, runtime, _):

        def call(method: str, path: str, body: object = None) -> object:
            data = b"" if body is None else json.dumps(body).encode()
            return json.loads(api(Request(method, path, {}, data)).body)

        spec = f"tcp::{first}-{first + 1}-:80"
        added = call("POST", "/v1/namespaces/test/forwards", {"spec": spec})
        assert [f["spec"] for f in added] == [  # type: ignore[attr-defined]
            f"tcp:127.0.0.1:{first}-:80",
            f"tcp:127.0.0.1:{first + 1}-:81",
        ]
        listed = call("GET", "/v1/namespaces/test/forwards")
        assert [f["guest"] for f in listed] == ["leased:80", "leased:81"]  # type: ignore[attr-defined]

        with pytest.raises(HttpError) as again:
            call("POST", "/v1/namespaces/test/forwards", {"spec": f"tcp::{first + 1}-:81"})
        assert again.value.status == 409
        with pytest.raises(HttpError) as outside:
            call("POST", "/v1/namespaces/test/forwards", {"spec": "tcp::1-10.9.9.9:80"})
        assert outside.value.status == 400 and "not a guest address" in outside.value.message
        with pytest.raises(HttpError) as bad:
            call("POST", "/v1/namespaces/test/forwards", {"spec": "tcp:22"})
        assert bad.value.status == 400 and bad.value.message.startswith("spec: ")

        assert call("DELETE", f"/v1/namespaces/test/forwards/{spec}") == {
            "deleted": [f"tcp:127.0.0.1:{first}-:80", f"tcp:127.0.0.1:{first + 1}-:81"]
        }
        assert runtime.forwards.active == []
        with pytest.raises(HttpError) as gone:
            call("DELETE", f"/v1/namespaces/test/forwards/{spec}")
        assert gone.value.status == 404
        await trio.testing.wait_all_tasks_blocked()  # the listeners have seen their cancellation
        with socket.socket() as reuse:  # the port is free again
            reuse.bind(("127.0.0.1", first))
