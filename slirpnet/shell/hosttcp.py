"""A TCP flow's host socket, driven by the namespace's poller: connect, read, write, close.

Everything here runs inside a poller round or a flush, and tells the core directly
(``segment.flow_*``): the flush that follows, or the one under way, carries out
what the core then asks.  Nothing waits: a connect that is not done when
``connect`` returns, a write the socket does not take, are finished when the poller
says the socket is writable.

The reader takes from the host only what the core's ``read_allowance`` permits (the
guest's pace) and stops listening while it is 0, until the core asks to resume.  The
writer sends what the guest sent, in order, telling the core of each write so it can
open its window again; then the shutdown, if the guest's FIN asked for one.  A
connection the core closes with the guest's data still unwritten lingers until it is
written, ``CLOSE_LINGER`` at most.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections import deque
from typing import TYPE_CHECKING

import trio

from slirpnet.core.flows import TcpFlow
from slirpnet.shell.guestfwds import HostEnd
from slirpnet.shell.poller import IN, OUT
from slirpnet.shell.sockerrors import error_kind

if TYPE_CHECKING:
    from slirpnet.shell.runtime import NamespaceRuntime

TCP_READ_SIZE = 256 * 1024
TCP_WRITE_BATCH = 1 << 20
# How long a closed TCP flow may still take to write what the guest sent before it.
CLOSE_LINGER = 60.0
_LINGER_ABORT = struct.pack("ii", 1, 0)  # close with a RST


class TcpConnection:
    def __init__(
        self,
        runtime: NamespaceRuntime,
        flow: TcpFlow,
        sock: socket.socket,
        end: HostEnd | None = None,
    ) -> None:
        sock.setblocking(False)
        self.runtime = runtime
        self.flow = flow
        self.sock = sock  # read; replaced while a task tries DNS fallbacks in turn
        self.end = end  # a guestfwd's: how it opens and closes
        self.output = sock if end is None else end.output  # the guest's data goes there
        self.outgoing: deque[bytes | memoryview] = deque()
        self.connecting = False  # a connect begun here, the poller to say when it is done
        self.connected = False
        self.reading = True  # the core has room for the host's data
        self.read_done = False  # EOF, a read error, or nothing more the core will take
        self.shutdown = False  # after ``outgoing``, shut the socket for writing
        self.shut = False
        self.closing = False  # after ``outgoing``, close
        self.closed = False
        self.unwritten = False  # in the runtime's list for the flush to write
        # A task opening it (a guestfwd's end, DNS fallbacks): closing cancels that.
        self.opening: trio.CancelScope | None = None
        self.linger: trio.CancelScope | None = None

    # -- opening -----------------------------------------------------------------------

    def connect(self) -> None:
        """Begin the connect: to loopback (or a host as near) it is done by the time
        ``connect`` returns, and the SYN-ACK leaves in this flush."""
        flow = self.flow
        self.connecting = True
        error = self.sock.connect_ex((str(flow.host_address), flow.host_port))
        if error == errno.EINPROGRESS:
            self._connected_now()  # to loopback it is, though connect said otherwise
            self._update()  # if not, the poller says when it is writable: done, or failed
        else:
            self._connect_done(error)

    def _connect_done(self, error: int) -> None:
        self.connecting = False
        now = trio.current_time()
        if error:
            self.runtime.segment.flow_error(self.flow, error_kind(OSError(error, "")), now)
            self.dispose()  # the core closes the flow, and finds it gone
            return
        self.runtime.segment.flow_connected(self.flow, now)
        self.start()

    def start(self) -> None:
        """Connected: read, and write what the guest sent meanwhile."""
        self.connected = True
        if self.outgoing:
            self.runtime.host.unwritten(self)
            self._update()
        else:
            self._written()  # a shutdown asked for meanwhile

    # -- the poller's events -----------------------------------------------------------

    def _update(self) -> None:
        """Tell the poller what this connection waits for now."""
        if self.closed:
            return
        poller = self.runtime.poller
        want_in = self.connected and self.reading and not self.read_done and not self.closing
        want_out = self.connecting or (self.connected and bool(self.outgoing))
        fd, out_fd = self.sock.fileno(), self.output.fileno()
        if fd == out_fd:
            poller.watch(fd, (IN if want_in else 0) | (OUT if want_out else 0), self._events)
        else:
            poller.watch(fd, IN if want_in else 0, self._events)
            poller.watch(out_fd, OUT if want_out else 0, self._events)

    def _events(self, events: int) -> None:
        if self.connecting:
            self._connected_now()
            return
        # Hang-ups and errors come with IN or OUT, whichever is asked: the read or
        # write there meets them.
        if events & ~OUT and self.reading and not (self.read_done or self.closing):
            self._read()
        if events & ~IN:
            self.write()

    def _connected_now(self) -> None:
        try:
            self.sock.getpeername()  # only a connected socket has a peer
        except OSError:
            error = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if not error:
                return  # not yet (a socket number reused since the event)
            self._connect_done(error)
        else:
            self._connect_done(0)

    def _read(self) -> None:
        flow = self.flow
        endpoint = flow.endpoint
        allowance = endpoint.read_allowance
        if allowance <= 0:
            if endpoint.fin_queued or flow.closed:
                self.read_done = True
            else:
                self.reading = False  # until the core asks to resume
            self._update()
            return
        size = min(allowance, TCP_READ_SIZE)
        mss = endpoint.mss
        if size > mss:
            size -= size % mss  # whole segments: a short tail would be a frame of its own
        segment, now = self.runtime.segment, trio.current_time()
        try:
            data = self.sock.recv(size)
        except BlockingIOError:
            return
        except OSError as error:
            segment.flow_error(flow, error_kind(error), now)
            self.read_done = True
            self._update()
            return
        if not data:
            segment.flow_eof(flow, now)
            self.read_done = True
            self._update()
            return
        segment.flow_received(flow, data, now)

    def resume(self) -> None:
        """The core has room for the host's data again."""
        self.reading = True
        self._update()

    # -- writing -----------------------------------------------------------------------

    def send(self, payload: bytes | memoryview) -> None:
        self.outgoing.append(payload)
        if self.connected:
            self.runtime.host.unwritten(self)

    def write(self) -> None:
        """One send of what is queued: from the flush that queued it, or when the poller
        says the socket takes more."""
        if self.closed or not self.outgoing:
            return
        data = _take(self.outgoing, TCP_WRITE_BATCH)
        now = trio.current_time()
        try:
            sent = self.output.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as error:
            self.outgoing.clear()
            self.runtime.segment.flow_error(self.flow, error_kind(error), now)
            if self.closing:
                self.dispose()  # nothing left to linger for
            else:
                self._update()
            return
        if sent < len(data):
            self.outgoing.appendleft(data[sent:])
        if sent:
            self.runtime.segment.flow_written(self.flow, sent, now)
        if self.outgoing:
            self._update()
        else:
            self._written()

    def _written(self) -> None:
        """All the guest's data is out: the shutdown it asked for, or the close."""
        if self.shutdown and not self.shut:
            self.shut = True
            try:
                self.output.shutdown(socket.SHUT_WR)
            except OSError as error:
                kind = error_kind(error)
                self.runtime.segment.flow_error(self.flow, kind, trio.current_time())
        if self.closing:
            self.dispose()
        else:
            self._update()

    def shut_down(self) -> None:
        """The guest's FIN: shut the socket for writing once its data is written."""
        self.shutdown = True
        if self.connected and not self.outgoing:
            self._written()

    # -- closing -----------------------------------------------------------------------

    def close(self, *, abort: bool) -> None:
        """The core is done with the flow: write what the guest sent, then close; or
        now, with a RST if ``abort``."""
        if self.opening is not None:
            self.opening.cancel()  # the task closes the sockets as it leaves
            return
        if self.connected and not abort and self.outgoing:
            # The guest's data is acknowledged to it: the host must still get it all.
            self.closing = True
            self._update()
            self.linger = trio.CancelScope(deadline=trio.current_time() + CLOSE_LINGER)
            self.runtime.port_of(self.flow.vm).nursery.start_soon(self._lingering, self.linger)
            return
        if abort and self.connected:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ABORT)
        self.dispose()

    async def _lingering(self, linger: trio.CancelScope) -> None:
        """The bound on the time left to write: disposal cancels it, and so does the
        VM's nursery closing."""
        try:
            with linger:
                await trio.sleep_forever()
        finally:
            self.dispose()

    def dispose(self) -> None:
        """Close the sockets, and the guestfwd's end after them."""
        if self.closed:
            return
        self.closed = True
        if self.linger is not None:
            self.linger.cancel()
        poller = self.runtime.poller
        for sock in {self.sock, self.output}:
            poller.forget(sock.fileno())
            sock.close()
        if self.end is not None:
            self.runtime.nursery.start_soon(self.end.aclose)


def _take(queue: deque[bytes | memoryview], limit: int) -> bytes | memoryview:
    """Up to about ``limit`` bytes from the front of ``queue``, as one buffer."""
    parts = [queue.popleft()]
    size = len(parts[0])
    while queue and size + len(queue[0]) <= limit:
        size += len(queue[0])
        parts.append(queue.popleft())
    return parts[0] if len(parts) == 1 else b"".join(parts)
