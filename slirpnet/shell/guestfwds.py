"""The host end of a guestfwd's connection (core/guestfwd.py): a socket connected to its
target, or a command run for it whose stdin and stdout carry it.

``HostSockets`` carries a guestfwd flow as any TCP flow, reading the host's data from
``sock`` and writing the guest's to ``output``; only opening and closing differ.
``open`` connects, or starts the command; its failure (refused, no such socket or
command) is the flow's, and the guest gets a RST.  ``aclose`` follows the flow's end.

A command's stdin and stdout are each one end of a socket pair, as libslirp gives
its commands (one pair for both there): the guest's FIN shuts our end of stdin's pair,
so the command reads EOF, and EOF on its stdout is our FIN to the guest.  Its stderr
is the server's.  When the flow ends the command is done for: it gets SIGTERM if it
still runs, SIGKILL after ``TERMINATE_GRACE``, and is waited for, so none is left
behind, running or a zombie.
"""

from __future__ import annotations

import logging
import socket

import trio

from slirpnet.core.guestfwd import CommandTarget, GuestForward, UnixTarget

log = logging.getLogger(__name__)

TERMINATE_GRACE = 2.0  # seconds a command has to exit on SIGTERM before SIGKILL


class HostEnd:
    """A guestfwd connection's host end: ``sock`` is read, ``output`` written."""

    def __init__(self, forward: GuestForward, sock: socket.socket, output: socket.socket) -> None:
        self.forward = forward
        self.sock = sock
        self.output = output
        sock.setblocking(False)
        output.setblocking(False)

    async def open(self, sock: trio.socket.SocketType) -> None:
        """Reach the target; ``sock`` is ``self.sock`` as trio's.  ``OSError`` if it fails."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """The flow has ended and its sockets are closed."""


class SocketEnd(HostEnd):
    """A connection of its own to a guestfwd's TCP or unix socket target."""

    def __init__(self, forward: GuestForward) -> None:
        target = forward.target
        assert not isinstance(target, CommandTarget)
        if isinstance(target, UnixTarget):
            self._address: str | tuple[str, int] = target.path
            family = socket.AF_UNIX
        else:
            self._address = (str(target.host), target.port)
            family = socket.AF_INET6 if target.host.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        super().__init__(forward, sock, sock)

    async def open(self, sock: trio.socket.SocketType) -> None:
        try:
            await sock.connect(self._address)
        except OSError as error:
            log.info("guestfwd %s: %s", self.forward, error)
            raise


class CommandEnd(HostEnd):
    """A guestfwd's command, run for one connection."""

    def __init__(self, forward: GuestForward) -> None:
        assert isinstance(forward.target, CommandTarget)
        self._argv = forward.target.argv
        self._process: trio.Process | None = None
        ours, self._stdout = socket.socketpair()
        try:
            output, self._stdin = socket.socketpair()
        except OSError:
            ours.close()
            self._stdout.close()
            raise
        super().__init__(forward, ours, output)

    async def open(self, sock: trio.socket.SocketType) -> None:
        try:
            # No shell: the command was split as one would (shlex) when it was parsed.
            self._process = await trio.lowlevel.open_process(
                self._argv, stdin=self._stdin.fileno(), stdout=self._stdout.fileno()
            )
        except OSError as error:
            log.info("guestfwd %s: cannot run %r: %s", self.forward, self._argv[0], error)
            raise
        finally:
            self._close_childs_ends()

    def _close_childs_ends(self) -> None:
        """The command holds its own copies: EOF comes when it closes them."""
        self._stdin.close()
        self._stdout.close()

    async def aclose(self) -> None:
        self._close_childs_ends()
        process = self._process
        if process is None:
            return
        with trio.CancelScope(shield=True):  # a namespace stopping waits for its commands
            if process.returncode is None:
                process.terminate()
            with trio.move_on_after(TERMINATE_GRACE):
                await process.wait()
            if process.returncode is None:
                log.info("guestfwd %s: %r outlived SIGTERM: killed", self.forward, self._argv[0])
                process.kill()
                await process.wait()


def host_end(forward: GuestForward) -> HostEnd:
    """The host end for one connection to ``forward``, its sockets made (``OSError``)."""
    if isinstance(forward.target, CommandTarget):
        return CommandEnd(forward)
    return SocketEnd(forward)
