"""The namespaces the state machine drives, and what must hold of each after every step.

Three networks: a small one (MTU 1500, eight flows per VM for both families, DNS
upstreams of both families, a static lease), another on other addresses of both
families (the largest MTU, no upstreams, no host loopback, an IPv6 deny list),
and the first one's addresses again but restricted, to show that namespaces share
nothing even when their addresses are the same.  Every VM has an IPv6 address of
its network's prefix, as SLAAC gives it (``sample.slaac``).

A ``Namespace`` feeds its segment, takes its actions (``host.HostModel``) and
frames after every call, and checks each frame (``emitted``) and its invariants
(``check``): among them RA guard's, that no VM ever gets from another what only a
router or a DHCPv6 server sends (``chain6.guard_violation``).
"""

from __future__ import annotations

from collections import Counter
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from attrs import define, field

from slirpnet.core.flows import FLOW_FAILED, DnsFlow, Flow, OpenFlow, TcpFlow, flow_key
from slirpnet.core.forwards import Forward
from slirpnet.core.fragments import MAX_BYTES, MAX_DATAGRAMS
from slirpnet.core.reassembly import MAX_RUNS
from slirpnet.core.segment import Segment
from slirpnet.core.sequence import seq_add, seq_diff
from slirpnet.core.settings import NetworkSettings, StaticLease, Upstream
from slirpnet.core.switch import MAX_MACS_PER_VM
from slirpnet.core.tcp import RECEIVE_BUFFER, SEND_BUFFER
from slirpnet.core.vm import Vm
from slirpnet.wire import tcp
from slirpnet.wire.ipv4 import IPv4Packet
from slirpnet.wire.ipv6 import IPv6Packet
from tests.fuzz import chain6, corpus, craft, emitted
from tests.fuzz.host import HostModel, HostSocket
from tests.fuzz.sample import Guest, Sample, slaac

LOCAL = IPv4Address("127.0.0.1")
LOCAL6 = IPv6Address("::1")
FORWARD_GUEST_PORTS = (22, 8022)
# TCP connections whose guest data is the crafted pattern, checked byte for byte.
CHECKED_PORTS = frozenset((*craft.CRAFT_PORTS, *FORWARD_GUEST_PORTS))
SCAPY_EVERY = 10  # frames checked by our codecs for each one dissected by scapy too
TIMER_SPINS = 3  # handle_timer calls at one instant before the timer must move on
TIMER_FIRINGS = 10_000  # in one ``advance``: more is a storm

NETWORKS: tuple[NetworkSettings, ...] = (
    NetworkSettings(
        mtu=1500,
        dns_upstreams=(
            Upstream(IPv4Address("192.0.2.53")),
            Upstream(IPv6Address("2001:db8::53")),
            Upstream(IPv4Address("192.0.2.54")),
        ),
        max_flows=8,
        static_leases=(StaticLease(bytes.fromhex("525400000002"), IPv4Address("10.0.2.40")),),
        domain="fuzz.test",
        search=("fuzz.test", "example.test"),
        udp_idle_timeout=30.0,
        tftp_root="/fuzz/tftp",
        bootfile="boot.ipxe",
    ),
    NetworkSettings(
        network=IPv4Network("10.9.0.0/24"),
        gateway=IPv4Address("10.9.0.1"),
        dns=IPv4Address("10.9.0.2"),
        dhcp_start=IPv4Address("10.9.0.100"),
        host_loopback=False,
        dns_records=(
            ("db.fuzz.test", IPv4Address("10.9.0.50")),
            ("db.fuzz.test", IPv6Address("fd00:9::50")),
        ),
        max_flows=64,
        network6=IPv6Network("fd00:9::/64"),
        gateway6=IPv6Address("fd00:9::1"),
        dns6=IPv6Address("fd00:9::2"),
        deny=(IPv6Network("2001:db8:dead::/48"),),
    ),
    NetworkSettings(restrict=True, tftp_root="/fuzz/tftp"),  # the host model serves it
)
GUESTS_PER_NETWORK = (3, 2, 1)


def guests(net: int) -> list[Guest]:
    """The VMs of network ``net``: MACs 52:54:00:NN:00:nn, addresses from the pool and
    by SLAAC."""
    settings = NETWORKS[net]
    static = {lease.mac: lease.address for lease in settings.static_leases}
    found = []
    for n in range(GUESTS_PER_NETWORK[net]):
        mac = bytes((0x52, 0x54, 0, net, 0, n))
        address = static.get(mac, settings.dhcp_start + n)
        found.append(Guest(mac.hex(":"), str(address), slaac(settings.network6, mac)))
    return found


def forwards(net: int) -> list[Forward]:
    """To the first leased VM, to the first guest's addresses, and to nobody's."""
    first = guests(net)[0]
    unused = NETWORKS[net].network.broadcast_address - 1
    return [
        Forward("tcp", LOCAL, 2222, None, FORWARD_GUEST_PORTS[0]),
        Forward("tcp", LOCAL, 2223, IPv4Address(first.address), FORWARD_GUEST_PORTS[1]),
        Forward("tcp", LOCAL, 2224, unused, 7),
        Forward("tcp", LOCAL6, 2225, IPv6Address(first.address6), FORWARD_GUEST_PORTS[1]),
        Forward("udp", LOCAL, 5000, None, 5000),
        Forward("udp", LOCAL, 5001, IPv4Address(first.address), 5001),
        Forward("udp", LOCAL6, 5002, IPv6Address(first.address6), 5002),
    ]


@define(eq=False)
class Slot:
    """One VM's place: its identity, and its port while attached."""

    net: int
    guest: Guest
    other: Guest  # a neighbour's identity, for the corpus
    vm: Vm | None = None

    def __repr__(self) -> str:
        return f"Slot(net={self.net}, guest={self.guest.mac})"


@define
class Counts:
    """What was fed to one VM and taken from it, to compare with its stats."""

    frames_in: int = 0
    bytes_in: int = 0
    frames_out: int = 0


@define(eq=False)
class Namespace:
    settings: NetworkSettings
    segment: Segment
    host: HostModel
    forwards: list[Forward]
    slots: list[Slot]
    counts: dict[Vm, Counts] = field(factory=dict)
    departed: list[Vm] = field(factory=list)
    fed_now: list[tuple[Vm, bytes]] = field(factory=list)  # since the last ``check``
    frames_in: int = 0  # every VM's, gone or not
    emitted: int = 0  # gateway frames checked
    reassembled: int = 0  # gateway datagrams sent in fragments, put back together

    @classmethod
    def of(cls, net: int) -> Namespace:
        """Network ``net`` with all its VMs attached."""
        segment = Segment(NETWORKS[net])
        identities = guests(net)
        slots = [
            Slot(net, guest, identities[(n + 1) % len(identities)])
            for n, guest in enumerate(identities)
        ]
        ns = cls(NETWORKS[net], segment, HostModel(segment), forwards(net), slots)
        for slot in slots:
            ns.attach(slot)
        return ns

    def __repr__(self) -> str:
        return f"Namespace({self.settings.network}, restrict={self.settings.restrict})"

    def samples(self, slot: Slot) -> tuple[Sample, ...]:
        return corpus.samples(self.settings, slot.guest, slot.other)

    def live_tcp(self) -> list[tuple[Slot, TcpFlow]]:
        return [
            (slot, flow)
            for slot in self.slots
            if slot.vm is not None
            for flow in slot.vm.flows.values()
            if isinstance(flow, TcpFlow)
        ]

    def attach(self, slot: Slot, now: float = 0.0) -> None:
        """The VM connects; as the shell does, its port is said to be up: the gateway asks
        on it for leased addresses not heard from (a VM come back with its lease), and
        advertises itself as IPv6 router from then on."""
        self.host.now = now
        slot.vm = self.segment.attach(slot.guest.mac)
        self.counts[slot.vm] = Counts()
        self.segment.attached(slot.vm, now)
        self.drain()

    def leave(self, slot: Slot, now: float) -> None:
        """The VM goes: every socket of its flows closes, and it is not heard any more."""
        vm = slot.vm
        assert vm is not None
        self.host.now = now
        self.segment.detach(vm)
        slot.vm = None
        self.departed.append(vm)
        self.drain()
        left = [s for s in self.host.open_sockets() if s.flow.vm is vm]
        assert not left, f"the VM left, its sockets did not: {left}"
        self.segment.receive(vm, self.samples(slot)[0].frame, now)
        assert vm.stats.frames_in == self.counts[vm].frames_in

    def finish(self, now: float) -> None:
        """Every VM leaves: every socket ever opened is closed, every budget back to zero."""
        for slot in self.slots:
            if slot.vm is not None:
                self.leave(slot, now)
        assert self.host.open_sockets() == [], "sockets left open"
        for vm in self.departed:
            assert vm.tcp_buffers.used == 0, "TCP buffer budget leaked"
            assert vm.flow_count == 0
        self.segment.handle_timer(now + 1e6)
        assert self.segment.take_actions() == []

    def advance(self, now: float, target: float) -> None:
        """Time passes from ``now`` to ``target``: each timer fires at its own time."""
        spins = firings = 0
        while (due := self.segment.get_timer()) is not None and due <= target:
            firings += 1
            assert firings <= TIMER_FIRINGS, "a timer storm"
            spins = spins + 1 if due <= now else 0
            assert spins <= TIMER_SPINS, f"the timer does not move past {now}"
            now = self.host.now = max(now, due)
            self.segment.handle_timer(now)
            self.drain()

    def forward(self, forward: Forward, port: int, payload: bytes, now: float) -> None:
        """A connection accepted on a forward, or a datagram received on one."""
        peer = (forward.host_address, port)
        self.host.now = now
        if forward.protocol == "tcp":
            flow: Flow | None = self.segment.forward_connection(forward, peer, now)
            opened = self.drain()
            assert (flow is not None) == (flow in opened), "a forward's flow without its socket"
        else:
            flow = self.segment.forward_datagram(forward, peer, payload, now)
            self.drain()
            assert flow is None or not self.host.sockets[flow].closed

    def feed(self, vm: Vm, frame: bytes, now: float) -> Counter[str]:
        """One frame from ``vm``; the drops it caused."""
        before = vm.stats.drops.copy()
        counts = self.counts[vm]
        counts.frames_in += 1
        counts.bytes_in += len(frame)
        self.frames_in += 1
        self.fed_now.append((vm, frame))
        self.host.now = now
        self.segment.receive(vm, frame, now)
        return vm.stats.drops - before

    def report(
        self,
        event: str,
        socket: HostSocket,
        now: float,
        *,
        error: str,
        size: int,
        count: int,
        variant: int,
    ) -> None:
        """A host socket event (``HostModel.report``); an error that ends a socket closes it."""
        self.host.now = now
        self.host.report(event, socket, now, error=error, size=size, count=count, variant=variant)
        self.drain()
        if event == "error" and (
            socket.failed or error == FLOW_FAILED or isinstance(socket.flow, DnsFlow)
        ):
            assert socket.closed, f"{error} on {socket.flow!r} left its socket open"

    def drain(self) -> list[Flow]:
        """Take the segment's actions and frames, checking each; the flows opened."""
        actions = self.host.take(checked_ports=CHECKED_PORTS)
        for vm in self.segment.vms:
            frames = vm.take_frames()
            self.counts[vm].frames_out += len(frames)
            fragments = [frame for frame in frames if self._check_frame(vm, frame)]
            if fragments:
                self.reassembled += emitted.reassembled(fragments)
        self.host.settle_readers()
        return [action.flow for action in actions if isinstance(action, OpenFlow)]

    def _check_frame(self, vm: Vm, frame: bytes) -> bool:
        """Check one frame for ``vm``; whether it is a fragment of the gateway's."""
        if frame[6:12] != self.segment.gateway_mac:
            assert any(frame == fed for source, fed in self.fed_now if source is not vm), (
                "a frame no other VM of this namespace sent just now"
            )
            violation = chain6.guard_violation(frame)
            assert violation is None, f"RA guard let {violation} through: {frame.hex()}"
            return False
        out = emitted.check(frame, self.settings, self.segment.gateway_mac)
        self.emitted += 1
        if self.emitted % SCAPY_EVERY == 0:
            emitted.check_with_scapy(frame)
        if out.tcp is not None and out.ip is not None and out.tcp.payload:
            self._check_host_data(vm, out.ip, out.tcp)
        return out.fragment

    def _check_host_data(
        self, vm: Vm, ip: IPv4Packet | IPv6Packet, segment: tcp.TcpSegment
    ) -> None:
        """Data we send the guest is the host's, at its place in the stream."""
        key = flow_key(tcp.PROTOCOL, ip.dst, segment.dst_port, ip.src, segment.src_port)
        flow = self.host.tcp[vm, key]
        assert len(segment.payload) <= flow.endpoint.mss, "a segment over the MSS"
        offset = seq_diff(segment.seq, seq_add(flow.endpoint.iss, 1))
        assert segment.payload == craft.host_bytes(offset, len(segment.payload)), (
            "the host's data, corrupted"
        )

    def check(self) -> None:
        """The invariants of a namespace between steps."""
        segment = self.segment
        for vm in self.departed:
            assert vm.outbox == [], "frames for a VM that left"
            assert segment.ipv4.fragments.held(vm) == (0, 0), "fragments of a VM that left"
        live: list[Flow] = []
        for vm in segment.vms:
            counts = self.counts[vm]
            stats = vm.stats
            assert (stats.frames_in, stats.bytes_in) == (counts.frames_in, counts.bytes_in)
            assert stats.frames_out == counts.frames_out
            assert vm.flow_count <= self.settings.max_flows
            assert len(vm.macs) <= MAX_MACS_PER_VM
            datagrams, held = segment.ipv4.fragments.held(vm)
            assert datagrams <= MAX_DATAGRAMS and held <= MAX_BYTES
            if datagrams:
                assert segment.get_timer() is not None, "fragments held for ever"
            assert vm.tcp_buffers.used >= 0
            flows: list[Flow] = [*vm.flows.values(), *vm.dns_flows]
            for flow in flows:
                self._check_flow(vm, flow)
            live += flows
        if live:
            assert segment.get_timer() is not None
        for socket in self.host.open_sockets():
            assert not socket.flow.closed or isinstance(socket.flow, TcpFlow)
            assert socket.flow.vm.attached, "a socket of a VM that left"
        stalled = self.host.stalled()
        assert not stalled, f"readers waiting forever: {stalled}"
        assert segment.totals().frames_in == self.frames_in
        self.fed_now.clear()

    def _check_flow(self, vm: Vm, flow: Flow) -> None:
        assert not flow.closed and flow.vm is vm
        socket = self.host.sockets.get(flow)
        assert socket is not None, "a live flow without a socket"
        if socket.closed:  # only a TCP socket may go before its flow (TIME_WAIT)
            assert isinstance(flow, TcpFlow) and flow.host_closed
        if isinstance(flow, TcpFlow):
            assert flow.scheduled <= flow.endpoint.deadline(), "a timer that will never fire"
            assert len(flow.endpoint.send_buffer) <= SEND_BUFFER
            reassembly = flow.endpoint.reassembly
            assert len(reassembly) <= MAX_RUNS and reassembly.held <= RECEIVE_BUFFER
            if not socket.closed:
                assert flow.endpoint.to_host_pending == socket.sent - socket.written
        else:
            assert flow.scheduled <= flow.deadline, "a timer that will never fire"
