"""Host sockets for the core's flows: opened, fed and closed on its actions.

UDP and DNS flows each get a connected UDP socket, so the kernel filters replies
to the one destination and reports its ICMP errors on that socket.  Echo flows
get an unprivileged ping socket where ``net.ipv4.ping_group_range`` allows one,
otherwise a share of one raw ICMP socket where we are privileged, otherwise they
fail with a single warning.

TCP flows get a stream socket, connected without blocking anyone: the connect
runs in the flow's own task, and the core hears ``flow_connected`` or
``flow_error``.  A flow with ``fallbacks`` (DNS over TCP, relayed to the
upstreams) tries them in turn when a connect fails or outlasts the DNS timeout,
and the core hears only of the last.  Then a reader takes from the host only
what the core's ``read_allowance`` permits (the guest's pace), and a writer
sends what the guest sent, reporting each write so the core can open its window
again.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import socket
import struct
from collections import deque
from typing import TYPE_CHECKING

import trio

from slirpnet.core.addr import IPAddress
from slirpnet.core.flows import (
    FLOW_EXHAUSTED,
    FLOW_FAILED,
    FLOW_REFUSED,
    FLOW_RESET,
    FLOW_UNREACHABLE,
    Action,
    CloseFlow,
    DnsFlow,
    EchoFlow,
    Flow,
    OpenFlow,
    ReadFlow,
    ResumeFlow,
    SendFlow,
    ShutdownFlow,
    TcpFlow,
    TftpFlow,
    UdpFlow,
)
from slirpnet.shell.fdreserve import out_of_fds
from slirpnet.shell.guestfwds import HostEnd, host_end
from slirpnet.shell.rawicmp import RawIcmp
from slirpnet.shell.tftpfiles import TftpFiles

if TYPE_CHECKING:
    from slirpnet.shell.runtime import NamespaceRuntime

log = logging.getLogger(__name__)

RECEIVE_SIZE = 65535
TCP_READ_SIZE = 256 * 1024
TCP_WRITE_BATCH = 1 << 20
# How long a closed TCP flow may still take to write what the guest sent before it.
CLOSE_LINGER = 60.0
_UNREACHABLE = frozenset((errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN))
_RESET = frozenset((errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED))
_LINGER_ABORT = struct.pack("ii", 1, 0)  # close with a RST


def family(address: IPAddress) -> socket.AddressFamily:
    return socket.AF_INET6 if address.version == 6 else socket.AF_INET


def error_kind(error: OSError) -> str:
    """How the core should hear about a socket error."""
    if error.errno == errno.ECONNREFUSED:
        return FLOW_REFUSED
    if error.errno in _UNREACHABLE:
        return FLOW_UNREACHABLE
    if error.errno in _RESET:
        return FLOW_RESET
    if out_of_fds(error):
        return FLOW_EXHAUSTED
    return FLOW_FAILED


class _Handle:
    def __init__(self, sock: socket.socket | None) -> None:
        self.sock = sock  # None for an echo flow on the shared raw socket
        self.scope = trio.CancelScope()


class _ForwardHandle(_Handle):
    """A UDP forward's flow: replies go to its peer by the forward's own socket."""

    def __init__(self, flow: UdpFlow) -> None:
        super().__init__(None)
        assert flow.forward is not None
        self.forward = flow.forward
        self.peer = (str(flow.host_address), flow.host_port)


class _TcpHandle(_Handle):
    def __init__(self, sock: socket.socket, end: HostEnd | None = None) -> None:
        super().__init__(sock)
        self.end = end  # a guestfwd's: how it opens and closes
        self.output = sock if end is None else end.output  # the guest's data goes there
        self.outgoing: deque[bytes | memoryview] = deque()
        self.writing = False  # the writer holds bytes taken from ``outgoing``
        self.shutdown = False  # after ``outgoing``, shut the socket for writing
        self.connected = False
        # ``_open`` began the connect: the task waits for it rather than connecting; an
        # error it already met (SO_ERROR, which reading clears) is here.
        self.connect_started = False
        self.connect_error = 0
        self.closing = False  # after ``outgoing``, close the socket
        self.abort = False
        self.writable = trio.Event()  # something to write, or to shut down
        self.readable = trio.Event()  # the core has room for host data again


def _connect_at_once(flow: TcpFlow, handle: _TcpHandle) -> bool:
    """Begin the connect here: to loopback (or a host as near) it is done by the time
    ``connect`` returns, and the SYN-ACK leaves in this flush, not after the flow's
    task has had its turn and a poll.  False leaves the rest to the task."""
    sock = handle.sock
    assert sock is not None
    handle.connect_started = True
    error = sock.connect_ex((str(flow.host_address), flow.host_port))
    if error == errno.EINPROGRESS:
        try:
            sock.getpeername()  # only a connected socket has a peer
        except OSError:
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if not error:
                return False  # on its way: the task waits for it
        else:
            error = 0
    handle.connect_error = error
    return not error


class HostSockets:
    def __init__(self, runtime: NamespaceRuntime) -> None:
        self.runtime = runtime
        self._handles: dict[Flow, _Handle] = {}
        self._adopted: dict[Flow, socket.socket] = {}  # accepted on a forward, not yet opened
        self._unwritten: dict[TcpFlow, _TcpHandle] = {}  # guest data queued by this flush
        self._ping_sockets = True  # until the kernel says no
        self._raw: RawIcmp | None = None
        self._echo_warned = False
        self._files = TftpFiles(runtime)

    def __len__(self) -> int:
        return len(self._handles)

    def apply(self, action: Action) -> None:
        if isinstance(action, OpenFlow):
            self._open(action.flow)
        elif isinstance(action, SendFlow):
            self._send(action.flow, action.payload)
        elif isinstance(action, CloseFlow):
            self._close(action.flow, abort=action.abort)
        elif isinstance(action, ReadFlow):
            self._files.read(action)
        else:
            handle = self._handles.get(action.flow)
            if isinstance(handle, _TcpHandle):
                if isinstance(action, ShutdownFlow):
                    handle.shutdown = True
                    handle.writable.set()
                elif isinstance(action, ResumeFlow):
                    handle.readable.set()

    def adopt(self, flow: TcpFlow, sock: socket.socket) -> None:
        """``sock``, accepted on a forward, is the host socket of ``flow`` when it opens."""
        self._adopted[flow] = sock

    def _open(self, flow: Flow) -> None:
        sock: socket.socket | None
        if isinstance(flow, TftpFlow):
            self._files.open(flow)
            return
        try:
            if isinstance(flow, UdpFlow) and flow.forward is not None:
                # The forward's own socket answers the peer: nothing to open or read.
                self._handles[flow] = _ForwardHandle(flow)
                return
            if isinstance(flow, TcpFlow):
                adopted = self._adopted.pop(flow, None)
                end = None if flow.guestfwd is None else host_end(flow.guestfwd)
                sock = adopted or (
                    end.sock
                    if end
                    else socket.socket(family(flow.host_address), socket.SOCK_STREAM)
                )
                sock.setblocking(False)
                tcp_handle = _TcpHandle(sock, end)
                tcp_handle.connected = adopted is not None
                self._handles[flow] = tcp_handle
                self.runtime.port_of(flow.vm).nursery.start_soon(self._tcp, flow, tcp_handle)
                if not (adopted or end or flow.fallbacks) and _connect_at_once(flow, tcp_handle):
                    tcp_handle.connected = True
                    self.runtime.report_connected(flow)
                return
            if isinstance(flow, UdpFlow | DnsFlow):
                sock = socket.socket(family(flow.host_address), socket.SOCK_DGRAM)
                sock.setblocking(False)
                try:
                    sock.connect((str(flow.host_address), flow.host_port))
                except OSError:
                    sock.close()
                    raise
            elif isinstance(flow, EchoFlow):
                sock = self._echo_socket(flow)
            else:
                raise TypeError(f"no host socket for {flow!r}")
        except OSError as error:
            kind = error_kind(error)
            if kind != FLOW_EXHAUSTED:  # the core logs that, once a minute
                log.info("no host socket for a flow to %s: %s", flow.host_address, error)
            self.runtime.report_error(flow, kind)
            return
        handle = _Handle(sock)
        self._handles[flow] = handle
        if sock is not None:
            self.runtime.port_of(flow.vm).nursery.start_soon(self._receive, flow, handle)

    def _echo_socket(self, flow: EchoFlow) -> socket.socket | None:
        if flow.host_address.version == 6:
            # Ping sockets only: they take net.ipv4.ping_group_range for IPv6 too, and
            # raw ICMPv6 (RawIcmp is IPv4's) is not worth CAP_NET_RAW here.
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_ICMPV6)
            sock.setblocking(False)
            return sock
        if self._ping_sockets:
            try:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
            except PermissionError:
                self._ping_sockets = False
            else:
                sock.setblocking(False)
                return sock
        if self._raw is None:
            try:
                self._raw = RawIcmp.open(self.runtime)
            except PermissionError as error:
                if not self._echo_warned:
                    self._echo_warned = True
                    log.warning(
                        "ICMP echo to the outside is off: no ping socket (see sysctl "
                        "net.ipv4.ping_group_range) and no raw socket (needs CAP_NET_RAW)"
                    )
                raise error
        self._raw.add(flow)
        return None

    def _send(self, flow: Flow, payload: bytes | memoryview) -> None:
        handle = self._handles.get(flow)
        if handle is None:
            return  # opening failed, and the core has heard
        if isinstance(handle, _TcpHandle):
            handle.outgoing.append(payload)
            if handle.connected and not handle.writing and isinstance(flow, TcpFlow):
                self._unwritten[flow] = handle  # written by ``write_unwritten``, at once
            else:
                handle.writable.set()
            return
        try:
            if isinstance(handle, _ForwardHandle):
                shared = self.runtime.forwards.udp_socket(handle.forward)
                if shared is None:
                    flow.vm.stats.drop("forward_removed")
                else:
                    shared.sendto(payload, handle.peer)
            elif handle.sock is None:
                assert self._raw is not None
                self._raw.send(flow, payload)
            elif isinstance(flow, EchoFlow):
                handle.sock.sendto(payload, (str(flow.host_address), 0))
            else:
                handle.sock.send(payload)
        except BlockingIOError:
            flow.vm.stats.drop("host_socket_busy")  # datagrams may be lost; so is this one
        except OSError as error:
            self.runtime.report_error(flow, error_kind(error))

    def write_unwritten(self) -> bool:
        """Write the guest's data that this flush queued, one send per flow; True when
        the core was told of a write (which may have asked for more actions).

        A request then reaches the host without waiting for the writer task's turn,
        which is most of a round trip's time; a batch of segments is still one send.
        What the socket does not take now is left to the writer, in order.
        """
        if not self._unwritten:
            return False
        flows, self._unwritten = self._unwritten, {}
        now = trio.current_time()
        told = False
        for flow, handle in flows.items():
            if self._handles.get(flow) is not handle or handle.writing or not handle.outgoing:
                continue  # closed, or aborted, since; or the writer has it
            data = _take(handle.outgoing, TCP_WRITE_BATCH)
            try:
                sent = handle.output.send(data)
            except OSError:  # full, or failed: the writer waits, or meets the error and says so
                sent = 0
            if sent < len(data):
                handle.outgoing.appendleft(data[sent:])
            if handle.outgoing or handle.shutdown or handle.closing:
                handle.writable.set()
            if sent:
                self.runtime.segment.flow_written(flow, sent, now)
                told = True
        return told

    def _close(self, flow: Flow, *, abort: bool = False) -> None:
        if isinstance(flow, TftpFlow):
            self._files.close(flow)
            return
        handle = self._handles.pop(flow, None)
        adopted = self._adopted.pop(flow, None)
        if adopted is not None:
            adopted.close()
        if handle is None or isinstance(handle, _ForwardHandle):
            return  # a forward's socket is the forward's to close
        if isinstance(handle, _TcpHandle):
            if handle.connected and not abort:
                # The guest's data is acknowledged to it: the host must still get it all.
                handle.closing = True
                handle.writable.set()
                handle.scope.deadline = trio.current_time() + CLOSE_LINGER
                return
            handle.abort = abort
        # The flow's task owns the socket and closes it as it leaves.
        handle.scope.cancel()
        if handle.sock is None and self._raw is not None:
            self._raw.remove(flow)

    def close_all(self) -> None:
        self._files.close_all()
        for flow in list(self._handles):
            self._close(flow)
        if self._raw is not None:
            self._raw.close()

    async def _receive(self, flow: Flow, handle: _Handle) -> None:
        sock = handle.sock
        assert sock is not None
        try:
            with handle.scope:
                while True:
                    await trio.lowlevel.wait_readable(sock)
                    if not self._drain(flow, sock):
                        return
        finally:
            sock.close()

    def _drain(self, flow: Flow, sock: socket.socket) -> bool:
        """Hand every waiting datagram to the core; False when the socket is done for."""
        while True:
            try:
                data = sock.recv(RECEIVE_SIZE)
            except BlockingIOError:
                return True
            except OSError as error:
                # A connected UDP socket reports the peer's ICMP error once and goes on.
                kind = error_kind(error)
                self.runtime.report_error(flow, kind)
                if kind == FLOW_FAILED:
                    return False
                continue
            self.runtime.report_received(flow, data)

    # -- TCP ---------------------------------------------------------------------------

    async def _tcp(self, flow: TcpFlow, handle: _TcpHandle) -> None:
        assert handle.sock is not None
        sock = trio.socket.from_stdlib_socket(handle.sock)
        # A guestfwd command's stdin, or the socket itself (whichever connected).
        output = None if handle.end is None else trio.socket.from_stdlib_socket(handle.output)
        try:
            with handle.scope:
                if not handle.connected:  # a forward's socket comes connected
                    if handle.end is None:
                        connected = await self._connect(flow, handle, sock)
                    else:
                        try:
                            await handle.end.open(sock)
                        except OSError as error:
                            self.runtime.report_error(flow, error_kind(error))
                            connected = None
                        else:
                            connected = sock
                    if connected is None:
                        return
                    sock = connected
                    handle.connected = True
                    self.runtime.report_connected(flow)
                if output is None:
                    output = sock
                    handle.output = handle.sock
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._tcp_reader, flow, handle)
                    await self._tcp_writer(flow, handle, output)
                    nursery.cancel_scope.cancel()
        finally:
            # Only a connected socket has a peer to reset; trio closes one whose connect
            # was cancelled, and setsockopt on it would raise.
            if handle.abort and handle.connected:
                handle.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ABORT)
            sock.close()
            if output is not None:
                output.close()  # the same socket, or a command's stdin
            if handle.end is not None:
                await handle.end.aclose()

    async def _connect(
        self, flow: TcpFlow, handle: _TcpHandle, sock: trio.socket.SocketType
    ) -> trio.socket.SocketType | None:
        """``sock`` connected to the flow's destination, else a socket connected to one of
        its fallbacks, tried in turn, all but the last given the DNS timeout; the socket
        in ``handle`` is the one returned.  None, every socket closed and the core told
        of the last error, when none would connect."""
        destinations = [(flow.host_address, flow.host_port)]
        destinations += [(upstream.address, upstream.port) for upstream in flow.fallbacks]
        timeout = self.runtime.segment.settings.dns_timeout
        for number, (address, port) in enumerate(destinations, 1):
            last = number == len(destinations)
            try:
                if number > 1:
                    handle.sock = socket.socket(family(address), socket.SOCK_STREAM)
                    sock = trio.socket.from_stdlib_socket(handle.sock)
                with trio.move_on_after(math.inf if last else timeout):
                    if handle.connect_started:  # begun by _open, with no fallbacks
                        await self._connected(handle, sock)
                    else:
                        await sock.connect((str(address), port))
                    return sock
                failure = "no answer"  # and trio closed the socket
            except OSError as error:
                sock.close()
                if last or out_of_fds(error):
                    self.runtime.report_error(flow, error_kind(error))
                    return None
                failure = error.strerror or str(error)
            log.debug("TCP to %s port %d: %s; trying the next", address, port, failure)
        raise AssertionError("the last destination returns")

    @staticmethod
    async def _connected(handle: _TcpHandle, sock: trio.socket.SocketType) -> None:
        """Wait for the connect ``_open`` began; raises ``OSError`` if it failed."""
        error = handle.connect_error
        if not error:
            await trio.lowlevel.wait_writable(sock)
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            raise OSError(error, os.strerror(error))

    async def _tcp_reader(self, flow: TcpFlow, handle: _TcpHandle) -> None:
        raw = handle.sock
        assert raw is not None
        while True:
            allowance = flow.endpoint.read_allowance
            if allowance <= 0:
                if flow.endpoint.fin_queued or flow.closed:
                    return
                await handle.readable.wait()
                handle.readable = trio.Event()
                continue
            await trio.lowlevel.wait_readable(raw)
            # The allowance counts the VM's shared budget, which other flows may have
            # spent while this one waited: ask again, then read and hand the data over
            # with no checkpoint between, so that no two flows spend the same bytes.
            allowance = flow.endpoint.read_allowance
            if allowance <= 0:
                continue
            size = min(allowance, TCP_READ_SIZE)
            mss = flow.endpoint.mss
            if size > mss:
                size -= size % mss  # whole segments: a short tail would be a frame of its own
            try:
                data = raw.recv(size)
            except BlockingIOError:
                continue
            except OSError as error:
                self.runtime.report_error(flow, error_kind(error))
                return
            if not data:
                self.runtime.report_eof(flow)
                return
            self.runtime.report_received(flow, data)

    async def _tcp_writer(
        self, flow: TcpFlow, handle: _TcpHandle, sock: trio.socket.SocketType
    ) -> None:
        """Write what the guest sent, in order, then the shutdown if one was asked for.

        Returns once all is written after the flow closed, or on an error.
        """
        shut = False
        while True:
            if handle.outgoing:
                data = _take(handle.outgoing, TCP_WRITE_BATCH)
                view = memoryview(data)
                handle.writing = True
                try:
                    while view:
                        sent = await sock.send(view)
                        view = view[sent:]
                        self.runtime.report_written(flow, sent)
                except OSError as error:
                    self.runtime.report_error(flow, error_kind(error))
                    return
                finally:
                    handle.writing = False
                continue
            if handle.shutdown and not shut:
                shut = True
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError as error:
                    self.runtime.report_error(flow, error_kind(error))
                    return
            if handle.closing:
                return
            await handle.writable.wait()
            handle.writable = trio.Event()


def _take(queue: deque[bytes | memoryview], limit: int) -> bytes | memoryview:
    """Up to about ``limit`` bytes from the front of ``queue``, as one buffer."""
    parts = [queue.popleft()]
    size = len(parts[0])
    while queue and size + len(queue[0]) <= limit:
        size += len(queue[0])
        parts.append(queue.popleft())
    return parts[0] if len(parts) == 1 else b"".join(parts)
