"""The DHCP server (RFC 2131, options per RFC 2132) driven through the core ``Segment``.

Clients are scapy frames as a real guest sends them; replies are dissected by
scapy, an oracle independent of our codec.  Time is a plain float ``now``.
"""

from __future__ import annotations

from collections import Counter
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.dns import dns_get_str
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw
from scapy.utils import mac2str

from slirpnet.core.dhcp import DECLINE_HOLD, OFFER_HOLD
from slirpnet.core.segment import Segment
from slirpnet.core.settings import NetworkSettings, StaticLease
from slirpnet.core.vm import Vm
from slirpnet.wire.dhcp import MessageType, decode_names
from slirpnet.wire.ethernet import parse_mac

GATEWAY = "10.0.2.2"
DNS = "10.0.2.3"
GATEWAY_MAC = "52:55:0a:00:02:02"  # libslirp's 52:55 then the gateway's address
BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"
LIMITED_BROADCAST = "255.255.255.255"
OTHER_SERVER = "10.0.2.99"
COOKIE = bytes((99, 130, 83, 99))

SETTINGS = NetworkSettings(domain="example.test", search=("example.test", "corp.example.test"))
LEASE_TIME = SETTINGS.lease_time
# A pool of two: .13 and .14 (.15 is the broadcast address).
TINY = NetworkSettings(
    network=IPv4Network("10.0.2.0/28"),
    gateway=IPv4Address(GATEWAY),
    dns=IPv4Address(DNS),
    dhcp_start=IPv4Address("10.0.2.13"),
)


def mac(n: int) -> str:
    return f"52:54:00:00:00:{n:02x}"


def options(reply: Packet) -> dict[Any, Any]:
    """The reply's DHCP options as scapy names them, End and Pad left out."""
    return {option[0]: option[1] for option in reply[DHCP].options if isinstance(option, tuple)}


def kind(reply: Packet | None) -> MessageType | None:
    return None if reply is None else MessageType(options(reply)["message-type"])


def destination(reply: Packet) -> tuple[str, str]:
    return reply[Ether].dst, reply[IP].dst


def check_from_gateway(reply: Packet) -> None:
    """Every reply: from the gateway's MAC and address, port 67 to 68, good checksums."""
    assert reply[Ether].src == GATEWAY_MAC
    assert reply[IP].src == GATEWAY
    assert (reply[UDP].sport, reply[UDP].dport) == (67, 68)
    assert reply[BOOTP].op == 2
    fresh = reply.copy()
    del fresh[IP].chksum
    del fresh[UDP].chksum
    fresh = Ether(bytes(fresh))
    assert (fresh[IP].chksum, fresh[UDP].chksum) == (reply[IP].chksum, reply[UDP].chksum)


class Client:
    """One guest NIC: builds its DHCP messages with scapy and dissects the gateway's reply."""

    def __init__(
        self,
        segment: Segment,
        mac: str,
        *,
        client_id: bytes | None = None,
        hostname: str | None = None,
        vm: Vm | None = None,
    ) -> None:
        self.segment = segment
        self.mac = mac
        self.vm = segment.attach(mac) if vm is None else vm
        self.client_id = client_id
        self.hostname = hostname
        self.xid = int(mac.replace(":", "")[-8:], 16)

    # -- messages --------------------------------------------------------------------

    def discover(
        self, now: float = 0.0, *, requested: str | None = None, broadcast: bool = True
    ) -> Packet | None:
        extra = [] if requested is None else [("requested_addr", requested)]
        return self.send("discover", now, broadcast=broadcast, options=extra)

    def request(
        self,
        now: float = 0.0,
        *,
        requested: str | None = None,
        server_id: str | None = None,
        ciaddr: str = "0.0.0.0",
        broadcast: bool = True,
        unicast: bool = False,
    ) -> Packet | None:
        extra = [] if requested is None else [("requested_addr", requested)]
        extra += [] if server_id is None else [("server_id", server_id)]
        return self.send(
            "request", now, ciaddr=ciaddr, broadcast=broadcast, unicast=unicast, options=extra
        )

    def select(self, address: str, now: float = 0.0, server_id: str = GATEWAY) -> Packet | None:
        """REQUEST in SELECTING: the offer of ``server_id`` taken."""
        return self.request(now, requested=address, server_id=server_id)

    def lease(self, now: float = 0.0) -> str:
        """DISCOVER, OFFER, REQUEST, ACK: the address now bound."""
        offer = self.discover(now)
        assert kind(offer) == MessageType.OFFER
        address = offer[BOOTP].yiaddr
        assert kind(self.select(address, now)) == MessageType.ACK
        return address

    def release(self, address: str, now: float) -> Packet | None:
        return self.send(
            "release",
            now,
            ciaddr=address,
            broadcast=False,
            unicast=True,
            options=[("server_id", GATEWAY)],
        )

    def decline(self, address: str, now: float) -> Packet | None:
        return self.send(
            "decline", now, options=[("requested_addr", address), ("server_id", GATEWAY)]
        )

    def inform(self, address: str, now: float = 0.0) -> Packet | None:
        return self.send("inform", now, ciaddr=address, broadcast=False, unicast=True)

    # -- frames ----------------------------------------------------------------------

    def send(
        self,
        message_type: str,
        now: float,
        *,
        ciaddr: str = "0.0.0.0",
        broadcast: bool = True,
        unicast: bool = False,
        options: list[tuple[str, Any]] | None = None,
    ) -> Packet | None:
        dhcp_options: list[Any] = [("message-type", message_type), *(options or [])]
        if self.client_id is not None:
            dhcp_options.append(("client_id", self.client_id))
        if self.hostname is not None:
            dhcp_options.append(("hostname", self.hostname.encode()))
        bootp = self.bootp(flags=0x8000 if broadcast else 0, ciaddr=ciaddr)
        return self.send_bootp(
            bootp / DHCP(options=[*dhcp_options, "end"]),
            now,
            unicast_from=ciaddr if unicast else None,
        )

    def bootp(self, **fields: Any) -> Packet:
        return BOOTP(**{"op": 1, "xid": self.xid, "chaddr": mac2str(self.mac), **fields})

    def send_bootp(
        self, payload: Packet | bytes, now: float, *, unicast_from: str | None = None
    ) -> Packet | None:
        """One UDP 68 -> 67 datagram, broadcast or unicast to the gateway; the reply or None."""
        if unicast_from is None:
            frame = Ether(src=self.mac, dst=BROADCAST_MAC) / IP(
                src="0.0.0.0", dst=LIMITED_BROADCAST
            )
        else:
            frame = Ether(src=self.mac, dst=GATEWAY_MAC) / IP(src=unicast_from, dst=GATEWAY)
        frame = frame / UDP(sport=68, dport=67) / payload
        self.segment.receive(self.vm, bytes(frame), now)
        gateway_mac = parse_mac(GATEWAY_MAC)
        # Other guests' broadcasts are flooded to this port too: keep the gateway's.
        replies = [Ether(f) for f in self.vm.take_frames() if f[6:12] == gateway_mac]
        assert len(replies) <= 1
        if not replies:
            return None
        check_from_gateway(replies[0])
        return replies[0]


def leases(segment: Segment) -> set[tuple[str, bool, float]]:
    return {(str(lease.address), lease.bound, lease.expires) for lease in segment.dhcp.leases()}


def assert_nak(reply: Packet | None) -> None:
    """RFC 2131 §4.3.2 and table 3: broadcast, no address, no lease."""
    assert reply is not None
    assert kind(reply) == MessageType.NAK
    assert destination(reply) == (BROADCAST_MAC, LIMITED_BROADCAST)
    assert (reply[BOOTP].yiaddr, reply[BOOTP].ciaddr) == ("0.0.0.0", "0.0.0.0")
    assert options(reply) == {"message-type": MessageType.NAK, "server_id": GATEWAY}


def scapy_names(data: bytes) -> tuple[str, ...]:
    names, rest = [], data
    while rest:
        name, rest = dns_get_str(rest, full=data)
        names.append(name.decode())
    return tuple(names)


@pytest.fixture
def segment() -> Segment:
    return Segment(SETTINGS)


@pytest.fixture
def tiny() -> Segment:
    return Segment(TINY)


# -- DISCOVER -> OFFER -----------------------------------------------------------------


def test_offer_carries_the_first_address_and_every_option(segment: Segment) -> None:
    client = Client(segment, mac(1), hostname="guest1")
    offer = client.discover()
    assert offer is not None
    bootp = offer[BOOTP]
    assert (bootp.xid, bootp.chaddr[:6]) == (client.xid, mac2str(client.mac))
    assert (bootp.yiaddr, bootp.ciaddr, bootp.siaddr, bootp.giaddr) == (
        "10.0.2.15",
        "0.0.0.0",
        "0.0.0.0",
        "0.0.0.0",
    )
    found = options(offer)
    search = found.pop(119)
    assert found == {
        "message-type": MessageType.OFFER,
        "server_id": GATEWAY,
        "subnet_mask": "255.255.255.0",
        "router": GATEWAY,
        "name_server": DNS,
        "interface-mtu": 65520,
        "lease_time": LEASE_TIME,
        "renewal_time": LEASE_TIME // 2,
        "rebinding_time": LEASE_TIME * 7 // 8,
        "domain": b"example.test",
    }  # and no host name: the client's own is never echoed (option 12 below)
    assert scapy_names(search) == decode_names(search) == ("example.test.", "corp.example.test.")
    assert offer[DHCP].options[-1] == "end"
    assert client.vm.stats.drops == Counter()
    assert client.vm.stats.events == Counter()


def test_offer_leaves_out_what_is_not_configured_or_sent() -> None:
    segment = Segment(NetworkSettings(mtu=1500, lease_time=3600))
    offer = Client(segment, mac(1)).discover()
    assert offer is not None
    assert options(offer) == {
        "message-type": MessageType.OFFER,
        "server_id": GATEWAY,
        "subnet_mask": "255.255.255.0",
        "router": GATEWAY,
        "name_server": DNS,
        "interface-mtu": 1500,
        "lease_time": 3600,
        "renewal_time": 1800,
        "rebinding_time": 3150,
    }


@pytest.mark.parametrize(
    ("broadcast", "expected"),
    [(True, (BROADCAST_MAC, LIMITED_BROADCAST)), (False, (mac(1), "10.0.2.15"))],
    ids=["broadcast-flag", "unicast-to-yiaddr"],
)
def test_offer_and_ack_addressing(
    segment: Segment, broadcast: bool, expected: tuple[str, str]
) -> None:
    """RFC 2131 §4.1: broadcast when asked, otherwise to yiaddr at chaddr."""
    client = Client(segment, mac(1))
    offer = client.discover(broadcast=broadcast)
    assert offer is not None
    assert destination(offer) == expected
    assert offer[BOOTP].flags == (0x8000 if broadcast else 0)
    ack = client.request(requested="10.0.2.15", server_id=GATEWAY, broadcast=broadcast)
    assert kind(ack) == MessageType.ACK
    assert destination(ack) == expected


def test_discover_asking_for_a_free_address_gets_it(segment: Segment) -> None:
    offer = Client(segment, mac(1)).discover(requested="10.0.2.77")
    assert offer is not None
    assert offer[BOOTP].yiaddr == "10.0.2.77"


def test_discover_asking_for_a_reserved_address_gets_a_pool_one(segment: Segment) -> None:
    offer = Client(segment, mac(1)).discover(requested=GATEWAY)
    assert offer is not None
    assert offer[BOOTP].yiaddr == "10.0.2.15"


# -- option 12: the host name the operator gives ----------------------------------------


def hostnames(replies: list[Packet | None]) -> list[bytes | None]:
    return [None if r is None else options(r).get("hostname") for r in replies]


def test_no_host_name_unless_configured(segment: Segment) -> None:
    """libslirp sends option 12 only with ``hostname=``: the client's own is not echoed
    (systemd-networkd would take it as the name to set)."""
    client = Client(segment, mac(1), hostname="initramfs")
    offer = client.discover()
    ack = client.select("10.0.2.15", now=1.0)
    assert hostnames([offer, ack, client.inform("10.0.2.15", now=2.0)]) == [None, None, None]


def test_the_configured_host_name_goes_to_every_guest() -> None:
    segment = Segment(NetworkSettings(dhcp_hostname="guest.example.test"))
    a = Client(segment, mac(1), hostname="other")
    b = Client(segment, mac(2))
    replies = [a.discover(), a.select("10.0.2.15", now=1.0), a.inform("10.0.2.15", now=2.0)]
    replies.append(b.discover())
    assert hostnames(replies) == [b"guest.example.test"] * 4


def test_a_host_name_by_mac_wins_over_the_one_for_all() -> None:
    settings = NetworkSettings(
        dhcp_hostname="guest",
        dhcp_hostnames=((parse_mac(mac(1)), "web"), (parse_mac(mac(3)), "db")),
    )
    segment = Segment(settings)
    web, other = Client(segment, mac(1)), Client(segment, mac(2))
    assert hostnames([web.discover(), other.discover()]) == [b"web", b"guest"]
    assert hostnames([web.select("10.0.2.15", now=1.0)]) == [b"web"]
    # By MAC alone: no name for the others when none is given for all.
    alone = Segment(NetworkSettings(dhcp_hostnames=settings.dhcp_hostnames))
    assert hostnames([Client(alone, mac(3)).discover(), Client(alone, mac(2)).discover()]) == [
        b"db",
        None,
    ]


# -- REQUEST in every state ------------------------------------------------------------


def test_selecting_our_offer_is_acked_and_bound(segment: Segment) -> None:
    client = Client(segment, mac(1), hostname="guest1")
    assert client.discover(now=5.0) is not None
    assert leases(segment) == {("10.0.2.15", False, 5.0 + OFFER_HOLD)}
    ack = client.select("10.0.2.15", now=6.0)
    assert ack is not None
    assert kind(ack) == MessageType.ACK
    assert (ack[BOOTP].yiaddr, ack[BOOTP].ciaddr) == ("10.0.2.15", "0.0.0.0")
    found = options(ack)
    assert found["server_id"] == GATEWAY
    assert found["lease_time"] == LEASE_TIME
    assert "hostname" not in found  # kept for the operator to see, not echoed
    assert leases(segment) == {("10.0.2.15", True, 6.0 + LEASE_TIME)}
    assert segment.dhcp.leases()[0].hostname == "guest1"
    assert client.vm.stats.drops == Counter()
    assert client.vm.stats.events == Counter()


def test_selecting_another_server_gets_no_reply_and_releases_the_offer(tiny: Segment) -> None:
    a, b, c = Client(tiny, mac(1)), Client(tiny, mac(2)), Client(tiny, mac(3))
    assert a.discover()[BOOTP].yiaddr == "10.0.2.13"
    assert b.discover()[BOOTP].yiaddr == "10.0.2.14"
    assert a.select("10.0.2.13", now=1.0, server_id=OTHER_SERVER) is None
    # Well within OFFER_HOLD, yet .13 is free again.
    offer = c.discover(now=2.0)
    assert offer is not None
    assert offer[BOOTP].yiaddr == "10.0.2.13"
    for client in (a, b, c):
        assert client.vm.stats.drops == Counter()
        assert client.vm.stats.events == Counter()


def test_selecting_an_address_held_by_another_is_naked(segment: Segment) -> None:
    a, b = Client(segment, mac(1)), Client(segment, mac(2))
    assert a.discover()[BOOTP].yiaddr == "10.0.2.15"
    assert b.discover()[BOOTP].yiaddr == "10.0.2.16"
    assert_nak(a.select("10.0.2.16", now=1.0))
    assert a.vm.stats.events == Counter({"dhcp_nak": 1})
    assert a.vm.stats.drops == Counter()
    # b's offer is untouched.
    assert kind(b.select("10.0.2.16", now=1.0)) == MessageType.ACK


def test_init_reboot_with_a_free_address_is_acked(segment: Segment) -> None:
    """A guest that remembers its lease from before the server started keeps it."""
    client = Client(segment, mac(1))
    ack = client.request(now=3.0, requested="10.0.2.40")
    assert ack is not None
    assert kind(ack) == MessageType.ACK
    assert ack[BOOTP].yiaddr == "10.0.2.40"
    assert destination(ack) == (BROADCAST_MAC, LIMITED_BROADCAST)
    assert options(ack)["lease_time"] == LEASE_TIME
    assert leases(segment) == {("10.0.2.40", True, 3.0 + LEASE_TIME)}


@pytest.mark.parametrize(
    "address",
    [
        "192.168.1.50",  # another network
        GATEWAY,
        DNS,
        "10.0.2.0",  # network address
        "10.0.2.255",  # broadcast address
        "10.0.2.10",  # ours, but below the pool
    ],
)
def test_init_reboot_with_a_wrong_address_is_naked(segment: Segment, address: str) -> None:
    client = Client(segment, mac(1))
    # Not asking for broadcast: a NAK is broadcast anyway (RFC 2131 §4.1).
    assert_nak(client.request(requested=address, broadcast=False))
    assert client.vm.stats.events == Counter({"dhcp_nak": 1})
    assert client.vm.stats.drops == Counter()
    assert leases(segment) == set()


def test_init_reboot_with_a_taken_address_is_naked(segment: Segment) -> None:
    a, b = Client(segment, mac(1)), Client(segment, mac(2))
    address = a.lease()
    assert_nak(b.request(now=1.0, requested=address))
    assert b.vm.stats.events == Counter({"dhcp_nak": 1})
    assert a.vm.stats.events == Counter()


def test_request_without_any_address_is_naked(segment: Segment) -> None:
    client = Client(segment, mac(1))
    assert_nak(client.request())
    assert_nak(client.request(server_id=GATEWAY))  # SELECTING with no requested address
    assert client.vm.stats.events == Counter({"dhcp_nak": 2})


def test_renewing_is_unicast_and_extends_the_lease(segment: Segment) -> None:
    client = Client(segment, mac(1))
    address = client.lease(now=0.0)
    t1 = LEASE_TIME / 2
    ack = client.request(now=t1, ciaddr=address, broadcast=False, unicast=True)
    assert ack is not None
    assert kind(ack) == MessageType.ACK
    assert (ack[BOOTP].ciaddr, ack[BOOTP].yiaddr) == (address, address)
    assert destination(ack) == (mac(1), address)  # RFC 2131 §4.1: to ciaddr
    assert options(ack)["lease_time"] == LEASE_TIME
    assert leases(segment) == {(address, True, t1 + LEASE_TIME)}
    assert client.vm.stats.drops == Counter()


def test_renewed_lease_outlives_its_first_term(tiny: Segment) -> None:
    a, b = Client(tiny, mac(1)), Client(tiny, mac(2))
    address = a.lease(now=0.0)
    assert kind(a.request(now=100.0, ciaddr=address, unicast=True)) == MessageType.ACK
    b.lease(now=0.0)
    late = Client(tiny, mac(3))
    # At the first term's end b's lease is over, a's is not.
    offer = late.discover(now=LEASE_TIME)
    assert offer is not None
    assert offer[BOOTP].yiaddr == "10.0.2.14"


def test_rebinding_is_broadcast_and_acked_to_ciaddr(segment: Segment) -> None:
    client = Client(segment, mac(1))
    address = client.lease(now=0.0)
    t2 = LEASE_TIME * 7 / 8
    # Even with the broadcast flag set, a client with ciaddr gets unicast (§4.1).
    ack = client.request(now=t2, ciaddr=address, broadcast=True)
    assert ack is not None
    assert kind(ack) == MessageType.ACK
    assert (ack[BOOTP].ciaddr, ack[BOOTP].yiaddr) == (address, address)
    assert destination(ack) == (mac(1), address)
    assert leases(segment) == {(address, True, t2 + LEASE_TIME)}


def test_renewing_an_address_given_to_another_is_naked(tiny: Segment) -> None:
    a, b, c = Client(tiny, mac(1)), Client(tiny, mac(2)), Client(tiny, mac(3))
    address = a.lease(now=0.0)
    b.lease(now=10.0)
    assert c.lease(now=LEASE_TIME) == address  # a's lease ran out and c took it
    assert_nak(a.request(now=LEASE_TIME + 1, ciaddr=address, unicast=True))
    assert a.vm.stats.events == Counter({"dhcp_nak": 1})


# -- RELEASE, DECLINE, INFORM ----------------------------------------------------------


def test_release_then_discover_gets_the_same_address(segment: Segment) -> None:
    a, b = Client(segment, mac(1)), Client(segment, mac(2))
    address = a.lease(now=0.0)
    b.lease(now=0.0)
    assert a.release(address, now=10.0) is None
    assert leases(segment) == {(address, False, 10.0), ("10.0.2.16", True, LEASE_TIME)}
    offer = a.discover(now=20.0)
    assert offer is not None
    assert offer[BOOTP].yiaddr == address
    assert a.vm.stats.drops == Counter()


def test_released_address_is_free_for_others(tiny: Segment) -> None:
    a, b, c = Client(tiny, mac(1)), Client(tiny, mac(2)), Client(tiny, mac(3))
    address = a.lease()
    b.lease()
    assert c.discover(now=1.0) is None
    a.release(address, now=2.0)
    offer = c.discover(now=3.0)
    assert offer is not None
    assert offer[BOOTP].yiaddr == address


def test_release_of_an_address_not_ours_changes_nothing(segment: Segment) -> None:
    a, b = Client(segment, mac(1)), Client(segment, mac(2))
    address = a.lease()
    assert b.release(address, now=1.0) is None
    assert leases(segment) == {(address, True, LEASE_TIME)}


def test_declined_address_leaves_the_pool_for_decline_hold(segment: Segment) -> None:
    a, b, c = Client(segment, mac(1)), Client(segment, mac(2)), Client(segment, mac(3))
    declined = a.lease(now=0.0)
    assert declined == "10.0.2.15"
    assert a.decline(declined, now=1.0) is None
    assert leases(segment) == set()
    assert b.discover(now=2.0)[BOOTP].yiaddr == "10.0.2.16"
    assert a.discover(now=2.0)[BOOTP].yiaddr == "10.0.2.17"
    assert_nak(c.request(now=3.0, requested=declined))
    # After DECLINE_HOLD it is as good as new.
    assert c.discover(now=1.0 + DECLINE_HOLD)[BOOTP].yiaddr == declined
    for client in (a, b, c):
        assert client.vm.stats.drops == Counter()


def test_declined_address_does_not_count_toward_the_pool(tiny: Segment) -> None:
    a, b, c = Client(tiny, mac(1)), Client(tiny, mac(2)), Client(tiny, mac(3))
    declined = a.lease(now=0.0)
    a.decline(declined, now=1.0)
    assert b.discover(now=2.0)[BOOTP].yiaddr == "10.0.2.14"
    assert c.discover(now=2.0) is None
    assert c.vm.stats.drops == Counter({"dhcp_pool_exhausted": 1})


def test_inform_gets_options_without_a_lease(segment: Segment) -> None:
    client = Client(segment, mac(1), hostname="guest1")
    ack = client.inform("10.0.2.40", now=1.0)
    assert ack is not None
    bootp = ack[BOOTP]
    assert (bootp.ciaddr, bootp.yiaddr) == ("10.0.2.40", "0.0.0.0")
    assert destination(ack) == (mac(1), "10.0.2.40")
    found = options(ack)
    assert decode_names(found.pop(119)) == ("example.test.", "corp.example.test.")
    # RFC 2131 §4.3.5: no lease time (nor T1, T2).
    assert found == {
        "message-type": MessageType.ACK,
        "server_id": GATEWAY,
        "subnet_mask": "255.255.255.0",
        "router": GATEWAY,
        "name_server": DNS,
        "interface-mtu": 65520,
        "domain": b"example.test",
    }
    assert leases(segment) == set()
    assert client.vm.stats.drops == Counter()


def test_inform_without_ciaddr_is_dropped(segment: Segment) -> None:
    client = Client(segment, mac(1))
    assert client.send("inform", 0.0) is None
    assert client.vm.stats.drops == Counter({"dhcp_inform_without_ciaddr": 1})


# -- clients and their leases ----------------------------------------------------------


def test_two_clients_get_distinct_addresses(segment: Segment) -> None:
    a, b = Client(segment, mac(1)), Client(segment, mac(2))
    assert (a.lease(), b.lease()) == ("10.0.2.15", "10.0.2.16")
    assert segment.dhcp.mac_of(IPv4Address("10.0.2.16")) == parse_mac(mac(2))


def test_reconnecting_vm_gets_its_old_address(segment: Segment) -> None:
    first = Client(segment, mac(1))
    address = first.lease(now=0.0)
    segment.detach(first.vm)
    assert Client(segment, mac(2)).lease(now=1.0) == "10.0.2.16"
    again = Client(segment, mac(1), vm=segment.attach("again"))
    assert again.vm is not first.vm
    offer = again.discover(now=2.0)
    assert offer is not None
    assert offer[BOOTP].yiaddr == address
    assert kind(again.select(address, now=2.0)) == MessageType.ACK


def test_static_lease_is_honoured_and_never_given_to_others() -> None:
    owner_mac = mac(9)
    settings = NetworkSettings(
        static_leases=(
            StaticLease(parse_mac(owner_mac), IPv4Address("10.0.2.15")),  # inside the pool
            StaticLease(parse_mac(mac(8)), IPv4Address("10.0.2.5")),  # outside it
        )
    )
    segment = Segment(settings)
    other = Client(segment, mac(1))
    assert other.discover(requested="10.0.2.15")[BOOTP].yiaddr == "10.0.2.16"
    assert_nak(other.request(now=1.0, requested="10.0.2.15"))
    assert_nak(other.request(now=1.0, requested="10.0.2.5"))
    assert Client(segment, owner_mac).lease(now=2.0) == "10.0.2.15"
    assert Client(segment, mac(8)).lease(now=2.0) == "10.0.2.5"


def test_static_client_is_refused_any_other_address() -> None:
    """A guest that remembers a pool address from before its static lease is moved."""
    owner_mac = mac(9)
    segment = Segment(
        NetworkSettings(
            static_leases=(StaticLease(parse_mac(owner_mac), IPv4Address("10.0.2.50")),)
        )
    )
    owner = Client(segment, owner_mac)
    assert_nak(owner.request(requested="10.0.2.15"))  # INIT-REBOOT
    assert_nak(owner.request(now=1.0, ciaddr="10.0.2.15", unicast=True))  # RENEWING
    assert owner.lease(now=2.0) == "10.0.2.50"
    assert owner.vm.stats.events == Counter({"dhcp_nak": 2})


def test_static_address_is_kept_even_when_the_pool_is_full() -> None:
    settings = NetworkSettings(
        network=TINY.network,
        gateway=TINY.gateway,
        dns=TINY.dns,
        dhcp_start=TINY.dhcp_start,
        static_leases=(StaticLease(parse_mac(mac(9)), IPv4Address("10.0.2.13")),),
    )
    segment = Segment(settings)
    assert Client(segment, mac(1)).lease() == "10.0.2.14"
    late = Client(segment, mac(2))
    assert late.discover(now=1.0) is None
    assert late.vm.stats.drops == Counter({"dhcp_pool_exhausted": 1})


def test_offer_expires_after_offer_hold(tiny: Segment) -> None:
    a, b, c = Client(tiny, mac(1)), Client(tiny, mac(2)), Client(tiny, mac(3))
    assert a.discover(now=0.0)[BOOTP].yiaddr == "10.0.2.13"
    assert b.discover(now=1.0)[BOOTP].yiaddr == "10.0.2.14"
    assert c.discover(now=OFFER_HOLD - 1) is None
    offer = c.discover(now=OFFER_HOLD)
    assert offer is not None
    assert offer[BOOTP].yiaddr == "10.0.2.13"
    # a comes back too late: its address is c's now.
    assert_nak(a.select("10.0.2.13", now=OFFER_HOLD + 1))
    assert c.vm.stats.drops == Counter({"dhcp_pool_exhausted": 1})
    assert a.vm.stats.events == Counter({"dhcp_nak": 1})


def test_expired_lease_is_reclaimed_when_the_pool_is_full(tiny: Segment) -> None:
    a, b, c = Client(tiny, mac(1)), Client(tiny, mac(2)), Client(tiny, mac(3))
    assert a.lease(now=0.0) == "10.0.2.13"
    assert b.lease(now=100.0) == "10.0.2.14"
    assert c.discover(now=LEASE_TIME - 1) is None
    assert c.lease(now=LEASE_TIME) == "10.0.2.13"
    assert leases(tiny) == {
        ("10.0.2.13", True, 2.0 * LEASE_TIME),
        ("10.0.2.14", True, 100.0 + LEASE_TIME),
    }
    assert a.discover(now=LEASE_TIME + 1) is None
    assert a.vm.stats.drops == c.vm.stats.drops == Counter({"dhcp_pool_exhausted": 1})


def test_offer_to_a_returning_client_holds_at_the_moment_its_lease_ends(tiny: Segment) -> None:
    """A DISCOVER exactly at expiry must still hold the address for OFFER_HOLD."""
    a, b, c = Client(tiny, mac(1)), Client(tiny, mac(2)), Client(tiny, mac(3))
    assert a.lease(now=0.0) == "10.0.2.13"
    assert b.lease(now=10.0) == "10.0.2.14"
    assert a.discover(now=LEASE_TIME)[BOOTP].yiaddr == "10.0.2.13"
    assert c.discover(now=LEASE_TIME) is None
    assert kind(a.select("10.0.2.13", now=LEASE_TIME + 1)) == MessageType.ACK


def test_pool_exhaustion_is_counted_once(tiny: Segment) -> None:
    a, b, c = Client(tiny, mac(1)), Client(tiny, mac(2)), Client(tiny, mac(3))
    assert a.discover()[BOOTP].yiaddr == "10.0.2.13"
    assert b.discover()[BOOTP].yiaddr == "10.0.2.14"
    assert c.discover() is None
    assert c.vm.stats.drops == Counter({"dhcp_pool_exhausted": 1})
    assert c.vm.stats.events == Counter()
    assert a.vm.stats.drops == b.vm.stats.drops == Counter()


def test_nak_is_counted_as_an_event(tiny: Segment) -> None:
    client = Client(tiny, mac(1))
    assert_nak(client.request(requested="10.0.2.5"))
    assert client.vm.stats.events == Counter({"dhcp_nak": 1})
    assert client.vm.stats.drops == Counter()


# -- malformed messages ----------------------------------------------------------------


def _raw_options(client: Client, data: bytes, **fields: Any) -> bytes:
    """A BOOTP header then ``data`` verbatim where the cookie and options go."""
    return bytes(client.bootp(flags=0x8000, options=data, **fields))


DISCOVER = bytes((53, 1, 1))

MALFORMED: list[tuple[str, Any]] = [
    ("dhcp_bad_cookie", lambda c: _raw_options(c, b"\x63\x82\x53\x00" + DISCOVER + b"\xff")),
    ("dhcp_truncated", lambda c: _raw_options(c, COOKIE + DISCOVER + b"\xff")[:200]),
    ("dhcp_truncated", lambda c: _raw_options(c, COOKIE)[:-1]),
    ("dhcp_bootp_unsupported", lambda c: _raw_options(c, COOKIE + b"\x0c\x02vm\xff")),
    ("dhcp_bootp_unsupported", lambda c: _raw_options(c, COOKIE)),
    (
        "dhcp_relayed",
        lambda c: _raw_options(c, COOKIE + DISCOVER + b"\xff", giaddr="10.0.2.1", hops=1),
    ),
    ("dhcp_not_a_request", lambda c: _raw_options(c, COOKIE + DISCOVER + b"\xff", op=2)),
    ("dhcp_bad_op", lambda c: _raw_options(c, COOKIE + DISCOVER + b"\xff", op=3)),
    ("dhcp_bad_message_type", lambda c: _raw_options(c, COOKIE + b"\x35\x01\x09\xff")),
    ("dhcp_bad_option_length", lambda c: _raw_options(c, COOKIE + b"\x35\x02\x01\x01\xff")),
    ("dhcp_bad_option_length", lambda c: _raw_options(c, COOKIE + DISCOVER + b"\x3d\x01\x01")),
    ("dhcp_bad_option_length", lambda c: _raw_options(c, COOKIE + DISCOVER + b"\x32\x03\x0a\0\2")),
    ("dhcp_option_overrun", lambda c: _raw_options(c, COOKIE + DISCOVER + b"\x0c\x10vm")),
    ("dhcp_bad_text", lambda c: _raw_options(c, COOKIE + DISCOVER + b"\x0c\x02\xc3\xa9\xff")),
    ("dhcp_unexpected_type", lambda c: _raw_options(c, COOKIE + b"\x35\x01\x02\xff")),  # OFFER
    ("dhcp_unexpected_type", lambda c: _raw_options(c, COOKIE + b"\x35\x01\x05\xff")),  # ACK
    ("dhcp_hlen_mismatch", lambda c: _raw_options(c, COOKIE + DISCOVER + b"\xff", hlen=8)),
    ("dhcp_hlen_too_long", lambda c: _raw_options(c, COOKIE + DISCOVER + b"\xff", hlen=17)),
    (
        "dhcp_not_ethernet",  # InfiniBand: no 6-byte chaddr to lease to
        lambda c: _raw_options(c, COOKIE + DISCOVER + b"\xff", htype=32, hlen=0),
    ),
]


@pytest.mark.parametrize(("reason", "build"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_message_is_dropped_with_its_reason(
    segment: Segment, reason: str, build: Any
) -> None:
    client = Client(segment, mac(1))
    assert client.send_bootp(Raw(build(client)), 0.0) is None
    assert client.vm.stats.drops == Counter({reason: 1})
    assert client.vm.stats.events == Counter()
    assert leases(segment) == set()
    # The server is none the worse for it.
    assert client.lease(now=1.0) == "10.0.2.15"


def test_malformed_request_in_a_good_exchange_changes_nothing(segment: Segment) -> None:
    client = Client(segment, mac(1))
    address = client.lease()
    bad = _raw_options(client, COOKIE + b"\x35\x01\x03\x32\x02\x0a\x00\xff")  # 2-byte option 50
    assert client.send_bootp(Raw(bad), 1.0) is None
    assert client.vm.stats.drops == Counter({"dhcp_bad_option_length": 1})
    assert leases(segment) == {(address, True, LEASE_TIME)}


def test_dhcp_to_another_address_is_not_served(segment: Segment) -> None:
    """Only the limited broadcast and the gateway's own address reach the server."""
    client = Client(segment, mac(1))
    message = client.bootp(flags=0x8000) / DHCP(options=[("message-type", "discover"), "end"])
    frame = (
        Ether(src=client.mac, dst=GATEWAY_MAC)
        / IP(src="0.0.0.0", dst="10.0.2.255")
        / UDP(sport=68, dport=67)
        / message
    )
    segment.receive(client.vm, bytes(frame), 0.0)
    assert client.vm.take_frames() == []
    assert client.vm.stats.drops == Counter({"udp_broadcast": 1})
