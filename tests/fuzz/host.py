"""The host side of one segment, as the shell would keep it, checking every action.

``HostModel.take`` reads the segment's actions and fails on any the shell could
not carry out: a socket opened twice or for a VM of another namespace, data or a
shutdown on a socket never opened or already closed, data after the shutdown, a
close that comes twice.  Each flow's ``HostSocket`` remembers what happened to
it, so that ``events`` offers only what a real socket could report (written
bytes that were sent, reads within ``read_allowance``, an EOF the reader saw),
and ``report`` tells the segment one of them.

TFTP flows are answered as ``shell/tftpfiles.py`` answers them, at once: an open with
the size of one of ``TFTP_FILES`` (or not found, or denied), a read with the file's
bytes there, each read checked to be of an open file and bounded.

The reader follows ``shell/hostsockets.py``: it waits when ``read_allowance`` is
0 and wakes on ``ResumeFlow``; ``stalled`` finds a reader left waiting with room
to read, which would hang the connection for good.
"""

from __future__ import annotations

from ipaddress import IPv6Address

from attrs import define

from slirpnet.core.flows import (
    FLOW_FAILED,
    FLOW_REFUSED,
    FLOW_RESET,
    FLOW_UNREACHABLE,
    Action,
    CloseFlow,
    DnsFlow,
    EchoFlow,
    Flow,
    FlowKey,
    OpenFlow,
    ReadFlow,
    ResumeFlow,
    SendFlow,
    ShutdownFlow,
    TcpFlow,
    TftpFlow,
)
from slirpnet.core.segment import Segment
from slirpnet.core.tcp import SEND_BUFFER
from slirpnet.core.tftp import DENIED, FILE_SIZE, MAX_WINDOW_BYTES, NOT_FOUND
from slirpnet.core.vm import Vm
from slirpnet.wire import icmp, icmpv6
from tests.fuzz.craft import guest_bytes, host_bytes

ERRORS = (FLOW_REFUSED, FLOW_UNREACHABLE, FLOW_RESET, FLOW_FAILED)
# The TFTP root's files (see corpus.TFTP_READS); "denied" is refused, the rest not found.
TFTP_FILES = {"boot.ipxe": host_bytes(0, 3000), "kernel": host_bytes(7, 5000), "empty": b""}


@define(eq=False)
class HostSocket:
    flow: Flow
    connected: bool  # TCP: connected, or accepted on a forward
    checked: bool  # TCP: the guest's data follows ``craft.guest_bytes``, so check it
    sent: int = 0  # TCP bytes the core gave the socket to write
    written: int = 0  # of those, reported written
    shut: bool = False
    host_sent: int = 0  # TCP bytes read from the host peer and reported
    eof: bool = False  # the host peer's EOF was reported
    failed: bool = False  # TCP: an error was reported, so the socket's task is over
    closed: bool = False
    aborted: bool = False
    waiting: bool = False  # the reader waits for ResumeFlow
    resume: bool = False  # a ResumeFlow came that the reader has not seen yet

    @property
    def reading(self) -> bool:
        """The TCP reader is alive (connected, no EOF, no error, not closed)."""
        if not self.connected or self.eof or self.failed or self.closed:
            return False
        assert isinstance(self.flow, TcpFlow)
        return not (self.flow.endpoint.fin_queued or self.flow.closed)


class HostModel:
    def __init__(self, segment: Segment) -> None:
        self.segment = segment
        self.sockets: dict[Flow, HostSocket] = {}  # every flow ever opened
        self.tcp: dict[tuple[Vm, FlowKey], TcpFlow] = {}  # the latest on each key
        self.now = 0.0  # the time of the step being taken: when TFTP answers come

    def open_sockets(self) -> list[HostSocket]:
        return [s for s in self.sockets.values() if not s.closed]

    def take(self, *, checked_ports: frozenset[int]) -> list[Action]:
        """Every action, those the TFTP answers bring about included."""
        taken: list[Action] = []
        while actions := self.segment.take_actions():
            self._take(actions, checked_ports)
            taken += actions
            for action in actions:
                if isinstance(action, OpenFlow | ReadFlow) and isinstance(action.flow, TftpFlow):
                    self._answer_tftp(action)
        return taken

    def _answer_tftp(self, action: OpenFlow | ReadFlow) -> None:
        flow = action.flow
        assert isinstance(flow, TftpFlow)
        if self.sockets[flow].closed:
            return  # closed in the same batch: the shell has let the file go
        data = TFTP_FILES.get(flow.path)
        if isinstance(action, OpenFlow):
            if data is None:
                error = DENIED if flow.path == "denied" else NOT_FOUND
                self.segment.flow_error(flow, error, self.now)
            else:
                self.segment.flow_received(flow, FILE_SIZE.pack(len(data)), self.now)
        else:
            assert data is not None, "a read of a file never opened"
            assert 0 < action.size <= MAX_WINDOW_BYTES and action.offset >= 0, action
            chunk = data[action.offset : action.offset + action.size]
            self.segment.flow_received(flow, chunk, self.now)

    def _take(self, actions: list[Action], checked_ports: frozenset[int]) -> None:
        for action in actions:
            flow = action.flow
            if isinstance(action, OpenFlow):
                assert flow not in self.sockets, f"{flow!r} opened twice"
                assert flow.vm.attached and flow.vm in self.segment.vms, "a foreign VM's flow"
                tcp = isinstance(flow, TcpFlow)
                self.sockets[flow] = HostSocket(
                    flow,
                    connected=tcp and flow.forward is not None,
                    checked=tcp and (flow.guest.port in checked_ports),
                )
                if isinstance(flow, TcpFlow):
                    self.tcp[flow.vm, flow.key] = flow
                continue
            socket = self.sockets.get(flow)
            assert socket is not None, f"{action!r} on a socket never opened"
            assert not socket.closed, f"{action!r} on a socket already closed"
            if isinstance(action, SendFlow):
                self._send(socket, action.payload)
            elif isinstance(action, ShutdownFlow):
                assert isinstance(flow, TcpFlow) and not socket.shut, "a second shutdown"
                socket.shut = True
            elif isinstance(action, ResumeFlow):
                assert isinstance(flow, TcpFlow)
                socket.resume = True
            elif isinstance(action, ReadFlow):
                assert isinstance(flow, TftpFlow), "a read of a socket"
            else:
                assert isinstance(action, CloseFlow)
                # A TCP socket may close while its flow lingers in TIME_WAIT; others
                # close with their flow.
                assert isinstance(flow, TcpFlow) or flow.closed
                socket.closed = True
                socket.aborted = action.abort

    def _send(self, socket: HostSocket, payload: bytes) -> None:
        flow = socket.flow
        if not isinstance(flow, TcpFlow):
            return  # a datagram: any payload, even an empty one
        assert payload, "an empty write"
        assert not socket.shut, "data after the shutdown"
        if socket.checked:
            start = (flow.endpoint.guest_isn + 1 + socket.sent) & 0xFFFFFFFF
            assert payload == guest_bytes(start, len(payload)), "the guest's data, corrupted"
        socket.sent += len(payload)

    def events(self) -> list[tuple[str, HostSocket]]:
        """What each socket could report now, as the real shell would."""
        found = []
        for socket in self.sockets.values():
            flow = socket.flow
            if isinstance(flow, TftpFlow):
                continue  # a file: answered as asked, in ``take``
            if not socket.closed:
                found.append(("error", socket))
                if not isinstance(flow, TcpFlow) or (socket.reading and not socket.waiting):
                    found.append(("data", socket))
            if isinstance(flow, TcpFlow):
                if not (socket.connected or socket.failed or socket.closed):
                    found.append(("connected", socket))
                if socket.reading and not socket.waiting and flow.endpoint.read_allowance > 0:
                    found.append(("eof", socket))
                # A socket closed gracefully still writes what it was given, or fails to.
                if socket.sent > socket.written and not (socket.failed or socket.aborted):
                    found.append(("written", socket))
                    if socket.closed:
                        found.append(("error", socket))
            elif socket.closed:
                found.append(("data", socket))  # a datagram read as it closed: ignored
        return found

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
        """Tell the segment ``event`` happened on ``socket``, one of ``events()``.

        ``size`` bounds the data read, ``count`` the bytes written, and ``variant``
        picks among the datagrams a socket may read (see ``_datagram``).
        """
        flow = socket.flow
        segment = self.segment
        if event == "connected":
            socket.connected = True
            segment.flow_connected(flow, now)
        elif event == "data" and isinstance(flow, TcpFlow):
            size = min(max(size, 1), flow.endpoint.read_allowance)
            payload = host_bytes(socket.host_sent, size)
            socket.host_sent += size
            segment.flow_received(flow, payload, now)
        elif event == "data":
            segment.flow_received(flow, _datagram(flow, size, variant), now)
        elif event == "eof":
            socket.eof = True
            segment.flow_eof(flow, now)
        elif event == "written":
            count = min(count, socket.sent - socket.written)
            socket.written += count
            segment.flow_written(flow, count, now)
        else:
            # A TCP socket's task ends with its error; a UDP socket reads on, unless failed.
            socket.failed = isinstance(flow, TcpFlow)
            segment.flow_error(flow, error, now)

    def settle_readers(self) -> None:
        """Let each TCP reader do what the real one does now: wait, or wake on a resume."""
        for socket in self.open_sockets():
            if not socket.reading:
                continue
            assert isinstance(socket.flow, TcpFlow)
            endpoint = socket.flow.endpoint
            if socket.waiting and socket.resume:
                socket.waiting = socket.resume = False
            if not socket.waiting and endpoint.read_allowance <= 0:
                socket.waiting = True
                socket.resume = False  # a stale wake-up: the reader looks, and waits again

    def stalled(self) -> list[HostSocket]:
        """Readers waiting for a ResumeFlow that never came, though there is room to read.

        Only where the VM's buffer budget cannot be what changed: another flow's
        release does not wake this one, and need not while this one still has
        data in flight (its next ACK or timer wakes it).
        """
        return [
            socket
            for socket in self.open_sockets()
            if socket.reading
            and socket.waiting
            and not socket.resume
            and isinstance(socket.flow, TcpFlow)
            and socket.flow.endpoint.read_allowance > 0
            and socket.flow.vm.tcp_buffers.free >= SEND_BUFFER
        ]


def _datagram(flow: Flow, size: int, variant: int) -> bytes:
    """What a datagram socket reads: a ping socket an echo reply (of up to 1400 bytes over
    IPv4, of any size over IPv6: a host that answers with more than it was asked), another
    ICMP message or junk; a DNS upstream an answer whose ID matches the query's or not;
    UDP, anything."""
    if isinstance(flow, EchoFlow):
        kind = variant % 3
        src, dst = flow.dst_address, flow.guest.address
        if isinstance(src, IPv6Address) and isinstance(dst, IPv6Address):
            data = host_bytes(0, min(size, 65000))
            if kind == 2:
                return data
            type_ = icmpv6.TYPE_ECHO_REPLY if kind == 0 else icmpv6.TYPE_ECHO_REQUEST
            return icmpv6.Icmpv6Message.echo(type_, variant >> 2, 1, data).encode(src, dst)
        data = host_bytes(0, min(size, 1400))
        if kind == 2:
            return data
        type_ = icmp.TYPE_ECHO_REPLY if kind == 0 else icmp.TYPE_ECHO_REQUEST
        return icmp.IcmpMessage.echo(type_, variant >> 2, 1, data).encode()
    if isinstance(flow, DnsFlow):
        ident = flow.query[:2] if variant % 2 == 0 else b"\xff\xff"
        return (ident + host_bytes(0, size))[: max(size, 2)]
    return host_bytes(0, size)
