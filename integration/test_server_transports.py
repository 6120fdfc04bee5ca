"""A real guest on each QEMU transport: lease, DNS through a loopback upstream, UDP, ping.

slirpnet runs as ``python -m slirpnet serve`` and the guest is plugged in with the
``-netdev`` it printed; everything the guest reaches is a loopback service of the test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from integration.guest import GuestImage, boot_async
from integration.server import (
    BLOB,
    RECORDS,
    assert_network_works,
    free_tcp_port,
    network_script,
    serving,
)
from integration.services import dns_upstream, tftp_server

DHCP_FLAGS = ("--domain", "slirpnet.test", "--search", "a.slirpnet.test", "--search", "b.test")


# "socket" is QEMU's older -netdev socket,connect=, which frames like a stream over TCP.
@pytest.mark.parametrize("transport", ["unix", "tcp", "unixgram", "socket"])
async def test_a_guest_on_each_transport(
    guest_image: GuestImage, tmp_path: Path, transport: str
) -> None:
    port = free_tcp_port()
    listen = {
        "unix": f"unix:{tmp_path}/vm.sock",
        "tcp": f"tcp:127.0.0.1:{port}",
        "unixgram": f"unixgram:{tmp_path}/vm.dgram",
        "socket": f"tcp:127.0.0.1:{port}",
    }[transport]
    async with (
        dns_upstream(RECORDS) as dns,
        tftp_server({"blob": BLOB}) as tftp,
    ):
        args = ["--listen", listen, "--dns-upstream", f"127.0.0.1:{dns.port}", *DHCP_FLAGS]
        async with serving(args, tmp_path / "slirpnet.log") as server:
            netdev = server.netdev()
            if transport == "socket":
                netdev = ["-netdev", f"socket,id=n0,connect=127.0.0.1:{port}"]
            run = await boot_async(guest_image, netdev, network_script(tftp.port), timeout=90)
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
        assert_network_works(run.output)
        assert tftp.transfers == [("blob", 512), ("blob", 16384)]
        # The names that are not ours went upstream over UDP; the NXDOMAIN is the upstream's.
        asked = {(transport, name) for transport, name, qtype in dns.queries if qtype == 1}
        assert asked == {("udp", "www.slirpnet.test"), ("udp", "missing.slirpnet.test")}
    server.assert_clean_exit()
    assert not (tmp_path / "vm.sock").exists() and not (tmp_path / "vm.dgram").exists()
