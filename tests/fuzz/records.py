"""Drive one namespace from a byte string: the input format of the atheris harness.

An input is a network number (its first byte, modulo the networks of
``namespaces.NETWORKS``), then records: a kind byte, a 2-byte big-endian length
and that many bytes of body.  The kind's low three bits say what the record is,
the rest which VM or which format:

0. a frame from a VM, as it is;
1. a frame from a VM with its checksums made right, so coverage gets past them;
2. a host socket event: which of ``HostModel.events()``, error, size, count, variant;
3. time passing: a 3-byte number of milliseconds;
4. a forward: which, the peer's port, the datagram;
5. a VM leaving, or coming back;
6. a TCP segment on an open connection: which, its numbers (``craft.near``), flags,
   window, options, size, and a 4-byte offset;
7. bytes for a QEMU or VDE stream decoder, kept across records.

``drive`` checks what the state machine checks (``Namespace.drain`` and ``check``
after every record, ``finish`` at the end), so a bug is an exception.  ``seeds``
turns the corpus into inputs, each sample (IPv4's and IPv6's) as one frame record,
then adds handshakes over both families, fragments, and what only routers and
DHCPv6 servers send, from a guest, disguised (``rogues``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from slirpnet.core.fragments import MAX_DATAGRAMS, REASSEMBLY_TIMEOUT
from slirpnet.framing import QEMU_STREAM, VDE_STREAM, FramingError
from tests.fuzz import corpus, corpus6, craft, mutate
from tests.fuzz.host import ERRORS
from tests.fuzz.namespaces import NETWORKS, Namespace

_START = 1000.0


def run(data: bytes) -> None:
    """atheris's entry point (whose return value means something to libFuzzer)."""
    drive(data)


def drive(data: bytes) -> Namespace | None:
    """The namespace ``data`` drives, after every check; None for an empty input."""
    if not data:
        return None
    ns = Namespace.of(data[0] % len(NETWORKS))
    decoders = [QEMU_STREAM.decoder(), VDE_STREAM.decoder()]
    now = _START
    position = 1
    while position + 3 <= len(data):
        kind, length = data[position], int.from_bytes(data[position + 1 : position + 3], "big")
        body = data[position + 3 : position + 3 + length]
        position += 3 + length
        which = kind >> 3
        record = kind & 7
        if record <= 1:
            slot = ns.slots[which % len(ns.slots)]
            if slot.vm is not None:
                frame = bytearray(body)
                if record == 1:
                    mutate.fix_checksums(frame)
                dropped = ns.feed(slot.vm, bytes(frame), now)
                assert sum(dropped.values()) <= 1, f"one frame, several drops: {dropped}"
        elif record == 2:
            _event(ns, body, now)
        elif record == 3:
            later = now + int.from_bytes(body[:3], "big") / 1000
            ns.advance(now, later)
            now = later
        elif record == 4:
            forward = ns.forwards[_byte(body, 0) % len(ns.forwards)]
            ns.forward(forward, 1024 + _byte(body, 1) % 8, body[2:], now)
        elif record == 5:
            slot = ns.slots[which % len(ns.slots)]
            if slot.vm is None:
                ns.attach(slot, now)
            else:
                ns.leave(slot, now)
        elif record == 6:
            _segment(ns, body, now)
        else:
            with contextlib.suppress(FramingError):  # and stays failed (test_fuzz_framing)
                decoders[which % 2].feed(body)
        ns.drain()
        ns.check()
    ns.finish(now)
    return ns


def _byte(body: bytes, index: int) -> int:
    return body[index] if index < len(body) else 0


def _number(body: bytes, start: int, size: int) -> int:
    return int.from_bytes(body[start : start + size], "big")


def _event(ns: Namespace, body: bytes, now: float) -> None:
    events = ns.host.events()
    if events:
        event, socket = events[_byte(body, 0) % len(events)]
        ns.report(
            event,
            socket,
            now,
            error=ERRORS[_byte(body, 1) % len(ERRORS)],
            size=_number(body, 2, 2),
            count=_number(body, 4, 3),
            variant=_number(body, 7, 2),
        )


def _segment(ns: Namespace, body: bytes, now: float) -> None:
    flows = ns.live_tcp()
    if not flows:
        return
    slot, flow = flows[_byte(body, 0) % len(flows)]
    seq_from = craft.SEQ_FROM[_byte(body, 1) % len(craft.SEQ_FROM)]
    ack_from = craft.ACK_FROM[_byte(body, 2) % len(craft.ACK_FROM)]
    seq, ack = craft.near(flow.endpoint, seq_from, ack_from, max(_number(body, 8, 4), 1))
    frame = craft.on_flow(
        flow,
        ns.segment.gateway_mac,
        seq,
        ack,
        _byte(body, 3),
        window=craft.WINDOWS[_byte(body, 4) % len(craft.WINDOWS)],
        urgent=craft.URGENT[_byte(body, 7) % len(craft.URGENT)],
        options=craft.OPTIONS[_byte(body, 5) % len(craft.OPTIONS)],
        size=craft.SIZES[_byte(body, 6) % len(craft.SIZES)],
    )
    assert slot.vm is not None
    dropped = ns.feed(slot.vm, frame, now)
    assert sum(dropped.values()) <= 1, f"one frame, several drops: {dropped}"


def seeds() -> Iterator[bytes]:
    """Each corpus sample as an input, then ``handshakes``, ``fragments`` and ``rogues``."""
    for net in range(len(NETWORKS)):
        ns = Namespace.of(net)
        for which, slot in enumerate(ns.slots):
            for sample in ns.samples(slot):
                yield bytes((net,)) + record(which << 3, sample.frame)
    yield from handshakes()
    yield from fragments().values()
    yield from rogues()


def fragments() -> dict[str, bytes]:
    """On the first network (MTU 1500), by what they show: a datagram whose fragments
    overlap, one with a hole that times out, a flood of first fragments that stays
    within the bound and times out, and a large ping answered in fragments."""
    ns = Namespace.of(0)
    slot = ns.slots[0]
    samples = {sample.name: sample.frame for sample in ns.samples(slot)}

    def frames(*names: str) -> bytes:
        return b"".join(record(0, samples[name]) for name in names)

    later = record(3, int(REASSEMBLY_TIMEOUT * 1000 + 1000).to_bytes(3, "big"))
    flood = b"".join(
        record(0, corpus.first_fragment(ns.settings, slot.guest, ident, 1480))
        for ident in range(2 * MAX_DATAGRAMS)
    )
    return {
        "overlap": b"\0" + frames("frag_udp_0", "frag_udp_overlap", "frag_udp_1", "frag_udp_2"),
        "hole": b"\0" + frames("frag_udp_0", "frag_udp_2") + later,
        "flood": b"\0" + flood + later,
        "ping": b"\0" + frames("frag_ping_gateway_1", "frag_ping_gateway_0"),
    }


def handshakes() -> Iterator[bytes]:
    """On each network, over IPv4 then IPv6: a SYN, the host's connect, the guest's ACK
    with data (1460 bytes over IPv4, 536 over IPv6, within the MSS either way), time."""
    for net in range(len(NETWORKS)):
        ns = Namespace.of(net)
        for name, size in (("tcp_syn_all_options", 4), ("tcp6_syn_remote", 3)):
            syn = next(s for s in ns.samples(ns.slots[0]) if s.name == name)
            connected = record(2, bytes((1,)) + bytes(8))  # a connecting flow: error, connected
            ack = record(6, bytes((0, 0, 0, 0x10, 0, 0, size, 0)) + (1).to_bytes(4, "big"))
            later = record(3, b"\x00\x10\x00")
            yield bytes((net,)) + record(0, syn.frame) + connected + ack + later


def rogues() -> Iterator[bytes]:
    """On the first network, from its first VM to all nodes: each of what only routers
    and DHCPv6 servers send, in each disguise (``corpus6.rogue``)."""
    ns = Namespace.of(0)
    slot = ns.slots[0]
    for kind in corpus6.ROGUE_KINDS:
        for disguise in corpus6.ROGUE_DISGUISES:
            frame = corpus6.rogue(ns.settings, slot.guest, slot.other, kind, disguise, "all_nodes")
            yield b"\0" + record(0, frame)


def record(kind: int, body: bytes) -> bytes:
    return bytes((kind,)) + len(body).to_bytes(2, "big") + body
