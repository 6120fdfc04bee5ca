"""A hypothesis state machine over three namespaces of VMs, their host sockets and time.

Rules feed the segments what hostile guests and a real shell would: corpus frames
of every protocol of both IP families, the same frames mutated, random bytes, TCP
segments crafted to fit open connections of either family (hostile ones, and the
next step of a well-behaved peer so that connections get deep), router and
neighbour solicitations valid or with one defect, what only routers and DHCPv6
servers send (disguised, to every destination), UDP and echo flows of both
families up to the flow cap, host socket events on any flow (connected, data, EOF,
written, each kind of error), forwarded connections and datagrams, time passing,
VMs leaving and coming back.  After every step:

* nothing raised, and each frame is counted in ``frames_in`` and under at most one
  drop reason (a frame to a group may add storm control's: the other VMs are a
  receiver of their own); a sample malformed by construction under exactly its own;
* the actions keep the socket protocol (``host.HostModel``), the guest's TCP data
  reaches the host intact and the host's reaches the guest intact;
* every frame the gateway sends parses, checksums and all (``emitted``); every
  frame a VM gets from another was sent by a VM of the same namespace just now, and
  is nothing RA guard keeps back (``chain6``);
* flows stay within ``max_flows``, each live flow has a timer entry, the timer
  always moves forward, no TCP reader waits forever (``Namespace.check``);
* a VM that leaves closes every socket of its flows, and a frame it sends after
  is not even counted; at the end every socket ever opened is closed and every
  TCP buffer budget is back to zero.

``TALLY`` counts the frames fed, for the long run's report.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import TypeVar

from attrs import define
from hypothesis import note
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from slirpnet.core.addr import IPAddress
from slirpnet.core.flows import TcpFlow, TftpFlow, echo_key, flow_key
from slirpnet.core.fragments import FRAGMENT_COST, MAX_BYTES, MAX_DATAGRAMS
from slirpnet.core.switch import MAX_MACS_PER_VM
from slirpnet.core.tcp import SEND_BUFFER, State
from slirpnet.wire import ethernet, icmpv6, tcp, udp
from slirpnet.wire.errors import WireError
from slirpnet.wire.ethernet import EthernetFrame
from slirpnet.wire.ipv4 import PROTO_TCP, PROTO_UDP, IPv4Packet
from slirpnet.wire.ipv6 import IPv6Packet
from tests.fuzz import corpus, corpus6, craft, mutate
from tests.fuzz.host import ERRORS, HostSocket
from tests.fuzz.namespaces import CHECKED_PORTS, NETWORKS, Namespace, Slot
from tests.fuzz.sample import Guest, Sample

REMOTE = IPv4Address(corpus.REMOTE)
REMOTE6 = IPv6Address(corpus6.REMOTE6)
# Drops decided before the source MAC is learned, so never hidden by the MAC limit.
_BEFORE_LEARNING = frozenset(
    ("eth_truncated", "eth_vlan_tagged", "eth_not_ethernet_ii", "eth_bad_source")
)
_GUEST_OPTIONS = b"\x02\x04\x05\xb4\x01\x03\x03\x07"  # MSS 1460, window scale 7
_NA = icmpv6.TYPE_NEIGHBOR_ADVERTISEMENT
BURST = 20  # frames in one send_burst step at most
FRAGMENTS = 64  # fragments of a datagram in one send_fragmented step, about
FLOWS = 10  # flows opened in one open_flows step at most: past the first network's cap

T = TypeVar("T")


@define
class Tally:
    frames: int = 0  # fed, by every machine in this process


TALLY = Tally()


class SegmentMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0
        self.ident = 0x8000  # of datagrams in fragments, none the corpus uses
        self.namespaces = [Namespace.of(net) for net in range(len(NETWORKS))]
        self.slots = [slot for ns in self.namespaces for slot in ns.slots]

    # -- what there is to choose from ----------------------------------------------------

    def attached(self) -> list[Slot]:
        return [slot for slot in self.slots if slot.vm is not None]

    def away(self) -> list[Slot]:
        return [slot for slot in self.slots if slot.vm is None]

    def live_tcp(self) -> list[tuple[Slot, TcpFlow]]:
        return [found for ns in self.namespaces for found in ns.live_tcp()]

    def live_tftp(self) -> list[tuple[Slot, TftpFlow]]:
        return [
            (slot, flow)
            for ns in self.namespaces
            for slot in ns.slots
            if slot.vm is not None
            for flow in ns.segment.tftp.flows_of(slot.vm)
        ]

    def host_events(self) -> list[tuple[Namespace, str, HostSocket]]:
        return [(ns, event, socket) for ns in self.namespaces for event, socket in ns.host.events()]

    # -- frames from guests ----------------------------------------------------------------

    @precondition(attached)
    @rule(data=st.data())
    def send_sample(self, data: st.DataObject) -> None:
        slot = _pick(data, self.attached(), "slot")
        sample = _pick(data, self._samples(slot), "sample")
        note(f"{slot}: {sample.name}")
        self._feed(slot, sample.frame, self._expected(slot, sample))
        self._after()

    @precondition(attached)
    @rule(
        data=st.data(),
        mutations=st.lists(
            st.tuples(
                st.sampled_from(mutate.KINDS), st.integers(0, 1 << 16), st.integers(0, 0xFFFF)
            ),
            min_size=1,
            max_size=4,
        ),
        fix=st.booleans(),
    )
    def send_mutated(
        self, data: st.DataObject, mutations: list[mutate.Mutation], fix: bool
    ) -> None:
        slot = _pick(data, self.attached(), "slot")
        sample = _pick(data, self._samples(slot), "sample")
        note(f"{slot}: {sample.name}")
        frame = mutate.mutate(sample.frame, mutations, fix=fix)
        if not _forges_checked_data(frame):
            self._feed(slot, frame)
        self._after()

    @precondition(attached)
    @rule(
        data=st.data(),
        ethertype=st.sampled_from([None, 0x0800, 0x0806, 0x86DD, 0x8100]),
        body=st.binary(max_size=300),
    )
    def send_random(self, data: st.DataObject, ethertype: int | None, body: bytes) -> None:
        """Random bytes, or random bytes behind an Ethernet header to the gateway."""
        slot = _pick(data, self.attached(), "slot")
        if ethertype is not None:
            gateway = self.namespaces[slot.net].segment.gateway_mac
            body = gateway + slot.guest.mac_bytes + ethertype.to_bytes(2, "big") + body
        if not _forges_checked_data(body):
            self._feed(slot, body)
        self._after()

    @precondition(attached)
    @rule(seed=st.integers(0, 2**32 - 1), count=st.integers(1, BURST))
    def send_burst(self, seed: int, count: int) -> None:
        """Many frames from one seed, cheaply: samples mutated or not, hostile segments."""
        rng = random.Random(seed)
        for _ in range(count):
            flows = self.live_tcp()
            if flows and rng.random() < 0.3:
                slot, flow = rng.choice(flows)
                offset = rng.randint(1, 1 << 20)
                seq, ack = craft.near(
                    flow.endpoint, rng.choice(craft.SEQ_FROM), rng.choice(craft.ACK_FROM), offset
                )
                frame = craft.on_flow(
                    flow,
                    self.namespaces[slot.net].segment.gateway_mac,
                    seq,
                    ack,
                    rng.randint(0, 0xFF),
                    window=rng.choice(craft.WINDOWS),
                    urgent=rng.choice(craft.URGENT),
                    options=rng.choice(craft.OPTIONS),
                    size=rng.choice(craft.SIZES),
                )
                self._feed(slot, frame)
            else:
                slot = rng.choice(self.attached())
                sample = rng.choice(self._samples(slot))
                mutations = [
                    (rng.choice(mutate.KINDS), rng.randint(0, 1 << 16), rng.randint(0, 0xFFFF))
                    for _ in range(rng.choice((0, 1, 1, 2, 3)))
                ]
                frame = mutate.mutate(sample.frame, mutations, fix=rng.random() < 0.7)
                if _forges_checked_data(frame):
                    continue
                intact = frame == sample.frame  # no mutation, no checksum fixed
                self._feed(slot, frame, self._expected(slot, sample) if intact else None)
            self.namespaces[slot.net].drain()
        self._after()

    @precondition(attached)
    @rule(
        data=st.data(),
        kind=st.sampled_from(corpus.FRAGMENTED),
        size=st.sampled_from([1, 100, 1473, 3000, 9000, 65000]),
        cut=st.sampled_from([8, 64, 576, 1480, 8192]),
        seed=st.integers(0, 2**32 - 1),
        mangle=st.sampled_from(["none", "shuffle", "repeat", "drop", "overlap"]),
    )
    def send_fragmented(
        self, data: st.DataObject, kind: str, size: int, cut: int, seed: int, mangle: str
    ) -> None:
        """A datagram in fragments, shuffled, repeated, with one lost or one overlapping
        the others: it is reassembled once when all came intact and there was room."""
        slot = _pick(data, self.attached(), "slot")
        vm = slot.vm
        assert vm is not None
        ns = self.namespaces[slot.net]
        self.ident = (self.ident + 1) & 0xFFFF
        cut = max(cut, size // FRAGMENTS // 8 * 8)  # at most about FRAGMENTS of them
        frames = corpus.fragmented(ns.settings, slot.guest, kind, size, cut, self.ident)
        rng = random.Random(seed)
        whole = len(frames) > 1 and mangle in ("none", "shuffle", "repeat")
        if mangle != "none" and len(frames) > 1:
            last = frames.pop(rng.randrange(len(frames)))
            rng.shuffle(frames)
            if mangle == "repeat":
                frames.insert(rng.randint(0, len(frames)), rng.choice(frames))
            elif mangle == "overlap":
                frames.insert(rng.randint(0, len(frames)), corpus.overlapping(frames[0]))
            if mangle != "drop":
                frames.append(last)  # the one that completes it, if any
        count, held = ns.segment.ipv4.fragments.held(vm)
        needed = sum(len(frame) - 34 + FRAGMENT_COST for frame in frames)
        room = count < MAX_DATAGRAMS and held + needed <= MAX_BYTES
        before = vm.stats.events["ipv4_reassembled"]
        known = slot.guest.mac_bytes in vm.macs  # not refused as another VM's MAC
        for frame in frames:
            self._feed(slot, frame)
        if known and room:
            assert vm.stats.events["ipv4_reassembled"] - before == int(whole)
        self._after()

    @precondition(attached)
    @rule(data=st.data(), count=st.integers(1, 100), size=st.sampled_from([8, 1480, 8192]))
    def send_fragment_flood(self, data: st.DataObject, count: int, size: int) -> None:
        """First fragments whose rest never comes, each of another datagram."""
        slot = _pick(data, self.attached(), "slot")
        settings = self.namespaces[slot.net].settings
        for _ in range(count):
            self.ident = (self.ident + 1) & 0xFFFF
            self._feed(slot, corpus.first_fragment(settings, slot.guest, self.ident, size))
        self._after()

    @precondition(attached)
    @rule(
        data=st.data(),
        kind=st.sampled_from(corpus6.NDP_KINDS),
        defect=st.sampled_from(list(corpus6.NDP_DEFECTS)),
    )
    def solicit(self, data: st.DataObject, kind: str, defect: str) -> None:
        """A router or neighbour solicitation for one of the gateway's addresses, valid
        or with one defect: answered (an RA or an NA, to the soliciting address or to
        all nodes), or dropped under the defect's reason and unanswered."""
        slot = _pick(data, self.attached(), "slot")
        vm = slot.vm
        assert vm is not None
        ns = self.namespaces[slot.net]
        frame, reason, answer_to = corpus6.ndp(ns.settings, slot.guest, kind, defect)
        heard = self._heard(slot)
        self._feed(slot, frame, reason if heard else None)
        answers = [f for f in vm.outbox if f[6:12] == ns.segment.gateway_mac]
        if heard and reason is None:
            (answer,) = answers
            expected = icmpv6.TYPE_ROUTER_ADVERTISEMENT if kind.startswith("rs") else _NA
            assert answer[54] == expected, f"ICMPv6 type {answer[54]} for {kind}"
            assert answer[38:54] == IPv6Address(answer_to).packed, "answered elsewhere"
        elif reason is not None:
            assert answers == [], f"{kind} with {defect} answered"
        self._after()

    @precondition(attached)
    @rule(
        data=st.data(),
        kind=st.sampled_from(corpus6.ROGUE_KINDS),
        disguise=st.sampled_from(corpus6.ROGUE_DISGUISES),
        to=st.sampled_from(corpus6.ROGUE_TARGETS),
    )
    def rogue(self, data: st.DataObject, kind: str, disguise: str, to: str) -> None:
        """What only routers and DHCPv6 servers send, from a guest, disguised and sent
        anywhere: no other VM gets it (``Namespace._check_frame``), and it is dropped as
        RA guard's."""
        slot = _pick(data, self.attached(), "slot")
        ns = self.namespaces[slot.net]
        frame = corpus6.rogue(ns.settings, slot.guest, slot.other, kind, disguise, to)
        expected = None
        if self._heard(slot) and to != "gateway":
            # Every disguise is seen through (RFC 7113 §3); a chain the codec refuses is
            # not passed either (§5).
            refused = disguise == "three_destination_options"
            expected = "ra_guard_unparsable" if refused else "ra_guard"
        self._feed(slot, frame, expected)
        self._after()

    @precondition(attached)
    @rule(
        data=st.data(),
        kind=st.sampled_from(["udp", "echo"]),
        to=st.sampled_from(["remote", "second remote", "gateway"]),
        first=st.sampled_from([7, 4000]),
        families=st.lists(st.sampled_from([4, 6]), min_size=1, max_size=FLOWS),
    )
    def open_flows(
        self, data: st.DataObject, kind: str, to: str, first: int, families: list[int]
    ) -> None:
        """A guest's UDP or echoes to a host of either family, one port (or identifier) after
        another: each opens a flow or goes on the one open; flows of both families (and DNS
        queries) share one ``max_flows``, and past it the guest is refused.  An echo to the
        gateway is answered there, and makes no flow."""
        slot = _pick(data, self.attached(), "slot")
        vm = slot.vm
        assert vm is not None
        ns = self.namespaces[slot.net]
        settings = ns.settings
        for port, family in enumerate(families, first):
            src = _address(slot.guest, family)
            if to == "gateway":
                dst = settings.gateway_for(src)
            else:
                remotes = corpus.REMOTES if family == 4 else corpus6.REMOTES6
                dst = ip_address(remotes[to == "second remote"])
            if kind == "udp":
                key = flow_key(PROTO_UDP, src, corpus6.DATAGRAM_PORT, dst, port)
            else:
                key = echo_key(src, port, dst)
            before, count = vm.flows.get(key), vm.flow_count
            heard = self._heard(slot)
            frame = corpus6.datagram(settings, slot.guest, family, kind, str(dst), port)
            dropped = self._feed(slot, frame)
            opened = ns.drain()
            if not heard:
                continue
            if kind == "echo" and to == "gateway":
                assert not dropped and key not in vm.flows, "a ping to the gateway made a flow"
            elif settings.restrict:
                assert dropped == Counter(restricted=1)
            elif to == "gateway" and not settings.host_loopback:
                assert dropped == Counter(host_loopback_disabled=1)
            elif before is not None:
                assert not dropped and vm.flows[key] is before and before not in opened
            elif count < settings.max_flows:
                assert not dropped, dropped
                assert vm.flows[key] in opened, "a flow without its socket"
            else:
                assert dropped == Counter(flow_limit=1) and key not in vm.flows
        self._after()

    @precondition(attached)
    @rule(
        data=st.data(),
        sport=st.sampled_from(craft.CRAFT_PORTS),
        family=st.sampled_from([4, 6]),
        to=st.sampled_from(["remote", "gateway", "dns", "neighbour"]),
        isn=st.sampled_from([0, 0xFFFFFFFF, 0x7FFFFFFF]) | st.integers(0, 0xFFFFFFFF),
        window=st.sampled_from([65535, 0, 1, 512]),
        options=st.sampled_from(craft.OPTIONS[:6]),
    )
    def tcp_open(
        self,
        data: st.DataObject,
        sport: int,
        family: int,
        to: str,
        isn: int,
        window: int,
        options: bytes,
    ) -> None:
        slot = _pick(data, self.attached(), "slot")
        settings = self.namespaces[slot.net].settings
        src = _address(slot.guest, family)
        dst, dport = {
            "remote": (REMOTE if family == 4 else REMOTE6, 80),
            "gateway": (settings.gateway_for(src), 8080),
            "dns": (settings.dns_for(src), 53),
            "neighbour": (_address(slot.other, family), 22),
        }[to]
        frame = craft.tcp_frame(
            src_mac=slot.guest.mac_bytes,
            dst_mac=self.namespaces[slot.net].segment.gateway_mac,
            src=src,
            dst=dst,
            sport=sport,
            dport=dport,
            seq=isn,
            ack=0,
            flags=tcp.SYN,
            window=window,
            options=options,
        )
        self._feed(slot, frame)
        self._after()

    @precondition(live_tcp)
    @rule(
        data=st.data(),
        seq_from=st.sampled_from(craft.SEQ_FROM),
        ack_from=st.sampled_from(craft.ACK_FROM),
        flags=st.integers(0, 0xFF),
        window=st.sampled_from(craft.WINDOWS),
        urgent=st.sampled_from(craft.URGENT),
        options=st.sampled_from(craft.OPTIONS),
        size=st.sampled_from(craft.SIZES),
        offset=st.integers(1, 1 << 20),
    )
    def tcp_hostile(
        self,
        data: st.DataObject,
        seq_from: str,
        ack_from: str,
        flags: int,
        window: int,
        urgent: int,
        options: bytes,
        size: int,
        offset: int,
    ) -> None:
        """A segment on an open connection with any flags, numbers near ours, any options."""
        slot, flow = _pick(data, self.live_tcp(), "flow")
        seq, ack = craft.near(flow.endpoint, seq_from, ack_from, offset)
        gateway = self.namespaces[slot.net].segment.gateway_mac
        frame = craft.on_flow(
            flow, gateway, seq, ack, flags, window=window, urgent=urgent, options=options, size=size
        )
        self._feed(slot, frame)
        self._after()

    @precondition(live_tcp)
    @rule(
        data=st.data(),
        steps=st.integers(1, 4),
        size=st.sampled_from([1, 100, 1460, 5000]),
        window=st.sampled_from([65535, 65535, 0, 300]),
    )
    def tcp_progress(self, data: st.DataObject, steps: int, size: int, window: int) -> None:
        """The next steps a well-behaved guest and host take on a connection."""
        slot, flow = _pick(data, self.live_tcp(), "flow")
        ns = self.namespaces[slot.net]
        socket = ns.host.sockets[flow]
        gateway = ns.segment.gateway_mac
        for _ in range(steps):
            ep = flow.endpoint
            if flow.closed or (ep.state is State.CONNECTING and socket.connected):
                break
            if ep.state is State.CONNECTING:
                self._move(slot, socket, "connected", size, window)
            elif ep.state is State.SYN_SENT:  # the guest accepts a forwarded connection
                isn = data.draw(st.integers(0, 0xFFFFFFFF), "guest isn")
                flags = tcp.SYN | tcp.ACK
                frame = craft.on_flow(flow, gateway, isn, ep.snd_max, flags, options=_GUEST_OPTIONS)
                self._feed(slot, frame)
            else:
                move = _pick(data, self._moves(ns, socket), "move")
                self._move(slot, socket, move, size, window)
            ns.drain()
        self._after()

    def tftp_guests(self) -> list[Slot]:
        return [slot for slot in self.attached() if NETWORKS[slot.net].tftp_root is not None]

    @precondition(tftp_guests)
    @rule(
        data=st.data(),
        fresh=st.booleans(),
        steps=st.integers(1, 20),
        packet=st.sampled_from(["ack", "ack", "ack", "stale ack", "any ack", "error", "data"]),
        block=st.integers(0, 0xFFFF),
    )
    def tftp_progress(
        self, data: st.DataObject, fresh: bool, steps: int, packet: str, block: int
    ) -> None:
        """A guest's next packets on a TFTP transfer, a new one or one under way: the ACK
        that moves it on, mostly."""
        live = self.live_tftp()
        if fresh or not live:
            slot = _pick(data, self.tftp_guests(), "slot")
            reads = [s for s in self._samples(slot) if s.name.startswith("tftp_rrq_")]
            self._feed(slot, _pick(data, reads, "read").frame)
            self.namespaces[slot.net].drain()
            live = [(s, f) for s, f in self.live_tftp() if s is slot]
            if not live:
                self._after()  # refused, or found missing
                return
        slot, flow = _pick(data, live, "transfer")
        ns = self.namespaces[slot.net]
        for _ in range(steps):
            expected = ns.segment.tftp.next_ack(flow)
            if flow.closed or expected is None:
                break
            if packet == "error":
                payload = b"\x00\x05\x00\x00stop\x00"
            elif packet == "data":
                payload = b"\x00\x03\x00\x01data"
            else:
                number = {"ack": expected, "stale ack": expected - 1}.get(packet, block)
                payload = b"\x00\x04" + (number & 0xFFFF).to_bytes(2, "big")
            self._feed(slot, _to_gateway(flow, ns.segment.gateway_mac, payload))
            ns.drain()
        self._after()

    # -- the host side ---------------------------------------------------------------------

    @precondition(host_events)
    @rule(
        data=st.data(),
        error=st.sampled_from(ERRORS),
        size=st.sampled_from([0, 1, 100, 1400, 1473, 2000, 65507]),
        count=st.sampled_from([1, 100, 65536, SEND_BUFFER]),
        variant=st.integers(0, 0xFFFF),
    )
    def host_event(
        self, data: st.DataObject, error: str, size: int, count: int, variant: int
    ) -> None:
        """What a host socket reports: connected, data, EOF, bytes written, an error."""
        ns, event, socket = _pick(data, self.host_events(), "event")
        note(f"{event} on {socket.flow!r}")
        ns.report(event, socket, self.now, error=error, size=size, count=count, variant=variant)
        self._after()

    @rule(
        data=st.data(),
        net=st.integers(0, len(NETWORKS) - 1),
        port=st.integers(1024, 1030),
        size=st.sampled_from([0, 10, 1472, 1473, 65507]),
    )
    def forward(self, data: st.DataObject, net: int, port: int, size: int) -> None:
        """A connection accepted on a forward, or a datagram received on one."""
        ns = self.namespaces[net]
        forward = _pick(data, ns.forwards, "forward")
        ns.forward(forward, port, craft.host_bytes(0, size), self.now)
        self._after()

    # -- time and VMs ----------------------------------------------------------------------

    @rule(dt=st.sampled_from([0.001, 0.2, 0.2, 1.0, 1.0, 2.5, 11.0, 61.0, 301.0, 7201.0]))
    def pass_time(self, dt: float) -> None:
        target = self.now + dt
        for ns in self.namespaces:
            ns.advance(self.now, target)
        self.now = target
        self._after()

    @precondition(attached)
    @rule(data=st.data())
    def detach(self, data: st.DataObject) -> None:
        slot = _pick(data, self.attached(), "slot")
        self.namespaces[slot.net].leave(slot, self.now)
        self._after()

    @precondition(away)
    @rule(data=st.data())
    def attach(self, data: st.DataObject) -> None:
        """A VM that left connects again (QEMU's reconnect), with the same MAC."""
        slot = _pick(data, self.away(), "slot")
        self.namespaces[slot.net].attach(slot, self.now)
        self._after()

    def teardown(self) -> None:
        for ns in self.namespaces:
            ns.finish(self.now)

    # -- helpers ---------------------------------------------------------------------------

    def _samples(self, slot: Slot) -> tuple[Sample, ...]:
        return self.namespaces[slot.net].samples(slot)

    def _expected(self, slot: Slot, sample: Sample) -> str | None:
        """The sample's reason, unless its source MAC is another live VM's (a mutated
        frame may have taken it while its VM was away) or the VM's MAC table is full."""
        vm = slot.vm
        assert vm is not None
        source = sample.frame[6:12]
        if sample.reason in _BEFORE_LEARNING or source in vm.macs:
            return sample.reason
        others = self.namespaces[slot.net].segment.vms
        if any(source in other.macs for other in others if other is not vm):
            return "eth_mac_in_use"
        return sample.reason if len(vm.macs) < MAX_MACS_PER_VM else None

    def _heard(self, slot: Slot) -> bool:
        """Will ``slot``'s VM be heard from its own MAC: not another live VM's, and
        within the MACs its port may learn?"""
        vm = slot.vm
        assert vm is not None
        mac = slot.guest.mac_bytes
        if mac in vm.macs:
            return True
        others = self.namespaces[slot.net].segment.vms
        held = any(mac in other.macs for other in others if other is not vm)
        return not held and len(vm.macs) < MAX_MACS_PER_VM

    def _feed(self, slot: Slot, frame: bytes, expected: str | None = None) -> Counter[str]:
        """Feed ``frame`` from ``slot``'s VM; the drops it caused, but storm control's."""
        assert slot.vm is not None
        TALLY.frames += 1
        dropped = self.namespaces[slot.net].feed(slot.vm, frame, self.now)
        if frame[:1] and frame[0] & 1:
            # A frame to a group has two receivers: storm control may keep it from the
            # other VMs (flood_limit) while the gateway drops it for a reason of its own.
            del dropped["flood_limit"]
        assert sum(dropped.values()) <= 1, f"one frame, several drops: {dropped}"
        if expected is not None:
            assert dropped == Counter({expected: 1}), f"expected {expected}, got {dropped}"
        return dropped

    def _moves(self, ns: Namespace, socket: HostSocket) -> list[str]:
        """A well-behaved guest's segments, and what the host socket could report (its
        events' names: the guest's data is "guest data", so the host's "data" is one)."""
        assert isinstance(socket.flow, TcpFlow)
        moves = ["ack"]
        if not socket.flow.endpoint.guest_fin:
            moves += ["guest data", "fin", "fin crossing ours"]
        moves += [e for e, s in ns.host.events() if s is socket and e != "error"]
        return moves

    def _move(self, slot: Slot, socket: HostSocket, move: str, size: int, window: int) -> None:
        flow = socket.flow
        assert isinstance(flow, TcpFlow)
        ep = flow.endpoint
        ns = self.namespaces[slot.net]
        if move in ("ack", "guest data"):
            size = size if move == "guest data" else 0
            frame = craft.on_flow(
                flow,
                ns.segment.gateway_mac,
                ep.rcv_nxt,
                ep.snd_max,
                tcp.ACK,
                window=window,
                size=size,
            )
            self._feed(slot, frame)
        elif move.startswith("fin"):
            # Crossing ours, the guest's FIN acknowledges only what came before our FIN.
            ack = ep.snd_una if move == "fin crossing ours" else ep.snd_max
            flags = tcp.ACK | tcp.FIN
            frame = craft.on_flow(
                flow, ns.segment.gateway_mac, ep.rcv_nxt, ack, flags, window=window
            )
            self._feed(slot, frame)
        else:
            ns.report(move, socket, self.now, error="", size=size, count=SEND_BUFFER, variant=0)

    def _after(self) -> None:
        """End of a step: drain and check every namespace."""
        for ns in self.namespaces:
            ns.drain()
            ns.check()


def _to_gateway(flow: TftpFlow, gateway_mac: bytes, payload: bytes) -> bytes:
    """A datagram from ``flow``'s guest to its transfer's port on the gateway."""
    gateway = flow.host_address
    datagram = udp.UdpDatagram(flow.guest.port, flow.port, payload)
    body = datagram.encode(flow.guest.address, gateway)
    packet = IPv4Packet(flow.guest.address, gateway, PROTO_UDP, body)
    frame = EthernetFrame(gateway_mac, flow.guest.mac, ethernet.ETHERTYPE_IPV4, packet.encode())
    return frame.encode()


def _pick(data: st.DataObject, items: Sequence[T], label: str) -> T:
    """One of ``items``, drawn by index: failing cases print short, and shrink well."""
    return items[data.draw(st.integers(0, len(items) - 1), label)]


def _address(guest: Guest, family: int) -> IPAddress:
    return IPv4Address(guest.address) if family == 4 else IPv6Address(guest.address6)


def _forges_checked_data(frame: bytes) -> bool:
    """Would this frame give a checked connection data that is not ``craft``'s?"""
    try:
        eth = EthernetFrame.parse(frame)
        if eth.ethertype == ethernet.ETHERTYPE_IPV6:
            packet6 = IPv6Packet.parse(eth.payload)
            protocol, payload = packet6.next_header, packet6.payload
        else:
            packet = IPv4Packet.parse(eth.payload)
            protocol, payload = packet.protocol, packet.payload
    except WireError:
        return False
    return protocol == PROTO_TCP and int.from_bytes(payload[:2], "big") in CHECKED_PORTS
