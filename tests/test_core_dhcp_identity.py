"""Who a DHCP client is (``core/leases.py``): one address per machine, whatever client it runs.

A VM's DHCP client changes as it boots: ISC dhclient in an initramfs sends no client
identifier, then systemd-networkd or dhcpcd sends a DUID (RFC 4361, type 255).  Both
are the same machine, a MAC on one VM's port: it keeps one address, and forwards keep
finding it.  Another connected VM never takes that address, whatever it sends.  Frames
are scapy's, as in ``test_core_dhcp``.
"""

from __future__ import annotations

from collections import Counter
from ipaddress import IPv4Address
from typing import Any

from scapy.layers.dhcp import BOOTP
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Packet
from scapy.utils import mac2str

from slirpnet.core.leases import Lease
from slirpnet.core.segment import Segment
from slirpnet.core.settings import NetworkSettings, StaticLease
from slirpnet.core.vm import Vm
from slirpnet.wire.dhcp import MessageType
from slirpnet.wire.ethernet import parse_mac
from tests.test_core_dhcp import Client, assert_nak, kind, mac
from tests.test_core_forwards import PEER, SSH
from tests.test_core_segment import new_segment

# systemd-networkd's client identifier: type 255, an IAID, then a DUID-EN (RFC 4361 §6.1).
DUID = b"\xff" + bytes.fromhex("5d4e8f2a") + b"\x00\x02\x00\x00\xab\x11" + bytes(range(8))
MAC_ID = b"\x01" + parse_mac(mac(1))  # busybox udhcpc's: the hardware type and the MAC


class Spoofer(Client):
    """A client on another VM, sending from that VM's MAC with ``chaddr`` in its messages."""

    def __init__(self, segment: Segment, chaddr: str, vm: Vm, **client: Any) -> None:
        super().__init__(segment, mac(7), vm=vm, **client)
        self.chaddr = chaddr

    def bootp(self, **fields: Any) -> Packet:
        return super().bootp(**{**fields, "chaddr": mac2str(self.chaddr)})


def records(segment: Segment) -> list[tuple[str, bytes, bool]]:
    return sorted((str(r.address), r.client, r.bound) for r in segment.dhcp.leases())


def forwarded_to(segment: Segment, now: float) -> str:
    """Where a forward without a guest address opens its connection now."""
    flow = segment.forward_connection(SSH, PEER, now)
    assert flow is not None
    (syn,) = [Ether(f) for f in flow.vm.take_frames() if Ether(f).haslayer(TCP)]
    assert syn[IP].dst == str(flow.guest.address)
    return str(flow.guest.address)


# -- one machine, its clients one after another ------------------------------------------


def test_a_new_client_identifier_from_the_same_mac_and_vm_takes_the_lease_over() -> None:
    segment = new_segment()
    initramfs = Client(segment, mac(1))  # ISC dhclient: no client identifier
    assert initramfs.lease(0.0) == "10.0.2.15"
    assert forwarded_to(segment, 1.0) == "10.0.2.15"
    networkd = Client(segment, mac(1), client_id=DUID, vm=initramfs.vm)
    offer = networkd.discover(now=10.0)
    assert offer[BOOTP].yiaddr == "10.0.2.15"
    # Taken over as it is offered: one record, known by the new client's identifier now.
    assert records(segment) == [("10.0.2.15", b"id:" + DUID, True)]
    assert kind(networkd.select("10.0.2.15", now=10.0)) == MessageType.ACK
    assert records(segment) == [("10.0.2.15", b"id:" + DUID, True)]
    assert forwarded_to(segment, 11.0) == "10.0.2.15"
    # The next boot's initramfs client, and the one after, get it back in turn.
    assert initramfs.lease(20.0) == networkd.lease(30.0) == "10.0.2.15"
    assert len(segment.dhcp.leases()) == 1
    assert initramfs.vm.stats.drops == Counter()


def test_a_renewal_by_the_new_client_keeps_the_address() -> None:
    """networkd may skip DISCOVER: INIT-REBOOT and RENEWING by a client never seen."""
    segment = new_segment()
    assert Client(segment, mac(1)).lease(0.0) == "10.0.2.15"
    vm = segment.vms[0]
    rebooted = Client(segment, mac(1), client_id=DUID, vm=vm)
    assert kind(rebooted.request(1.0, requested="10.0.2.15")) == MessageType.ACK
    renewing = Client(segment, mac(1), client_id=MAC_ID, vm=vm)
    ack = renewing.request(2.0, ciaddr="10.0.2.15", unicast=True, broadcast=False)
    assert kind(ack) == MessageType.ACK
    assert records(segment) == [("10.0.2.15", b"id:" + MAC_ID, True)]


def test_a_new_client_asking_for_another_address_moves_the_machine_and_the_forward() -> None:
    segment = new_segment()
    assert Client(segment, mac(1)).lease(0.0) == "10.0.2.15"
    vm = segment.vms[0]
    moved = Client(segment, mac(1), client_id=DUID, vm=vm)
    assert kind(moved.request(1.0, requested="10.0.2.40")) == MessageType.ACK
    assert records(segment) == [("10.0.2.40", b"id:" + DUID, True)]
    assert forwarded_to(segment, 2.0) == "10.0.2.40"
    assert Client(segment, mac(2)).lease(3.0) == "10.0.2.15"  # free again


def test_a_vm_spraying_client_identifiers_from_one_mac_holds_one_address() -> None:
    segment = new_segment(max_leases=2)
    vm = segment.attach("sprayer")
    for n in range(20):
        assert Client(segment, mac(1), client_id=b"\x00%d" % n, vm=vm).lease(n) == "10.0.2.15"
    assert len(segment.dhcp.leases()) == 1
    assert vm.stats.drops == Counter()


def test_a_static_lease_stays_with_its_mac_whatever_the_client() -> None:
    static = StaticLease(parse_mac(mac(1)), IPv4Address("10.0.2.50"))
    segment = Segment(NetworkSettings(static_leases=(static,)))
    first = Client(segment, mac(1))
    assert first.lease(0.0) == "10.0.2.50"
    assert Client(segment, mac(1), client_id=DUID, vm=first.vm).lease(1.0) == "10.0.2.50"
    assert records(segment) == [("10.0.2.50", b"id:" + DUID, True)]


def test_a_vm_come_back_with_another_client_gets_its_address() -> None:
    """After a reconnect the record is nobody's: the machine's new client takes it."""
    segment = new_segment()
    first = Client(segment, mac(1), client_id=DUID)
    assert first.lease(0.0) == "10.0.2.15"
    segment.detach(first.vm)
    back = Client(segment, mac(1), vm=segment.attach("back"))  # the initramfs's, no id
    assert back.lease(1.0) == "10.0.2.15"
    assert Client(segment, mac(1), client_id=DUID, vm=back.vm).lease(2.0) == "10.0.2.15"
    assert len(segment.dhcp.leases()) == 1


def test_a_client_come_back_with_another_mac_gets_its_address() -> None:
    """RFC 2131 §4.2: the identifier names the client, whatever the MAC, once the VM
    that had it is gone; the new MAC's own earlier record goes as it binds."""
    segment = new_segment()
    first = Client(segment, mac(1), client_id=DUID)
    assert first.lease(0.0) == "10.0.2.15"
    segment.detach(first.vm)
    other = Client(segment, mac(9))
    assert other.lease(1.0) == "10.0.2.16"
    segment.detach(other.vm)
    vm = segment.attach("back")
    assert Client(segment, mac(9), client_id=DUID, vm=vm).lease(2.0) == "10.0.2.15"
    assert records(segment) == [("10.0.2.15", b"id:" + DUID, True)]
    assert forwarded_to(segment, 3.0) == "10.0.2.15"


def test_a_client_that_changes_its_mac_on_its_vm_keeps_its_address() -> None:
    """RFC 2131 §4.2: the identifier names the client, whatever the MAC (a guest that
    randomises its MAC, say): its record moves along."""
    segment = new_segment()
    first = Client(segment, mac(1), client_id=DUID)
    assert first.lease(0.0) == "10.0.2.15"
    assert Client(segment, mac(2), client_id=DUID, vm=first.vm).lease(1.0) == "10.0.2.15"
    assert [(str(r.address), r.mac) for r in segment.dhcp.leases()] == [
        ("10.0.2.15", parse_mac(mac(2)))
    ]


# -- another VM ---------------------------------------------------------------------------


def test_a_different_vm_with_the_same_client_identifier_does_not_take_it() -> None:
    """Clones of one image share a machine-id, hence networkd's DUID: each VM keeps its own
    address, the clone's client known by its MAC."""
    segment = new_segment()
    original = Client(segment, mac(1), client_id=DUID)
    assert original.lease(0.0) == "10.0.2.15"
    clone = Client(segment, mac(2), client_id=DUID)
    assert clone.discover(now=1.0)[BOOTP].yiaddr == "10.0.2.16"
    assert_nak(clone.request(1.0, requested="10.0.2.15"))
    assert clone.lease(2.0) == "10.0.2.16"
    renewal = original.request(3.0, ciaddr="10.0.2.15", unicast=True, broadcast=False)
    assert kind(renewal) == MessageType.ACK
    assert records(segment) == [
        ("10.0.2.15", b"id:" + DUID, True),
        ("10.0.2.16", b"mac:" + parse_mac(mac(2)), True),
    ]
    # The original leaves: the clone keeps its own address all the same.
    segment.detach(original.vm)
    renewal = clone.request(4.0, ciaddr="10.0.2.16", unicast=True, broadcast=False)
    assert kind(renewal) == MessageType.ACK
    assert clone.vm.stats.drops == Counter()


def test_a_different_vm_sending_the_same_mac_takes_nothing_over() -> None:
    segment = new_segment()
    owner = Client(segment, mac(1))
    assert owner.lease(0.0) == "10.0.2.15"
    other_vm = segment.attach("spoofer")
    # No identifier: the owner's very client, refused (no offer, a NAK to a REQUEST).
    bare = Spoofer(segment, mac(1), other_vm)
    assert bare.discover(now=1.0) is None
    assert_nak(bare.request(1.0, requested="10.0.2.15"))
    assert other_vm.stats.drops == Counter({"dhcp_client_in_use": 2})
    # A new client identifier with the owner's MAC: a client of its own, another address.
    assert Spoofer(segment, mac(1), other_vm, client_id=DUID).lease(2.0) == "10.0.2.16"
    assert owner.lease(3.0) == "10.0.2.15"
    assert forwarded_to(segment, 4.0) == "10.0.2.15"


# -- records saved by servers before one address per machine -----------------------------


def test_restored_records_of_one_mac_become_one_the_latest() -> None:
    mac1 = parse_mac(mac(1))
    dead = Lease(IPv4Address("10.0.2.15"), mac1, None, 1000.0, True, client=b"mac:" + mac1)
    live = Lease(IPv4Address("10.0.2.16"), mac1, "vm", 2000.0, True, client=b"id:" + DUID)
    segment = new_segment()
    assert segment.dhcp.restore([dead, live], 0.0) == [dead]
    assert records(segment) == [("10.0.2.16", b"id:" + DUID, True)]
    vm = segment.attach("back")
    assert Client(segment, mac(1), vm=vm).lease(1.0) == "10.0.2.16"
    assert forwarded_to(segment, 2.0) == "10.0.2.16"
