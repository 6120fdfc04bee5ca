"""Forwards through the core: host connections and datagrams reaching a guest's port.

The forwarded traffic reaches the guest from the gateway's address and a port of
``FORWARD_PORTS``, as libslirp's hostfwd does; the guest's answers come back
through the same flow.  scapy builds the guest's frames and checks ours.
"""

from __future__ import annotations

from collections import Counter
from ipaddress import IPv4Address

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from slirpnet.core.flows import CloseFlow, OpenFlow, ResumeFlow, SendFlow, ShutdownFlow, TcpFlow
from slirpnet.core.forwards import Forward, parse_forwards
from slirpnet.core.gatewayports import FORWARD_PORTS
from slirpnet.core.segment import Segment
from slirpnet.core.tcp import State
from tests.test_core_dhcp import Client
from tests.test_core_segment import GATEWAY_IP, GUEST_MAC, OTHER_MAC, checked, framed, new_segment
from tests.test_core_tcp import TcpShell, frames

PEER = (IPv4Address("127.0.0.1"), 51000)
SSH = parse_forwards("tcp::2222-:22")[0]
DNS_FWD = parse_forwards("udp::5353-:53")[0]


def leased(segment: Segment, mac: str = GUEST_MAC) -> tuple[Client, str]:
    client = Client(segment, mac)
    return client, client.lease()


def from_guest(address: str, layers: TCP | UDP, mac: str = GUEST_MAC) -> bytes:
    return framed(IP(src=address, dst=GATEWAY_IP) / layers, src=mac)


def test_no_vm_no_connection() -> None:
    segment = new_segment()
    assert segment.forward_connection(SSH, PEER, 0.0) is None
    assert segment.forward_datagram(DNS_FWD, PEER, b"q", 0.0) is None
    assert segment.take_actions() == []


def test_a_connection_opens_to_the_leased_guest_and_carries_data_both_ways() -> None:
    segment = new_segment()
    shell = TcpShell(segment)
    client, address = leased(segment)
    vm = client.vm
    flow = segment.forward_connection(SSH, PEER, 1.0)
    assert isinstance(flow, TcpFlow) and flow.forward == SSH
    assert shell.opened() is flow
    (syn,) = frames(vm)
    assert (syn[IP].src, syn[IP].dst, syn[Ether].dst) == (GATEWAY_IP, address, GUEST_MAC)
    assert syn[TCP].flags == "S" and syn[TCP].dport == 22
    assert syn[TCP].sport in FORWARD_PORTS
    options = dict(syn[TCP].options)
    assert options["MSS"] == 65480 and options["WScale"] == 7

    gport, iss = syn[TCP].sport, syn[TCP].seq
    syn_ack = TCP(sport=22, dport=gport, flags="SA", seq=500, ack=iss + 1, options=[("MSS", 1460)])
    segment.receive(vm, from_guest(address, syn_ack), 1.1)
    (ack,) = frames(vm)
    assert ack[TCP].flags == "A" and ack[TCP].ack == 501
    assert [type(a) for a in shell.actions()] == [ResumeFlow]
    assert flow.endpoint.state is State.ESTABLISHED

    segment.flow_received(flow, b"SSH-2.0-host\r\n", 1.2)
    (data,) = frames(vm)
    assert bytes(data[TCP].payload) == b"SSH-2.0-host\r\n"
    reply = TCP(sport=22, dport=gport, flags="PA", seq=501, ack=iss + 15) / b"SSH-2.0-guest\r\n"
    segment.receive(vm, from_guest(address, reply), 1.3)
    fin = TCP(sport=22, dport=gport, flags="FA", seq=516, ack=iss + 15)
    segment.receive(vm, from_guest(address, fin), 1.4)
    shell.actions()
    assert bytes(shell.sent[flow]) == b"SSH-2.0-guest\r\n"
    assert flow in shell.shut
    assert vm.stats.events["forward_tcp"] == 1


def test_a_closed_guest_port_resets_the_host_connection() -> None:
    segment = new_segment()
    shell = TcpShell(segment)
    client, address = leased(segment)
    flow = segment.forward_connection(SSH, PEER, 0.0)
    assert flow is not None
    shell.opened()
    (syn,) = frames(client.vm)
    reset = TCP(sport=22, dport=syn[TCP].sport, flags="RA", seq=0, ack=syn[TCP].seq + 1)
    segment.receive(client.vm, from_guest(address, reset), 0.1)
    actions = shell.actions()
    assert actions == [CloseFlow(flow, abort=True)]
    assert not client.vm.flows


def test_a_guest_address_picks_the_vm_that_sent_from_it() -> None:
    segment = new_segment()
    first = segment.attach("first")
    second = segment.attach("second")
    # No leases: the guests are configured by hand; what they send tells who is where.
    for vm, mac, address in ((first, GUEST_MAC, "10.0.2.50"), (second, OTHER_MAC, "10.0.2.51")):
        segment.receive(vm, from_guest(address, UDP(sport=9, dport=9), mac), 0.0)
    segment.take_actions()
    (to_second,) = parse_forwards("tcp::8022-10.0.2.51:22")
    flow = segment.forward_connection(to_second, PEER, 0.0)
    assert flow is not None and flow.vm is second
    (syn,) = frames(second)
    assert syn[IP].dst == "10.0.2.51" and syn[Ether].dst == OTHER_MAC
    (nobody,) = parse_forwards("tcp::8023-10.0.2.52:22")
    assert segment.forward_connection(nobody, PEER, 0.0) is None
    segment.detach(second)
    assert segment.forward_connection(to_second, PEER, 0.0) is None


def test_each_connection_gets_its_own_gateway_port() -> None:
    segment = new_segment()
    client, _ = leased(segment)
    ports = set()
    for n in range(5):
        flow = segment.forward_connection(SSH, (PEER[0], 51000 + n), 0.0)
        assert flow is not None
        ports.add(flow.dst_port)
    assert len(ports) == 5 and len(client.vm.flows) == 5


def test_the_flow_cap_refuses_forwards_too() -> None:
    segment = new_segment(max_flows=2)
    client, _ = leased(segment)
    assert segment.forward_connection(SSH, PEER, 0.0) is not None
    assert segment.forward_connection(SSH, (PEER[0], 51001), 0.0) is not None
    assert segment.forward_connection(SSH, (PEER[0], 51002), 0.0) is None
    assert client.vm.stats.drops["flow_limit"] == 1


def test_datagrams_reach_the_guest_and_its_replies_go_back_to_the_peer() -> None:
    segment = new_segment(restrict=True)  # forwards work however restricted the guest is
    client, address = leased(segment)
    vm = client.vm
    flow = segment.forward_datagram(DNS_FWD, PEER, b"query", 2.0)
    assert flow is not None and flow.forward == DNS_FWD
    assert [type(a) for a in segment.take_actions()] == [OpenFlow]
    (datagram,) = [checked(f) for f in vm.take_frames()]
    assert (datagram[IP].src, datagram[UDP].dport) == (GATEWAY_IP, 53)
    assert bytes(datagram[UDP].payload) == b"query"
    gport = datagram[UDP].sport

    segment.receive(vm, from_guest(address, UDP(sport=53, dport=gport) / b"answer"), 2.1)
    assert segment.take_actions() == [SendFlow(flow, b"answer")]

    assert segment.forward_datagram(DNS_FWD, PEER, b"again", 3.0) is flow
    assert segment.take_actions() == []
    other = segment.forward_datagram(DNS_FWD, (PEER[0], 51999), b"other peer", 3.0)
    assert other is not None and other is not flow and other.dst_port != gport

    segment.handle_timer(3.0 + 61.0)  # idle for longer than the UDP timeout
    assert {a.flow for a in segment.take_actions() if isinstance(a, CloseFlow)} == {flow, other}
    renewed = segment.forward_datagram(DNS_FWD, PEER, b"later", 70.0)
    assert renewed is not None and renewed is not flow


def test_a_datagram_over_the_mtu_goes_in_fragments() -> None:
    segment = new_segment(mtu=1500)
    client, _ = leased(segment)
    assert segment.forward_datagram(DNS_FWD, PEER, b"x" * 1473, 0.0) is not None
    first, last = (checked(frame) for frame in client.vm.take_frames())
    assert (first[IP].flags, len(first[IP]), last[IP].frag, len(last[IP])) == ("MF", 1500, 185, 21)
    assert client.vm.stats.drops == Counter()


def test_shutdown_and_close_follow_the_guest() -> None:
    segment = new_segment()
    shell = TcpShell(segment)
    client, address = leased(segment)
    flow = segment.forward_connection(Forward("tcp", PEER[0], 80, None, 80), PEER, 0.0)
    assert flow is not None
    shell.opened()
    (syn,) = frames(client.vm)
    gport, iss = syn[TCP].sport, syn[TCP].seq
    for layer in (
        TCP(sport=80, dport=gport, flags="SA", seq=10, ack=iss + 1),
        TCP(sport=80, dport=gport, flags="FA", seq=11, ack=iss + 1),
    ):
        segment.receive(client.vm, from_guest(address, layer), 0.1)
    segment.flow_eof(flow, 0.2)
    (_, _, fin) = frames(client.vm)
    assert fin[TCP].flags == "FA"
    segment.receive(
        client.vm,
        from_guest(address, TCP(sport=80, dport=gport, flags="A", seq=12, ack=iss + 2)),
        0.3,
    )
    kinds = [type(a) for a in shell.actions()]
    assert kinds == [ResumeFlow, ShutdownFlow, CloseFlow]
    assert shell.closed[flow] is False  # an orderly close, not a reset
