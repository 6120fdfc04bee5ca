"""The atheris harness's driver (``tests/fuzz/records.py``), run without atheris.

Its seeds replay, and hypothesis feeds it record streams, so the driver and its
checks stay working for the coverage-guided runs made by hand.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from slirpnet.core.flows import TcpFlow
from slirpnet.core.fragments import MAX_DATAGRAMS
from tests.fuzz import records


def test_seeds_replay() -> None:
    for seed in list(records.seeds())[::10]:  # a sample of every network's corpus
        records.run(seed)


def test_handshakes_take_data_to_the_host() -> None:
    sent = []
    for seed in records.handshakes():
        ns = records.drive(seed)
        assert ns is not None
        sent.append([s.sent for s in ns.host.sockets.values() if isinstance(s.flow, TcpFlow)])
    # Over IPv4, then IPv6; the third network is restricted.
    assert sent == [[1460], [536], [1460], [536], [], []]


def test_rogue_seeds_reach_no_other_vm() -> None:
    """What only routers and DHCPv6 servers send is kept from the other VMs (``drive``
    checks every frame a VM gets from another) and counted as RA guard's drop."""
    for seed in records.rogues():
        ns = records.drive(seed)
        assert ns is not None
        drops = ns.segment.totals().drops
        assert drops["ra_guard"] + drops["ra_guard_unparsable"] == 1, drops


def test_fragment_seeds_show_what_they_are_named_for() -> None:
    outcomes = {}
    for name, seed in records.fragments().items():
        ns = records.drive(seed)
        assert ns is not None
        totals = ns.segment.totals()
        drops = {k: v for k, v in totals.drops.items() if k.startswith("ipv4_frag")}
        outcomes[name] = (drops, totals.events["ipv4_reassembled"], ns.reassembled)
    assert outcomes == {
        "overlap": ({"ipv4_frag_overlap": 3}, 0, 0),
        "hole": ({"ipv4_frag_timeout": 1}, 0, 0),
        "flood": ({"ipv4_frag_limit": MAX_DATAGRAMS, "ipv4_frag_timeout": MAX_DATAGRAMS}, 0, 0),
        "ping": ({}, 1, 1),  # the guest's request put together, our reply cut up
    }


@settings(max_examples=150)
@given(
    st.integers(0, 255),
    st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=120)), max_size=12),
)
def test_record_streams(network: int, parts: list[tuple[int, bytes]]) -> None:
    records.run(bytes((network,)) + b"".join(records.record(k, b) for k, b in parts))
