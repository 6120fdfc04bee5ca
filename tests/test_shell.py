"""The trio shell with real host sockets on loopback and a scripted VM on a socket pair."""

from __future__ import annotations

import itertools
import math
import os
import resource
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import ICMP, IP, TCP, UDP, UDPerror
from scapy.layers.l2 import Ether

from slirpnet.config import Address, ConfigError
from slirpnet.core.flows import CloseFlow, EchoFlow, Endpoint, OpenFlow, SendFlow
from slirpnet.core.settings import NetworkSettings, Upstream
from slirpnet.framing import QEMU_STREAM
from slirpnet.server import bind_unix
from slirpnet.shell import hostsockets
from slirpnet.shell import runtime as runtime_module
from slirpnet.shell.port import Port
from slirpnet.shell.runtime import NamespaceRuntime
from slirpnet.shell.transports import _DatagramVms, keep_connected, serve_datagrams, serve_stream

GUEST_MAC = "52:54:00:12:34:56"
GATEWAY_MAC = "52:55:0a:00:02:02"


class FakeVm:
    """The VM's end of a QEMU stream: frames in, frames out, with deadlines."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.decoder = QEMU_STREAM.decoder()
        self.pending: list[bytes] = []

    async def send(self, packet: Ether) -> None:
        await self.stream.send_all(QEMU_STREAM.encode(bytes(packet)))

    async def receive(self, timeout: float = 5.0) -> Ether:
        with trio.fail_after(timeout):
            while not self.pending:
                data = await self.stream.receive_some(65536)
                assert data, "slirpnet closed the connection"
                self.pending += self.decoder.feed(data)
        return Ether(self.pending.pop(0))

    def udp(self, dst: str, dport: int, payload: bytes, sport: int = 40000) -> Ether:
        return (
            Ether(src=GUEST_MAC, dst=GATEWAY_MAC)
            / IP(src="10.0.2.15", dst=dst)
            / UDP(sport=sport, dport=dport)
            / payload
        )


@asynccontextmanager
async def running(settings: NetworkSettings) -> AsyncIterator[tuple[NamespaceRuntime, FakeVm]]:
    async with NamespaceRuntime.open("test", settings) as runtime, trio.open_nursery() as nursery:
        ours, theirs = trio.socket.socketpair()
        nursery.start_soon(
            serve_stream, runtime.attach, trio.SocketStream(theirs), "pair", QEMU_STREAM
        )
        async with trio.SocketStream(ours) as stream:
            yield runtime, FakeVm(stream)
        nursery.cancel_scope.cancel()


def udp_server() -> trio.socket.SocketType:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock._sock.bind(("127.0.0.1", 0))
    return sock


async def test_dhcp_offer_over_a_stream() -> None:
    async with running(NetworkSettings()) as (_, vm):
        await vm.send(
            Ether(src=GUEST_MAC, dst="ff:ff:ff:ff:ff:ff")
            / IP(src="0.0.0.0", dst="255.255.255.255")
            / UDP(sport=68, dport=67)
            / BOOTP(chaddr=bytes.fromhex("525400123456"), xid=7)
            / DHCP(options=[("message-type", "discover"), "end"])
        )
        offer = await vm.receive()
        assert offer[BOOTP].yiaddr == "10.0.2.15"
        assert ("message-type", 2) in offer[DHCP].options


async def test_udp_to_the_gateway_reaches_host_loopback_and_back() -> None:
    with udp_server() as server:
        port = server.getsockname()[1]
        async with running(NetworkSettings()) as (runtime, vm):
            await vm.send(vm.udp("10.0.2.2", port, b"ping"))
            with trio.fail_after(5):
                data, peer = await server.recvfrom(100)
            assert data == b"ping"
            assert peer[0] == "127.0.0.1"
            await server.sendto(b"pong", peer)
            reply = await vm.receive()
            assert (reply[IP].src, reply[UDP].sport, reply[UDP].dport) == ("10.0.2.2", port, 40000)
            assert bytes(reply[UDP].payload) == b"pong"
            assert len(runtime.host) == 1


async def test_a_burst_of_replies_reaches_the_guest_whole_and_in_order() -> None:
    """More replies than one poller round takes from a socket: the rest come next round."""
    burst = 3 * hostsockets.DATAGRAMS_PER_ROUND
    with udp_server() as server:
        port = server.getsockname()[1]
        async with running(NetworkSettings()) as (_, vm):
            await vm.send(vm.udp("10.0.2.2", port, b"go"))
            with trio.fail_after(5):
                _, peer = await server.recvfrom(100)
            for number in range(burst):
                server._sock.sendto(number.to_bytes(2, "big"), peer)  # all before any is read
            replies = [bytes((await vm.receive())[UDP].payload) for _ in range(burst)]
            assert replies == [number.to_bytes(2, "big") for number in range(burst)]


async def test_closed_host_port_gives_icmp_port_unreachable() -> None:
    with udp_server() as server:
        port = server.getsockname()[1]
    async with running(NetworkSettings()) as (_, vm):
        await vm.send(vm.udp("10.0.2.2", port, b"anyone?"))
        error = await vm.receive()
        assert (error[ICMP].type, error[ICMP].code) == (3, 3)
        assert error[UDPerror].dport == port


def syn(port: int, sport: int = 40001) -> bytes:
    return bytes(
        Ether(src=GUEST_MAC, dst=GATEWAY_MAC)
        / IP(src="10.0.2.15", dst="10.0.2.2")
        / TCP(sport=sport, dport=port, seq=1000, flags="S", options=[("MSS", 1460)])
    )


async def frames_now(port: Port) -> list[Ether]:
    """What the port holds for its VM at this moment, without letting any task run."""
    with trio.move_on_after(0):
        return [Ether(frame) for frame in await port.receive()]
    return []


async def test_a_loopback_connect_is_answered_in_the_same_flush() -> None:
    """The connect to loopback is done when ``connect`` returns: the SYN-ACK leaves with
    the SYN's own flush, before any task (the poller's among them) has had a turn."""
    async with (
        NamespaceRuntime.open("test", NetworkSettings()) as runtime,
        runtime.attach("vm") as port,
    ):
        with trio.socket.socket() as listener:
            await listener.bind(("127.0.0.1", 0))
            listener.listen()
            await frames_now(port)  # whatever the attach sent (router solicitations, ARP)
            port.feed(syn(listener.getsockname()[1]))
            (answer,) = [f for f in await frames_now(port) if TCP in f]
            assert answer[TCP].flags == "SA" and answer[TCP].ack == 1001


async def test_a_connect_from_a_descriptor_beyond_select_s_reach_is_answered() -> None:
    """10,000 flows are 10,000 descriptors: nothing on the way may be select()'s (FD_SETSIZE
    1024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 1200:
        pytest.skip(f"the hard limit of descriptors is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    fillers = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        await test_a_loopback_connect_is_answered_in_the_same_flush()
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_a_refused_loopback_connect_is_a_reset() -> None:
    with trio.socket.socket() as closed:
        await closed.bind(("127.0.0.1", 0))  # bound, never listening: refused
        async with (
            NamespaceRuntime.open("test", NetworkSettings()) as runtime,
            runtime.attach("vm") as port,
        ):
            port.feed(syn(closed.getsockname()[1]))
            with trio.fail_after(5):
                while not (resets := [f for f in map(Ether, await port.receive()) if TCP in f]):
                    pass
            assert resets[0][TCP].flags == "RA" and resets[0][TCP].ack == 1001
            assert len(runtime.host) == 0


async def test_dns_goes_to_the_next_upstream_then_servfail() -> None:
    with udp_server() as silent, udp_server() as answering:
        upstreams = tuple(
            Upstream(IPv4Address("127.0.0.1"), s.getsockname()[1]) for s in (silent, answering)
        )
        settings = NetworkSettings(dns_upstreams=upstreams, dns_timeout=0.2)
        query = DNS(id=0x4242, rd=1, qd=DNSQR(qname="example.test"))
        async with running(settings) as (_, vm):
            await vm.send(vm.udp("10.0.2.3", 53, bytes(query), sport=5353))
            with trio.fail_after(5):
                first, _ = await silent.recvfrom(512)
                second, peer = await answering.recvfrom(512)
            assert first == second == bytes(query)
            answer = DNS(id=0x4242, qr=1, rcode=3, qd=query.qd)
            await answering.sendto(bytes(answer), peer)
            reply = await vm.receive()
            assert reply[IP].src == "10.0.2.3" and reply[UDP].sport == 53
            assert reply[DNS].rcode == 3  # NXDOMAIN passed through

            await vm.send(vm.udp("10.0.2.3", 53, bytes(query), sport=5354))
            servfail = await vm.receive()
            assert (servfail[DNS].id, servfail[DNS].rcode) == (0x4242, 2)


async def test_an_ipv6_upstream_is_asked_from_an_ipv6_socket() -> None:
    with trio.socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as upstream:
        await upstream.bind(("::1", 0))
        settings = NetworkSettings(
            dns_upstreams=(Upstream(IPv6Address("::1"), upstream.getsockname()[1]),)
        )
        query = DNS(id=0x6666, rd=1, qd=DNSQR(qname="example.test", qtype="AAAA"))
        async with running(settings) as (_, vm):
            await vm.send(vm.udp("10.0.2.3", 53, bytes(query), sport=5353))
            with trio.fail_after(5):
                asked, peer = await upstream.recvfrom(512)
            assert asked == bytes(query) and peer[0] == "::1"
            await upstream.sendto(bytes(DNS(id=0x6666, qr=1, rcode=3, qd=query.qd)), peer)
            reply = await vm.receive()
            assert (reply[IP].src, reply[DNS].id, reply[DNS].rcode) == ("10.0.2.3", 0x6666, 3)


async def test_dns_over_tcp_goes_to_the_next_upstream_that_connects() -> None:
    """Refused, then silent (a listener whose queue is full), then IPv6 loopback answers."""
    with (
        socket.socket() as closed,
        socket.socket() as silent,
        socket.socket() as filler,
        socket.socket(socket.AF_INET6) as answering,
    ):
        closed.bind(("127.0.0.1", 0))  # bound, never listening: refused
        silent.bind(("127.0.0.1", 0))
        silent.listen(0)
        filler.connect(silent.getsockname())  # the one connection its queue holds
        answering.bind(("::1", 0))
        answering.listen()
        answering.setblocking(False)
        upstreams = (
            Upstream(IPv4Address("127.0.0.1"), closed.getsockname()[1]),
            Upstream(IPv4Address("127.0.0.1"), silent.getsockname()[1]),
            Upstream(IPv6Address("::1"), answering.getsockname()[1]),
        )
        settings = NetworkSettings(dns_upstreams=upstreams, dns_timeout=0.3)
        guest = Ether(src=GUEST_MAC, dst=GATEWAY_MAC) / IP(src="10.0.2.15", dst="10.0.2.3")
        async with running(settings) as (_, vm):
            started = trio.current_time()
            await vm.send(guest / TCP(sport=40053, dport=53, flags="S", seq=1000))
            syn_ack = await vm.receive()
            assert syn_ack[TCP].flags == "SA" and syn_ack[TCP].ack == 1001
            assert trio.current_time() - started >= 0.3  # the silent one had its time
            query = bytes(DNS(id=0x7C7C, rd=1, qd=DNSQR(qname="example.test")))
            message = len(query).to_bytes(2, "big") + query
            ack = syn_ack[TCP].seq + 1
            await vm.send(
                guest / TCP(sport=40053, dport=53, flags="PA", seq=1001, ack=ack) / message
            )
            upstream = trio.socket.from_stdlib_socket(answering)
            with trio.fail_after(5):
                conn, _ = await upstream.accept()
                with conn:
                    assert await conn.recv(1024) == message


async def test_disconnect_closes_every_host_socket() -> None:
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    with udp_server() as server:
        port = server.getsockname()[1]
        before = open_fds()
        async with running(NetworkSettings()) as (runtime, vm):
            for sport in range(41000, 41020):
                await vm.send(vm.udp("10.0.2.2", port, b"x", sport=sport))
            with trio.fail_after(5):
                for _ in range(20):
                    await server.recvfrom(10)
            assert len(runtime.host) == 20
            await vm.stream.aclose()
            with trio.fail_after(5):
                while runtime.ports:
                    await trio.sleep(0.01)
            assert len(runtime.host) == 0
        await trio.sleep(0.05)
        assert open_fds() == before


async def test_a_bad_length_closes_the_connection() -> None:
    async with running(NetworkSettings()) as (runtime, vm):
        await vm.stream.send_all(struct.pack("!I", 13) + b"x" * 13)
        with trio.fail_after(5):
            assert await vm.stream.receive_some(100) == b""
        assert runtime.ports == []


async def test_datagram_peers_are_vms(tmp_path: Path) -> None:
    server_path = tmp_path / "slirpnet.sock"
    sock = bind_unix(server_path, socket.SOCK_DGRAM)
    guest = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await guest.bind(str(tmp_path / "qemu.sock"))
    async with NamespaceRuntime.open("test", NetworkSettings()) as runtime:
        runtime.nursery.start_soon(serve_datagrams, runtime.attach, sock, "unixgram")
        ping = (
            Ether(src=GUEST_MAC, dst=GATEWAY_MAC) / IP(src="10.0.2.15", dst="10.0.2.2") / ICMP(id=9)
        )
        await guest.sendto(bytes(ping), str(server_path))
        with trio.fail_after(5):
            reply = Ether(await guest.recv(65536))
        assert reply[ICMP].type == 0 and reply[ICMP].id == 9
        assert len(runtime.ports) == 1
    guest.close()


async def test_a_burst_from_two_datagram_peers_is_answered_in_order(tmp_path: Path) -> None:
    """Datagrams waiting together are taken in one batch, each peer's in its order."""
    server_path = tmp_path / "slirpnet.sock"
    sock = bind_unix(server_path, socket.SOCK_DGRAM)
    guests = [trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(2)]
    for number, guest in enumerate(guests):
        await guest.bind(str(tmp_path / f"qemu{number}.sock"))
    async with NamespaceRuntime.open("test", NetworkSettings()) as runtime:
        # Queued before slirpnet reads any, within the kernel's ten (max_dgram_qlen).
        for seq in range(4):
            for number, guest in enumerate(guests):
                mac = f"52:54:00:12:34:5{number}"
                ping = (
                    Ether(src=mac, dst=GATEWAY_MAC)
                    / IP(src=f"10.0.2.{15 + number}", dst="10.0.2.2")
                    / ICMP(id=number, seq=seq)
                )
                await guest.sendto(bytes(ping), str(server_path))
        runtime.nursery.start_soon(serve_datagrams, runtime.attach, sock, "unixgram")
        for number, guest in enumerate(guests):
            with trio.fail_after(5):
                replies = [Ether(await guest.recv(65536)) for _ in range(4)]
            assert [(r[ICMP].id, r[ICMP].seq) for r in replies] == [(number, s) for s in range(4)]
        assert len(runtime.ports) == 2
    for guest in guests:
        guest.close()


async def test_a_writer_takes_what_came_in_and_keeps_newcomers_for_the_reader(
    tmp_path: Path,
) -> None:
    """Datagrams taken by a busy writer reach their VM; a new peer's wait for the reader,
    which is woken to give it a port."""
    server_path = tmp_path / "slirpnet.sock"
    sock = bind_unix(server_path, socket.SOCK_DGRAM)
    sock.setblocking(False)
    newcomer = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await newcomer.bind(str(tmp_path / "qemu.sock"))
    ping = Ether(src=GUEST_MAC, dst=GATEWAY_MAC) / IP(src="10.0.2.15", dst="10.0.2.2") / ICMP()
    async with NamespaceRuntime.open("test", NetworkSettings()) as runtime:
        vms = _DatagramVms(runtime.attach, sock, "unixgram")
        with trio.CancelScope() as vms.wake:
            for _ in range(3):
                await newcomer.sendto(bytes(ping), str(server_path))
            vms.take_waiting()  # as a writer does between frames
            await trio.sleep_forever()  # the reader's wait: cut short
        assert list(vms.newcomers.values()) == [[bytes(ping)] * 3]
        assert runtime.ports == []
    sock.close()
    newcomer.close()


def test_unix_socket_is_owner_only_and_a_stale_one_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "vm.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))
    dead.close()  # the file stays behind, as after a crash
    live = bind_unix(path, socket.SOCK_STREAM)
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(ConfigError, match="in use by a running server"):
        bind_unix(path, socket.SOCK_STREAM)
    live.close()
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="not a socket"):
        bind_unix(tmp_path / "file", socket.SOCK_STREAM)


def test_address_str_round_trips() -> None:
    assert str(Address("tcp", host="127.0.0.1", port=5555)) == "tcp:127.0.0.1:5555"
    assert str(Address("unix", path="/run/vm.sock")) == "unix:/run/vm.sock"


def test_a_stale_datagram_socket_is_replaced_and_a_live_one_is_not(tmp_path: Path) -> None:
    path = tmp_path / "vm.dgram"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(str(path))
    dead.close()
    with (
        bind_unix(path, socket.SOCK_DGRAM),
        pytest.raises(ConfigError, match="in use by a running server"),
    ):
        bind_unix(path, socket.SOCK_DGRAM)


async def test_connect_retries_with_doubling_backoff_and_starts_over_after_a_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    attempts: list[float] = []

    async def open_stream() -> trio.abc.Stream:
        attempts.append(trio.current_time())
        if len(attempts) != 9:
            raise ConnectionRefusedError
        ours, theirs = trio.socket.socketpair()
        ours.close()  # QEMU went away at once
        return trio.SocketStream(theirs)

    async with NamespaceRuntime.open("test", NetworkSettings()) as runtime:
        with trio.move_on_after(30):
            await keep_connected(runtime.attach, open_stream, "unix:qemu.sock", QEMU_STREAM)
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(attempts)]
    assert gaps[:8] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]  # doubling, capped at 1 s
    assert gaps[8] == 0.1  # after a session, quick again
    assert gaps[9:11] == [0.1, 0.2]


def icmp_socket_allowed(kind: socket.SocketKind) -> bool:
    try:
        socket.socket(socket.AF_INET, kind, socket.IPPROTO_ICMP).close()
    except PermissionError:
        return False
    return True


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param(
            "ping socket",
            marks=pytest.mark.skipif(
                not icmp_socket_allowed(socket.SOCK_DGRAM),
                reason="ping sockets are off here (sysctl net.ipv4.ping_group_range)",
            ),
        ),
        pytest.param(
            "raw socket",
            marks=pytest.mark.skipif(
                not icmp_socket_allowed(socket.SOCK_RAW), reason="raw sockets need CAP_NET_RAW"
            ),
        ),
    ],
)
async def test_an_echo_flow_goes_through_a_host_socket_and_its_reply_back(kind: str) -> None:
    # The core never NATs to loopback (a guest's 127.0.0.1 is its own); the flow is made
    # here, so that the echo goes no further than this host.
    async with (
        NamespaceRuntime.open("test", NetworkSettings()) as runtime,
        runtime.attach("vm") as port,
    ):
        runtime.host._ping_sockets = kind == "ping socket"
        flow = EchoFlow(
            vm=port.vm,
            guest=Endpoint(bytes.fromhex("525400123456"), IPv4Address("10.0.2.15"), 0x1234),
            host_address=IPv4Address("127.0.0.1"),
            host_port=0,
            deadline=trio.current_time() + 10,
            dst_address=IPv4Address("192.0.2.1"),
        )
        request = bytes(ICMP(type=8, id=0x1234, seq=7) / b"are you there?")
        runtime.host.apply(OpenFlow(flow))
        runtime.host.apply(SendFlow(flow, request))
        with trio.fail_after(5):
            (frame,) = await port.receive()
        reply = Ether(frame)
        assert (reply[IP].src, reply[IP].dst) == ("192.0.2.1", "10.0.2.15")
        assert (reply[ICMP].type, reply[ICMP].id, reply[ICMP].seq) == (0, 0x1234, 7)
        assert bytes(reply[ICMP].payload) == b"are you there?"
        runtime.host.apply(CloseFlow(flow))
        assert len(runtime.host) == 0


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False))
def test_the_timer_wakes_on_a_grain_never_before_the_core_s_deadline(deadline: float) -> None:
    woken = runtime_module._timer_deadline(deadline)
    assert deadline <= woken < deadline + 2 * runtime_module.TIMER_GRAIN


def test_deadlines_within_one_grain_are_one_wake() -> None:
    wakes = {runtime_module._timer_deadline(100.0001 + n * 0.0004) for n in range(10)}
    assert len(wakes) == 1
    assert runtime_module._timer_deadline(None) == math.inf


async def test_datagrams_that_come_while_a_batch_is_handled_share_its_flush(
    tmp_path: Path,
) -> None:
    """QEMU refills the kernel's queue of ten datagrams while the core handles what was
    taken: the reader takes again at once, and one flush (one ACK per flow) follows."""
    server_path, qemu_path = tmp_path / "slirpnet.sock", tmp_path / "qemu.sock"
    frame = bytes(Ether(src=GUEST_MAC, dst=GATEWAY_MAC) / IP(src="10.0.2.15") / ICMP())
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock,
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as qemu,
    ):
        sock.bind(str(server_path))
        sock.setblocking(False)
        qemu.bind(str(qemu_path))
        taken: list[bytes] = []
        flushes: list[int] = []

        class Flushing:
            """A runtime's stand-in, counting what each flush follows."""

            def flush(self) -> None:
                flushes.append(len(taken))

        class Handling:
            """A port's stand-in: QEMU sends the next queueful while the first is handled."""

            runtime = Flushing()

            def take(self, frames: list[bytes]) -> None:
                if not taken:
                    for _ in range(10):
                        qemu.sendto(frame, str(server_path))
                taken.extend(frames)

        async with NamespaceRuntime.open("test", NetworkSettings()) as runtime:
            vms = _DatagramVms(runtime.attach, sock, "unixgram")
            vms.ports[str(qemu_path)] = Handling()  # type: ignore[assignment]
            for _ in range(10):
                qemu.sendto(frame, str(server_path))
            vms.take_waiting()
    assert taken == [frame] * 20
    assert flushes == [20]
