"""IPv6 frames a guest may send, valid and malformed, built with scapy (see ``corpus``).

``samples(settings, guest, other)`` holds Neighbour Discovery (router and neighbour
solicitations for each of the gateway's addresses, duplicate address detection,
advertisements, MLD), ICMPv6 echo, UDP, TCP, DNS and stateless DHCPv6 over IPv6,
the extension headers the core walks, and what it refuses, each under its one
reason: lying lengths, header chains that repeat or overrun, jumbograms, routing
headers, bad checksums, NDP and DHCPv6 options of the wrong length, hop limits
below 255, router advertisements and DHCPv6 servers' messages from a guest.

``rogue`` builds what only a router or a DHCPv6 server sends, disguised (behind
extension headers, in a first fragment, from another port) and sent anywhere:
RA guard must keep every one of them from the other VMs.  ``ndp`` builds router
and neighbour solicitations, valid or with one defect; ``datagram`` a guest's UDP
or echo to a host destination of either family, to open flows.

2001:db8::/32 (RFC 3849) is only ever a value inside frames.
"""

from __future__ import annotations

import functools
import struct
from ipaddress import IPv6Address, IPv6Network

from scapy.layers.dhcp6 import (
    DUID_LL,
    DHCP6_Advertise,
    DHCP6_InfoRequest,
    DHCP6_Reconf,
    DHCP6_RelayForward,
    DHCP6_RelayReply,
    DHCP6_Renew,
    DHCP6_Reply,
    DHCP6_Request,
    DHCP6_Solicit,
    DHCP6OptClientId,
    DHCP6OptDNSServers,
    DHCP6OptElapsedTime,
    DHCP6OptIA_NA,
    DHCP6OptOptReq,
    DHCP6OptRapidCommit,
    DHCP6OptServerId,
)
from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6MLReport,
    ICMPv6MLReport2,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6ND_Redirect,
    ICMPv6ND_RS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptPrefixInfo,
    ICMPv6NDOptSrcLLAddr,
    ICMPv6Unknown,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    Jumbo,
    PadN,
    RouterAlert,
)
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from slirpnet.core.settings import NetworkSettings
from tests.fuzz.sample import Guest, Sample, gateway_mac, slaac

REMOTE6 = "2001:db8::1"
REMOTES6 = (REMOTE6, "2001:db8::2")
ALL_NODES = "ff02::1"
ALL_ROUTERS = "ff02::2"
ALL_DHCP = "ff02::1:2"
BROADCAST = "ff:ff:ff:ff:ff:ff"
UNKNOWN_MAC = "52:54:00:99:99:99"  # nobody's: flooded
DATAGRAM_PORT = 45000  # the source port of ``datagram``'s UDP
_DUID = DUID_LL(lladdr="52:54:00:aa:bb:cc")

# What ``rogue`` sends, how it hides it, and where.
ROGUE_KINDS = (
    "ra",
    "redirect",
    "dhcpv6_reply",
    "dhcpv6_advertise",
    "dhcpv6_reconfigure",
    "dhcpv6_relay_reply",  # server to relay agent: both ports 547
)
ROGUE_DISGUISES = (
    "plain",
    "hop_by_hop",
    "destination_options",
    "routing",
    "four_headers",  # Hop-by-Hop, Destination Options, Routing, Destination Options
    "three_destination_options",  # a chain the core refuses, which a host may read
    "first_fragment",
    "atomic_fragment",  # offset 0 and no more fragments (RFC 6946): a whole packet
    "ah",
    "client_port",  # a DHCPv6 server's message from a port other than 547
    "padded",
)
ROGUE_TARGETS = ("all_nodes", "other", "broadcast", "unknown", "gateway")

# What ``ndp`` solicits, and the one defect it may carry, with the reason it is dropped.
NDP_KINDS = ("rs", "rs_unspecified", "ns_gateway", "ns_dns", "ns_link_local", "ns_unicast", "dad")
NDP_DEFECTS: dict[str, str | None] = {
    "none": None,
    "hop_limit_64": "ndp_bad_hop_limit",
    "zero_option_length": "ndp_zero_option_length",
    "option_overrun": "ndp_option_overrun",
    "long_link_layer_option": "ndp_bad_option_length",
    "code_1": "ndp_bad_code",
    "bad_checksum": "icmpv6_bad_checksum",
    "truncated": "ndp_truncated",
}


def solicited_node(address: str) -> str:
    """ff02::1:ff00:0/104 and the low 24 bits of ``address`` (RFC 4291 §2.7.1)."""
    low = int(IPv6Address(address)) & 0xFFFFFF
    return str(IPv6Address(int(IPv6Address("ff02::1:ff00:0")) | low))


def group_mac(group: str) -> str:
    """33:33 and the low 32 bits of the group (RFC 2464 §7)."""
    return "33:33:" + IPv6Address(group).packed[-4:].hex(":")


def gateway_link_local(settings: NetworkSettings) -> str:
    """Where the gateway's router advertisements come from (RFC 4861 §6.1.2)."""
    return slaac(IPv6Network("fe80::/64"), _mac(gateway_mac(settings)))


@functools.cache
def samples(settings: NetworkSettings, guest: Guest, other: Guest) -> tuple[Sample, ...]:
    build = _Builder6(settings, guest, other)
    return (*build.valid(), *build.malformed())


@functools.cache
def rogue(
    settings: NetworkSettings, guest: Guest, other: Guest, kind: str, disguise: str, to: str
) -> bytes:
    """A router's or a DHCPv6 server's message from ``guest`` (``ROGUE_*``)."""
    return _Builder6(settings, guest, other).rogue(kind, disguise, to)


@functools.cache
def ndp(
    settings: NetworkSettings, guest: Guest, kind: str, defect: str
) -> tuple[bytes, str | None, str]:
    """A solicitation (``NDP_KINDS``) with ``defect`` (``NDP_DEFECTS``): the frame, the
    reason it is dropped for (None: answered), and where the answer goes (the soliciting
    address, or all nodes)."""
    return _Builder6(settings, guest, guest).ndp(kind, defect)


@functools.cache
def datagram(
    settings: NetworkSettings, guest: Guest, family: int, kind: str, dst: str, port: int
) -> bytes:
    """UDP to ``dst``:``port``, or an echo request to ``dst`` with identifier ``port``,
    from ``guest``'s address of ``family``."""
    eth = Ether(dst=gateway_mac(settings), src=guest.mac)
    if kind == "udp":
        transport: Packet = UDP(sport=DATAGRAM_PORT, dport=port)
    elif family == 4:
        transport = ICMP(type=8, id=port, seq=1)
    else:
        transport = ICMPv6EchoRequest(id=port, seq=1)
    ip = IP(src=guest.address, dst=dst) if family == 4 else IPv6(src=guest.address6, dst=dst)
    return bytes(eth / ip / transport / b"flow")


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


class _Builder6:
    def __init__(self, settings: NetworkSettings, guest: Guest, other: Guest) -> None:
        self.settings = settings
        self.guest = guest
        self.other = other
        self.gw_mac = gateway_mac(settings)
        self.gw = str(settings.gateway6)
        self.dns = str(settings.dns6)
        self.gw_ll = gateway_link_local(settings)
        prefix = settings.network6.network_address
        self.unused = str(prefix + 0x99)  # in the prefix, nobody's

    # -- helpers -------------------------------------------------------------------

    def eth(self, layers: Packet | bytes, *, dst: str | None = None) -> bytes:
        return bytes(Ether(dst=dst or self.gw_mac, src=self.guest.mac) / layers)

    def ip(self, dst: str, *, src: str | None = None, **fields: object) -> IPv6:
        return IPv6(src=src or self.guest.address6, dst=dst, **fields)

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

    def nd(self, dst: str, message: Packet, *, src: str | None = None, hlim: int = 255) -> bytes:
        """A Neighbour Discovery message to ``dst``: a group at its MAC, or the gateway."""
        eth_dst = group_mac(dst) if IPv6Address(dst).is_multicast else None
        return self.eth(self.ip(dst, src=src, hlim=hlim) / message, dst=eth_dst)

    def dhcp(self, message: Packet, *, dst: str = ALL_DHCP) -> bytes:
        """A client's message, from its link-local address (RFC 8415 §13.1)."""
        eth_dst = group_mac(dst) if IPv6Address(dst).is_multicast else None
        layers = self.ip(dst, src=self.guest.link_local) / UDP(sport=546, dport=547) / message
        return self.eth(layers, dst=eth_dst)

    def dhcp_raw(self, body: bytes) -> bytes:
        """A DHCPv6 message (type, transaction id, options) as given, unchecked."""
        return self.dhcp(Raw(body))

    def client_id(self) -> DHCP6OptClientId:
        return DHCP6OptClientId(duid=DUID_LL(lladdr=self.guest.mac))

    def server_id(self) -> DHCP6OptServerId:
        return DHCP6OptServerId(duid=DUID_LL(lladdr=self.gw_mac))

    # -- valid, or dropped for reasons that depend on the state ----------------------

    def valid(self) -> list[Sample]:
        g, o = self.guest, self.other
        sll = ICMPv6NDOptSrcLLAddr(lladdr=g.mac)
        nd = [
            Sample("rs", self.nd(ALL_ROUTERS, ICMPv6ND_RS() / sll, src=g.link_local)),
            Sample("rs_unspecified", self.nd(ALL_ROUTERS, ICMPv6ND_RS(), src="::")),
            Sample("ns_gateway", self.nd(solicited_node(self.gw), ICMPv6ND_NS(tgt=self.gw) / sll)),
            Sample("ns_dns", self.nd(solicited_node(self.dns), ICMPv6ND_NS(tgt=self.dns) / sll)),
            Sample(
                "ns_gateway_link_local",
                self.nd(
                    solicited_node(self.gw_ll), ICMPv6ND_NS(tgt=self.gw_ll) / sll, src=g.link_local
                ),
            ),
            Sample("ns_unicast", self.nd(self.gw, ICMPv6ND_NS(tgt=self.gw) / sll)),
            Sample(
                "ns_dad_gateway",
                self.nd(solicited_node(self.gw), ICMPv6ND_NS(tgt=self.gw), src="::"),
            ),
            Sample(
                "ns_dad_own",
                self.nd(solicited_node(g.address6), ICMPv6ND_NS(tgt=g.address6), src="::"),
            ),
            Sample(
                "ns_other_guest",
                self.nd(solicited_node(o.address6), ICMPv6ND_NS(tgt=o.address6) / sll),
            ),
            Sample(
                "na_unsolicited",
                self.nd(
                    ALL_NODES,
                    ICMPv6ND_NA(tgt=g.address6, R=0, S=0, O=1) / ICMPv6NDOptDstLLAddr(lladdr=g.mac),
                ),
            ),
            Sample("na_to_gateway", self.nd(self.gw, ICMPv6ND_NA(tgt=g.address6, R=0, S=1, O=1))),
            Sample(
                "ns_unknown_option",  # §4.6: unknown options are skipped
                self.nd(
                    solicited_node(self.gw),
                    ICMPv6ND_NS(tgt=self.gw) / sll / Raw(b"\xfe\x01" + bytes(6)),
                ),
            ),
            Sample(
                "mld_report_gateway_group",  # a group the gateway is in: counted, no answer
                self.nd(
                    solicited_node(self.gw),
                    ICMPv6MLReport(mladdr=solicited_node(self.gw)),
                    src=g.link_local,
                    hlim=1,
                ),
            ),
            Sample(
                "mldv2_report",
                self.eth(
                    self.ip("ff02::16", src=g.link_local, hlim=1)
                    / IPv6ExtHdrHopByHop(options=[RouterAlert()])
                    / ICMPv6MLReport2(),
                    dst=group_mac("ff02::16"),
                ),
            ),
        ]
        echo = [
            Sample(
                "ping6_gateway", self.eth(self.ip(self.gw) / ICMPv6EchoRequest(id=1, data=b"ping"))
            ),
            Sample("ping6_dns", self.eth(self.ip(self.dns) / ICMPv6EchoRequest(id=2))),
            Sample(
                "ping6_link_local",
                self.eth(self.ip(self.gw_ll, src=g.link_local) / ICMPv6EchoRequest(id=3)),
            ),
            Sample("ping6_remote", self.eth(self.ip(REMOTE6) / ICMPv6EchoRequest(id=4, seq=7))),
            Sample(
                "ping6_remote_big",
                self.eth(self.ip(REMOTE6) / ICMPv6EchoRequest(id=5, data=bytes(1200))),
            ),
            Sample(
                "ping6_gateway_over_mtu",  # a guest past its MTU: the reply would be too
                self.eth(self.ip(self.gw) / ICMPv6EchoRequest(id=6, data=bytes(self._past_mtu()))),
            ),
        ]
        dns = [
            Sample(
                "dns6_local",
                self.udp(self.dns, 53, DNS(id=11, rd=1, qd=DNSQR(qname=self._host())), sport=40011),
            ),
            Sample(
                "dns6_local_aaaa",
                self.udp(
                    self.dns,
                    53,
                    DNS(id=12, qd=DNSQR(qname=self._host(), qtype="AAAA")),
                    sport=40012,
                ),
            ),
            Sample(
                "dns6_remote",
                self.udp(self.dns, 53, DNS(id=13, rd=1, qd=DNSQR(qname="v6.test")), sport=40013),
            ),
        ]
        udp = [
            Sample("udp6_remote", self.udp(REMOTE6, 9, b"hello6")),
            Sample("udp6_gateway", self.udp(self.gw, 8080, b"to the host", sport=40001)),
            Sample("udp6_other_guest", self.udp(o.address6, 7, b"neighbour", eth_dst=o.mac)),
            Sample("udp6_mdns", self.udp("ff02::fb", 5353, b"mdns", eth_dst=group_mac("ff02::fb"))),
            Sample("udp6_padded", self.udp(REMOTE6, 9, b"p", sport=40002) + bytes(20)),
            Sample(
                "udp6_destination_options",
                self.eth(
                    self.ip(REMOTE6)
                    / IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\0\0\0\0")])
                    / UDP(sport=40003, dport=9)
                    / b"padn"
                ),
            ),
            Sample(
                "udp6_four_headers",  # every header §4.1 allows, once each (twice for one)
                self.eth(
                    self.ip(REMOTE6)
                    / IPv6ExtHdrHopByHop(options=[RouterAlert()])
                    / IPv6ExtHdrDestOpt()
                    / IPv6ExtHdrRouting(segleft=0)
                    / IPv6ExtHdrDestOpt()
                    / UDP(sport=40004, dport=9)
                ),
            ),
        ]
        dhcp = [
            Sample(
                "dhcp6_information_request",
                self.dhcp(DHCP6_InfoRequest(trid=1) / self.client_id() / DHCP6OptOptReq()),
            ),
            Sample("dhcp6_information_request_bare", self.dhcp(DHCP6_InfoRequest(trid=2))),
            Sample(
                "dhcp6_solicit",
                self.dhcp(
                    DHCP6_Solicit(trid=3)
                    / self.client_id()
                    / DHCP6OptElapsedTime()
                    / DHCP6OptIA_NA(iaid=1)
                ),
            ),
            Sample(
                "dhcp6_solicit_rapid_commit",
                self.dhcp(DHCP6_Solicit(trid=4) / self.client_id() / DHCP6OptRapidCommit()),
            ),
            Sample(
                "dhcp6_request",
                self.dhcp(
                    DHCP6_Request(trid=5) / self.client_id() / self.server_id() / DHCP6OptIA_NA()
                ),
            ),
            Sample(
                "dhcp6_information_request_unicast",
                self.dhcp(DHCP6_InfoRequest(trid=6) / self.client_id(), dst=self.gw_ll),
            ),
        ]
        tcp = [
            Sample(
                "tcp6_syn_remote",
                self.tcp(REMOTE6, 80, "S", seq=1000, options=[("MSS", 1440), ("WScale", 7)]),
            ),
            Sample("tcp6_syn_gateway", self.tcp(self.gw, 22, "S", sport=40001)),
            Sample("tcp6_syn_dns", self.tcp(self.dns, 53, "S", sport=40002)),
            Sample("tcp6_syn_with_data", self.tcp(REMOTE6, 82, "S", sport=40003, data=b"early")),
            Sample("tcp6_fin", self.tcp(REMOTE6, 80, "FA", seq=1001, ack=1)),
            Sample(
                "tcp6_to_other_guest",
                self.eth(self.ip(o.address6) / TCP(sport=40009, dport=22, flags="S"), dst=o.mac),
            ),
        ]
        return nd + echo + dns + udp + dhcp + tcp

    def _past_mtu(self) -> int:
        """Echo data for a packet 1 to 8 bytes over the MTU, in a frame of at most 65535
        bytes (the most a stream's length prefix carries)."""
        return min(self.settings.mtu - 48 + 8, 0xFFFF - 14 - 48)

    def _host(self) -> str:
        return self.settings.host_name or "host.test"

    # -- malformed, or refused by policy: one reason, whatever the state ---------------

    def malformed(self) -> list[Sample]:
        g, s = self.guest, self.settings
        sll = ICMPv6NDOptSrcLLAddr(lladdr=g.mac)
        udp = UDP(sport=40000, dport=9)
        own = g.address6
        cases: list[tuple[str, bytes, str]] = [
            # The IPv6 header and its extension headers (RFC 8200 §3, §4).
            (
                "ipv6_short_header",
                bytes(
                    Ether(dst=self.gw_mac, src=g.mac, type=0x86DD) / bytes(self.ip(REMOTE6))[:39]
                ),
                "ipv6_truncated",
            ),
            ("ipv6_lying_length", self.eth(self.ip(self.gw, plen=300) / UDP()), "ipv6_truncated"),
            ("ipv6_version_4", self.eth(self.ip(REMOTE6, version=4) / udp), "ipv6_bad_version"),
            (
                "ipv6_fragment",
                self.eth(self.ip(self.gw) / IPv6ExtHdrFragment() / UDP()),
                "ipv6_fragment",
            ),
            (
                "ipv6_header_loop",
                self.eth(
                    self.ip(self.gw)
                    / IPv6ExtHdrDestOpt()
                    / IPv6ExtHdrDestOpt()
                    / IPv6ExtHdrDestOpt()
                    / UDP()
                ),
                "ipv6_repeated_header",
            ),
            (
                "ipv6_two_routing_headers",
                self.eth(
                    self.ip(REMOTE6)
                    / IPv6ExtHdrRouting(segleft=0)
                    / IPv6ExtHdrRouting(segleft=0)
                    / udp
                ),
                "ipv6_repeated_header",
            ),
            (
                "ipv6_hop_by_hop_not_first",
                self.eth(self.ip(REMOTE6) / IPv6ExtHdrDestOpt() / IPv6ExtHdrHopByHop() / udp),
                "ipv6_misplaced_hop_by_hop",
            ),
            (
                "ipv6_routing_header",
                self.eth(
                    self.ip(REMOTE6) / IPv6ExtHdrRouting(addresses=["2001:db8::9"], segleft=1) / udp
                ),
                "ipv6_routing_header",
            ),
            (
                "ipv6_jumbogram",
                self.eth(
                    self.ip(REMOTE6, plen=0)
                    / IPv6ExtHdrHopByHop(options=[Jumbo(jumboplen=70000)])
                    / udp
                    / bytes(16)
                ),
                "ipv6_jumbogram",
            ),
            (
                "ipv6_jumbo_option_with_a_length",
                self.eth(
                    self.ip(REMOTE6) / IPv6ExtHdrHopByHop(options=[Jumbo(jumboplen=70000)]) / udp
                ),
                "ipv6_jumbogram",
            ),
            (
                "ipv6_unknown_option_discard",
                self.eth(self.ip(REMOTE6) / IPv6ExtHdrDestOpt(options=[PadN(otype=0x80)]) / udp),
                "ipv6_unknown_option",
            ),
            (
                "ipv6_option_overrun",  # a PadN claiming 9 bytes of the header's 6
                self.eth(self.ip(REMOTE6, nh=60) / Raw(b"\x11\x00\x01\x09" + bytes(4)) / udp),
                "ipv6_option_overrun",
            ),
            (
                "ipv6_header_past_payload",  # Destination Options of 48 bytes in 16
                self.eth(self.ip(REMOTE6, nh=60) / Raw(b"\x11\x05" + bytes(14))),
                "ipv6_ext_overrun",
            ),
            (
                "ipv6_sctp",
                self.eth(self.ip(self.gw, nh=132) / bytes(12)),
                "ipv6_unsupported_protocol",
            ),
            ("ipv6_no_next_header", self.eth(self.ip(REMOTE6, nh=59)), "ipv6_unsupported_protocol"),
            # Sources and destinations the gateway does not route.
            ("udp6_link_local_source", self.udp(REMOTE6, 9, src=g.link_local), "ipv6_bad_source"),
            ("udp6_gateway_source", self.udp(REMOTE6, 9, src=self.gw), "ipv6_bad_source"),
            ("udp6_foreign_source", self.udp(REMOTE6, 9, src="2001:db8::7"), "ipv6_bad_source"),
            (
                "tcp6_foreign_source",
                self.tcp(REMOTE6, 80, "S", src="2001:db8::7"),
                "ipv6_bad_source",
            ),
            ("udp6_unused_address", self.udp(self.unused, 9), "no_route"),
            ("udp6_loopback", self.udp("::1", 9), "no_route"),
            ("udp6_link_local_destination", self.udp("fe80::1", 9), "no_route"),
            ("udp6_v4_mapped", self.udp("::ffff:192.0.2.1", 9), "no_route"),
            ("udp6_site_local", self.udp("fec1::1", 9), "no_route"),
            ("udp6_group_to_gateway_mac", self.udp("ff02::fb", 5353), "no_route"),
            (
                "udp6_all_nodes",
                self.udp(ALL_NODES, 9, eth_dst=group_mac(ALL_NODES)),
                "udp_multicast",
            ),
            ("udp6_dns_other_port", self.udp(self.dns, 99), "no_service"),
            # Transports over IPv6 (RFC 8200 §8.1: a checksum always).
            (
                "udp6_zero_checksum",
                self.eth(self.ip(REMOTE6) / UDP(sport=40000, dport=9, chksum=0) / b"x"),
                "udp_zero_checksum",
            ),
            (
                "udp6_bad_checksum",
                self.eth(self.ip(REMOTE6) / UDP(sport=40000, dport=9, chksum=1) / b"x"),
                "udp_bad_checksum",
            ),
            (
                "udp6_lying_length",
                self.eth(self.ip(REMOTE6) / UDP(sport=40000, dport=9, len=200) / b"x"),
                "udp_bad_length",
            ),
            ("tcp6_bad_checksum", self.tcp(REMOTE6, 80, "S", chksum=1), "tcp_bad_checksum"),
            ("tcp6_data_offset_4", self.tcp(REMOTE6, 80, "S", dataofs=4), "tcp_bad_data_offset"),
            ("tcp6_ack_no_flow", self.tcp(REMOTE6, 80, "A", sport=1, seq=5, ack=6), "tcp_no_flow"),
            ("tcp6_dns_other_port", self.tcp(self.dns, 80, "S", sport=2), "no_service"),
            # ICMPv6 (RFC 4443).
            (
                "icmpv6_bad_checksum",
                self.eth(self.ip(self.gw) / ICMPv6EchoRequest(cksum=1)),
                "icmpv6_bad_checksum",
            ),
            (
                "icmpv6_truncated",
                self.eth(self.ip(self.gw, nh=58) / b"\x80\x00\x7f"),
                "icmpv6_truncated",
            ),
            (
                "icmpv6_type_200",
                self.eth(self.ip(self.gw) / ICMPv6Unknown(type=200, msgbody=bytes(4))),
                "icmpv6_unsupported_type",
            ),
            (
                "icmpv6_echo_reply_from_guest",
                self.eth(self.ip(REMOTE6) / ICMPv6EchoReply()),
                "icmpv6_unsupported_type",
            ),
            (
                "icmpv6_echo_to_all_nodes",
                self.eth(self.ip(ALL_NODES) / ICMPv6EchoRequest(), dst=group_mac(ALL_NODES)),
                "icmpv6_echo_not_unicast",
            ),
            # Neighbour Discovery (RFC 4861 §6.1, §7.1), each with one defect.
            (
                "ndp_hop_limit_64",
                self.nd(ALL_ROUTERS, ICMPv6ND_RS(), src=g.link_local, hlim=64),
                "ndp_bad_hop_limit",
            ),
            (
                "ndp_zero_option_length",
                self.nd(
                    solicited_node(self.gw), ICMPv6ND_NS(tgt=self.gw) / Raw(b"\x01\x00" + bytes(6))
                ),
                "ndp_zero_option_length",
            ),
            (
                "ndp_option_overrun",
                self.nd(
                    solicited_node(self.gw), ICMPv6ND_NS(tgt=self.gw) / Raw(b"\x01\x02" + bytes(6))
                ),
                "ndp_option_overrun",
            ),
            (
                "ndp_long_link_layer_option",
                self.nd(
                    solicited_node(self.gw), ICMPv6ND_NS(tgt=self.gw) / Raw(b"\x01\x02" + bytes(14))
                ),
                "ndp_bad_option_length",
            ),
            (
                "ndp_truncated",
                self.nd(ALL_ROUTERS, ICMPv6Unknown(type=135, msgbody=bytes(8)), src=g.link_local),
                "ndp_truncated",
            ),
            (
                "ndp_code_1",
                self.nd(ALL_ROUTERS, ICMPv6ND_RS(code=1), src=g.link_local),
                "ndp_bad_code",
            ),
            (
                "ndp_multicast_target",
                self.nd(ALL_NODES, ICMPv6ND_NS(tgt=ALL_NODES) / sll),
                "ndp_multicast_target",
            ),
            (
                "ndp_unspecified_with_lladdr",
                self.nd(ALL_ROUTERS, ICMPv6ND_RS() / sll, src="::"),
                "ndp_unspecified_source_lladdr",
            ),
            (
                "ndp_dad_to_all_nodes",
                self.nd(ALL_NODES, ICMPv6ND_NS(tgt=self.gw), src="::"),
                "ndp_dad_not_solicited_node",
            ),
            (
                "ndp_solicited_na_to_all_nodes",
                self.nd(ALL_NODES, ICMPv6ND_NA(tgt=own, S=1)),
                "ndp_solicited_to_multicast",
            ),
            # RA guard (RFC 6105, RFC 7113): what only routers send, never from a guest.
            (
                "ra_from_guest",
                self.nd(
                    ALL_NODES,
                    ICMPv6ND_RA() / ICMPv6NDOptPrefixInfo(prefix="2001:db8::"),
                    src=g.link_local,
                ),
                "ra_guard",
            ),
            (
                "ra_behind_a_header",
                self.eth(
                    self.ip(ALL_NODES, src=g.link_local, hlim=255)
                    / IPv6ExtHdrDestOpt()
                    / ICMPv6ND_RA(),
                    dst=group_mac(ALL_NODES),
                ),
                "ra_guard",
            ),
            (
                "ra_to_gateway",
                self.nd(self.gw_ll, ICMPv6ND_RA(), src=g.link_local),
                "ra_guard",
            ),
            (
                "redirect_to_gateway",
                self.nd(self.gw_ll, ICMPv6ND_Redirect(tgt=own, dst=REMOTE6), src=g.link_local),
                "ra_guard",
            ),
            (
                "redirect_to_other",
                self.eth(
                    self.ip(self.other.link_local, src=g.link_local, hlim=255)
                    / ICMPv6ND_Redirect(tgt=own, dst=REMOTE6),
                    dst=self.other.mac,
                ),
                "ra_guard",
            ),
            (
                "dhcp6_reply_from_guest",
                self.eth(
                    self.ip(ALL_NODES, src=g.link_local)
                    / UDP(sport=547, dport=546)
                    / DHCP6_Reply(trid=1)
                    / DHCP6OptDNSServers(dnsservers=["2001:db8::53"]),
                    dst=group_mac(ALL_NODES),
                ),
                "ra_guard",
            ),
            # DHCPv6 (RFC 8415): what a server must discard (§16), options of the wrong shape.
            ("dhcp6_truncated", self.dhcp_raw(b"\x0b\x00\x01"), "dhcpv6_truncated"),
            ("dhcp6_relay_forward", self.dhcp(DHCP6_RelayForward()), "dhcpv6_unsupported_type"),
            ("dhcp6_type_0", self.dhcp_raw(b"\x00\x00\x00\x01"), "dhcpv6_unsupported_type"),
            (
                "dhcp6_option_overrun",
                self.dhcp_raw(b"\x0b\x00\x00\x07\x00\x08\x00\x09\x00"),
                "dhcpv6_option_overrun",
            ),
            (
                "dhcp6_option_header_cut",
                self.dhcp_raw(b"\x0b\x00\x00\x08\x00\x08\x00"),
                "dhcpv6_option_overrun",
            ),
            (
                "dhcp6_odd_option_request",
                self.dhcp_raw(b"\x0b\x00\x00\x09\x00\x06\x00\x03\x00\x17\x00"),
                "dhcpv6_bad_option_length",
            ),
            (
                "dhcp6_elapsed_time_3_bytes",
                self.dhcp_raw(b"\x0b\x00\x00\x0a\x00\x08\x00\x03\x00\x00\x00"),
                "dhcpv6_bad_option_length",
            ),
            (
                "dhcp6_dns_servers_15_bytes",
                self.dhcp_raw(b"\x0b\x00\x00\x0b\x00\x17\x00\x0f" + bytes(15)),
                "dhcpv6_bad_option_length",
            ),
            (
                "dhcp6_short_duid",
                self.dhcp_raw(b"\x0b\x00\x00\x0c\x00\x01\x00\x02\x00\x03"),
                "dhcpv6_bad_duid",
            ),
            (
                "dhcp6_two_client_ids",
                self.dhcp(DHCP6_InfoRequest(trid=13) / self.client_id() / self.client_id()),
                "dhcpv6_repeated_option",
            ),
            (
                "dhcp6_solicit_without_client_id",
                self.dhcp(DHCP6_Solicit(trid=14) / DHCP6OptIA_NA()),
                "dhcpv6_missing_client_id",
            ),
            (
                "dhcp6_solicit_with_server_id",
                self.dhcp(DHCP6_Solicit(trid=15) / self.client_id() / self.server_id()),
                "dhcpv6_unexpected_server_id",
            ),
            (
                "dhcp6_request_without_server_id",
                self.dhcp(DHCP6_Request(trid=16) / self.client_id()),
                "dhcpv6_missing_server_id",
            ),
            (
                "dhcp6_request_other_server",
                self.dhcp(DHCP6_Request(trid=17) / self.client_id() / DHCP6OptServerId(duid=_DUID)),
                "dhcpv6_other_server",
            ),
            (
                "dhcp6_information_request_with_ia",
                self.dhcp(DHCP6_InfoRequest(trid=18) / DHCP6OptIA_NA()),
                "dhcpv6_ia_in_information_request",
            ),
            (
                "dhcp6_renew",
                self.dhcp(DHCP6_Renew(trid=19) / self.client_id() / self.server_id()),
                "dhcpv6_unsupported_message",
            ),
            (
                "dhcp6_reply_to_the_server_port",  # from the client port: not guarded, refused
                self.dhcp(DHCP6_Reply(trid=20) / self.client_id()),
                "dhcpv6_server_message",
            ),
        ]
        if not s.dns_upstreams:
            cases.append(
                ("tcp6_dns_no_upstream", self.tcp(self.dns, 53, "S", sport=4), "no_service")
            )
        if s.restrict:
            cases += [
                ("restricted_udp6", self.udp(REMOTE6, 9), "restricted"),
                (
                    "restricted_ping6",
                    self.eth(self.ip(REMOTE6) / ICMPv6EchoRequest(id=9)),
                    "restricted",
                ),
                ("restricted_tcp6", self.tcp(REMOTE6, 80, "S", sport=5), "restricted"),
                ("restricted_gateway6", self.udp(self.gw, 8080), "restricted"),
            ]
        else:
            if not s.host_loopback:
                cases.append(
                    ("udp6_gateway_no_loopback", self.udp(self.gw, 8080), "host_loopback_disabled")
                )
            for network in s.deny:
                if network.version == 6:
                    denied = str(network.network_address + 1)
                    cases.append(("udp6_denied", self.udp(denied, 9), "denied"))
        return [Sample(name, frame, reason) for name, frame, reason in cases]

    # -- a router's or a DHCPv6 server's messages, disguised -----------------------------

    def rogue(self, kind: str, disguise: str, to: str) -> bytes:
        o = self.other
        dst, eth_dst = {
            "all_nodes": (ALL_NODES, group_mac(ALL_NODES)),
            "other": (o.link_local, o.mac),
            "broadcast": (ALL_NODES, BROADCAST),
            "unknown": (o.link_local, UNKNOWN_MAC),
            "gateway": (self.gw_ll, self.gw_mac),
        }[to]
        if kind == "ra":
            message: Packet = ICMPv6ND_RA() / ICMPv6NDOptPrefixInfo(prefix="2001:db8:bad::")
        elif kind == "redirect":
            message = ICMPv6ND_Redirect(tgt=self.guest.link_local, dst=REMOTE6)
        else:
            body = {
                "dhcpv6_reply": DHCP6_Reply,
                "dhcpv6_advertise": DHCP6_Advertise,
                "dhcpv6_reconfigure": DHCP6_Reconf,
                "dhcpv6_relay_reply": DHCP6_RelayReply,
            }[kind]()
            dport = 547 if kind == "dhcpv6_relay_reply" else 546
            # The source port hides nothing from a relay agent, which listens on 547 too.
            sport = 40547 if disguise == "client_port" and dport == 546 else 547
            message = (
                UDP(sport=sport, dport=dport)
                / body
                / DHCP6OptDNSServers(dnsservers=["2001:db8:bad::53"])
            )
        upper = 58 if kind in ("ra", "redirect") else 17
        ip = self.ip(dst, src=self.guest.link_local, hlim=255)
        chain = _disguise(disguise, upper)
        if chain is not None:
            if disguise == "ah":
                ip.nh = 51  # scapy cannot tell raw bytes are AH
            message = chain / message
        frame = self.eth(ip / message, dst=eth_dst)
        return frame + bytes(30) if disguise == "padded" else frame

    # -- solicitations, valid or with one defect ----------------------------------------

    def ndp(self, kind: str, defect: str) -> tuple[bytes, str | None, str]:
        g = self.guest
        src, target = g.address6, self.gw
        code = 1 if defect == "code_1" else 0
        if kind.startswith("rs"):
            src = "::" if kind == "rs_unspecified" else g.link_local
            dst = ALL_ROUTERS
            message: Packet = ICMPv6ND_RS(code=code)
        else:
            target = {"ns_dns": self.dns, "ns_link_local": self.gw_ll}.get(kind, self.gw)
            src = {"ns_link_local": g.link_local, "dad": "::"}.get(kind, src)
            dst = target if kind == "ns_unicast" else solicited_node(target)
            message = ICMPv6ND_NS(tgt=target, code=code)
        if src != "::":  # §4.1, §4.3: the unspecified source carries no link-layer address
            message = message / ICMPv6NDOptSrcLLAddr(lladdr=g.mac)
        if defect == "zero_option_length":
            message = message / Raw(b"\x0e\x00" + bytes(6))
        elif defect == "option_overrun":
            message = message / Raw(b"\x0e\x03" + bytes(6))
        elif defect == "long_link_layer_option":
            message = message / Raw(b"\x01\x02" + bytes(14))
        elif defect == "bad_checksum":
            message.cksum = 1
        elif defect == "truncated":  # NS: half its target; RS: its ICMPv6 header cut
            type_ = 133 if kind.startswith("rs") else 135
            message = ICMPv6Unknown(type=type_, msgbody=bytes(2 if type_ == 133 else 8))
        reason = NDP_DEFECTS[defect]
        if defect == "truncated" and kind.startswith("rs"):
            reason = "icmpv6_truncated"
        frame = self.nd(dst, message, src=src, hlim=64 if defect == "hop_limit_64" else 255)
        return frame, reason, ALL_NODES if src == "::" else src


def _disguise(disguise: str, upper: int) -> Packet | bytes | None:
    """The extension headers that come before ``upper`` in a rogue message."""
    if disguise == "hop_by_hop":
        return IPv6ExtHdrHopByHop(options=[RouterAlert()])
    if disguise == "destination_options":
        return IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\0\0\0\0")])
    if disguise == "routing":
        return IPv6ExtHdrRouting(segleft=0)
    if disguise == "four_headers":
        return (
            IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / IPv6ExtHdrRouting() / IPv6ExtHdrDestOpt()
        )
    if disguise == "three_destination_options":
        return IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt()
    if disguise == "first_fragment":
        return IPv6ExtHdrFragment(offset=0, m=1, id=0x6006)
    if disguise == "atomic_fragment":
        return IPv6ExtHdrFragment(offset=0, m=0, id=0x6007)
    if disguise == "ah":
        # RFC 4302 §2: next header, length in 32-bit words less 2, reserved, SPI,
        # sequence number and a 4-byte ICV: 16 bytes, a multiple of 8 as IPv6 needs.
        return Raw(struct.pack("!BBHII", upper, 2, 0, 0x100, 1) + bytes(4))
    return None
