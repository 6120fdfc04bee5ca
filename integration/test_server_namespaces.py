"""Namespaces from a config file: guests of one namespace meet, another namespace is apart.

Three guests boot at once.  The two of namespace ``a`` ping each other; the guest of
namespace ``b``, on the same addresses, cannot reach them, nor they it.  They pace each
other through marks left on a loopback TFTP server (see integration/services.py).
"""

from __future__ import annotations

from pathlib import Path

import trio

from integration.guest import GuestImage, GuestRun, boot_async
from integration.server import checks, pacing, serving
from integration.services import dns_upstream, tftp_server

GUESTS = {
    # name: (namespace, MAC, static address)
    "a1": ("a", "52:54:00:00:0a:01", "10.0.2.21"),
    "a2": ("a", "52:54:00:00:0a:02", "10.0.2.22"),
    "b1": ("b", "52:54:00:00:0b:01", "10.0.2.23"),
}

CONFIG = """
dns-upstream = "127.0.0.1:{dns_port}"

[namespace.a]
listen = "unix:{tmp}/a.sock"
search = ["a.test"]
static-lease = ["52:54:00:00:0a:01=10.0.2.21", "52:54:00:00:0a:02=10.0.2.22"]

[namespace.b]
listen = "unix:{tmp}/b.sock"
search = ["b.test"]
mtu = 9000
static-lease = ["52:54:00:00:0b:01=10.0.2.23"]
"""


def script_a(me: str, peer: str, tftp_port: int) -> str:
    peer_address = GUESTS[peer][2]
    return pacing(tftp_port) + (
        # The peer may still be booting: try for up to a minute.
        "check sees-peer sh -c 'for i in $(seq 60); do "
        f"ping -c 1 -W 1 {peer_address} && exit 0; done; exit 1'\n"
        f"mark {me}-saw-{peer}\n"
        # Stay up while b1 tries us, then try b1, which stays up until we are done.
        "check b-tried wait_for b-tried\n"
        "check not-b1 sh -c '! ping -c 2 -W 2 10.0.2.23'\n"
        f"mark {me}-done\n"
    )


def script_b(tftp_port: int) -> str:
    return pacing(tftp_port) + (
        # Not seeing them proves something only once they are up and see each other.
        "a_up() { wait_for a1-saw-a2 && wait_for a2-saw-a1; }\n"
        "check a-up a_up\n"
        "check not-a1 sh -c '! ping -c 2 -W 2 10.0.2.21'\n"
        "check not-a2 sh -c '! ping -c 2 -W 2 10.0.2.22'\n"
        "check own-gateway ping -c 1 -W 5 10.0.2.2\n"
        "mark b-tried\n"
        "a_done() { wait_for a1-done && wait_for a2-done; }\n"
        "check a-done a_done\n"
    )


async def test_two_guests_meet_and_a_second_namespace_is_apart(
    guest_image: GuestImage, tmp_path: Path
) -> None:
    runs: dict[str, GuestRun] = {}
    async with dns_upstream({}) as dns, tftp_server({}) as tftp:
        config = tmp_path / "slirpnet.toml"
        config.write_text(CONFIG.format(dns_port=dns.port, tmp=tmp_path))
        async with serving(["--config", str(config)], tmp_path / "log", lines=2) as server:
            netdevs = {server.namespace(line): server.netdev(line) for line in (0, 1)}
            scripts = {
                "a1": script_a("a1", "a2", tftp.port),
                "a2": script_a("a2", "a1", tftp.port),
                "b1": script_b(tftp.port),
            }

            async def boot(name: str) -> None:
                namespace, mac, _ = GUESTS[name]
                runs[name] = await boot_async(
                    guest_image, netdevs[namespace], scripts[name], timeout=150, mac=mac
                )

            async with trio.open_nursery() as nursery:
                for name in GUESTS:
                    nursery.start_soon(boot, name)
        log = server.stderr()
    for name, (namespace, _, address) in GUESTS.items():
        run = runs[name]
        assert run.rc == 0, f"{name}:\n{run.output}\n{log}"
        assert run.lease["ip"] == address, run.output
        assert run.lease["search"] == f"{namespace}.test", run.output
        assert run.lease["mtu"] == ("9000" if namespace == "b" else "65520"), run.output
    for name in ("a1", "a2"):
        assert checks(runs[name].output) == {
            "sees-peer": "ok",
            "b-tried": "ok",
            "not-b1": "ok",
        }, runs[name].output
    assert checks(runs["b1"].output) == {
        "a-up": "ok",
        "not-a1": "ok",
        "not-a2": "ok",
        "own-gateway": "ok",
        "a-done": "ok",
    }, runs["b1"].output
    # The guests really were up at the same time, in this order.
    assert sorted(tftp.marks[:2]) == ["a1-saw-a2", "a2-saw-a1"]
    assert tftp.marks[2] == "b-tried"
    assert sorted(tftp.marks[3:]) == ["a1-done", "a2-done"]
    server.assert_clean_exit()
