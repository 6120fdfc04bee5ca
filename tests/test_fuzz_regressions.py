"""Bugs the fuzz state machine found (``tests/fuzz/machine.py``), each reproduced alone.

Every test names the invariant that caught the bug; scapy builds and dissects the
frames, as in the other core tests.
"""

from __future__ import annotations

import pytest
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import IP

from tests.test_core_segment import BROADCAST, GUEST_MAC, new_segment, one_frame, udp_frame


def _discover(hostname: bytes) -> bytes:
    """A DISCOVER whose hostname is split into 255-byte instances (RFC 3396)."""
    instances = [("hostname", hostname[i : i + 255]) for i in range(0, len(hostname), 255)]
    message = BOOTP(chaddr=bytes.fromhex(GUEST_MAC.replace(":", ""))) / DHCP(
        options=[("message-type", "discover"), *instances, "end"]
    )
    return udp_frame("255.255.255.255", 67, message, sport=68, src_ip="0.0.0.0", dst=BROADCAST)


@pytest.mark.parametrize("mtu", [1500, 65520])
def test_dhcp_reply_never_outgrows_576_bytes_by_an_echoed_hostname(mtu: int) -> None:
    """Emitted frames within the MTU: a long hostname made the OFFER longer than the
    DISCOVER, past the MTU, and past 65535 bytes (a ``ValueError`` out of ``receive``)."""
    segment = new_segment(mtu=mtu)
    vm = segment.attach("guest")
    room = mtu - 20 - 8 - 240 - 3 - 1
    segment.receive(vm, _discover(b"h" * (room - 2 * -(-room // 257))), 0.0)
    reply = one_frame(vm)
    assert len(reply[IP]) <= 576
    assert [o for o in reply[DHCP].options if o[0] == "hostname"] == []
    segment.receive(vm, _discover(b"guest1"), 1.0)  # an ordinary one is still echoed
    assert ("hostname", b"guest1") in one_frame(vm)[DHCP].options
