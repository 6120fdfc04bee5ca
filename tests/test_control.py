"""The control API, its HTTP server and client, the metrics and pcap capture, on a live shell."""

from __future__ import annotations

import argparse
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap

from slirpnet.cli import build_parser
from slirpnet.control import client
from slirpnet.control.api import ControlApi
from slirpnet.control.http import HttpError, Request, serve_http
from slirpnet.control.metrics import MetricsEndpoint
from slirpnet.core.settings import NetworkSettings
from slirpnet.shell.pcap import PcapWriter
from slirpnet.shell.runtime import NamespaceRuntime
from tests.test_shell import GATEWAY_MAC, GUEST_MAC, FakeVm, running, udp_server


def get(api: ControlApi, path: str) -> object:
    return json.loads(api(Request("GET", path, {}, b"")).body)


def call(api: ControlApi, method: str, path: str, body: object = None) -> object:
    payload = b"" if body is None else json.dumps(body).encode()
    return json.loads(api(Request(method, path, {}, payload)).body)


def error_of(api: ControlApi, method: str, path: str, body: bytes = b"") -> tuple[int, str]:
    with pytest.raises(HttpError) as caught:
        api(Request(method, path, {}, body))
    return caught.value.status, caught.value.message


async def lease(vm: FakeVm) -> None:
    """DISCOVER then REQUEST, as a client in SELECTING state."""
    chaddr = bytes.fromhex(GUEST_MAC.replace(":", ""))
    for kind, extra in (("discover", []), ("request", [("requested_addr", "10.0.2.15")])):
        await vm.send(
            Ether(src=GUEST_MAC, dst="ff:ff:ff:ff:ff:ff")
            / IP(src="0.0.0.0", dst="255.255.255.255")
            / UDP(sport=68, dport=67)
            / BOOTP(chaddr=chaddr, xid=7)
            / DHCP(options=[("message-type", kind), ("server_id", "10.0.2.2"), *extra, "end"])
        )
        await vm.receive()


@asynccontextmanager
async def api_on(
    settings: NetworkSettings, pcap_dir: Path | None = None
) -> AsyncIterator[tuple[ControlApi, NamespaceRuntime, FakeVm]]:
    async with running(settings) as (runtime, vm):
        with trio.fail_after(5):
            while not runtime.ports:  # the connection is served from a task of its own
                await trio.sleep(0.001)
        yield ControlApi({"test": runtime}, pcap_dir), runtime, vm


async def test_vms_leases_and_flows_are_shown() -> None:
    with udp_server() as server:
        port = server.getsockname()[1]
        async with api_on(NetworkSettings()) as (api, _, vm):
            await lease(vm)
            await vm.send(vm.udp("10.0.2.2", port, b"hello"))
            with trio.fail_after(5):
                await server.recvfrom(100)

            (namespace,) = get(api, "/v1/namespaces")  # type: ignore[misc]
            assert namespace["name"] == "test" and namespace["vms"] == 1
            assert namespace["network"] == "10.0.2.0/24"
            (shown,) = get(api, "/v1/namespaces/test/vms")  # type: ignore[misc]
            assert shown["macs"] == [GUEST_MAC]
            assert shown["addresses"] == ["10.0.2.15"]
            assert shown["frames_in"] == 3 and shown["frames_out"] == 2
            assert shown["flows"] == {"tcp": 0, "udp": 1, "icmp": 0, "dns": 0, "tftp": 0}
            assert (shown["tcp_connecting"], shown["tcp_buffered"]) == (0, 0)
            assert get(api, f"/v1/namespaces/test/vms/{shown['id']}") == shown

            (lease_view,) = get(api, "/v1/namespaces/test/leases")  # type: ignore[misc]
            assert lease_view["address"] == "10.0.2.15" and lease_view["state"] == "bound"
            assert lease_view["mac"] == GUEST_MAC and lease_view["vm"] == shown["id"]
            assert 86000 < lease_view["expires_in"] <= 86400

            (flow,) = get(api, "/v1/namespaces/test/flows")  # type: ignore[misc]
            assert 59 < flow.pop("expires_in") <= 60
            assert flow["protocol"] == "udp"
            assert flow["guest"] == "10.0.2.15:40000"
            assert flow["destination"] == f"10.0.2.2:{port}"
            assert flow["host"] == f"127.0.0.1:{port}"
            (again,) = get(api, f"/v1/namespaces/test/vms/{shown['id']}/flows")  # type: ignore[misc]
            del again["expires_in"]  # read a moment later
            assert again == flow


async def test_ipv6_flows_are_shown_with_brackets() -> None:
    """A guest's UDP to the gateway over IPv6 reaches the host's ::1 and back, and the
    control API names its ends as [address]:port."""
    sock = trio.socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock._sock.bind(("::1", 0))
    port = sock.getsockname()[1]
    with sock:
        async with api_on(NetworkSettings()) as (api, _, vm):
            await vm.send(
                Ether(src=GUEST_MAC, dst=GATEWAY_MAC)
                / IPv6(src="fec0::15", dst="fec0::2")
                / UDP(sport=40000, dport=port)
                / b"hello6"
            )
            with trio.fail_after(5):
                data, peer = await sock.recvfrom(100)
            assert data == b"hello6"
            await sock.sendto(b"back6", peer)
            with trio.fail_after(5):
                reply = await vm.receive()
            assert reply[IPv6].src == "fec0::2" and reply[IPv6].dst == "fec0::15"
            assert bytes(reply[UDP].payload) == b"back6"
            (flow,) = get(api, "/v1/namespaces/test/flows")  # type: ignore[misc]
            assert flow["guest"] == "[fec0::15]:40000"
            assert flow["destination"] == f"[fec0::2]:{port}"
            assert flow["host"] == f"[::1]:{port}"


async def test_drops_are_shown_by_reason() -> None:
    async with api_on(NetworkSettings()) as (api, _, vm):
        await vm.send(Ether(src=GUEST_MAC, dst=GATEWAY_MAC, type=0x86DD) / (b"\x60" * 40))
        await vm.send(Ether(src=GUEST_MAC, dst=GATEWAY_MAC) / IP(src="10.0.2.15", dst="10.0.2.2"))
        await vm.send(  # a ping that gets an answer, so the drops above were handled first
            Ether(src=GUEST_MAC, dst=GATEWAY_MAC) / IP(src="10.0.2.15", dst="10.0.2.2") / ICMP()
        )
        await vm.receive()
        (shown,) = get(api, "/v1/namespaces/test/vms")  # type: ignore[misc]
        assert shown["drops"] == {"ipv4_unsupported_protocol": 1, "ipv6_truncated": 1}


async def test_dns_records_added_and_removed_at_run_time() -> None:
    async with api_on(NetworkSettings(dns_upstreams=())) as (api, _, vm):
        assert get(api, "/v1/namespaces/test/dns") == {
            "address": "10.0.2.3",
            "upstreams": [],
            "records": {"host.slirpnet.internal": ["10.0.2.2", "fec0::2"]},
        }
        added = call(
            api, "PUT", "/v1/namespaces/test/dns/records/Build.Test", {"address": "10.9.8.7"}
        )
        assert added == {"name": "build.test", "address": "10.9.8.7"}
        # An IPv6 address is the name's AAAA record, beside its A record.
        path = "/v1/namespaces/test/dns/records/build.test."
        assert call(api, "PUT", path, {"address": "fd00::7"})["name"] == "build.test"
        shown = get(api, "/v1/namespaces/test/dns")["records"]  # type: ignore[index]
        assert shown["build.test"] == ["10.9.8.7", "fd00::7"]

        query = DNS(id=5, rd=1, qd=DNSQR(qname="build.test"))
        await vm.send(vm.udp("10.0.2.3", 53, bytes(query), sport=5353))
        answer = (await vm.receive())[DNS]
        assert answer.rcode == 0 and answer.an[0].rdata == "10.9.8.7"
        query = DNS(id=6, rd=1, qd=DNSQR(qname="build.test", qtype="AAAA"))
        await vm.send(vm.udp("10.0.2.3", 53, bytes(query), sport=5353))
        answer = (await vm.receive())[DNS]
        assert answer.rcode == 0 and answer.an[0].rdata == "fd00::7"

        assert call(api, "DELETE", "/v1/namespaces/test/dns/records/build.test") == {
            "deleted": "build.test"
        }
        await vm.send(vm.udp("10.0.2.3", 53, bytes(query), sport=5354))
        assert (await vm.receive())[DNS].rcode == 2  # no upstream to ask: SERVFAIL


async def test_errors_are_statuses_with_a_reason() -> None:
    async with api_on(NetworkSettings()) as (api, _, _vm):
        assert error_of(api, "GET", "/v1/namespaces/nope/vms") == (404, "no namespace 'nope'")
        assert error_of(api, "GET", "/v1/namespaces/test/vms/99")[0] == 404
        assert error_of(api, "GET", "/v2/anything")[0] == 404
        status, message = error_of(api, "POST", "/v1/namespaces")
        assert status == 405 and "GET" in message
        path = "/v1/namespaces/test/dns/records/x.test"
        assert error_of(api, "PUT", path, b"{not json")[0] == 400
        assert error_of(api, "PUT", path, b"{}") == (400, "address: missing")
        status, message = error_of(api, "PUT", path, b'{"address": "300.1.1.1"}')
        assert status == 400 and message.startswith("address:")
        assert error_of(api, "DELETE", path) == (404, "no local record 'x.test'")


async def test_capture_started_through_the_api_holds_both_directions(tmp_path: Path) -> None:
    async with api_on(NetworkSettings(), pcap_dir=tmp_path) as (api, _, vm):
        (shown,) = get(api, "/v1/namespaces/test/vms")  # type: ignore[misc]
        pcap_path = f"/v1/namespaces/test/vms/{shown['id']}/pcap"
        started = call(api, "PUT", pcap_path, {})
        assert started == {"vm": shown["id"], "pcap": str(tmp_path / f"test-vm{shown['id']}.pcap")}
        assert error_of(api, "PUT", pcap_path, b"{}")[0] == 409
        ping = Ether(src=GUEST_MAC, dst=GATEWAY_MAC) / IP(src="10.0.2.15", dst="10.0.2.2")
        await vm.send(ping / ICMP(id=3, seq=1) / b"abc")
        await vm.receive()
        assert call(api, "DELETE", pcap_path)["frames"] == 2  # type: ignore[index]
        assert error_of(api, "DELETE", pcap_path)[0] == 404

    request, reply = rdpcap(started["pcap"])  # type: ignore[index]
    assert request[ICMP].type == 8 and reply[ICMP].type == 0
    assert bytes(reply[ICMP].payload) == b"abc"
    assert reply.time >= request.time


async def test_capture_without_a_directory_needs_a_path() -> None:
    async with api_on(NetworkSettings()) as (api, _, _vm):
        status, message = error_of(api, "PUT", "/v1/namespaces/test/vms/1/pcap", b"{}")
        assert status == 400 and message.startswith("path:")


def test_pcap_rotates_at_its_limit_and_cuts_to_snaplen(tmp_path: Path) -> None:
    path = tmp_path / "vm.pcap"
    frame = bytes(Ether(src=GUEST_MAC, dst=GATEWAY_MAC) / IP() / UDP() / (b"x" * 100))
    writer = PcapWriter(path, max_bytes=24 + 3 * (16 + len(frame)), snaplen=1000)
    for index in range(5):
        writer.write(frame, 1000.0 + index)
    writer.close()
    older, newer = rdpcap(str(path) + ".1"), rdpcap(str(path))
    assert [int(p.time) for p in older] == [1000, 1001, 1002]
    assert [int(p.time) for p in newer] == [1003, 1004]
    assert bytes(newer[0]) == frame

    cut = PcapWriter(tmp_path / "cut.pcap", snaplen=40)
    cut.write(frame, 5.5)
    cut.close()
    (packet,) = rdpcap(str(tmp_path / "cut.pcap"))
    assert bytes(packet) == frame[:40] and packet.wirelen == len(frame)
    assert (tmp_path / "cut.pcap").stat().st_mode & 0o777 == 0o600


async def test_metrics_count_traffic_and_survive_a_vm_leaving() -> None:
    async with api_on(NetworkSettings(dns_upstreams=())) as (_, runtime, vm):
        metrics = MetricsEndpoint({"test": runtime})
        query = DNS(id=5, rd=1, qd=DNSQR(qname="host.slirpnet.internal"))
        await vm.send(vm.udp("10.0.2.3", 53, bytes(query), sport=5353))
        await vm.receive()
        await vm.send(Ether(src=GUEST_MAC, dst=GATEWAY_MAC, type=0x86DD) / (b"\x60" * 40))
        await vm.send(vm.udp("10.0.2.3", 53, bytes(query), sport=5354))
        await vm.receive()
        stats = runtime.ports[0].vm.stats
        first = scrape(metrics)
        assert first["slirpnet_vms", ()] == 1
        assert first["slirpnet_frames_total", ("from_vm",)] == stats.frames_in == 3
        assert first["slirpnet_bytes_total", ("to_vm",)] == stats.bytes_out
        assert first["slirpnet_drops_total", ("ipv6_truncated",)] == 1
        assert first["slirpnet_dns_queries_total", ()] == 2

        await vm.stream.aclose()
        with trio.fail_after(5):
            while runtime.ports:
                await trio.sleep(0.01)
        after = scrape(metrics)
        assert after["slirpnet_vms", ()] == 0
        assert after["slirpnet_frames_total", ("from_vm",)] == 3
        assert after["slirpnet_dns_queries_total", ()] == 2


def scrape(metrics: MetricsEndpoint) -> dict[tuple[str, tuple[str, ...]], float]:
    """Samples of namespace ``test`` by name and their other label values."""
    response = metrics(Request("GET", "/metrics", {}, b""))
    assert response.content_type.startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(response.body.decode()):
        for sample in family.samples:
            labels = dict(sample.labels)
            assert labels.pop("namespace") == "test"
            samples[sample.name, tuple(labels.values())] = sample.value
    return samples


async def test_the_client_talks_to_the_server_over_a_unix_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "control.sock")
    async with api_on(NetworkSettings()) as (api, _, vm), trio.open_nursery() as nursery:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await sock.bind(path)
        sock.listen()
        nursery.start_soon(serve_http, trio.SocketListener(sock), api)
        await lease(vm)

        vms = await trio.to_thread.run_sync(client.request, path, "GET", "/namespaces/test/vms")
        assert vms[0]["addresses"] == ["10.0.2.15"]
        body = {"address": "10.1.1.1"}
        added = await trio.to_thread.run_sync(
            client.request, path, "PUT", "/namespaces/test/dns/records/a.test", body
        )
        assert added == {"name": "a.test", "address": "10.1.1.1"}
        with pytest.raises(client.ControlError) as caught:
            await trio.to_thread.run_sync(client.request, path, "GET", "/namespaces/zzz")
        assert caught.value.status == 404 and "zzz" in str(caught.value)
        nursery.cancel_scope.cancel()
    with pytest.raises(client.ControlError) as unreachable:
        client.request(path + ".gone", "GET", "/namespaces")
    assert unreachable.value.status == 0


def test_tables_for_people() -> None:
    rows = [{"id": 1, "macs": ["52:54:00:12:34:56"], "drops": {}}, {"id": 12, "drops": {"a": 2}}]
    assert client.render(rows).splitlines() == [
        "ID  MACS               DROPS",
        "1   52:54:00:12:34:56  -",
        "12  -                  a=2",
    ]
    assert client.render({"name": "x", "vms": 3}) == "name  x\nvms   3"
    assert client.render([]) == "(none)"
    records = {"records": {"a.test": ["10.0.2.9", "fd00::9"], "b.test": ["10.0.2.8"]}}
    assert client.render(records) == "records  a.test=10.0.2.9 fd00::9,b.test=10.0.2.8"


async def test_a_capture_is_readable_while_the_vm_runs(tmp_path: Path) -> None:
    async with api_on(NetworkSettings(), pcap_dir=tmp_path) as (api, _, vm):
        started = call(api, "PUT", "/v1/namespaces/test/vms/1/pcap", {})
        ping = Ether(src=GUEST_MAC, dst=GATEWAY_MAC) / IP(src="10.0.2.15", dst="10.0.2.2")
        await vm.send(ping / ICMP(id=3, seq=1) / b"abc")
        await vm.receive()
        # Not stopped, not closed: the frames are in the file already.
        request, reply = rdpcap(started["pcap"])  # type: ignore[index]
        assert request[ICMP].type == 8 and reply[ICMP].type == 0


def ctl_args(*argv: str) -> argparse.Namespace:
    args = build_parser().parse_args(["ctl", *argv])
    assert args.command == "ctl"
    return args


def test_ctl_options_work_before_and_after_the_command() -> None:
    for argv in (
        ["--json", "-n", "lab", "--socket", "/s", "vms"],
        ["vms", "--json", "-n", "lab", "--socket", "/s"],
        ["-n", "lab", "vms", "--socket", "/s", "--json"],
    ):
        args = ctl_args(*argv)
        assert (args.json, args.namespace, args.socket, args.what) == (True, "lab", "/s", "vms")
    args = ctl_args("forward", "add", "--json", "tcp::1-:2")
    assert (args.json, args.spec) == (True, "tcp::1-:2")
    assert ctl_args("vms").namespace is None and not ctl_args("vms").json


def test_ctl_remove_is_rm() -> None:
    assert client._call(ctl_args("-n", "a", "forward", "remove", "tcp::1-:2")) == (
        "DELETE",
        "/namespaces/a/forwards/tcp%3A%3A1-%3A2",
        None,
    )
    assert client._call(ctl_args("-n", "a", "record", "remove", "x.test")) == (
        "DELETE",
        "/namespaces/a/dns/records/x.test",
        None,
    )


def test_the_vms_table_fits_100_columns() -> None:
    vm = {
        "id": 1,
        "name": "unixgram:/run/user/1000/some/long/directory/slirpnet-vms.sock<'/tmp/vm.qemu'>",
        "macs": ["52:54:00:12:34:56"],
        "addresses": ["10.0.2.15"],
        "connected_since": "2026-12-06T00:40:47Z",
        "frames_in": 123456789,
        "bytes_in": 98765432100,
        "frames_out": 123456789,
        "bytes_out": 98765432100,
        "drops": {"flow_limit": 5, "eth_multicast": 7},
        "events": {"dhcp_ack": 1},
        "flows": {"tcp": 3, "udp": 1, "icmp": 0, "dns": 0, "tftp": 0},
        "tcp_connecting": 0,
        "tcp_buffered": 0,
        "pcap": "/var/lib/slirpnet/captures/default-vm1.pcap",
    }
    header, row = client.render([vm], "vms").splitlines()
    assert max(len(header), len(row)) <= client.WIDTH
    assert header.split() == [
        "ID",
        "NAME",
        "MAC",
        "ADDRESS",
        "FRAMES_IN",
        "FRAMES_OUT",
        "FLOWS",
        "DROPS",
    ]
    assert row.split()[:3] == ["1", row.split()[1], "52:54:00:12:34:56"]
    assert row.split()[1].startswith("unixgram:/run/") and row.split()[1].endswith("~")
    assert row.split()[4:7] == ["123456789", "123456789", "4"] and row.split()[7] == "12"


async def test_ctl_finds_the_namespace_when_there_is_one(tmp_path: Path) -> None:
    path = str(tmp_path / "control.sock")
    async with api_on(NetworkSettings()) as (api, runtime, _), trio.open_nursery() as nursery:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await sock.bind(path)
        sock.listen()
        nursery.start_soon(serve_http, trio.SocketListener(sock), api)
        assert await trio.to_thread.run_sync(client._call, ctl_args("--socket", path, "vms")) == (
            "GET",
            "/namespaces/test/vms",
            None,
        )
        api.runtimes["other"] = runtime
        with pytest.raises(client.ControlError) as several:
            await trio.to_thread.run_sync(client._call, ctl_args("--socket", path, "vms"))
        assert str(several.value) == "the server has namespaces test, test: say which with -n"
        nursery.cancel_scope.cancel()


def test_ctl_with_no_server_says_how_to_start_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "slirpnet-control.sock"
    assert client.run(ctl_args("--socket", str(path), "vms")) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (
        f"slirpnet ctl: no server's control socket at {path}: start one with `slirpnet serve` "
        "(it opens it there unless --control says otherwise), or give --socket PATH"
    )


def test_every_table_fits_100_columns() -> None:
    flow = {
        "vm": 12,
        "guest": "10.0.2.155:54321",
        "protocol": "tcp",
        "destination": "203.0.113.200:65535",
        "state": "established",
        "bytes_to_host": 123456789012,
        "bytes_to_guest": 123456789012,
        "retransmits": 1234,
        "host": "192.168.100.200:65535",
        "forward": "tcp:0.0.0.0:65535-10.0.2.155:65535",
    }
    header, row = client.render([flow], "flows").splitlines()
    assert header.split() == ["VM", "PROTO", "GUEST", "DESTINATION", "STATE", "TO_HOST", "TO_GUEST"]
    assert row.split() == [
        "12",
        "tcp",
        "10.0.2.155:54321",
        "203.0.113.200:65535",
        "established",
        "123456789012",
        "123456789012",
    ]
    # Any other list, however wide, is cut to fit: its widest columns first.
    wide = [{f"column_{n}": "x" * 40 for n in range(8)}]
    assert all(len(line) <= client.WIDTH for line in client.render(wide).splitlines())
