"""Guest forwards at run time: the control API adds, lists and removes them, and
``slirpnet ctl guestfwd`` asks it; a guestfwd added so is reached like one from the start."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from scapy.layers.inet import IP, TCP

from slirpnet.control import client
from slirpnet.control.http import serve_http
from slirpnet.core.guestfwd import parse_guestfwd
from slirpnet.core.settings import NetworkSettings
from tests.test_control import api_on, call, ctl_args, error_of, get, lease
from tests.test_shell_guestfwds import PAYLOAD, SERVICE, GuestConnection

NS = "/v1/namespaces/test"


async def test_added_listed_reached_and_removed() -> None:
    settings = NetworkSettings(guest_forwards=(parse_guestfwd("tcp::22-unix:/run/a.sock"),))
    async with api_on(settings) as (api, runtime, vm):
        added = call(api, "POST", f"{NS}/guestfwds", {"spec": f"tcp:{SERVICE}:4321-cmd:cat"})
        assert added == {
            "spec": f"tcp:{SERVICE}:4321-cmd:cat",
            "guest": f"{SERVICE}:4321",
            "target": "cmd:cat",
        }
        assert get(api, f"{NS}/guestfwds") == [
            {
                "spec": "tcp:10.0.2.4:22-unix:/run/a.sock",
                "guest": "10.0.2.4:22",
                "target": "unix:/run/a.sock",
            },
            added,
        ]

        connection = GuestConnection(vm, 4321)
        assert await connection.connect() == "SA"
        (flow,) = get(api, f"{NS}/flows")  # type: ignore[misc]
        assert flow["host"] == "cmd:cat" and flow["guestfwd"] == added["spec"]  # type: ignore[index]
        await connection.send(PAYLOAD)
        await connection.shutdown()
        assert await connection.read_to_end() == PAYLOAD

        # Named by its address and port; a whole spec names it too.
        assert call(api, "DELETE", f"{NS}/guestfwds/tcp:{SERVICE}:4321") == {
            "deleted": f"tcp:{SERVICE}:4321-cmd:cat"
        }
        assert call(api, "DELETE", f"{NS}/guestfwds/tcp::22-unix:") == {
            "deleted": "tcp:10.0.2.4:22-unix:/run/a.sock"
        }
        assert get(api, f"{NS}/guestfwds") == []
        assert error_of(api, "DELETE", f"{NS}/guestfwds/tcp:{SERVICE}:4321") == (
            404,
            f"no guestfwd tcp:{SERVICE}:4321",
        )
        # The address is no longer answered for: a SYN there goes nowhere.
        await vm.send(GuestConnection(vm, 4321, sport=40001)._segment("S"))
        with trio.move_on_after(0.3):
            frame = await vm.receive()
            raise AssertionError(f"answered: {frame[IP].src}:{frame[TCP].sport}")
        (port,) = runtime.ports
        assert port.vm.stats.drops["no_route"] == 1


async def test_refusals_say_why() -> None:
    async with api_on(NetworkSettings()) as (api, _, vm):
        await lease(vm)  # 10.0.2.15 is a guest's now
        body = b'{"spec": "%s"}'
        for spec, status, message in [
            (
                "udp:10.0.2.100:53-cmd:cat",
                400,
                "spec: 'udp:10.0.2.100:53-cmd:cat': guestfwd is TCP",
            ),
            (
                "tcp:10.0.2.2:80-cmd:cat",
                400,
                "spec: tcp:10.0.2.2:80-cmd:cat: 10.0.2.2 is the gateway's",
            ),
            (
                "tcp:10.0.9.1:80-cmd:cat",
                400,
                "spec: tcp:10.0.9.1:80-cmd:cat: 10.0.9.1 is not a host",
            ),
            ("tcp:10.0.2.15:80-cmd:cat", 409, "spec: 10.0.2.15 is leased to a guest"),
            ("tcp:10.0.2.100:80-cmd:cat", 201, ""),
            ("tcp:10.0.2.100:80-cmd:ls", 409, "spec: tcp:10.0.2.100:80 has a guestfwd already"),
        ]:
            if status == 201:
                call(api, "POST", f"{NS}/guestfwds", {"spec": spec})
                continue
            got_status, got_message = error_of(api, "POST", f"{NS}/guestfwds", body % spec.encode())
            assert (got_status, got_message[: len(message)]) == (status, message), got_message
        assert error_of(api, "POST", f"{NS}/guestfwds", b'{"spec": 1}') == (
            400,
            "spec: must be a string",
        )
        status, message = error_of(api, "DELETE", f"{NS}/guestfwds/udp:10.0.2.100:80")
        assert status == 400 and message.startswith("spec: ")


def test_ctl_guestfwd_commands() -> None:
    spec = f"tcp:{SERVICE}:4321-unix:/run/svc.sock"
    assert client._call(ctl_args("-n", "a", "guestfwds")) == (
        "GET",
        "/namespaces/a/guestfwds",
        None,
    )
    assert client._call(ctl_args("-n", "a", "guestfwd", "add", spec)) == (
        "POST",
        "/namespaces/a/guestfwds",
        {"spec": spec},
    )
    # The path names it by address and port: the target's "/" could not be in it.
    removal = ("DELETE", f"/namespaces/a/guestfwds/tcp%3A{SERVICE}%3A4321", None)
    assert client._call(ctl_args("-n", "a", "guestfwd", "rm", spec)) == removal
    assert client._call(ctl_args("-n", "a", "guestfwd", "remove", f"tcp:{SERVICE}:4321")) == removal


async def test_ctl_over_the_control_socket(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(tmp_path / "control.sock")
    async with api_on(NetworkSettings()) as (api, runtime, _), trio.open_nursery() as nursery:
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        await sock.bind(path)
        sock.listen()
        nursery.start_soon(serve_http, trio.SocketListener(sock), api)

        def ctl(*argv: str) -> int:
            return client.run(ctl_args("--socket", path, *argv))

        spec = f"tcp:{SERVICE}:4321-cmd:sh -c 'echo hi'"
        assert await trio.to_thread.run_sync(ctl, "guestfwd", "add", spec) == 0
        assert [str(f) for f in runtime.segment.guest_forwards] == [spec]
        capsys.readouterr()
        assert await trio.to_thread.run_sync(ctl, "guestfwds") == 0
        assert capsys.readouterr().out.splitlines() == [
            f"{'SPEC':<{len(spec)}}  GUEST            TARGET",
            f"{spec}  {SERVICE}:4321  cmd:sh -c 'echo hi'",
        ]
        assert await trio.to_thread.run_sync(ctl, "guestfwd", "rm", spec) == 0
        assert len(runtime.segment.guest_forwards) == 0
        assert await trio.to_thread.run_sync(ctl, "guestfwd", "rm", spec) == 1
        assert capsys.readouterr().err == f"slirpnet ctl: no guestfwd tcp:{SERVICE}:4321\n"
        nursery.cancel_scope.cancel()
