"""The README's embedding example, run as written, with a real guest's frames going through it."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from contextlib import suppress
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import trio
from scapy.layers.l2 import ARP, Ether

import slirpnet
from integration.guest import GuestImage, boot_async
from integration.server import BLOB, RECORDS, assert_network_works, network_script
from integration.services import dns_upstream, tftp_server

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_example() -> dict[str, Any]:
    """The definitions of the README's embedding example (its ``__main__`` part not run)."""
    section = README.read_text().split("## Embedding", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "README.md has no python example under ## Embedding"
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(match.group(1), str(README), "exec"), namespace)
    return namespace


async def test_a_guest_through_the_readme_example(guest_image: GuestImage, tmp_path: Path) -> None:
    serve_vm: Callable[..., Any] = readme_example()["serve_vm"]
    path, qemu_path = tmp_path / "vm.sock", tmp_path / "vm.qemu"
    async with dns_upstream(RECORDS) as dns, tftp_server({"blob": BLOB}) as tftp:
        settings = slirpnet.NetworkSettings(
            dns_upstreams=(slirpnet.Upstream(IPv4Address("127.0.0.1"), dns.port),),
            search=("corp.test",),
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_vm, str(path), str(qemu_path), settings)
            with trio.fail_after(10):
                while not path.exists():
                    await trio.sleep(0.01)
            netdev = (
                f"dgram,id=n0,local.type=unix,local.path={qemu_path},"
                f"remote.type=unix,remote.path={path}"
            )
            run = await boot_async(
                guest_image, ["-netdev", netdev], network_script(tftp.port), timeout=90
            )
            nursery.cancel_scope.cancel()
    assert run.rc == 0, run.output
    assert (run.lease["ip"], run.lease["search"], run.lease["mtu"]) == (
        "10.0.2.15",
        "corp.test",
        "65520",
    )
    assert_network_works(run.output)


async def test_the_readme_example_runs_again_where_it_ran(tmp_path: Path) -> None:
    """A datagram socket's file outlives the run that bound it: the next run binds anew,
    and answers a VM (here an ARP question from a socket where QEMU's would be)."""
    serve_vm: Callable[..., Any] = readme_example()["serve_vm"]
    path, qemu_path = tmp_path / "vm.sock", tmp_path / "vm.qemu"
    who_has = Ether(src="52:54:00:12:34:56", dst="ff:ff:ff:ff:ff:ff") / ARP(
        hwsrc="52:54:00:12:34:56", psrc="10.0.2.15", pdst="10.0.2.2"
    )
    for _ in range(2):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_vm, str(path), str(qemu_path), slirpnet.NetworkSettings())
            with trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as vm:
                qemu_path.unlink(missing_ok=True)
                await vm.bind(str(qemu_path))
                with trio.fail_after(10):
                    while True:
                        with suppress(OSError):  # not bound yet, or the last run's file
                            await vm.sendto(bytes(who_has), str(path))
                        with trio.move_on_after(0.1):
                            answer = Ether(await vm.recv(65536))
                            break
            assert answer[ARP].psrc == "10.0.2.2"
            nursery.cancel_scope.cancel()
        assert path.exists()  # left behind, as the second run finds it
