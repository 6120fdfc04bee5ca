"""Operating slirpnet with a real guest: forwards, the control API and ctl, metrics, pcap.

One guest serves TCP (busybox nc running cat) and UDP (a small echo program) while
the test, on the host, reaches both through forwards, adds and removes a forward with
``slirpnet ctl``, watches a transfer in the control API and the metrics, and finally
reads the capture of the whole run with scapy.
"""

from __future__ import annotations

import hashlib
import json
import random
import socket
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from scapy.layers.dhcp import DHCP
from scapy.layers.inet import IP, TCP
from scapy.utils import rdpcap

from integration.guest import GuestImage, boot_async
from integration.guest.build import GuestUnavailableError
from integration.guest.programs import guest_program
from integration.server import SLIRPNET, free_tcp_port, free_udp_port, pacing, serving
from integration.services import tftp_server

TRANSFER = 8 * 1024 * 1024


def udpecho() -> bytes:
    try:
        return guest_program("udpecho")
    except GuestUnavailableError as missing:
        pytest.skip(f"the guest's UDP service cannot be built: {missing}")


async def ctl(control: Path, *args: str) -> object:
    done = await trio.run_process(
        [*SLIRPNET, "ctl", "--socket", str(control), "--json", *args], capture_stdout=True
    )
    return json.loads(done.stdout)


async def echo(
    port: int,
    data: bytes,
    midway: tuple[int, Callable[[], Awaitable[None]]] | None = None,
) -> bytes:
    """Send ``data`` to 127.0.0.1:``port`` and read as much back, both at once; with
    ``midway``, stop after that many bytes went both ways to await its function."""
    sock = trio.socket.socket()
    with sock:
        await sock.connect(("127.0.0.1", port))
        stream = trio.SocketStream(sock)
        received = bytearray()

        async def read() -> None:
            while len(received) < len(data):
                chunk = await stream.receive_some(65536)
                assert chunk, "the guest closed early"
                received.extend(chunk)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            start = 0
            if midway is not None:
                start, function = midway
                await stream.send_all(data[:start])
                while len(received) < start:
                    await trio.sleep(0.01)
                await function()
            await stream.send_all(data[start:])
    return bytes(received)


async def udp_echo(port: int, data: bytes) -> bytes:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        await sock.connect(("127.0.0.1", port))
        with trio.fail_after(10):
            while True:  # the first datagram may meet a guest still starting its echo
                await sock.send(data)
                with trio.move_on_after(1):
                    return await sock.recv(65536)


def metrics(port: int) -> dict[tuple[str, tuple[str, ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {
        (sample.name, tuple(v for k, v in sample.labels.items() if k != "namespace")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_forwards_control_metrics_and_capture(
    guest_image: GuestImage, tmp_path: Path
) -> None:
    echo_program = udpecho()
    tcp_port, late_port, metrics_port = free_tcp_port(), free_tcp_port(), free_tcp_port()
    udp_port = free_udp_port()
    control = tmp_path / "control.sock"
    captures = tmp_path / "pcap"
    captures.mkdir()
    args = [
        *("--listen", f"unix:{tmp_path / 'vm.sock'}"),
        *("--control", f"unix:{control}"),
        *("--metrics", f"127.0.0.1:{metrics_port}"),
        *("--pcap", str(captures)),
        *("--forward", f"tcp::{tcp_port}-:8080"),
        *("--forward", f"udp::{udp_port}-:5353"),
        *("--dns-upstream", "127.0.0.1:9"),  # nothing in this test asks; nothing leaves
    ]
    async with tftp_server({}) as tftp, serving(args, tmp_path / "slirpnet.log") as server:
        script = pacing(tftp.port) + (
            "/udpecho 5353 &\nnc -ll -p 8080 -e /bin/cat &\nsleep 1\nmark ready\nwait_for done\n"
        )
        async with trio.open_nursery() as nursery:
            runs = []

            async def guest() -> None:
                runs.append(
                    await boot_async(
                        guest_image, server.netdev(), script, 240, files={"/udpecho": echo_program}
                    )
                )

            nursery.start_soon(guest)
            with trio.fail_after(120):
                while "ready" not in tftp.marks:
                    await trio.sleep(0.2)

            # Through the forwards, to the guest's TCP and UDP services.
            assert await echo(tcp_port, b"hello guest\n") == b"hello guest\n"
            assert await udp_echo(udp_port, b"ping over udp") == b"ping over udp"

            # The control API: the guest's lease, and its flows while a transfer runs.
            (vm,) = await ctl(control, "vms")  # type: ignore[misc]
            assert vm["addresses"] == ["10.0.2.15"]
            (lease,) = await ctl(control, "leases")  # type: ignore[misc]
            assert lease["state"] == "bound" and lease["vm"] == vm["id"]
            payload = random.Random(5).randbytes(TRANSFER)
            half = TRANSFER // 2
            flows: list[dict[str, object]] = []

            async def look() -> None:  # at half way, with the connection in full use
                flows.extend(await ctl(control, "flows"))  # type: ignore[arg-type]

            returned = await echo(tcp_port, payload, midway=(half, look))
            assert hashlib.sha256(returned).digest() == hashlib.sha256(payload).digest()
            # The first echo's connection may linger in TIME_WAIT; this one is in use.
            (live,) = [f for f in flows if f.get("forward") and f["state"] == "established"]
            assert live["forward"] == f"tcp:127.0.0.1:{tcp_port}-:8080"
            assert live["guest"] == "10.0.2.15:8080"
            assert live["bytes_to_guest"] >= half  # type: ignore[operator]
            assert live["bytes_to_host"] >= half  # type: ignore[operator]

            # The metrics count the transfer, both ways.
            counted = await trio.to_thread.run_sync(metrics, metrics_port)
            assert counted["slirpnet_vms", ()] == 1
            assert counted["slirpnet_bytes_total", ("from_vm",)] > TRANSFER
            assert counted["slirpnet_bytes_total", ("to_vm",)] > TRANSFER
            assert counted["slirpnet_dhcp_leases", ("bound",)] == 1

            # A forward added at run time works; removed, it stops.
            spec = f"tcp::{late_port}-:8080"
            await ctl(control, "forward", "add", spec)
            assert await echo(late_port, b"late\n") == b"late\n"
            specs = [f["spec"] for f in await ctl(control, "forwards")]  # type: ignore[union-attr]
            assert f"tcp:127.0.0.1:{late_port}-:8080" in specs
            await ctl(control, "forward", "rm", spec)
            with pytest.raises(ConnectionRefusedError):
                await echo(late_port, b"gone\n")

            tftp.marks.append("done")
        (run,) = runs
        assert run.rc == 0, run.output
        assert (await server.stop()) == 0

    (capture,) = captures.iterdir()
    packets = rdpcap(str(capture))
    dhcp_types = [dict(p[DHCP].options[:1])["message-type"] for p in packets if p.haslayer(DHCP)]
    assert dhcp_types[:4] == [1, 2, 3, 5]  # DISCOVER, OFFER, REQUEST, ACK
    handshake = [
        p[TCP].flags
        for p in packets
        if p.haslayer(TCP)
        and 8080 in (p[TCP].sport, p[TCP].dport)
        and p[IP].src in ("10.0.2.2", "10.0.2.15")
    ][:3]
    assert handshake == ["S", "SA", "A"]
