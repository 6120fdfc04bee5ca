"""A guest's UDP to the host and its errors, and ICMP echo to the gateway's addresses.

The UDP exchange here is a DNS query sent straight to a loopback service through the gateway
(10.0.2.2 stands for the host's 127.0.0.1), and one to a closed loopback port, whose ICMP
port unreachable must reach the guest's socket as ECONNREFUSED.
"""

from __future__ import annotations

import re
from pathlib import Path

from integration.guest import GuestImage, boot_async
from integration.server import GUEST_FUNCTIONS, RECORDS, checks, free_udp_port, serving
from integration.services import dns_upstream


async def test_udp_to_the_host_its_errors_and_pings(
    guest_image: GuestImage, tmp_path: Path
) -> None:
    closed = free_udp_port()
    async with dns_upstream(RECORDS) as service:
        script = GUEST_FUNCTIONS + (
            f"check udp-to-host nslookup www.slirpnet.test 10.0.2.2:{service.port}\n"
            # busybox nslookup reports the refusal, then gives up.
            f"nslookup www.slirpnet.test 10.0.2.2:{closed}\n"
            "check ping-large ping -c 1 -s 60000 -W 5 10.0.2.2\n"
            "check ping-dns-address ping -c 1 -W 5 10.0.2.3\n"
        )
        # The guest's resolver is not used: the upstream named keeps resolv.conf out of it.
        args = ["--listen", f"unix:{tmp_path}/vm.sock", "--dns-upstream", "127.0.0.1:9"]
        async with serving(args, tmp_path / "log") as server:
            run = await boot_async(guest_image, server.netdev(), script, timeout=90)
    assert run.rc == 0, run.output
    assert checks(run.output) == dict.fromkeys(
        ["udp-to-host", "ping-large", "ping-dns-address"], "ok"
    ), run.output
    assert f"Server:\t\t10.0.2.2:{service.port}\n" in run.output
    assert "Name:\twww.slirpnet.test\nAddress: 192.0.2.10\n" in run.output
    # The refusal shows on nslookup's next read or write, whichever comes first.
    assert re.search(r"^nslookup: (read|write to .*): Connection refused$", run.output, re.M)
    assert "60008 bytes from 10.0.2.2: seq=0" in run.output
    assert ("udp", "www.slirpnet.test", 1) in service.queries
    server.assert_clean_exit()
