"""The lease file (``shell/leasestore.py``) and one address per machine.

A record a new DHCP client took over is saved under that client's key and comes back
whole; a file written when a machine could hold a record per client (the same format)
comes back with one record per MAC, its newest.  The clients are ``test_core_dhcp``'s.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from slirpnet.core.leases import NOBODY
from slirpnet.core.segment import Segment
from slirpnet.shell.leasestore import LeaseStore
from slirpnet.wire.ethernet import parse_mac
from tests.test_core_dhcp import Client, mac
from tests.test_core_dhcp_identity import DUID, forwarded_to
from tests.test_core_segment import new_segment


def fields(segment: Segment) -> list[tuple[str, bytes, bytes, str | None, bool, float]]:
    return sorted(
        (str(r.address), r.mac, r.client, r.hostname, r.bound, round(r.expires))
        for r in segment.dhcp.leases()
    )


def test_a_record_taken_over_is_saved_and_restored_whole(tmp_path: Path) -> None:
    before = new_segment()
    initramfs = Client(before, mac(1), hostname="initramfs")
    assert initramfs.lease(0.0) == "10.0.2.15"
    networkd = Client(before, mac(1), client_id=DUID, hostname="web", vm=initramfs.vm)
    assert networkd.lease(5.0) == "10.0.2.15"
    assert Client(before, mac(2)).lease(6.0) == "10.0.2.16"
    path = tmp_path / "lab.leases.json"
    LeaseStore(path, before.dhcp).save(7.0)
    saved = json.loads(path.read_text())
    assert sorted((e["address"], e["client"]) for e in saved["leases"]) == [
        ("10.0.2.15", (b"id:" + DUID).hex()),
        ("10.0.2.16", (b"mac:" + parse_mac(mac(2))).hex()),
    ]

    after = new_segment()
    LeaseStore(path, after.dhcp).restore(7.0)
    assert fields(after) == fields(before)
    assert all(lease.owner == NOBODY for lease in after.dhcp.leases())  # till they return
    # Either client of the machine, on the VM come back, has its address again.
    vm = after.attach("back")
    assert Client(after, mac(1), vm=vm).lease(8.0) == "10.0.2.15"
    assert Client(after, mac(1), client_id=DUID, vm=vm).lease(9.0) == "10.0.2.15"
    assert len(after.dhcp.leases()) == 2


def test_a_file_with_two_records_for_one_mac_comes_back_as_the_newest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What a server that kept a record per client saved after dhclient, then networkd."""
    path = tmp_path / "lab.leases.json"

    def entry(address: str, client: bytes, expires: float) -> dict[str, object]:
        return {
            "client": client.hex(),
            "address": address,
            "mac": mac(1),
            "hostname": None,
            "bound": True,
            "expires": expires,
        }

    mac1 = parse_mac(mac(1))
    old = [entry("10.0.2.15", b"mac:" + mac1, 4e9), entry("10.0.2.16", b"id:" + DUID, 4e9 + 60)]
    path.write_text(json.dumps({"format": 1, "leases": old}))
    segment = new_segment()
    with caplog.at_level(logging.INFO):
        LeaseStore(path, segment.dhcp).restore(0.0)
    assert [(str(r.address), r.client) for r in segment.dhcp.leases()] == [
        ("10.0.2.16", b"id:" + DUID)
    ]
    (line,) = [r.getMessage() for r in caplog.records if "restored" in r.getMessage()]
    assert "1 leases restored" in line and "1 left out" in line
    # Forwards reach the newer address, whichever client of the machine renews next.
    vm = segment.attach("back")
    assert Client(segment, mac(1), vm=vm).lease(1.0) == "10.0.2.16"
    assert forwarded_to(segment, 2.0) == "10.0.2.16"
