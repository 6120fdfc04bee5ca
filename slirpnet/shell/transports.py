"""What carries a VM's frames: byte streams (QEMU stream/socket, VDE) and datagrams.

Each connection is a VM: it gets a port (from ``attach``: of the namespace, or
of a network of its own with ``--isolate``) for as long as the connection
lives, and its own nursery, in which a reader feeds frames to the core and a
writer sends the core's frames back in batches (one write for all that is
waiting).  A framing error closes the connection, as QEMU and passt do;
a stream is never resynchronised.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, suppress
from typing import TYPE_CHECKING

import trio

from slirpnet import native
from slirpnet.framing import FrameFormat, FramingError
from slirpnet.shell.fdreserve import FdReserve, out_of_fds
from slirpnet.shell.port import Port

if TYPE_CHECKING:
    from slirpnet.shell.runtime import NamespaceRuntime

log = logging.getLogger(__name__)

# A port for a VM of the given name, open for the body of an ``async with``: the
# namespace's ``NamespaceRuntime.attach``, or a network of the VM's own.
Attach = Callable[[str], AbstractAsyncContextManager[Port]]

READ_SIZE = 256 * 1024  # several 64 KiB frames per read
# Frames of a VM handed to the core before the other tasks get a turn.  A read of
# small frames holds thousands: fed at once, they would hold up every other VM and
# every host socket for as long as a flooding guest keeps the socket full.
FEED_BATCH = 32
DGRAM_SIZE = 65536
# Datagrams taken per wakeup (several of the kernel's queues of ten, which QEMU refills
# while the core handles the last), then one flush, and the other tasks get a turn: about
# 3 ms of the core's work at most.
DGRAM_BATCH = 160
# Bytes sent between two looks at what came in (_DatagramVms): data to a guest brings
# its ACKs back all along, while a run of our ACKs goes quickly and brings nothing.
DGRAM_TAKE_AFTER = 16 * 1024
# A unix datagram is charged to its sender until read: the default 208 KiB would
# hold three 64 KiB frames of the ten a peer's queue takes (net.unix.max_dgram_qlen).
DGRAM_SEND_BUFFER = 1 << 20
MAX_DGRAM_PEERS = 256
RECONNECT_MIN = 0.1
# A restarted QEMU's guest asks DHCP within seconds of booting (busybox udhcpc gives up
# after about five): a connect a second is cheap, and the VM is back before its client.
RECONNECT_MAX = 1.0


async def serve_stream(
    attach: Attach, stream: trio.abc.Stream, name: str, fmt: FrameFormat
) -> None:
    """One VM on ``stream`` until either side closes it; then all its state goes."""
    async with stream, attach(name) as port, trio.open_nursery() as nursery:
        nursery.start_soon(_write_stream, port, stream, fmt, nursery.cancel_scope)
        await _read_stream(port, stream, fmt)
        nursery.cancel_scope.cancel()


async def _read_stream(port: Port, stream: trio.abc.Stream, fmt: FrameFormat) -> None:
    decoder = fmt.decoder()
    while True:
        try:
            data = await stream.receive_some(READ_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return
        if not data:
            return
        try:
            frames = decoder.feed(data)
        except FramingError as error:
            port.vm.stats.drop(error.reason)
            log.warning("closing: %s", error, extra=port.vm.log_context)
            return
        for start in range(0, len(frames), FEED_BATCH):
            if start:
                await trio.lowlevel.checkpoint()
            port.feed_many(frames[start : start + FEED_BATCH])


async def _write_stream(
    port: Port, stream: trio.abc.Stream, fmt: FrameFormat, done: trio.CancelScope
) -> None:
    try:
        while True:
            frames = _fitting(port, await port.receive(), fmt)
            if frames:
                await stream.send_all(fmt.encode_batch(frames))
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        done.cancel()


def _fitting(port: Port, frames: list[bytes], fmt: FrameFormat) -> list[bytes]:
    """The frames the transport can carry; a longer one means an MTU set too high."""
    fitting = [frame for frame in frames if len(frame) <= fmt.max_len]
    for _ in range(len(frames) - len(fitting)):
        port.vm.stats.drop("frame_over_transport_limit")
    return fitting


async def serve_listener(
    attach: Attach, listener: trio.SocketListener, label: str, fmt: FrameFormat
) -> None:
    """Each accepted connection is a new VM, in its own task."""
    reserve = FdReserve()
    async with listener, trio.open_nursery() as nursery:
        try:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as error:  # the server stays up
                    if not (out_of_fds(error) and await _refuse(listener, reserve, label)):
                        log.warning("accept on %s failed: %s", label, error)
                        await trio.sleep(0.1)
                    continue
                nursery.start_soon(serve_stream, attach, stream, label, fmt)
        finally:
            reserve.close()


async def _refuse(listener: trio.SocketListener, reserve: FdReserve, label: str) -> bool:
    """Out of descriptors: close the VM connection waiting, by the reserve's; False if
    even that failed."""
    with reserve.released():
        try:
            stream = await listener.accept()
        except OSError:
            return False
    await stream.aclose()
    if reserve.refusal(trio.current_time()):
        log.warning(
            "out of file descriptors: VM connection on %s refused; %d so far",
            label,
            reserve.refused,
        )
    return True


async def keep_connected(
    attach: Attach,
    open_stream: Callable[[], Awaitable[trio.abc.Stream]],
    label: str,
    fmt: FrameFormat,
) -> None:
    """QEMU with ``server=on`` listens and we connect: again after each disconnect, with backoff."""
    delay = RECONNECT_MIN
    while True:
        try:
            stream = await open_stream()
        except OSError as error:
            log.debug("connect to %s failed: %s; again in %.1f s", label, error, delay)
            await trio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX)
            continue
        delay = RECONNECT_MIN
        await serve_stream(attach, stream, label, fmt)
        await trio.sleep(delay)


async def serve_datagrams(attach: Attach, sock: socket.socket, label: str) -> None:
    """A ``-netdev dgram`` socket: each datagram one frame, each peer address one VM.

    A datagram peer never disconnects; a VM restarted on the same address is the
    same port, which is what QEMU's ``local=`` address makes it.  Each wakeup takes
    every datagram waiting, and what comes meanwhile (up to ``DGRAM_BATCH``), and
    hands each VM its frames at once: one pass through the scheduler and one flush per
    batch, not per frame.
    """
    sock.setblocking(False)
    vms = _DatagramVms(attach, sock, label)
    async with trio.open_nursery() as nursery:
        with sock:
            while True:
                with trio.CancelScope() as vms.wake:  # until a newcomer waits for a port
                    while True:
                        await trio.lowlevel.wait_readable(sock)
                        try:
                            vms.take_waiting()
                        except OSError as error:
                            log.warning("receive on %s failed: %s", label, error)
                            await trio.sleep(0.1)
                while vms.newcomers:  # a port needs the nursery: only this task makes them
                    address = next(iter(vms.newcomers))
                    port = await nursery.start(_datagram_peer, vms, address)
                    vms.ports[address] = port
                    # With what came in while the port was made, which waited with the rest.
                    port.feed_many(vms.newcomers.pop(address))


class _DatagramVms:
    """The VMs behind one datagram socket, by peer address, and the way frames come in.

    The socket's reader and every VM's writer take what is waiting: a writer busy with
    a long run of frames takes what came in meanwhile (mostly the guest's ACKs), for
    the kernel queues only ten datagrams (net.unix.max_dgram_qlen) and QEMU spins on
    EAGAIN while they wait, taking the CPU we need.
    """

    def __init__(self, attach: Attach, sock: socket.socket, label: str) -> None:
        self.attach = attach
        self.sock = sock
        self.label = label
        self.ports: dict[str | bytes, Port] = {}
        self.newcomers: dict[str | bytes, list[bytes]] = {}  # frames of peers with no port yet
        self.wake = trio.CancelScope()  # the reader's waits, cut short for a newcomer

    def take_waiting(self) -> None:
        """Feed each VM the datagrams waiting for it; raises ``OSError`` from the socket.

        The kernel queues ten datagrams (net.unix.max_dgram_qlen): QEMU refills the
        queue while the core handles what was taken, so taking again at once, up to
        ``DGRAM_BATCH``, makes one flush (and one ACK per flow) of several queuefuls.
        """
        fed: dict[NamespaceRuntime, None] = {}  # one flush each serves all its ports
        taken = 0
        while taken < DGRAM_BATCH:
            batches = _receive_datagrams(self.sock, DGRAM_BATCH - taken)
            if not batches:
                break
            for address, frames in batches.items():
                taken += len(frames)
                port = self.ports.get(address)
                if port is not None:
                    port.take(frames)
                    fed[port.runtime] = None
                    continue
                waiting = self.newcomers.get(address)
                if waiting is None:
                    if len(self.ports) + len(self.newcomers) >= MAX_DGRAM_PEERS:
                        continue
                    waiting = self.newcomers[address] = []
                waiting += frames[: DGRAM_BATCH - len(waiting)]
                self.wake.cancel()
        for runtime in fed:
            runtime.flush()


def _receive_datagrams(sock: socket.socket, limit: int) -> dict[str | bytes, list[bytes]]:
    """Up to ``limit`` of the datagrams waiting on ``sock``, by sender, in order."""
    batches: dict[str | bytes, list[bytes]] = {}
    for frame, address in native.recv_frames(sock, limit, DGRAM_SIZE):  # one recvmmsg
        if address:  # an unbound peer has nowhere to send its replies
            batches.setdefault(address, []).append(frame)
    return batches


async def _datagram_peer(
    vms: _DatagramVms,
    address: str | bytes,
    task_status: trio.TaskStatus[Port] = trio.TASK_STATUS_IGNORED,
) -> None:
    # Frames go out on a socket of the peer's own, connected to it: only then does the
    # kernel report a unix datagram socket unwritable while the peer's queue is full.
    # (Unconnected, sendto fails with EAGAIN and the socket still polls writable: a
    # busy loop for as long as the peer is behind.)  The peer must take datagrams from
    # any sender, as QEMU's unconnected -netdev dgram socket does.
    with socket.socket(vms.sock.family, socket.SOCK_DGRAM) as out:
        out.setblocking(False)
        out.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, DGRAM_SEND_BUFFER)
        _connect(out, address)
        writing = False  # the loop below holds frames: none may overtake them

        def send_now(frame: bytes) -> bool:
            if writing:
                return False
            try:
                out.send(frame)
            except OSError:  # full, or the peer restarted: the loop below deals with it
                return False
            return True

        async with vms.attach(f"{vms.label}<{address!r}>") as port:
            port.send_now = send_now
            task_status.started(port)
            while True:
                try:
                    frames = await port.receive()
                except trio.ClosedResourceError:
                    return
                writing = True
                try:
                    await _send_datagrams(vms, port, out, address, frames)
                finally:
                    writing = False


async def _send_datagrams(
    vms: _DatagramVms, port: Port, out: socket.socket, address: str | bytes, frames: list[bytes]
) -> None:
    """Each frame in one datagram, waiting while the peer's queue is full.

    Frames go out in runs of up to ``DGRAM_TAKE_AFTER`` bytes, each run in one
    ``sendmmsg`` (``native.send_frames``), and what came in meanwhile is taken
    between runs.
    """
    start = 0
    runs = 0
    retried = False
    while start < len(frames):
        end, size = start, 0
        while end < len(frames) and (end == start or size + len(frames[end]) <= DGRAM_TAKE_AFTER):
            size += len(frames[end])
            end += 1
        try:
            start += native.send_frames(out, frames[start:end])
        except OSError:
            # A restarted peer is a new socket at the same address: connect anew.
            if not retried and _connect(out, address):
                retried = True
                continue
            port.vm.stats.drop("dgram_send_failed")
            start += 1
            continue
        if start < end:  # the peer's queue is full
            await trio.lowlevel.wait_writable(out)
            continue
        retried = False
        with suppress(OSError):  # the reader hears of it and says so
            vms.take_waiting()
        runs += 1
        if runs % 4 == 0:
            await trio.lowlevel.checkpoint()  # the other VMs' and flows' turn


def _connect(sock: socket.socket, address: str | bytes) -> bool:
    try:
        sock.connect(address)
    except OSError:
        return False
    return True
