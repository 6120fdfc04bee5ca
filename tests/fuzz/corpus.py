"""Frames of every protocol a guest may send, valid and malformed, built with scapy.

``samples(settings, guest, other)`` is what ``guest`` may send on a network with
``settings`` (``other`` is another guest there): ARP requests, replies, probes and
announcements; DHCP in every state, with option overload and long options; DNS
to the DNS address; UDP to the gateway, the DNS address, a remote host, another
guest, broadcast and multicast; ICMP echo and errors; TCP with every flag and
option; IPv4 options and fragments; VLAN tags and 802.3 frames; and IPv6's
(``corpus6``).

A ``Sample`` whose ``reason`` is set is dropped under that reason, and that one
only, whatever state the segment is in (``test_fuzz_malformed`` proves it on a
fresh segment, the state machine in every state it reaches).  Samples without a
reason may be used, switched, or dropped for a reason that depends on the state.

192.0.2.0/24 (TEST-NET-1) is only ever a value inside frames.
"""

from __future__ import annotations

import functools
import struct
from ipaddress import IPv4Address

from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.dns import DNS, DNSQR, DNSRROPT
from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Dot3, Ether
from scapy.packet import Packet, Raw

from slirpnet.core.settings import NetworkSettings
from slirpnet.wire.ipv4 import PROTO_UDP, IPv4Packet
from tests.fuzz import corpus6
from tests.fuzz.sample import Guest, Sample, gateway_mac

REMOTE = "192.0.2.1"
REMOTES = (REMOTE, "192.0.2.2")
# A DUID-EN (RFC 8415 §11.3) as systemd-networkd makes one: type 2, its enterprise number.
_DUID = b"\x00\x02\x00\x00\xab\x11" + bytes(range(8))
BROADCAST = "ff:ff:ff:ff:ff:ff"
MDNS_MAC = "01:00:5e:00:00:fb"
ALL_OPTIONS = [
    ("MSS", 1460),
    ("SAckOK", b""),
    ("Timestamp", (1, 0)),
    ("NOP", None),
    ("WScale", 14),
    ("EOL", None),
]


@functools.cache
def samples(settings: NetworkSettings, guest: Guest, other: Guest) -> tuple[Sample, ...]:
    build = _Builder(settings, guest, other)
    return (*build.valid(), *build.malformed(), *corpus6.samples(settings, guest, other))


def with_reason(settings: NetworkSettings, guest: Guest, other: Guest) -> tuple[Sample, ...]:
    return tuple(s for s in samples(settings, guest, other) if s.reason is not None)


# What ``fragmented`` cuts up: UDP and pings to the gateway and to a remote host, a SYN.
FRAGMENTED = ("udp_remote", "udp_gateway", "ping_gateway", "ping_remote", "tcp_syn")


def fragmented(
    settings: NetworkSettings, guest: Guest, kind: str, size: int, cut: int, ident: int
) -> list[bytes]:
    """A ``kind`` datagram (``FRAGMENTED``) of ``size`` bytes of payload from ``guest``,
    cut by scapy into fragments of ``cut`` bytes (rounded up to 8-byte units)."""
    gateway = str(settings.gateway)
    ip = IP(src=guest.address, dst=gateway if kind.endswith("gateway") else REMOTE, id=ident)
    if kind.startswith("udp"):
        layers = ip / UDP(sport=40012, dport=9) / bytes(size)
    elif kind.startswith("ping"):
        layers = ip / ICMP(type=8, id=ident & 0xFF, seq=1) / bytes(size)
    else:
        layers = ip / TCP(sport=40013, dport=88, flags="S") / bytes(size)
    ether = Ether(dst=gateway_mac(settings), src=guest.mac)
    return [bytes(ether / piece) for piece in fragment(layers, cut)]


def overlapping(frame: bytes) -> bytes:
    """16 bytes of MF fragment over the end of fragment ``frame`` and what follows it."""
    packet = Ether(frame)
    ip = packet[IP]
    end = ip.frag * 8 + len(ip.payload)
    header = IP(src=ip.src, dst=ip.dst, id=ip.id, proto=ip.proto, flags="MF", frag=end // 8 - 1)
    return bytes(Ether(dst=packet.dst, src=packet.src) / header / bytes(16))


def first_fragment(settings: NetworkSettings, guest: Guest, ident: int, size: int) -> bytes:
    """Fragment zero of a UDP datagram whose rest never comes, built without scapy for
    floods: ``size`` bytes, a multiple of 8."""
    packet = IPv4Packet(
        IPv4Address(guest.address),
        IPv4Address(REMOTE),
        PROTO_UDP,
        bytes(size),
        ident=ident,
        more_fragments=True,
    )
    ether = bytes.fromhex(gateway_mac(settings).replace(":", "")) + guest.mac_bytes + b"\x08\x00"
    return ether + packet.encode()


class _Builder:
    def __init__(self, settings: NetworkSettings, guest: Guest, other: Guest) -> None:
        self.settings = settings
        self.guest = guest
        self.other = other
        self.gw_mac = gateway_mac(settings)
        self.gw = str(settings.gateway)
        self.dns = str(settings.dns)
        network = settings.network
        self.net_broadcast = str(network.broadcast_address)
        self.unused = str(network.broadcast_address - 1)  # in the network, nobody's
        self.pool_far = str(network.broadcast_address - 2)

    # -- helpers -------------------------------------------------------------------

    def eth(
        self, layers: Packet | bytes, *, dst: str | None = None, src: str | None = None
    ) -> bytes:
        return bytes(Ether(dst=dst or self.gw_mac, src=src or self.guest.mac) / layers)

    def ip(self, dst: str, *, src: str | None = None, **fields: object) -> IP:
        return IP(src=src or self.guest.address, dst=dst, **fields)

    def udp(
        self,
        dst: str,
        dport: int,
        payload: bytes | Packet = b"data",
        *,
        sport: int = 40000,
        src: str | None = None,
        eth_dst: str | None = None,
    ) -> bytes:
        layers = self.ip(dst, src=src) / UDP(sport=sport, dport=dport) / payload
        return self.eth(layers, dst=eth_dst)

    def tcp(
        self,
        dst: str,
        dport: int,
        flags: str,
        *,
        sport: int = 40000,
        src: str | None = None,
        data: bytes = b"",
        **fields: object,
    ) -> bytes:
        layers = self.ip(dst, src=src) / TCP(sport=sport, dport=dport, flags=flags, **fields)
        return self.eth(layers / data)

    def dhcp(
        self,
        options: list[object],
        *,
        src: str = "0.0.0.0",
        dst: str = "255.255.255.255",
        eth_dst: str = BROADCAST,
        **bootp: object,
    ) -> bytes:
        fields: dict[str, object] = {"chaddr": self.guest.mac_bytes, "xid": 0x1234}
        fields.update(bootp)
        message = BOOTP(**fields) / DHCP(options=[*options, "end"])
        return self.udp(dst, 67, message, sport=68, src=src, eth_dst=eth_dst)

    def dhcp_raw(self, body: bytes, *, cookie: bytes = b"c\x82Sc", **bootp: object) -> bytes:
        """A BOOTP header and magic cookie followed by ``body`` as the options, unchecked."""
        fields: dict[str, object] = {"chaddr": self.guest.mac_bytes, "xid": 0x1234}
        fields.update(bootp)
        message = BOOTP(**fields, options=cookie) / Raw(body)
        return self.udp("255.255.255.255", 67, message, sport=68, src="0.0.0.0", eth_dst=BROADCAST)

    def dns_query(self, payload: bytes | Packet, *, sport: int = 40001) -> bytes:
        return self.udp(self.dns, 53, payload, sport=sport)

    def long_hostname(self) -> bytes:
        """A DISCOVER as large as the MTU allows, nearly all of it hostname (RFC 3396)."""
        room = self.settings.mtu - 20 - 8 - 240 - 3 - 1  # IP, UDP, BOOTP, option 53, End
        size = room - 2 * -(-room // 257)  # each instance of up to 255 bytes costs 2 more
        return self.dhcp([("message-type", "discover"), *_split_option("hostname", b"h" * size)])

    # -- valid, or dropped for reasons that depend on the state ----------------------

    def valid(self) -> list[Sample]:
        g, o, s = self.guest, self.other, self.settings
        own = g.address
        arp = [
            Sample(
                "arp_request_gateway",
                self.eth(ARP(op=1, hwsrc=g.mac, psrc=own, pdst=self.gw), dst=BROADCAST),
            ),
            Sample(
                "arp_request_dns_unicast", self.eth(ARP(op=1, hwsrc=g.mac, psrc=own, pdst=self.dns))
            ),
            Sample(
                "arp_probe_gateway",
                self.eth(ARP(op=1, hwsrc=g.mac, psrc="0.0.0.0", pdst=self.gw), dst=BROADCAST),
            ),
            Sample(
                "arp_probe_own",
                self.eth(ARP(op=1, hwsrc=g.mac, psrc="0.0.0.0", pdst=own), dst=BROADCAST),
            ),
            Sample(
                "arp_announce", self.eth(ARP(op=1, hwsrc=g.mac, psrc=own, pdst=own), dst=BROADCAST)
            ),
            Sample(
                "arp_request_other",
                self.eth(ARP(op=1, hwsrc=g.mac, psrc=own, pdst=o.address), dst=BROADCAST),
            ),
            Sample(
                "arp_reply_other",
                self.eth(ARP(op=2, hwsrc=g.mac, psrc=own, hwdst=o.mac, pdst=o.address), dst=o.mac),
            ),
            Sample(
                "arp_reply_gateway",
                self.eth(ARP(op=2, hwsrc=g.mac, psrc=own, hwdst=self.gw_mac, pdst=self.gw)),
            ),
            Sample(
                "arp_padded",
                self.eth(ARP(op=1, hwsrc=g.mac, psrc=own, pdst=self.gw) / bytes(18), dst=BROADCAST),
            ),
        ]
        server = ("server_id", self.gw)
        dhcp = [
            Sample("dhcp_discover", self.dhcp([("message-type", "discover")])),
            Sample(
                "dhcp_discover_everything",
                self.dhcp(
                    [
                        ("message-type", "discover"),
                        ("requested_addr", own),
                        ("client_id", b"\x01" + g.mac_bytes),
                        ("hostname", b"fuzzed"),
                        ("param_req_list", [1, 3, 6, 15, 26, 119]),
                        ("max_dhcp_size", 1500),
                    ],
                    flags=0x8000,
                ),
            ),
            Sample(
                "dhcp_discover_far",
                self.dhcp([("message-type", "discover"), ("requested_addr", self.pool_far)]),
            ),
            Sample(
                "dhcp_request_selecting",
                self.dhcp([("message-type", "request"), server, ("requested_addr", own)]),
            ),
            Sample(
                "dhcp_request_other_server",
                self.dhcp(
                    [("message-type", "request"), ("server_id", REMOTE), ("requested_addr", own)]
                ),
            ),
            Sample(
                "dhcp_request_init_reboot",
                self.dhcp([("message-type", "request"), ("requested_addr", own)]),
            ),
            Sample(
                "dhcp_request_outside",
                self.dhcp([("message-type", "request"), ("requested_addr", REMOTE)], flags=0x8000),
            ),
            Sample(
                "dhcp_request_renewing",
                self.dhcp(
                    [("message-type", "request")],
                    ciaddr=own,
                    src=own,
                    dst=self.gw,
                    eth_dst=self.gw_mac,
                ),
            ),
            Sample("dhcp_request_empty", self.dhcp([("message-type", "request")])),
            Sample(
                "dhcp_decline",
                self.dhcp([("message-type", "decline"), ("requested_addr", own), server]),
            ),
            Sample(
                "dhcp_release",
                self.dhcp([("message-type", "release"), server], ciaddr=own, src=own),
            ),
            Sample("dhcp_inform", self.dhcp([("message-type", "inform")], ciaddr=own, src=own)),
            Sample(
                "dhcp_overload_file",
                self.dhcp(
                    [("dhcp-option-overload", 1)],
                    file=b"\x35\x01\x01\x0c\x04file\xff",  # DISCOVER and a hostname, in file
                ),
            ),
            Sample(
                "dhcp_overload_both",
                self.dhcp(
                    [("dhcp-option-overload", 3), ("message-type", "request")],
                    file=b"\x32\x04" + IPv4Address(own).packed + b"\xff",
                    sname=b"\x36\x04" + s.gateway.packed + b"\xff",
                ),
            ),
            Sample(
                "dhcp_long_options",
                self.dhcp([("message-type", "discover"), *_split_option("hostname", b"x" * 300)]),
            ),
            Sample("dhcp_long_hostname", self.long_hostname()),
            # Client identifiers (RFC 2132 §9.14, RFC 4361): each names a client of the
            # guest's MAC, which takes over that machine's record (core/leases.py).
            Sample(
                "dhcp_client_id_duid",
                self.dhcp(
                    [("message-type", "discover"), ("client_id", b"\xff\x00\x00\x00\x01" + _DUID)]
                ),
            ),
            Sample(
                "dhcp_client_id_255_bytes",
                self.dhcp([("message-type", "discover"), ("client_id", b"\x00" + b"i" * 254)]),
            ),
            Sample(
                "dhcp_client_id_long",  # 300 bytes in two instances (RFC 3396)
                self.dhcp(
                    [
                        ("message-type", "request"),
                        ("requested_addr", own),
                        *_split_option("client_id", b"\x00" + b"L" * 299),
                    ]
                ),
            ),
        ]
        dns = [
            Sample(
                "dns_local",
                self.dns_query(DNS(id=1, rd=1, qd=DNSQR(qname=s.host_name or "host.test"))),
            ),
            Sample(
                "dns_local_aaaa",
                self.dns_query(
                    DNS(id=2, rd=1, qd=DNSQR(qname=s.host_name or "host.test", qtype="AAAA"))
                ),
            ),
            Sample(
                "dns_remote",
                self.dns_query(DNS(id=3, rd=1, qd=DNSQR(qname="example.test")), sport=40002),
            ),
            Sample(
                "dns_any",
                self.dns_query(DNS(id=4, qd=DNSQR(qname="example.test", qtype=255)), sport=40003),
            ),
            Sample(  # an OPT record, as most resolvers send: our answers echo it
                "dns_local_edns",
                self.dns_query(
                    DNS(
                        id=8,
                        rd=1,
                        qd=DNSQR(qname=s.host_name or "host.test"),
                        ar=DNSRROPT(rclass=1232, z=0x8000),
                    ),
                    sport=40006,
                ),
            ),
            Sample(
                "dns_zero_checksum",
                self.eth(
                    self.ip(self.dns)
                    / UDP(sport=40004, dport=53, chksum=0)
                    / bytes(DNS(id=5, qd=DNSQR(qname="a.test")))
                ),
            ),
        ]
        udp = [
            Sample("udp_remote", self.udp(REMOTE, 9, b"hello")),
            Sample(
                "udp_remote_dns",
                self.udp(REMOTE, 53, bytes(DNS(id=6, qd=DNSQR(qname="b.test"))), sport=40005),
            ),
            Sample("udp_gateway", self.udp(self.gw, 8080, b"to the host")),
            Sample("udp_other_guest", self.udp(o.address, 7, b"neighbour", eth_dst=o.mac)),
            Sample("udp_empty", self.udp(REMOTE, 10, b"", sport=40006)),
            Sample("udp_mdns", self.udp("224.0.0.251", 5353, b"mdns", eth_dst=MDNS_MAC)),
            Sample(
                "udp_ip_options",
                self.eth(
                    self.ip(REMOTE, options=b"\x01\x01\x07\x07\x04\x00\x00\x00\x00\x00\x00\x00")
                    / UDP(sport=40007, dport=9)
                    / b"rr"
                ),
            ),
            Sample(
                "udp_ip_bad_options",
                self.eth(
                    self.ip(REMOTE, options=b"\x44\x00\x00\x00")
                    / UDP(sport=40008, dport=9)
                    / b"loop"
                ),
            ),
            Sample("udp_padded", self.udp(REMOTE, 9, b"p") + bytes(20)),
        ]
        icmp = [
            Sample(
                "ping_gateway", self.eth(self.ip(self.gw) / ICMP(type=8, id=1, seq=1) / b"ping")
            ),
            Sample("ping_dns", self.eth(self.ip(self.dns) / ICMP(type=8, id=2, seq=1))),
            Sample("ping_remote", self.eth(self.ip(REMOTE) / ICMP(type=8, id=3, seq=7) / b"ping")),
            Sample(
                "ping_remote_big",
                self.eth(self.ip(REMOTE, flags="DF") / ICMP(type=8, id=4) / bytes(1200)),
            ),
        ]
        tcp = [
            Sample("tcp_syn_all_options", self.tcp(REMOTE, 80, "S", seq=1000, options=ALL_OPTIONS)),
            Sample("tcp_syn_bare", self.tcp(REMOTE, 81, "S", sport=40001, seq=2000)),
            Sample(
                "tcp_syn_gateway", self.tcp(self.gw, 22, "S", sport=40002, options=[("MSS", 1)])
            ),
            Sample(
                "tcp_syn_dns", self.tcp(self.dns, 53, "S", sport=40003, options=[("WScale", 15)])
            ),
            Sample("tcp_syn_with_data", self.tcp(REMOTE, 82, "S", sport=40004, data=b"early")),
            Sample("tcp_syn_fin", self.tcp(REMOTE, 83, "SF", sport=40005)),
            Sample("tcp_syn_rst", self.tcp(REMOTE, 84, "SR", sport=40006)),
            Sample("tcp_xmas", self.tcp(REMOTE, 85, "FSRPAUEC", sport=40007, urgptr=0xFFFF)),
            Sample("tcp_null", self.tcp(REMOTE, 86, "", sport=40008)),
            Sample(
                "tcp_urg", self.tcp(REMOTE, 80, "AU", seq=1001, ack=5, urgptr=3, data=b"urgent")
            ),
            Sample("tcp_fin", self.tcp(REMOTE, 80, "FA", seq=1001, ack=1)),
            Sample(
                "tcp_sack",
                self.tcp(REMOTE, 80, "A", seq=1001, ack=1, options=[("SAck", (1, 2, 3, 4))]),
            ),
            Sample(
                "tcp_to_other_guest",
                self.eth(self.ip(o.address) / TCP(sport=40009, dport=22, flags="S"), dst=o.mac),
            ),
        ]
        return arp + dhcp + dns + udp + icmp + tcp + self.fragments() + self.tftp()

    def fragments(self) -> list[Sample]:
        """Pieces of datagrams, each under its own identification: fed in any order, with
        repeats, they complete, overlap, contradict each other or leave holes that time out."""
        big_udp = self.ip(REMOTE, id=0x4001) / UDP(sport=40000, dport=9) / bytes(3000)
        udp = fragment(big_udp, 1400)
        ping = fragment(self.ip(self.gw, id=0x4002) / ICMP(type=8, id=5) / bytes(2000), 1480)
        ping_remote = fragment(self.ip(REMOTE, id=0x4003) / ICMP(type=8, id=6) / bytes(3000), 1480)
        syn = self.ip(REMOTE, id=0x4004) / TCP(sport=40010, dport=87, flags="S") / b"early" * 8
        tcp = fragment(syn, 24)
        samples = [
            *(Sample(f"frag_udp_{n}", self.eth(f)) for n, f in enumerate(udp)),
            # Over the first two, at the end of the first: the datagram is given up.
            Sample(
                "frag_udp_overlap",
                self.eth(self.ip(REMOTE, id=0x4001, proto=17, flags="MF", frag=174) / bytes(16)),
            ),
            # Another end than the last fragment's (3008 bytes): a contradiction.
            Sample(
                "frag_udp_other_end",
                self.eth(self.ip(REMOTE, id=0x4001, proto=17, frag=350) / bytes(16)),
            ),
            *(Sample(f"frag_ping_gateway_{n}", self.eth(f)) for n, f in enumerate(ping)),
            *(Sample(f"frag_ping_remote_{n}", self.eth(f)) for n, f in enumerate(ping_remote)),
            *(Sample(f"frag_tcp_syn_{n}", self.eth(f)) for n, f in enumerate(tcp)),
            # Alone, these leave holes that time out.
            Sample(
                "frag_udp_header_only",
                self.eth(self.ip(REMOTE, id=0x4005, flags="MF") / UDP(sport=40011) / bytes(8)),
            ),
            Sample("frag_offset_only", self.eth(self.ip(self.gw, id=0x4006, frag=1) / bytes(8))),
            Sample(
                "frag_tcp_tiny",
                self.eth(self.ip(REMOTE, id=0x4007, proto=6, flags="MF") / bytes(8)),
            ),
        ]
        return samples

    def tftp(self) -> list[Sample]:
        """Reads from the gateway's TFTP server (where it has one), and a transfer's
        packets to the first transfer ports, which fit a transfer now and then."""
        if self.settings.tftp_root is None:
            return []
        samples = [
            Sample(
                f"tftp_rrq_{name}",
                self.tftp_packet(69, _rrq(name.encode(), *options), sport=sport),
            )
            for name, sport, options in TFTP_READS
        ]
        for port in TFTP_TIDS:
            for _, sport, _ in TFTP_READS[:2]:
                samples += [
                    Sample(f"tftp_ack{block}_{port}", self.tftp_packet(port, _ack(block), sport))
                    for block in (0, 1, 2)
                ]
            error = struct.pack("!HH", 5, 0) + b"enough\0"
            samples.append(Sample(f"tftp_error_{port}", self.tftp_packet(port, error, 40069)))
            data = struct.pack("!HH", 3, 1) + b"upload"
            samples.append(Sample(f"tftp_data_{port}", self.tftp_packet(port, data, 40069)))
        return samples

    def tftp_packet(self, port: int, packet: bytes, sport: int = 40069) -> bytes:
        return self.udp(self.gw, port, packet, sport=sport)

    # -- malformed, or refused by policy: one reason, whatever the state ---------------

    def malformed(self) -> list[Sample]:
        g, s = self.guest, self.settings
        own = g.address
        arp_request = bytes(ARP(op=1, hwsrc=g.mac, psrc=own, pdst=self.gw))
        cases: list[tuple[str, bytes, str]] = [
            ("eth_truncated", self.eth(b"")[:13], "eth_truncated"),
            ("eth_vlan", self.eth(Dot1Q(vlan=5) / self.ip(REMOTE) / UDP()), "eth_vlan_tagged"),
            (
                "eth_vlan_broadcast",
                self.eth(Dot1Q(vlan=5) / ARP(pdst=self.gw), dst=BROADCAST),
                "eth_vlan_tagged",
            ),
            (
                "eth_qinq",
                self.eth(Dot1AD(vlan=5) / Dot1Q(vlan=6) / self.ip(REMOTE)),
                "eth_vlan_tagged",
            ),
            (
                "eth_8023",
                bytes(Dot3(dst=self.gw_mac, src=g.mac) / (b"\xaa\xaa\x03" + bytes(43))),
                "eth_not_ethernet_ii",
            ),
            (
                "eth_lldp",
                bytes(Ether(dst=self.gw_mac, src=g.mac, type=0x88CC) / bytes(46)),
                "eth_unknown_ethertype",
            ),
            ("eth_group_source", self.eth(self.ip(REMOTE) / UDP(), src=MDNS_MAC), "eth_bad_source"),
            (
                "eth_gateway_source",
                self.eth(self.ip(REMOTE) / UDP(), src=self.gw_mac),
                "eth_bad_source",
            ),
            (
                "arp_truncated",
                bytes(Ether(dst=BROADCAST, src=g.mac, type=0x0806) / arp_request[:27]),
                "arp_truncated",
            ),
            (
                "arp_htype",
                self.eth(
                    ARP(hwtype=6, hwlen=6, plen=4, op=1, psrc=own, pdst=self.gw), dst=BROADCAST
                ),
                "arp_not_ipv4_ethernet",
            ),
            (
                "arp_ptype",
                self.eth(ARP(ptype=0x86DD, op=1, psrc=own, pdst=self.gw)),
                "arp_not_ipv4_ethernet",
            ),
            ("arp_op", self.eth(ARP(op=3, psrc=own, pdst=self.gw), dst=BROADCAST), "arp_bad_op"),
            (
                "arp_claims_gateway",
                self.eth(ARP(op=1, hwsrc=g.mac, psrc=self.gw, pdst=self.gw), dst=BROADCAST),
                "arp_claims_gateway",
            ),
            (
                "ipv4_short_header",
                bytes(Ether(dst=self.gw_mac, src=g.mac, type=0x0800) / bytes(self.ip(REMOTE))[:19]),
                "ipv4_truncated",
            ),
            (
                "ipv4_lying_total_length",
                self.eth(self.ip(REMOTE, len=1000) / UDP(sport=40000, dport=9) / b"x"),
                "ipv4_truncated",
            ),
            ("ipv4_total_below_ihl", self.eth(self.ip(REMOTE, len=19) / UDP()), "ipv4_bad_length"),
            ("ipv4_ihl_4", self.eth(self.ip(REMOTE, ihl=4) / UDP()), "ipv4_bad_ihl"),
            ("ipv4_ihl_0", self.eth(self.ip(REMOTE, ihl=0) / UDP()), "ipv4_bad_ihl"),
            ("ipv4_ihl_past_total", self.eth(self.ip(REMOTE, ihl=15) / UDP()), "ipv4_bad_length"),
            ("ipv4_version_6", self.eth(self.ip(REMOTE, version=6) / UDP()), "ipv4_bad_version"),
            (
                "ipv4_bad_checksum",
                self.eth(self.ip(REMOTE, chksum=0x1234) / UDP()),
                "ipv4_bad_checksum",
            ),
            (
                "ipv4_evil_bit",
                self.eth(self.ip(REMOTE, flags="evil") / UDP()),
                "ipv4_reserved_flag",
            ),
            # Whatever the fragments held, these are refused alone.
            (
                "ipv4_fragment_not_8_byte_units",
                self.eth(self.ip(REMOTE, id=0x4001, flags="MF") / UDP() / bytes(5)),
                "ipv4_frag_bad_length",
            ),
            (
                "ipv4_fragment_empty",
                self.eth(self.ip(REMOTE, id=0x4001, proto=17, flags="MF", frag=10)),
                "ipv4_frag_bad_length",
            ),
            (
                "ipv4_ping_of_death",
                self.eth(self.ip(self.gw, id=0x4002, proto=1, frag=8191) / bytes(8)),
                "ipv4_frag_too_big",
            ),
            (
                "ipv4_gre",
                self.eth(self.ip(REMOTE, proto=47) / bytes(8)),
                "ipv4_unsupported_protocol",
            ),
            (
                "ipv4_sctp",
                self.eth(self.ip(self.gw, proto=132) / bytes(12)),
                "ipv4_unsupported_protocol",
            ),
            (
                "udp_truncated",
                self.eth(self.ip(REMOTE, proto=17) / b"\x00\x01\x00"),
                "udp_truncated",
            ),
            (
                "udp_lying_length",
                self.eth(self.ip(REMOTE) / UDP(sport=40000, dport=9, len=200) / b"x"),
                "udp_bad_length",
            ),
            (
                "udp_length_below_header",
                self.eth(self.ip(REMOTE) / UDP(sport=40000, dport=9, len=7) / b"x"),
                "udp_bad_length",
            ),
            (
                "udp_bad_checksum",
                self.eth(self.ip(REMOTE) / UDP(sport=40000, dport=9, chksum=1) / b"x"),
                "udp_bad_checksum",
            ),
            (
                "udp_limited_broadcast",
                self.udp("255.255.255.255", 9, eth_dst=BROADCAST),
                "udp_broadcast",
            ),
            ("udp_subnet_broadcast", self.udp(self.net_broadcast, 9), "udp_broadcast"),
            ("udp_multicast_to_gateway", self.udp("224.0.0.1", 9), "udp_multicast"),
            ("udp_unused_address", self.udp(self.unused, 9), "no_route"),
            ("udp_loopback", self.udp("127.0.0.1", 9), "no_route"),
            ("udp_link_local", self.udp("169.254.1.1", 9), "no_route"),
            ("udp_dns_other_port", self.udp(self.dns, 99), "no_service"),
            ("udp_foreign_source", self.udp(REMOTE, 9, src="192.0.2.7"), "ipv4_bad_source"),
            ("udp_gateway_source", self.udp(REMOTE, 9, src=self.gw), "ipv4_bad_source"),
            (
                "icmp_truncated",
                self.eth(self.ip(self.gw, proto=1) / b"\x08\x00\xf7"),
                "icmp_truncated",
            ),
            (
                "icmp_bad_checksum",
                self.eth(self.ip(self.gw) / ICMP(type=8, chksum=1)),
                "icmp_bad_checksum",
            ),
            ("icmp_timestamp", self.eth(self.ip(self.gw) / ICMP(type=13)), "icmp_unsupported_type"),
            ("icmp_echo_reply", self.eth(self.ip(REMOTE) / ICMP(type=0)), "icmp_unsupported_type"),
            (
                "icmp_port_unreachable",
                self.eth(
                    self.ip(REMOTE) / ICMP(type=3, code=3) / bytes(self.ip(REMOTE) / UDP())[:28]
                ),
                "icmp_unsupported_type",
            ),
            (
                "icmp_ping_spoofed",
                self.eth(self.ip(REMOTE, src=self.dns) / ICMP(type=8)),
                "ipv4_bad_source",
            ),
            ("tcp_truncated", self.eth(self.ip(REMOTE, proto=6) / bytes(19)), "tcp_truncated"),
            ("tcp_bad_checksum", self.tcp(REMOTE, 80, "S", chksum=1), "tcp_bad_checksum"),
            ("tcp_data_offset_4", self.tcp(REMOTE, 80, "S", dataofs=4), "tcp_bad_data_offset"),
            (
                "tcp_data_offset_past_end",
                self.tcp(REMOTE, 80, "S", dataofs=15),
                "tcp_bad_data_offset",
            ),
            (
                "tcp_option_length_0",
                self.tcp(REMOTE, 80, "S", dataofs=6, data=b"\x02\x00\x05\xb4"),
                "tcp_option_loop",
            ),
            (
                "tcp_option_length_1",
                self.tcp(REMOTE, 80, "S", dataofs=6, data=b"\x01\x08\x01\x00"),
                "tcp_option_loop",
            ),
            (
                "tcp_option_no_length",
                self.tcp(REMOTE, 80, "S", dataofs=6, data=b"\x01\x01\x01\x08"),
                "tcp_option_overrun",
            ),
            (
                "tcp_option_past_header",
                self.tcp(REMOTE, 80, "S", dataofs=6, data=b"\x08\x0a\x00\x00"),
                "tcp_option_overrun",
            ),
            (
                "tcp_mss_length_3",
                self.tcp(REMOTE, 80, "S", dataofs=6, data=b"\x02\x03\x05\x00"),
                "tcp_bad_option_length",
            ),
            (
                "tcp_sack_length_3",
                self.tcp(REMOTE, 80, "A", dataofs=6, data=b"\x05\x03\x00\x01"),
                "tcp_bad_option_length",
            ),
            ("tcp_ack_no_flow", self.tcp(REMOTE, 80, "A", sport=1, seq=5, ack=6), "tcp_no_flow"),
            ("tcp_rst_no_flow", self.tcp(REMOTE, 80, "R", sport=1), "tcp_no_flow"),
            ("tcp_dns_other_port", self.tcp(self.dns, 80, "S", sport=2), "no_service"),
            (
                "tcp_foreign_source",
                self.tcp(REMOTE, 80, "S", sport=3, src="192.0.2.7"),
                "ipv4_bad_source",
            ),
            (
                "dhcp_truncated",
                self.udp(
                    "255.255.255.255", 67, bytes(100), sport=68, src="0.0.0.0", eth_dst=BROADCAST
                ),
                "dhcp_truncated",
            ),
            (
                "dhcp_bad_cookie",
                self.dhcp_raw(b"\x35\x01\x01\xff", cookie=b"c\x82Sd"),
                "dhcp_bad_cookie",
            ),
            ("dhcp_op_3", self.dhcp([("message-type", "discover")], op=3), "dhcp_bad_op"),
            (
                "dhcp_reply_from_guest",
                self.dhcp([("message-type", "discover")], op=2),
                "dhcp_not_a_request",
            ),
            (
                "dhcp_hlen_17",
                self.dhcp([("message-type", "discover")], hlen=17),
                "dhcp_hlen_too_long",
            ),
            (
                "dhcp_hlen_8",
                self.dhcp([("message-type", "discover")], hlen=8),
                "dhcp_hlen_mismatch",
            ),
            (
                "dhcp_not_ethernet",
                self.dhcp([("message-type", "discover")], htype=6, hlen=8),
                "dhcp_not_ethernet",
            ),
            (
                "dhcp_option_overrun",
                self.dhcp_raw(b"\x35\x01\x01\x0c\x40abc"),
                "dhcp_option_overrun",
            ),
            ("dhcp_option_no_length", self.dhcp_raw(b"\x35\x01\x01\x0c"), "dhcp_option_overrun"),
            (
                "dhcp_overload_4",
                self.dhcp([("message-type", "discover"), ("dhcp-option-overload", 4)]),
                "dhcp_bad_overload",
            ),
            (
                "dhcp_overload_in_file",
                self.dhcp([("dhcp-option-overload", 1)], file=b"\x34\x01\x02\x35\x01\x01\xff"),
                "dhcp_bad_overload",
            ),
            (
                "dhcp_overload_overrun",
                self.dhcp([("dhcp-option-overload", 2)], sname=b"\x0c\xffx"),
                "dhcp_option_overrun",
            ),
            ("dhcp_bootp", self.dhcp([]), "dhcp_bootp_unsupported"),
            (
                "dhcp_relayed",
                self.dhcp([("message-type", "discover")], giaddr=REMOTE),
                "dhcp_relayed",
            ),
            ("dhcp_type_9", self.dhcp([("message-type", 9)]), "dhcp_bad_message_type"),
            ("dhcp_type_2_bytes", self.dhcp_raw(b"\x35\x02\x01\x01\xff"), "dhcp_bad_option_length"),
            (
                "dhcp_client_id_1_byte",  # the type byte only
                self.dhcp([("message-type", "discover"), ("client_id", b"\x01")]),
                "dhcp_bad_option_length",
            ),
            (
                "dhcp_client_id_empty",
                self.dhcp([("message-type", "request"), ("client_id", b"")], ciaddr=own),
                "dhcp_bad_option_length",
            ),
            (
                "dhcp_offer_from_guest",
                self.dhcp([("message-type", "offer")]),
                "dhcp_unexpected_type",
            ),
            (
                "dhcp_inform_no_ciaddr",
                self.dhcp([("message-type", "inform")]),
                "dhcp_inform_without_ciaddr",
            ),
            (
                "dhcp_hostname_not_ascii",
                self.dhcp([("message-type", "discover"), ("hostname", b"h\xe9")]),
                "dhcp_bad_text",
            ),
            (
                "dhcp_hostname_empty",
                self.dhcp([("message-type", "inform"), ("hostname", b"\0")], ciaddr=own),
                "dhcp_bad_option_length",
            ),
            (
                "dns_response",
                self.dns_query(DNS(id=7, qr=1, qd=DNSQR(qname="a.test"))),
                "dns_not_a_query",
            ),
        ]
        if not s.dns_upstreams:  # otherwise what we cannot read is forwarded unchanged
            header = struct.pack("!HHHHHH", 8, 0x0100, 1, 0, 0, 0)
            cases += [
                ("dns_truncated_header", self.dns_query(header[:5]), "dns_truncated"),
                (
                    "dns_no_question",
                    self.dns_query(struct.pack("!HHHHHH", 8, 0x0100, 0, 0, 0, 0)),
                    "dns_no_question",
                ),
                (
                    "dns_first_name_compressed",
                    self.dns_query(header + b"\xc0\x00\x00\x01\x00\x01"),
                    "dns_bad_pointer",
                ),
                ("dns_label_type", self.dns_query(header + b"\x41" + bytes(65)), "dns_bad_label"),
                (
                    "dns_name_too_long",
                    self.dns_query(header + (b"\x3f" + b"a" * 63) * 5 + b"\x00\x00\x01\x00\x01"),
                    "dns_name_too_long",
                ),
                ("dns_name_unterminated", self.dns_query(header + b"\x03abc"), "dns_truncated"),
                ("tcp_dns_no_upstream", self.tcp(self.dns, 53, "S", sport=4), "no_service"),
            ]
        if s.tftp_root is not None:
            cases += self.tftp_refused()
        if s.restrict:
            cases += [
                ("restricted_udp", self.udp(REMOTE, 9), "restricted"),
                ("restricted_ping", self.eth(self.ip(REMOTE) / ICMP(type=8, id=9)), "restricted"),
                ("restricted_tcp", self.tcp(REMOTE, 80, "S", sport=5), "restricted"),
                ("restricted_gateway", self.udp(self.gw, 8080), "restricted"),
            ]
        elif not s.host_loopback:
            cases.append(
                ("udp_gateway_no_loopback", self.udp(self.gw, 8080), "host_loopback_disabled")
            )
        return [Sample(name, frame, reason) for name, frame, reason in cases]

    def tftp_refused(self) -> list[tuple[str, bytes, str]]:
        """Malformed TFTP requests, dropped silently; refused ones, answered with an error."""
        cases = [
            (f"tftp_{name}", self.tftp_packet(69, packet), reason)
            for name, packet, reason in (
                ("truncated", b"\x00", "tftp_truncated"),
                ("bad_opcode", b"\x00\x09abc\x00", "tftp_bad_opcode"),
                ("unterminated", b"\x00\x01boot.ipxe", "tftp_unterminated"),
                ("no_mode", b"\x00\x01boot.ipxe\x00", "tftp_truncated"),
                ("nul_in_name", b"\x00\x01ok\x00../x\x00octet\x00", "tftp_bad_mode"),
                ("odd_options", _rrq(b"boot.ipxe") + b"blksize\x00", "tftp_bad_option"),
                ("option_twice", _rrq(b"f", ("tsize", "0"), ("TSIZE", "0")), "tftp_bad_option"),
                ("ack_long", b"\x00\x04\x00\x01\x00", "tftp_bad_length"),
                ("wrq", b"\x00\x02boot.ipxe\x00octet\x00", "tftp_write_refused"),
                ("netascii", _rrq(b"boot.ipxe", mode=b"netascii"), "tftp_mode_refused"),
                ("ack_to_69", _ack(1), "tftp_not_a_request"),
                ("error_to_69", b"\x00\x05\x00\x00\x00", "tftp_not_a_request"),
            )
        ]
        cases += [
            (f"tftp_escape_{n}", self.tftp_packet(69, _rrq(name)), "tftp_path_refused")
            for n, name in enumerate(
                (b"../etc/passwd", b"/etc/passwd", b"a/../../x", b"..", b"\xff", b"x" * 300)
            )
        ]
        return cases


# Reads the fuzzer's guests make: file, source port, options.  The host model
# (host.py) serves some of these names, refuses "denied" and has no "missing".
TFTP_READS: tuple[tuple[str, int, tuple[tuple[str, str], ...]], ...] = (
    ("boot.ipxe", 40069, (("blksize", "1432"), ("tsize", "0"), ("windowsize", "4"))),
    ("kernel", 40070, ()),
    ("empty", 40071, (("timeout", "2"),)),
    ("missing", 40072, ()),
    ("denied", 40073, (("tsize", "0"),)),
    ("kernel", 40074, (("blksize", "8"), ("windowsize", "65535"))),
)
TFTP_TIDS = (49152, 49153, 49154)  # the ports the first transfers of a namespace answer from


def _rrq(name: bytes, *options: tuple[str, str], mode: bytes = b"octet") -> bytes:
    pairs = b"".join(f"{key}\0{value}\0".encode() for key, value in options)
    return b"\x00\x01" + name + b"\0" + mode + b"\0" + pairs


def _ack(block: int) -> bytes:
    return struct.pack("!HH", 4, block)


def _split_option(name: str, value: bytes) -> list[tuple[str, bytes]]:
    """``value`` as consecutive instances of option ``name`` (RFC 3396 long options)."""
    return [(name, value[i : i + 255]) for i in range(0, len(value), 255)]
