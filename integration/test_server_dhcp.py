"""A real DHCP client's whole life with slirpnet: bound, renewed, released, bound again.

busybox udhcpc runs in the foreground with a hook that records each event, and the script
drives it with signals: SIGUSR1 renews (a unicast REQUEST from the bound address, RFC 2131
§4.4.5 RENEWING), SIGUSR2 releases, and SIGUSR1 after that starts over from DISCOVER.

busybox sends that unicast REQUEST from a socket of its own, bound to the client's address and
port 68, and closes it only after the write; an ACK arriving before the close lands there and
is lost.  slirpnet answers fast enough for that under TCG, so the renewal often completes by
REBINDING (§4.4.5, broadcast) three seconds later.  The lease is never lost either way, and the
ACK goes to ``ciaddr`` as §4.1 says: a server that broadcast it instead would lose clients that
listen on their bound address only (systemd-networkd).
"""

from __future__ import annotations

import re
from pathlib import Path

from integration.guest import GuestImage, boot_async
from integration.server import GUEST_FUNCTIONS, checks, serving

SCRIPT = (
    GUEST_FUNCTIONS
    + r"""
printf '#!/bin/sh\n/udhcpc.sh "$@"\necho "$1" >>/tmp/events\n' >/tmp/hook.sh
chmod +x /tmp/hook.sh
# wait_event EVENT N: until the hook has seen EVENT N times, for up to 10 s.
wait_event() {
    for i in $(seq 100); do
        [ "$(cat /tmp/events 2>/dev/null | grep -c "^$1\$")" -ge "$2" ] && return 0
        sleep 0.1
    done
    return 1
}
has_address() { ip -4 addr show eth0 | grep -q 'inet 10.0.2.15/24'; }
no_address() { ! ip -4 addr show eth0 | grep -q inet; }
udhcpc -f -i eth0 -s /tmp/hook.sh -O mtu -p /tmp/udhcpc.pid &
check bound wait_event bound 1
kill -USR1 "$(cat /tmp/udhcpc.pid)"
check renewed wait_event renew 1
check address-kept has_address
kill -USR2 "$(cat /tmp/udhcpc.pid)"
check released wait_event deconfig 2
check address-gone no_address
kill -USR1 "$(cat /tmp/udhcpc.pid)"
check bound-again wait_event bound 2
check address-back has_address
kill "$(cat /tmp/udhcpc.pid)"
cat /tmp/events
"""
)


async def test_bound_renewed_released_and_bound_again(
    guest_image: GuestImage, tmp_path: Path
) -> None:
    args = ["--listen", f"unix:{tmp_path}/vm.sock", "--dns-upstream", "127.0.0.1:9"]
    async with serving(args, tmp_path / "log") as server:
        run = await boot_async(guest_image, server.netdev(), SCRIPT, timeout=90)
    assert run.rc == 0, run.output
    assert checks(run.output) == dict.fromkeys(
        [
            "bound",
            "renewed",
            "address-kept",
            "released",
            "address-gone",
            "bound-again",
            "address-back",
        ],
        "ok",
    ), run.output
    # /init's lease, then this client's: bound, renewed, bound again; always the same address.
    leases = re.findall(r"^LEASE ip=(\S+) .*lease=86400$", run.output, re.MULTILINE)
    assert leases == ["10.0.2.15"] * 4, run.output
    server.assert_clean_exit()
