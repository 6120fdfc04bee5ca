"""Bugs the fuzz state machine found (``tests/fuzz/machine.py``), each reproduced alone.

Every test names the invariant that caught the bug; scapy builds and dissects the
frames, as in the other core tests.
"""

from __future__ import annotations

from collections import Counter

import pytest
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.dns import DNS, DNSQR, DNSRROPT
from scapy.layers.inet import IP, UDP

from slirpnet.core.tcp import IDLE_TIMEOUT, State
from slirpnet.wire.tcp import RST
from tests.test_core_dns import ask, forwarded, query
from tests.test_core_segment import (
    BROADCAST,
    GUEST_MAC,
    UPSTREAM_1,
    Shell,
    closes,
    new_segment,
    one_frame,
    udp_frame,
)
from tests.test_tcp_endpoint import established, out


def _discover(hostname: bytes) -> bytes:
    """A DISCOVER whose hostname is split into 255-byte instances (RFC 3396)."""
    instances = [("hostname", hostname[i : i + 255]) for i in range(0, len(hostname), 255)]
    message = BOOTP(chaddr=bytes.fromhex(GUEST_MAC.replace(":", ""))) / DHCP(
        options=[("message-type", "discover"), *instances, "end"]
    )
    return udp_frame("255.255.255.255", 67, message, sport=68, src_ip="0.0.0.0", dst=BROADCAST)


@pytest.mark.parametrize("mtu", [1500, 65520])
def test_dhcp_reply_never_outgrows_576_bytes_by_a_hostname(mtu: int) -> None:
    """Emitted frames within the MTU: a long hostname made the OFFER longer than the
    DISCOVER, past the MTU, and past 65535 bytes (a ``ValueError`` out of ``receive``).
    The client's name is no longer echoed at all; the operator's is held to 576 bytes."""
    segment = new_segment(mtu=mtu, dhcp_hostname="h" * 300)
    vm = segment.attach("guest")
    room = mtu - 20 - 8 - 240 - 3 - 1
    segment.receive(vm, _discover(b"h" * (room - 2 * -(-room // 257))), 0.0)
    reply = one_frame(vm)
    assert len(reply[IP]) <= 576
    assert [o for o in reply[DHCP].options if o[0] == "hostname"] == []
    segment = new_segment(mtu=mtu, dhcp_hostname="vm1")  # an ordinary one is sent
    vm = segment.attach("guest")
    segment.receive(vm, _discover(b"guest1"), 1.0)
    assert [o for o in one_frame(vm)[DHCP].options if o[0] == "hostname"] == [("hostname", b"vm1")]


def test_upstream_answer_too_long_for_the_mtu_becomes_truncated() -> None:
    """Emitted frames within the MTU: an upstream's answer of any size was relayed.
    The guest now gets TC and asks again over TCP, as after any truncated answer."""
    segment = new_segment(mtu=1500, dns_upstreams=(UPSTREAM_1,))
    vm = segment.attach("guest")
    shell = Shell(segment)
    sent = query(ident=9)
    ask(segment, vm, sent)
    flow = forwarded(shell, sent, UPSTREAM_1)
    segment.flow_received(flow, sent[:2] + bytes(1471), 0.1)  # 1501 bytes with IP and UDP
    reply = one_frame(vm)
    assert len(reply[IP]) <= 1500
    answer = reply[DNS]
    assert (answer.id, answer.qr, answer.tc, answer.rcode, answer.ancount) == (9, 1, 1, 0, 0)
    assert bytes(answer.qd[0]) == bytes(DNS(sent).qd[0])
    assert closes(shell.actions()) == [flow]
    assert vm.stats.drops == Counter()


def test_upstream_answer_that_fits_is_relayed_unchanged() -> None:
    segment = new_segment(mtu=1500, dns_upstreams=(UPSTREAM_1,))
    vm = segment.attach("guest")
    shell = Shell(segment)
    # EDNS lets the answer be larger than 512 octets (RFC 6891 §6.2.5); the MTU is the limit.
    sent = bytes(DNS(id=9, rd=1, qd=DNSQR(qname="example.com"), ar=DNSRROPT(rclass=4096)))
    ask(segment, vm, sent)
    flow = forwarded(shell, sent, UPSTREAM_1)
    answer = (bytes(DNS(id=9, qr=1, qd=DNSQR(qname="example.com"))) + bytes(1500))[:1472]
    segment.flow_received(flow, answer, 0.1)
    assert bytes(one_frame(vm)[UDP].payload) == answer


def test_idle_timer_moves_past_now_whatever_the_rounding() -> None:
    """The timer always moves forward: at 1000.3 + 7200, ``now - last < limit`` held in
    floating point while ``last + limit <= now``, so the endpoint kept asking for its
    timer at ``now``, and a shell on a mock clock called it at ``now`` for ever."""
    ep = established(now=1000.3)
    due = ep.deadline()
    assert due == 1000.3 + IDLE_TIMEOUT
    ep.handle_timer(due)
    assert ep.state is State.CLOSED
    assert [s.flags & RST for s in out(ep)] == [RST]
