"""Guest forwards: their specs, their checks against the network, and the core's side.

The gateway answers ARP and pings for a guestfwd's address; a SYN to its port becomes
a flow whose host end is the guestfwd's target; other ports are closed (a RST, ICMP
port unreachable for UDP), and DHCP never leases the address.  scapy builds the
guest's frames and checks ours.
"""

from __future__ import annotations

from collections import Counter
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDPerror
from scapy.layers.l2 import ARP, Ether

from slirpnet.config import ConfigError, load_file, namespace_from_values
from slirpnet.core.flows import TcpFlow
from slirpnet.core.guestfwd import (
    CommandTarget,
    GuestForward,
    GuestForwards,
    TcpTarget,
    UnixTarget,
    parse_guestfwd,
    parse_key,
)
from tests.test_cli import run_main
from tests.test_config import from_flags
from tests.test_core_dhcp import Client
from tests.test_core_segment import (
    GATEWAY_MAC,
    GUEST_IP,
    GUEST_MAC,
    arp_request,
    checked,
    echo_frame,
    framed,
    new_segment,
    udp_frame,
)
from tests.test_core_tcp import TcpShell, frames

SERVICE = "10.0.2.100"
ECHO = parse_guestfwd(f"tcp:{SERVICE}:4321-cmd:cat")


# -- specs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "address", "port", "target"),
    [
        (
            "tcp:10.0.2.100:4321-tcp:127.0.0.1:5000",
            "10.0.2.100",
            4321,
            TcpTarget(IPv4Address("127.0.0.1"), 5000),
        ),
        (":10.0.2.100:80-tcp:[::1]:8080", "10.0.2.100", 80, TcpTarget(IPv6Address("::1"), 8080)),
        ("tcp::1-tcp::7", None, 1, TcpTarget(IPv4Address("127.0.0.1"), 7)),
        ("tcp:10.0.2.9:22-unix:/run/a-b.sock", "10.0.2.9", 22, UnixTarget("/run/a-b.sock")),
        (
            "tcp:10.0.2.100:4321-cmd:sh -c 'echo hi-there; cat'",
            "10.0.2.100",
            4321,
            CommandTarget("sh -c 'echo hi-there; cat'", ("sh", "-c", "echo hi-there; cat")),
        ),
    ],
)
def test_specs_parse_and_print_back(
    spec: str, address: str | None, port: int, target: object
) -> None:
    forward = parse_guestfwd(spec)
    assert forward == GuestForward(address and IPv4Address(address), port, target)  # type: ignore[arg-type]
    assert parse_guestfwd(str(forward)) == forward


def test_without_an_address_it_is_libslirps_x_x_2_4() -> None:
    forward = parse_guestfwd("tcp::4321-cmd:cat")
    assert str(forward) == "tcp::4321-cmd:cat"
    assert forward.within(IPv4Network("10.0.2.0/24")).address == IPv4Address("10.0.2.4")
    assert forward.within(IPv4Network("10.9.0.0/16")).address == IPv4Address("10.9.2.4")
    assert forward.within(IPv4Network("192.168.7.0/29")).address == IPv4Address("192.168.7.4")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("udp:10.0.2.100:53-tcp:127.0.0.1:53", "guestfwd is TCP only, as libslirp's is"),
        ("10.0.2.100:4321-cmd:cat", "is not [tcp]:[ADDR]:PORT-"),
        ("sctp:10.0.2.100:4321-cmd:cat", "is not [tcp]:[ADDR]:PORT-"),
        ("tcp:10.0.2.100:4321", "is not [tcp]:[ADDR]:PORT-"),
        ("tcp:10.0.2.100:4321-", "is not [tcp]:[ADDR]:PORT-"),
        ("tcp:10.0.2.x:4321-cmd:cat", "'10.0.2.x' is not an IPv4 address"),
        ("tcp:10.0.2.100:0-cmd:cat", "'0' is not a port number"),
        ("tcp:10.0.2.100:65536-cmd:cat", "'65536' is not a port number"),
        ("tcp:10.0.2.100:4321-cmd:", "the command is empty"),
        ("tcp:10.0.2.100:4321-cmd:sh -c 'unclosed", "the command cannot be split"),
        ("tcp:10.0.2.100:4321-unix:", "the unix socket's path is empty"),
        ("tcp:10.0.2.100:4321-tcp:localhost:5000", "'localhost' is not an IP address"),
        ("tcp:10.0.2.100:4321-tcp:127.0.0.1:x", "'x' is not a port number"),
        ("tcp:10.0.2.100:4321-tcp:5000", "the target is not tcp:HOST:PORT"),
        ("tcp:10.0.2.100:4321-udp:127.0.0.1:53", "is not tcp:HOST:PORT, unix:PATH or cmd:COMMAND"),
        ("tcp:10.0.2.100:4321-stdio", "is not tcp:HOST:PORT, unix:PATH or cmd:COMMAND"),
    ],
)
def test_a_bad_spec_is_one_line_naming_the_key(
    spec: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError) as info:
        parse_guestfwd(spec)
    assert message in str(info.value)
    code, err = run_main(["serve", "--guestfwd", spec], capsys)
    assert code == 2
    assert err == f"slirpnet: error: guestfwd: {info.value}\n"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tcp:10.0.2.2:80-cmd:cat", "10.0.2.2 is the gateway's address"),
        ("tcp:10.0.2.3:80-cmd:cat", "10.0.2.3 is the DNS server's address"),
        ("tcp:10.0.2.50:80-cmd:cat", "10.0.2.50 is a static lease's address"),
        ("tcp:10.0.3.100:80-cmd:cat", "10.0.3.100 is not a host address of 10.0.2.0/24"),
        ("tcp:10.0.2.255:80-cmd:cat", "10.0.2.255 is not a host address of 10.0.2.0/24"),
        ("tcp:10.0.2.0:80-cmd:cat", "10.0.2.0 is not a host address of 10.0.2.0/24"),
    ],
)
def test_the_address_must_be_a_free_host_address_of_the_network(spec: str, message: str) -> None:
    values = {"guestfwd": [spec], "static-lease": ["52:54:00:00:00:01=10.0.2.50"]}
    with pytest.raises(ConfigError) as info:
        namespace_from_values("default", values)
    assert str(info.value) == f"guestfwd: {spec}: {message}"


def test_an_address_and_port_given_twice_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"^guestfwd: .*: 10\.0\.2\.4:80 is given twice$"):
        namespace_from_values("default", {"guestfwd": ["tcp::80-cmd:cat", ":10.0.2.4:80-cmd:ls"]})


def test_the_default_address_follows_the_network() -> None:
    ns = namespace_from_values("default", {"net": "10.9.0.0/16", "guestfwd": ["tcp::80-cmd:cat"]})
    assert [str(f) for f in GuestForwards(ns.settings.network, ns.settings.guest_forwards)] == [
        "tcp:10.9.2.4:80-cmd:cat"
    ]
    with pytest.raises(ConfigError, match=r"10\.9\.2\.4 is the gateway's address"):
        namespace_from_values(
            "default", {"net": "10.9.0.0/16", "gateway": "10.9.2.4", "guestfwd": "tcp::80-cmd:cat"}
        )


def test_toml_takes_a_list_per_namespace(tmp_path: Path) -> None:
    path = tmp_path / "slirpnet.toml"
    path.write_text(
        'guestfwd = ["tcp:10.0.2.100:4321-tcp:127.0.0.1:5000"]\n'
        "[namespace.a]\n"
        'listen = "unix:/tmp/a.sock"\n'
        "[namespace.b]\n"
        'listen = "unix:/tmp/b.sock"\n'
        "guestfwd = [\"tcp:10.0.2.100:4321-cmd:sh -c 'date'\", 'tcp::22-unix:/run/ssh.sock']\n"
        "isolate = true\n"
    )
    a, b = load_file(path).namespaces
    assert [str(f) for f in a.settings.guest_forwards] == ["tcp:10.0.2.100:4321-tcp:127.0.0.1:5000"]
    assert [str(f) for f in b.settings.guest_forwards] == [
        "tcp:10.0.2.100:4321-cmd:sh -c 'date'",
        "tcp::22-unix:/run/ssh.sock",
    ]
    path.write_text("[namespace.a]\nlisten = 'unix:/tmp/a.sock'\nguestfwd = ['udp::53-cmd:x']\n")
    with pytest.raises(ConfigError) as info:
        load_file(path)
    assert info.value.key == "namespace.a.guestfwd"


def test_qemus_user_string_and_the_flag_add_up() -> None:
    (namespace,) = from_flags(
        "--user",
        "user,id=n0,net=10.0.9.0/24,guestfwd=tcp::4321-cmd:nc 127.0.0.1 22",
        "--guestfwd",
        "tcp:10.0.9.100:80-unix:/run/web.sock",
    ).namespaces
    table = GuestForwards(namespace.settings.network, namespace.settings.guest_forwards)
    assert [str(forward) for forward in table] == [
        "tcp:10.0.9.4:4321-cmd:nc 127.0.0.1 22",
        "tcp:10.0.9.100:80-unix:/run/web.sock",
    ]
    for text, key in [
        ("guestfwd=udp::53-cmd:cat", "user.guestfwd"),
        ("host=10.0.2.4,guestfwd=tcp::53-cmd:cat", "user.guestfwd"),
    ]:
        with pytest.raises(ConfigError) as info:
            from_flags("--user", text)
        assert info.value.key == key, info.value


def test_key_names_a_guestfwd_for_removal() -> None:
    assert parse_key("tcp:10.0.2.100:4321") == (IPv4Address("10.0.2.100"), 4321)
    assert parse_key(":10.0.2.100:4321") == (IPv4Address("10.0.2.100"), 4321)
    assert parse_key("tcp::4321") == (None, 4321)
    assert ECHO.key == "tcp:10.0.2.100:4321"


def test_the_table_by_address_and_port() -> None:
    table = GuestForwards(IPv4Network("10.0.2.0/24"), [ECHO])
    other_port = parse_guestfwd(f"tcp:{SERVICE}:7-cmd:true")
    assert table.add(other_port) == other_port
    default = table.add(parse_guestfwd("tcp::7-cmd:true"))
    assert default.address == IPv4Address("10.0.2.4")
    with pytest.raises(KeyError, match=r"tcp:10\.0\.2\.100:4321 has a guestfwd already"):
        table.add(parse_guestfwd(f"tcp:{SERVICE}:4321-cmd:ls"))
    assert IPv4Address(SERVICE) in table and IPv4Address("10.0.2.4") in table
    assert table.get(IPv4Address(SERVICE), 4321) == ECHO
    assert table.get(IPv4Address(SERVICE), 4322) is None
    assert table.remove(IPv4Address(SERVICE), 4321) == ECHO
    assert IPv4Address(SERVICE) in table  # its port 7 is still there
    table.remove(IPv4Address(SERVICE), 7)
    assert IPv4Address(SERVICE) not in table
    table.remove(None, 7)  # the default address
    assert len(table) == 0
    with pytest.raises(KeyError):
        table.remove(IPv4Address(SERVICE), 7)


# -- the core ----------------------------------------------------------------------


def syn(dport: int, *, dst: str = SERVICE, sport: int = 40000) -> bytes:
    tcp = TCP(sport=sport, dport=dport, flags="S", seq=1000, options=[("MSS", 1460)])
    return framed(IP(src=GUEST_IP, dst=dst) / tcp)


def test_the_gateway_answers_arp_for_a_guestfwd_address() -> None:
    segment = new_segment(guest_forwards=(ECHO,))
    vm = segment.attach("guest")
    segment.receive(vm, arp_request(SERVICE), 0.0)
    (reply,) = vm.take_frames()
    assert reply == bytes(
        Ether(dst=GUEST_MAC, src=GATEWAY_MAC)
        / ARP(op=2, hwsrc=GATEWAY_MAC, psrc=SERVICE, hwdst=GUEST_MAC, pdst=GUEST_IP)
    )
    segment.receive(vm, arp_request("10.0.2.101"), 0.0)  # not a guestfwd's: a guest's business
    assert vm.take_frames() == []
    # Added and removed at run time: the answer comes and goes with it.
    segment.guest_forwards.add(parse_guestfwd("tcp:10.0.2.101:1-cmd:true"))
    segment.receive(vm, arp_request("10.0.2.101"), 0.0)
    assert checked(vm.take_frames()[0])[ARP].psrc == "10.0.2.101"
    segment.guest_forwards.remove(IPv4Address("10.0.2.101"), 1)
    segment.receive(vm, arp_request("10.0.2.101"), 0.0)
    assert vm.take_frames() == []
    assert vm.stats.drops == Counter()


def test_a_syn_to_the_port_opens_a_flow_to_the_target() -> None:
    segment = new_segment(guest_forwards=(ECHO,), restrict=True)  # no policy stands in the way
    shell = TcpShell(segment)
    vm = segment.attach("guest")
    segment.receive(vm, syn(4321), 1.0)
    flow = shell.opened()
    assert isinstance(flow, TcpFlow) and flow.guestfwd == ECHO
    assert (str(flow.dst_address), flow.dst_port) == (SERVICE, 4321)
    assert frames(vm) == []  # the SYN-ACK waits for the target
    segment.flow_connected(flow, 1.1)
    (syn_ack,) = frames(vm)
    assert (syn_ack[IP].src, syn_ack[TCP].sport, syn_ack[TCP].flags) == (SERVICE, 4321, "SA")
    assert syn_ack[TCP].ack == 1001
    ack = TCP(sport=40000, dport=4321, flags="PA", seq=1001, ack=syn_ack[TCP].seq + 1)
    segment.receive(vm, framed(IP(src=GUEST_IP, dst=SERVICE) / ack / b"hello"), 1.2)
    shell.actions()
    assert bytes(shell.sent[flow]) == b"hello"
    segment.flow_received(flow, b"hello", 1.3)
    (echoed,) = frames(vm)
    assert echoed[IP].src == SERVICE and bytes(echoed[TCP].payload) == b"hello"
    assert vm.stats.drops == Counter()


@pytest.mark.parametrize("failure", ["refused", "failed"])
def test_a_target_that_fails_is_a_rst(failure: str) -> None:
    segment = new_segment(guest_forwards=(ECHO,))
    shell = TcpShell(segment)
    vm = segment.attach("guest")
    segment.receive(vm, syn(4321), 1.0)
    flow = shell.opened()
    segment.flow_error(flow, failure, 1.1)
    (reset,) = frames(vm)
    assert (reset[IP].src, reset[TCP].flags, reset[TCP].ack) == (SERVICE, "RA", 1001)
    shell.actions()
    assert list(shell.closed) == [flow] and flow.closed
    assert vm.stats.events[f"tcp_host_{failure}"] == 1


def test_other_ports_and_udp_are_closed_and_pings_answered() -> None:
    segment = new_segment(guest_forwards=(ECHO,))
    shell = TcpShell(segment)
    vm = segment.attach("guest")
    segment.receive(vm, syn(4322), 0.0)
    (reset,) = frames(vm)
    assert (reset[IP].src, reset[TCP].sport, reset[TCP].flags) == (SERVICE, 4322, "RA")
    segment.receive(vm, udp_frame(SERVICE, 4321), 0.0)
    (unreachable,) = frames(vm)
    assert (unreachable[ICMP].type, unreachable[ICMP].code) == (3, 3)
    assert unreachable[UDPerror].dport == 4321
    segment.receive(vm, echo_frame(SERVICE), 0.0)
    (pong,) = frames(vm)
    assert (pong[IP].src, pong[ICMP].type, bytes(pong[ICMP].payload)) == (SERVICE, 0, b"ping!")
    assert shell.actions() == []  # nothing reached the host
    assert vm.stats.drops == Counter(no_service=2)


def test_dhcp_never_leases_a_guestfwd_address() -> None:
    # The pool starts at the guestfwd's address: DHCP passes over it, at start and at run time.
    segment = new_segment(dhcp_start=IPv4Address(SERVICE), guest_forwards=(ECHO,))
    assert Client(segment, GUEST_MAC).lease() == "10.0.2.101"
    segment.guest_forwards.add(parse_guestfwd("tcp:10.0.2.102:1-cmd:true"))
    assert Client(segment, "52:54:00:00:00:02").lease() == "10.0.2.103"


def test_a_guestfwd_flow_outlives_its_removal() -> None:
    segment = new_segment(guest_forwards=(ECHO,))
    shell = TcpShell(segment)
    vm = segment.attach("guest")
    segment.receive(vm, syn(4321), 0.0)
    flow = shell.opened()
    segment.guest_forwards.remove(IPv4Address(SERVICE), 4321)
    segment.flow_connected(flow, 0.1)
    assert [f[TCP].flags for f in frames(vm)] == ["SA"]
    # A new connection finds nothing there: the address is no longer answered for.
    segment.receive(vm, syn(4321, sport=40001), 0.2)
    assert frames(vm) == [] and vm.stats.drops == Counter(no_route=1)
    assert shell.actions() == []
    assert not flow.closed
