"""A real guest on each QEMU transport: lease, DNS through a loopback upstream, UDP, ping.

slirpnet runs as ``python -m slirpnet serve`` and the guest is plugged in with the
``-netdev`` it printed; everything the guest reaches is a loopback service of the test.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from integration.guest import GuestImage, boot_async
from integration.server import GUEST_FUNCTIONS, checks, free_tcp_port, serving
from integration.services import dns_upstream, tftp_server

RECORDS = {"www.slirpnet.test": "192.0.2.10"}  # an answer only: nobody ever sends there
BLOB = bytes(range(256)) * 80  # 20480 bytes: 41 TFTP blocks of 512, 2 of 16384
DHCP_FLAGS = ("--domain", "slirpnet.test", "--search", "a.slirpnet.test", "--search", "b.test")


def network_script(tftp_port: int) -> str:
    """What every transport must carry; each step prints a CHECK line."""
    return GUEST_FUNCTIONS + (
        "check ping-gateway ping -c 2 -W 5 10.0.2.2\n"
        "check resolve nslookup www.slirpnet.test\n"
        # NXDOMAIN makes nslookup fail; the test reads its message.
        "nslookup missing.slirpnet.test\n"
        "check host-name nslookup host.slirpnet.internal\n"
        f"check udp tftp -g -r blob -l /tmp/blob 10.0.2.2 {tftp_port}\n"
        "md5sum /tmp/blob\n"
        f"check udp-large tftp -b 16384 -g -r blob -l /tmp/blob16 10.0.2.2 {tftp_port}\n"
        "md5sum /tmp/blob16\n"
    )


def assert_network_works(output: str, tftp_transfers: list[tuple[str, int]]) -> None:
    assert checks(output) == {
        "ping-gateway": "ok",
        "resolve": "ok",
        "host-name": "ok",
        "udp": "ok",
        "udp-large": "ok",
    }, output
    assert "Name:\twww.slirpnet.test\nAddress: 192.0.2.10\n" in output
    assert "** server can't find missing.slirpnet.test: NXDOMAIN" in output
    assert "Name:\thost.slirpnet.internal\nAddress: 10.0.2.2\n" in output
    digest = hashlib.md5(BLOB).hexdigest()
    assert f"{digest}  /tmp/blob\n" in output
    assert f"{digest}  /tmp/blob16\n" in output
    assert tftp_transfers == [("blob", 512), ("blob", 16384)]


@pytest.mark.parametrize("transport", ["unix", "tcp", "unixgram"])
async def test_a_guest_on_each_transport(
    guest_image: GuestImage, tmp_path: Path, transport: str
) -> None:
    listen = {
        "unix": f"unix:{tmp_path}/vm.sock",
        "tcp": f"tcp:127.0.0.1:{free_tcp_port()}",
        "unixgram": f"unixgram:{tmp_path}/vm.dgram",
    }[transport]
    async with (
        dns_upstream(RECORDS) as dns,
        tftp_server({"blob": BLOB}) as tftp,
    ):
        args = ["--listen", listen, "--dns-upstream", f"127.0.0.1:{dns.port}", *DHCP_FLAGS]
        async with serving(args, tmp_path / "slirpnet.log") as server:
            run = await boot_async(
                guest_image, server.netdev(), network_script(tftp.port), timeout=90
            )
        assert run.rc == 0, run.output + server.stderr()
        assert run.lease == {
            "ip": "10.0.2.15",
            "subnet": "255.255.255.0",
            "mask": "24",
            "router": "10.0.2.2",
            "dns": "10.0.2.3",
            "mtu": "65520",
            "domain": "slirpnet.test",
            "search": "a.slirpnet.test,b.test",
            "serverid": "10.0.2.2",
            "lease": "86400",
        }, run.output
        assert_network_works(run.output, tftp.transfers)
        # The names that are not ours went upstream over UDP; the NXDOMAIN is the upstream's.
        asked = {(transport, name) for transport, name, qtype in dns.queries if qtype == 1}
        assert asked == {("udp", "www.slirpnet.test"), ("udp", "missing.slirpnet.test")}
