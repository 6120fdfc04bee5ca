"""A real QEMU guest (busybox, Debian's kernel) takes IPv6 from slirpnet on its own.

The guest's kernel does SLAAC as soon as eth0 is up, with nothing configured: the
address it forms from its MAC in fec0::/64, the default route through the router's
link-local address.  Then it pings the gateway fec0::2 and fetches a file over IPv6
from a loopback HTTP server on the host's ::1, reached at [fec0::2]:PORT.
"""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path

import trio

from integration.guest import DEFAULT_MAC, GuestImage, boot_async
from integration.linux.ipv6 import PREFIX, eui64_address
from integration.linux.traffic import loopback_server
from integration.server import GUEST_FUNCTIONS, checks, serving

DOWNLOAD = random.Random(6).randbytes(1 << 20)
_SHA = re.compile(r"^([0-9a-f]{64})  /tmp/down$", re.MULTILINE)

# Until eth0 has an address in fec0::/64 that passed DAD and a default route (15 s at
# most: DAD of the link-local and the global address, a solicitation's delay).
WAIT_FOR_SLAAC = """
i=0
while [ $i -lt 75 ]; do
    ip -6 addr show dev eth0 | grep 'inet6 fec0:' | grep -qv tentative &&
        ip -6 route show | grep -q '^default via fe80:' && break
    sleep 0.2
    i=$((i + 1))
done
ip -6 addr show dev eth0
ip -6 route show
"""


async def http_get(stream: trio.SocketStream) -> None:
    """Answer one GET with DOWNLOAD, whatever the path."""
    request = b""
    while b"\r\n\r\n" not in request:
        chunk = await stream.receive_some(4096)
        if not chunk:
            return
        request += chunk
    header = f"HTTP/1.0 200 OK\r\nContent-Length: {len(DOWNLOAD)}\r\n\r\n".encode()
    await stream.send_all(header + DOWNLOAD)


async def test_busybox_guest_takes_an_address_by_slaac_and_pings_the_gateway(
    guest_image: GuestImage, tmp_path: Path
) -> None:
    path = tmp_path / "slirpnet.sock"
    args = ["--listen", f"unix:{path}", "--dns-upstream", "127.0.0.1:9"]
    async with (
        loopback_server(http_get, host="::1") as port,
        serving(args, tmp_path / "slirpnet.log") as server,
    ):
        script = (
            GUEST_FUNCTIONS
            + WAIT_FOR_SLAAC
            + (
                "check ping6-gateway ping -6 -c 3 -W 5 fec0::2\n"
                f"check wget6 wget -q -O /tmp/down http://[fec0::2]:{port}/blob\n"
                "sha256sum /tmp/down\n"
            )
        )
        run = await boot_async(guest_image, server.netdev(), script, timeout=180)

    assert run.rc == 0, run.output + server.stderr()
    address = eui64_address(PREFIX, DEFAULT_MAC)
    assert f"inet6 {address}/64 scope site" in run.output, run.output
    assert checks(run.output) == {"ping6-gateway": "ok", "wget6": "ok"}, run.output
    assert "3 packets transmitted, 3 packets received" in run.output
    assert _SHA.findall(run.output) == [hashlib.sha256(DOWNLOAD).hexdigest()]
