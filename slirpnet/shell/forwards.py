"""A namespace's forwards on the host: a listening TCP socket or a bound UDP socket each.

A TCP connection accepted on a forward becomes a flow that the core opens to the
guest (``Segment.forward_connection``); the accepted socket is that flow's host
socket.  When no VM is there to take it, the connection is reset at once, so the
host client hears "refused" instead of hanging.  A datagram on a UDP forward goes
to the guest through a flow per peer, and the guest's replies leave by the
forward's socket to that peer.  Forwards come and go at run time (the control
API); removing one closes its socket, and connections it carried go on.
"""

from __future__ import annotations

import logging
import socket
from ipaddress import ip_address
from typing import TYPE_CHECKING

import trio

from slirpnet.config import ConfigError
from slirpnet.core.forwards import Forward
from slirpnet.shell.fdreserve import FdReserve, out_of_fds, reset

if TYPE_CHECKING:
    from slirpnet.shell.runtime import NamespaceRuntime

log = logging.getLogger(__name__)

BACKLOG = 128
DATAGRAM_SIZE = 65535


class ForwardError(ConfigError):
    """A forward that cannot be set up: its host port is taken, or it exists already."""


class Forwards:
    def __init__(self, runtime: NamespaceRuntime) -> None:
        self.runtime = runtime
        self._scopes: dict[Forward, trio.CancelScope] = {}
        self._udp_sockets: dict[Forward, socket.socket] = {}

    @property
    def active(self) -> list[Forward]:
        return list(self._scopes)

    def add(self, forward: Forward) -> None:
        """Bind the forward's host port now (``ForwardError`` if it cannot) and serve it."""
        if forward in self._scopes:
            raise ForwardError("forward", f"{forward} exists already")
        kind = socket.SOCK_STREAM if forward.protocol == "tcp" else socket.SOCK_DGRAM
        family = socket.AF_INET6 if forward.host_address.version == 6 else socket.AF_INET
        sock = socket.socket(family, kind)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((str(forward.host_address), forward.host_port))
            if kind == socket.SOCK_STREAM:
                sock.listen(BACKLOG)
            sock.setblocking(False)
        except OSError as error:
            sock.close()
            raise ForwardError("forward", f"{forward}: {error.strerror}") from None
        scope = trio.CancelScope()
        self._scopes[forward] = scope
        if kind == socket.SOCK_STREAM:
            self.runtime.nursery.start_soon(self._serve_tcp, forward, sock, scope)
        else:
            self._udp_sockets[forward] = sock
            self.runtime.nursery.start_soon(self._serve_udp, forward, sock, scope)
        log.info("forward %s", forward)

    def remove(self, forward: Forward) -> None:
        scope = self._scopes.pop(forward, None)
        if scope is None:
            raise KeyError(forward)
        self._udp_sockets.pop(forward, None)
        scope.cancel()
        log.info("forward %s removed", forward)

    def udp_socket(self, forward: Forward) -> socket.socket | None:
        """The bound socket a UDP forward's flows answer their peers from."""
        return self._udp_sockets.get(forward)

    def close_all(self) -> None:
        for forward in list(self._scopes):
            self.remove(forward)

    async def _serve_tcp(
        self, forward: Forward, sock: socket.socket, scope: trio.CancelScope
    ) -> None:
        listener = trio.socket.from_stdlib_socket(sock)
        reserve = FdReserve()
        with scope, listener:
            try:
                while True:
                    try:
                        connection, peer = await listener.accept()
                    except OSError as error:  # the forward stays
                        if not (
                            out_of_fds(error) and await self._refuse(listener, reserve, forward)
                        ):
                            log.warning("forward %s: accept failed: %s", forward, error)
                            await trio.sleep(0.1)
                        continue
                    self._connected(forward, connection, peer)
            finally:
                reserve.close()

    async def _refuse(
        self, listener: trio.socket.SocketType, reserve: FdReserve, forward: Forward
    ) -> bool:
        """Out of descriptors: reset the connection waiting, accepted with the reserve's,
        and count it on the VM it was for; False if even that failed."""
        with reserve.released():
            try:
                connection, peer = await listener.accept()
            except OSError:
                return False
        reset(socket.socket(fileno=connection.detach()))
        now = trio.current_time()
        if not self.runtime.segment.forward_refused(forward, now) and reserve.refusal(now):
            log.warning(
                "forward %s: out of file descriptors: connection from %s:%d reset; %d so far",
                forward,
                *peer[:2],
                reserve.refused,
            )
        return True

    def _connected(
        self, forward: Forward, connection: trio.socket.SocketType, peer: tuple[str, int]
    ) -> None:
        runtime = self.runtime
        address = (ip_address(peer[0]), peer[1])
        flow = runtime.segment.forward_connection(forward, address, trio.current_time())
        raw = socket.socket(fileno=connection.detach())
        if flow is None:
            reset(raw)  # no VM to take it: a RST now, like a closed port, rather than a hang
            runtime.flush()  # the drop is counted; nothing else to do
            log.info("forward %s: no VM to take a connection from %s:%d", forward, *peer[:2])
            return
        raw.setblocking(False)
        runtime.host.adopt(flow, raw)
        runtime.flush()

    async def _serve_udp(
        self, forward: Forward, sock: socket.socket, scope: trio.CancelScope
    ) -> None:
        runtime = self.runtime
        with scope, sock:
            while True:
                await trio.lowlevel.wait_readable(sock)
                while True:
                    try:
                        payload, peer = sock.recvfrom(DATAGRAM_SIZE)
                    except BlockingIOError:
                        break
                    except OSError as error:  # an ICMP error a peer sent back: not ours
                        log.debug("forward %s: %s", forward, error)
                        continue
                    address = (ip_address(peer[0]), peer[1])
                    runtime.segment.forward_datagram(forward, address, payload, trio.current_time())
                    runtime.flush()
