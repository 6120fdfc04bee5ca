"""Host sockets for the core's flows: opened, fed and closed on its actions.

UDP and DNS flows each get a connected UDP socket, so the kernel filters replies
to the one destination and reports its ICMP errors on that socket.  Echo flows
get an unprivileged ping socket where ``net.ipv4.ping_group_range`` allows one,
otherwise a share of one raw ICMP socket where we are privileged, otherwise they
fail with a single warning.  The namespace's poller (shell/poller.py) says when
replies wait; no flow has a task of its own.

TCP flows get a stream socket, carried by a ``TcpConnection`` (shell/hosttcp.py).
The connect is begun where the flow opens, and the core hears ``flow_connected`` or
``flow_error``.  What must wait (a guestfwd's end to open, or a flow with
``fallbacks``: DNS over TCP, relayed to the upstreams, tried in turn when a connect
fails or outlasts the DNS timeout, the core hearing only of the last) is opened in a
task of its own first.
"""

from __future__ import annotations

import logging
import math
import socket
from typing import TYPE_CHECKING

import trio

from slirpnet.core.addr import IPAddress
from slirpnet.core.flows import (
    FLOW_EXHAUSTED,
    FLOW_FAILED,
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
from slirpnet.shell.guestfwds import host_end
from slirpnet.shell.hosttcp import TcpConnection
from slirpnet.shell.poller import IN
from slirpnet.shell.rawicmp import RawIcmp
from slirpnet.shell.sockerrors import error_kind
from slirpnet.shell.tftpfiles import TftpFiles

if TYPE_CHECKING:
    from slirpnet.shell.runtime import NamespaceRuntime

log = logging.getLogger(__name__)

RECEIVE_SIZE = 65535
DATAGRAMS_PER_ROUND = 32  # from one flow's socket, before the poller's other sockets


def family(address: IPAddress) -> socket.AddressFamily:
    return socket.AF_INET6 if address.version == 6 else socket.AF_INET


class _Handle:
    def __init__(self, sock: socket.socket | None) -> None:
        self.sock = sock  # None for an echo flow on the shared raw socket


class _ForwardHandle(_Handle):
    """A UDP forward's flow: replies go to its peer by the forward's own socket."""

    def __init__(self, flow: UdpFlow) -> None:
        super().__init__(None)
        assert flow.forward is not None
        self.forward = flow.forward
        self.peer = (str(flow.host_address), flow.host_port)


class HostSockets:
    def __init__(self, runtime: NamespaceRuntime) -> None:
        self.runtime = runtime
        self._handles: dict[Flow, _Handle | TcpConnection] = {}
        self._adopted: dict[Flow, socket.socket] = {}  # accepted on a forward, not yet opened
        self._unwritten: list[TcpConnection] = []  # guest data queued by this flush
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
            if isinstance(handle, TcpConnection):
                if isinstance(action, ShutdownFlow):
                    handle.shut_down()
                elif isinstance(action, ResumeFlow):
                    handle.resume()

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
                connection = TcpConnection(self.runtime, flow, sock, end)
                self._handles[flow] = connection
                if adopted is not None:
                    connection.start()
                elif end is not None or flow.fallbacks:
                    connection.opening = trio.CancelScope()
                    port = self.runtime.port_of(flow.vm)
                    port.nursery.start_soon(self._open_slowly, connection, connection.opening)
                else:
                    connection.connect()
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
        self._handles[flow] = _Handle(sock)
        if sock is not None:
            self.runtime.poller.watch(sock.fileno(), IN, lambda _: self._drain(flow, sock))

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
        if isinstance(handle, TcpConnection):
            handle.send(payload)
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

    def unwritten(self, connection: TcpConnection) -> None:
        """``connection`` has the guest's data to write: ``write_unwritten`` does it."""
        if not connection.unwritten:
            connection.unwritten = True
            self._unwritten.append(connection)

    def write_unwritten(self) -> bool:
        """Write the guest's data that this flush queued, one send per flow; True when
        there was any, as the core may have asked for more actions since.

        A request then reaches the host in the flush that took it from the guest; a
        batch of segments is still one send.  What the socket does not take now is
        written when the poller says it may be.
        """
        if not self._unwritten:
            return False
        connections, self._unwritten = self._unwritten, []
        for connection in connections:
            connection.unwritten = False
            connection.write()
        return True

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
        if isinstance(handle, TcpConnection):
            handle.close(abort=abort)
            return
        if handle.sock is not None:
            self.runtime.poller.forget(handle.sock.fileno())
            handle.sock.close()
        elif self._raw is not None:
            self._raw.remove(flow)

    def close_all(self) -> None:
        self._files.close_all()
        for flow in list(self._handles):
            self._close(flow)
        if self._raw is not None:
            self._raw.close()

    def _drain(self, flow: Flow, sock: socket.socket) -> None:
        """Hand the datagrams waiting to the core, ``DATAGRAMS_PER_ROUND`` at most (the
        poller brings the rest); a socket that failed is heard of no more."""
        segment, now = self.runtime.segment, trio.current_time()
        for _ in range(DATAGRAMS_PER_ROUND):
            try:
                data = sock.recv(RECEIVE_SIZE)
            except BlockingIOError:
                return
            except OSError as error:
                # A connected UDP socket reports the peer's ICMP error once and goes on.
                kind = error_kind(error)
                segment.flow_error(flow, kind, now)
                if kind == FLOW_FAILED:
                    self.runtime.poller.forget(sock.fileno())
                    return
                continue
            segment.flow_received(flow, data, now)

    # -- TCP that must wait to open -------------------------------------------------------

    async def _open_slowly(self, connection: TcpConnection, opening: trio.CancelScope) -> None:
        """Open a guestfwd's end, or connect with fallbacks, then hand the connection to
        the poller.  Closing the flow meanwhile cancels ``opening``; the sockets are
        closed here, as trio may still be waiting on them."""
        flow = connection.flow
        opened = False
        try:
            with opening:
                if connection.end is None:
                    opened = await self._connect(connection)
                else:
                    try:
                        await connection.end.open(trio.socket.from_stdlib_socket(connection.sock))
                    except OSError as error:
                        self.runtime.report_error(flow, error_kind(error))
                    else:
                        opened = True
        finally:
            connection.opening = None
            if opened and not opening.cancel_called:
                connection.start()
                self.runtime.report_connected(flow)
            else:
                connection.dispose()

    async def _connect(self, connection: TcpConnection) -> bool:
        """The connection's socket connected to the flow's destination, else a socket
        connected to one of its fallbacks, tried in turn, all but the last given the DNS
        timeout.  False, the core told of the last error, when none would connect."""
        flow = connection.flow
        destinations = [(flow.host_address, flow.host_port)]
        destinations += [(upstream.address, upstream.port) for upstream in flow.fallbacks]
        timeout = self.runtime.segment.settings.dns_timeout
        sock = trio.socket.from_stdlib_socket(connection.sock)
        for number, (address, port) in enumerate(destinations, 1):
            last = number == len(destinations)
            try:
                if number > 1:
                    connection.sock = connection.output = socket.socket(
                        family(address), socket.SOCK_STREAM
                    )
                    connection.sock.setblocking(False)
                    sock = trio.socket.from_stdlib_socket(connection.sock)
                with trio.move_on_after(math.inf if last else timeout):
                    await sock.connect((str(address), port))
                    return True
                failure = "no answer"  # and trio closed the socket
            except OSError as error:
                sock.close()
                if last or out_of_fds(error):
                    self.runtime.report_error(flow, error_kind(error))
                    return False
                failure = error.strerror or str(error)
            log.debug("TCP to %s port %d: %s; trying the next", address, port, failure)
        raise AssertionError("the last destination returns")
