"""IPv6 with the real Linux stack as the guest: SLAAC, NDP, ping, DNS, TCP both ways, forwards.

The namespace's kernel takes its address from slirpnet's router advertisements
(``integration/linux/ipv6.py``), as any Linux guest does.  The gateway fec0::2 stands for
the host's ::1, as 10.0.2.2 stands for 127.0.0.1: servers here listen on ::1 and every
byte that crosses is checked by its SHA-256.  Frames are read back with scapy where
their content is the point (the advertisement, the DHCPv6 reply, DNS).
"""

from __future__ import annotations

import contextlib
import errno
import socket
import subprocess
from collections.abc import AsyncIterator
from ipaddress import IPv6Address
from pathlib import Path

import pytest
import trio
from scapy.layers.dhcp6 import (
    DUID_LL,
    DHCP6_InfoRequest,
    DHCP6_Reply,
    DHCP6OptClientId,
    DHCP6OptDNSDomains,
    DHCP6OptDNSServers,
    DHCP6OptElapsedTime,
    DHCP6OptOptReq,
    DHCP6OptServerId,
)
from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet6 import (
    ICMPv6ND_RA,
    ICMPv6NDOptDNSSL,
    ICMPv6NDOptMTU,
    ICMPv6NDOptPrefixInfo,
    ICMPv6NDOptRDNSS,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
)

from integration.conftest import LOSSY, skip_unless_linux_guest
from integration.linux import ipv6, system
from integration.linux.harness import LinuxGuest, open_linux_guest
from integration.linux.nshost6 import ipv6_namespace_host
from integration.linux.relay import read_stats
from integration.linux.traffic import (
    TransferServer,
    digest,
    echo,
    exchange,
    loopback_server,
    parallel_transfers,
    transfer,
)
from integration.services import DnsUpstream, dns_upstream
from integration.test_tcp_lossy import assert_the_link_was_lossy

MB = 1 << 20
STATIC6 = "fec0::15"  # the guest's address by hand, beside SLAAC's
SEARCH = "v6.slirpnet.test"
RECORDS = {"www.slirpnet.test": "192.0.2.10"}  # an answer only: nobody ever sends there
TYPE_A, TYPE_AAAA = 1, 28
LOCAL6, LOCAL6_ADDRESS = "v6only.slirpnet.test", "fec0::99"  # a local name with AAAA alone


@pytest.fixture
async def dns() -> AsyncIterator[DnsUpstream]:
    async with dns_upstream(RECORDS) as upstream:
        yield upstream


@pytest.fixture
async def guest(tmp_path: Path, dns: DnsUpstream) -> AsyncIterator[LinuxGuest]:
    """The Linux stack with IPv6 behind slirpnet, which forwards DNS to ``dns``."""
    skip_unless_linux_guest()
    print(f"slirpnet and QEMU logs: {tmp_path}")
    args = ["--dns-upstream", f"127.0.0.1:{dns.port}", "--search", SEARCH]
    args += ["--dns-record", f"{LOCAL6}={LOCAL6_ADDRESS}"]
    async with open_linux_guest(tmp_path, ipv6_enabled=True, slirpnet_args=args) as guest:
        yield guest


def slaac_of(guest: LinuxGuest) -> ipv6.Slaac:
    assert guest.slaac is not None
    return guest.slaac


async def test_slaac_takes_address_route_and_mtu_from_the_advertisement(
    guest: LinuxGuest,
) -> None:
    slaac = slaac_of(guest)
    mac = ipv6.interface_mac(guest.netns, guest.interface)
    assert slaac.address == ipv6.eui64_address(ipv6.PREFIX, mac)
    assert slaac.router.is_link_local
    assert slaac.router_proto == "ra"
    assert slaac.mtu == guest.mtu == 65520

    frame = await ipv6.solicit_router(guest.netns, guest.interface)
    ra = frame[ICMPv6ND_RA]
    # RFC 4861 §6.1.2: from the router's link-local address, hop limit 255.
    assert (IPv6Address(frame[IPv6].src), frame[IPv6].hlim) == (slaac.router, 255)
    assert frame[ICMPv6NDOptSrcLLAddr].lladdr == frame.src
    assert (ra.M, ra.O) == (0, 1)  # addresses by SLAAC, the rest from stateless DHCPv6
    assert ra.routerlifetime > 0
    prefix = ra[ICMPv6NDOptPrefixInfo]
    assert (prefix.prefix, prefix.prefixlen, prefix.L, prefix.A) == ("fec0::", 64, 1, 1)
    assert prefix.validlifetime >= prefix.preferredlifetime > 0
    assert ra[ICMPv6NDOptMTU].mtu == 65520
    assert ra[ICMPv6NDOptRDNSS].dns == [ipv6.DNS6]
    assert ra[ICMPv6NDOptDNSSL].searchlist == [f"{SEARCH}."]


async def test_the_advertised_mtu_becomes_the_ipv6_mtu(tmp_path: Path) -> None:
    """With ``--mtu 9000`` and a link raised to 65520 by hand, only an advertisement can
    bring IPv6's MTU down to 9000 (RFC 4861 §6.3.4)."""
    skip_unless_linux_guest()
    async with open_linux_guest(
        tmp_path, ipv6_enabled=True, slirpnet_args=["--mtu", "9000"]
    ) as guest:
        system.ip("link", "set", guest.interface, "mtu", "65520", netns=guest.netns)
        key = f"net.ipv6.conf.{guest.interface}.mtu"
        assert ipv6.sysctl(guest.netns, key) == "65520"  # a link's new MTU resets IPv6's

        frame = await ipv6.solicit_router(guest.netns, guest.interface)
        assert frame[ICMPv6NDOptMTU].mtu == 9000
        with trio.fail_after(5):
            while ipv6.sysctl(guest.netns, key) != "9000":
                await trio.sleep(0.05)


async def test_ping_the_gateway_and_the_dns_address(guest: LinuxGuest) -> None:
    for target in (ipv6.GATEWAY6, ipv6.DNS6, str(slaac_of(guest).router)):
        result = run_in(guest, "busybox", "ping", "-6", "-A", "-c", "3", "-W", "5", target)
        assert "3 packets transmitted, 3 packets received" in result.stdout, result


async def test_dhcpv6_information_request_names_the_dns_server_and_search_list(
    guest: LinuxGuest,
) -> None:
    """Stateless DHCPv6 (RFC 8415 §18.2.6), as the O flag invites: asked from port 546
    to All_DHCP_Relay_Agents_and_Servers, answered with DNS server and search list."""
    index = ipv6.interface_index(guest.netns, guest.interface)
    mac = ipv6.interface_mac(guest.netns, guest.interface)
    request = (
        DHCP6_InfoRequest(trid=0x1D2C3B)
        / DHCP6OptClientId(duid=DUID_LL(lladdr=mac))
        / DHCP6OptElapsedTime()
        / DHCP6OptOptReq(reqopts=[23, 24])
    )
    sock = trio.socket.from_stdlib_socket(
        system.netns_socket(guest.netns, socket.SOCK_DGRAM, socket.AF_INET6)
    )
    with sock, trio.fail_after(10):
        await sock.bind(("::", 546, 0, 0))
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        await sock.sendto(bytes(request), ("ff02::1:2", 547, 0, index))
        data, peer = await sock.recvfrom(65535)

    reply = DHCP6_Reply(data)
    assert reply.trid == 0x1D2C3B
    assert IPv6Address(peer[0].split("%")[0]).is_link_local
    assert DHCP6OptServerId in reply
    assert reply[DHCP6OptClientId].duid.lladdr == mac  # RFC 8415 §18.3.6: ours, echoed
    assert reply[DHCP6OptDNSServers].dnsservers == [ipv6.DNS6]
    assert reply[DHCP6OptDNSDomains].dnsdomains == [f"{SEARCH}."]


async def test_dns_over_ipv6_forwarded_and_local(guest: LinuxGuest, dns: DnsUpstream) -> None:
    """Asked at fec0::3: forwarded names answered by the test's loopback upstream, local
    ones (the host's name, a ``--dns-record`` with an IPv6 address) by slirpnet."""
    forwarded = await query(guest, ipv6.DNS6, "www.slirpnet.test", TYPE_A)
    assert (forwarded.rcode, answers(forwarded)) == (0, ["192.0.2.10"])
    nodata = await query(guest, ipv6.DNS6, "www.slirpnet.test", TYPE_AAAA)
    assert (nodata.rcode, answers(nodata)) == (0, [])
    asked = [(name, qtype) for _, name, qtype in dns.queries]  # by the loopback upstream
    assert ("www.slirpnet.test", TYPE_A) in asked and ("www.slirpnet.test", TYPE_AAAA) in asked

    for name, qtype, expected in (
        ("host.slirpnet.internal", TYPE_A, ["10.0.2.2"]),
        ("host.slirpnet.internal", TYPE_AAAA, [ipv6.GATEWAY6]),
        (LOCAL6, TYPE_AAAA, [LOCAL6_ADDRESS]),
        (LOCAL6, TYPE_A, []),  # NODATA: the name has no IPv4 address (RFC 2308 §2.2)
    ):
        local = await query(guest, ipv6.DNS6, name, qtype)
        assert (local.rcode, local.aa, answers(local)) == (0, 1, expected), (name, qtype)
    assert all(name in ("www.slirpnet.test",) for name, _ in asked)


async def test_tcp_both_ways_at_once_to_the_hosts_ipv6_loopback(guest: LinuxGuest) -> None:
    server = TransferServer()
    peers: list[str] = []

    async def handle(stream: trio.SocketStream) -> None:
        peers.append(stream.socket.getpeername()[0])
        await server.handle(stream)

    async with loopback_server(handle, host="::1") as port:
        with trio.fail_after(120):
            received = await transfer(
                await guest.connect(ipv6.GATEWAY6, port), 1, 32 * MB, 2, 32 * MB
            )
            await server.wait_for([1])
            transfers = await parallel_transfers(
                lambda: guest.connect(ipv6.GATEWAY6, port), server, 4, 8 * MB, 8 * MB, 100
            )

    assert received.size == 32 * MB
    assert server.uploads[1].size == 32 * MB
    assert transfers.problems() == []
    assert set(peers) == {"::1"}  # slirpnet's host sockets were IPv6 ones
    mtu = ipv6.sysctl(guest.netns, f"net.ipv6.conf.{guest.interface}.mtu")
    assert mtu == "65520"


async def test_udp_to_the_hosts_ipv6_loopback(guest: LinuxGuest) -> None:
    """Datagrams to [fec0::2]:PORT reach a UDP socket on ::1 from ::1, and its answers come
    back, the largest beyond one Ethernet frame (the link's MTU is 65520)."""
    peers: list[str] = []
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as host_side:
        host_side.bind(("::1", 0))
        port = host_side.getsockname()[1]
        server = trio.socket.from_stdlib_socket(host_side.dup())
        sock = trio.socket.from_stdlib_socket(
            system.netns_socket(guest.netns, socket.SOCK_DGRAM, socket.AF_INET6)
        )

        async def echo_datagrams() -> None:
            while True:
                data, peer = await server.recvfrom(65535)
                peers.append(peer[0])
                await server.sendto(data[::-1], peer)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(echo_datagrams)
            with sock, server, trio.fail_after(10):
                await sock.connect((ipv6.GATEWAY6, port))
                for size in (1, 1400, 30000):
                    message = bytes(range(256)) * (size // 256) + b"!" * (size % 256)
                    await sock.send(message)
                    assert await sock.recv(65535) == message[::-1]
            nursery.cancel_scope.cancel()

    assert set(peers) == {"::1"}


async def test_ping_and_tcp_to_a_namespace_host_over_ipv6(guest: LinuxGuest) -> None:
    """A host destination the host routes to over IPv6: echo requests go out through a
    ping socket and come back, and TCP reaches it from the host's own address."""
    with ipv6_namespace_host(routed=True) as routed:
        target = str(routed.address6)
        result = run_in(guest, "busybox", "ping", "-6", "-A", "-c", "3", "-W", "5", target)
        assert "3 packets transmitted, 3 packets received" in result.stdout, result

        listener = trio.socket.from_stdlib_socket(
            system.netns_socket(routed.host.netns, family=socket.AF_INET6)
        )
        await listener.bind((target, 0))
        listener.listen()
        peers: list[str] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_echo, listener, peers)
            with trio.fail_after(30):
                stream = await guest.connect(target, listener.getsockname()[1])
                echoed = await exchange(stream, 7, 2 * MB)
            nursery.cancel_scope.cancel()

    assert (echoed.size, echoed.digest) == (2 * MB, digest(7, 2 * MB))
    assert peers == [str(routed.prefix6.network_address + 1)]  # the root namespace's end


async def test_tcp_over_ipv6_through_a_lossy_link(tmp_path: Path, dns: DnsUpstream) -> None:
    skip_unless_linux_guest()
    print(f"slirpnet, relay and QEMU logs: {tmp_path}")
    server = TransferServer()
    async with (
        open_linux_guest(tmp_path, faults=LOSSY, ipv6_enabled=True) as lossy,
        loopback_server(server.handle, host="::1") as port,
    ):
        with trio.fail_after(300):
            transfers = await parallel_transfers(
                lambda: lossy.connect(ipv6.GATEWAY6, port), server, 4, 8 * MB, 8 * MB, 200
            )
        await trio.sleep(0.3)  # the relay writes its counters every 0.1 s
        counters = read_stats(lossy.relay_stats)

    assert transfers.problems() == []
    assert_the_link_was_lossy(counters)


async def test_forwards_from_the_hosts_ipv6_loopback_reach_the_guest(tmp_path: Path) -> None:
    """``[::1]:PORT`` on the host to ``[fec0::15]:8022``, an address the guest configured
    by hand, over IPv6; and ``[::1]:PORT`` with no guest address, which goes to the guest
    by its DHCP lease, over IPv4."""
    skip_unless_linux_guest()
    named, unnamed = free_port6(), free_port6()
    args = [
        *("--forward", f"tcp:[::1]:{named}-[{STATIC6}]:8022"),
        *("--forward", f"tcp:[::1]:{unnamed}-:8023"),
    ]
    async with open_linux_guest(tmp_path, ipv6_enabled=True, slirpnet_args=args) as guest:
        dev = guest.interface
        system.ip("-6", "addr", "add", f"{STATIC6}/64", "dev", dev, "nodad", netns=guest.netns)
        # The guest has said nothing from its hand-set address: the first connection to
        # the forward finds no VM (a RST) and has slirpnet solicit the address; the
        # guest's advertisement teaches it where the address is (RFC 4861 §7.2).
        seen: dict[int, list[str]] = {8022: [], 8023: []}
        async with trio.open_nursery() as nursery:
            for guest_port, address, v6only in ((8022, STATIC6, 1), (8023, "::", 0)):
                listener = guest.socket(socket.AF_INET6)
                listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
                await listener.bind((address, guest_port))
                listener.listen()
                nursery.start_soon(serve_echo, listener, seen[guest_port])
            with trio.fail_after(30):
                await until_accepted(named)
                for seed, host_port in enumerate((named, unnamed)):
                    stream = await trio.open_tcp_stream("::1", host_port)
                    echoed = await exchange(stream, seed, 4 * MB)
                    assert (echoed.size, echoed.digest) == (4 * MB, digest(seed, 4 * MB))
            nursery.cancel_scope.cancel()

    # Forwarded connections come from the gateway, of the family they arrive over.
    # (until_accepted's connection is among 8022's.)
    assert {port: set(peers) for port, peers in seen.items()} == {
        8022: {ipv6.GATEWAY6},
        8023: {"::ffff:10.0.2.2"},
    }


async def test_an_unrouted_ipv6_destination_fails_at_once_and_ipv4_reaches_it(
    guest: LinuxGuest,
) -> None:
    """The host has no IPv6 route to a namespace host it reaches over IPv4: the guest's
    IPv6 connect fails in well under a second (a RST or an ICMPv6 unreachable, not SYN
    retries), and the same service answers over IPv4."""
    with ipv6_namespace_host(routed=False) as unrouted:
        listener = trio.socket.from_stdlib_socket(
            system.netns_socket(unrouted.host.netns, family=socket.AF_INET6)
        )
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        await listener.bind(("::", 0))
        listener.listen()
        port = listener.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_echo, listener, [])
            for _ in range(3):
                started = trio.current_time()
                with pytest.raises(OSError) as failure, trio.fail_after(10):
                    await guest.connect(str(unrouted.address6), port)
                assert trio.current_time() - started < 1.0
                assert failure.value.errno in (
                    errno.ECONNREFUSED,
                    errno.ENETUNREACH,
                    errno.EHOSTUNREACH,
                )
            with trio.fail_after(10):
                stream = await guest.connect(unrouted.host.address, port)
                async with stream:
                    await stream.send_all(b"over IPv4")
                    await stream.send_eof()
                    assert await receive_counted(stream) == len(b"over IPv4")
            nursery.cancel_scope.cancel()


async def until_accepted(port: int) -> None:
    """Connect to ``[::1]:port`` until a connection lives past a moment (a forward with no
    VM to take it resets at once)."""
    while True:
        try:
            stream = await trio.open_tcp_stream("::1", port)
        except OSError:  # reset while connecting
            await trio.sleep(0.2)
            continue
        alive = False
        try:
            with trio.move_on_after(0.5) as waited:
                await stream.receive_some()  # EOF or a reset: nobody took it
            alive = waited.cancelled_caught  # still open: the guest's server took it
        except trio.BrokenResourceError:
            pass
        finally:
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.aclose()
        if alive:
            return
        await trio.sleep(0.2)


async def serve_echo(listener: trio.socket.SocketType, peers: list[str]) -> None:
    async with trio.open_nursery() as nursery:
        with listener:
            while True:
                sock, peer = await listener.accept()
                peers.append(peer[0])
                nursery.start_soon(echo_and_close, trio.SocketStream(sock))


async def echo_and_close(stream: trio.SocketStream) -> None:
    async with stream:
        await echo(stream)
        await stream.send_eof()


async def receive_counted(stream: trio.SocketStream) -> int:
    count = 0
    while data := await stream.receive_some(65536):
        count += len(data)
    return count


def free_port6() -> int:
    with socket.socket(socket.AF_INET6) as probe:
        probe.bind(("::1", 0))
        port: int = probe.getsockname()[1]
        return port


def run_in(guest: LinuxGuest, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        guest.command(*argv), capture_output=True, text=True, timeout=60, check=False
    )


async def query(guest: LinuxGuest, server: str, name: str, qtype: int) -> DNS:
    """One query over UDP from the guest's namespace, asked again each second up to 5 times."""
    message = DNS(id=0x6006, rd=1, qd=DNSQR(qname=name, qtype=qtype))
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    sock = trio.socket.from_stdlib_socket(
        system.netns_socket(guest.netns, socket.SOCK_DGRAM, family)
    )
    with sock:
        await sock.connect((server, 53))
        for _ in range(5):
            await sock.send(bytes(message))
            with trio.move_on_after(1):
                reply = DNS(await sock.recv(65535))
                assert reply.id == 0x6006
                return reply
    raise AssertionError(f"no answer from {server} for {name}")


def answers(reply: DNS) -> list[str]:
    return [str(reply.an[i].rdata) for i in range(reply.ancount)]
