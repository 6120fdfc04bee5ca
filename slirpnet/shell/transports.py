"""What carries a VM's frames: byte streams (QEMU stream/socket, VDE) and datagrams.

Each connection is a VM: it gets a port of its namespace for as long as the
connection lives, and its own nursery, in which a reader feeds frames to the
core and a writer sends the core's frames back in batches (one write for all
that is waiting).  A framing error closes the connection, as QEMU and passt do;
a stream is never resynchronised.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable

import trio

from slirpnet.framing import FrameFormat, FramingError
from slirpnet.shell.fdreserve import FdReserve, out_of_fds
from slirpnet.shell.port import Port
from slirpnet.shell.runtime import NamespaceRuntime

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024  # several 64 KiB frames per read
# Frames of a VM handed to the core before the other tasks get a turn.  A read of
# small frames holds thousands: fed at once, they would hold up every other VM and
# every host socket for as long as a flooding guest keeps the socket full.
FEED_BATCH = 32
DGRAM_SIZE = 65536
MAX_DGRAM_PEERS = 256
RECONNECT_MIN = 0.1
RECONNECT_MAX = 5.0


async def serve_stream(
    runtime: NamespaceRuntime, stream: trio.abc.Stream, name: str, fmt: FrameFormat
) -> None:
    """One VM on ``stream`` until either side closes it; then all its state goes."""
    async with stream, runtime.attach(name) as port, trio.open_nursery() as nursery:
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
    runtime: NamespaceRuntime, listener: trio.SocketListener, label: str, fmt: FrameFormat
) -> None:
    """Each accepted connection is a new VM, in its own task."""
    counter = itertools.count(1)
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
                name = f"{label}#{next(counter)}"
                nursery.start_soon(serve_stream, runtime, stream, name, fmt)
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
    runtime: NamespaceRuntime,
    open_stream: Callable[[], Awaitable[trio.abc.Stream]],
    label: str,
    fmt: FrameFormat,
) -> None:
    """QEMU with ``server=on`` listens and we connect: again after each disconnect, with backoff."""
    delay = RECONNECT_MIN
    for number in itertools.count(1):
        try:
            stream = await open_stream()
        except OSError as error:
            log.debug("connect to %s failed: %s; again in %.1f s", label, error, delay)
            await trio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX)
            continue
        delay = RECONNECT_MIN
        await serve_stream(runtime, stream, f"{label}#{number}", fmt)
        await trio.sleep(delay)


async def serve_datagrams(
    runtime: NamespaceRuntime, sock: trio.socket.SocketType, label: str
) -> None:
    """A ``-netdev dgram`` socket: each datagram one frame, each peer address one VM.

    A datagram peer never disconnects; a VM restarted on the same address is the
    same port, which is what QEMU's ``local=`` address makes it.
    """
    ports: dict[str | bytes, Port] = {}
    async with trio.open_nursery() as nursery:
        with sock:
            while True:
                try:
                    frame, address_any = await sock.recvfrom(DGRAM_SIZE)
                except OSError as error:
                    log.warning("receive on %s failed: %s", label, error)
                    await trio.sleep(0.1)
                    continue
                if not address_any:
                    continue  # an unbound peer: there is nowhere to send its replies
                address: str | bytes = address_any
                port = ports.get(address)
                if port is None:
                    if len(ports) >= MAX_DGRAM_PEERS:
                        continue
                    port = await nursery.start(_datagram_peer, runtime, sock, address, label)
                    ports[address] = port
                port.feed(frame)


async def _datagram_peer(
    runtime: NamespaceRuntime,
    sock: trio.socket.SocketType,
    address: str | bytes,
    label: str,
    task_status: trio.TaskStatus[Port] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with runtime.attach(f"{label}<{address!r}>") as port:
        task_status.started(port)
        while True:
            try:
                frames = await port.receive()
            except trio.ClosedResourceError:
                return
            for frame in frames:
                try:
                    await sock.sendto(frame, address)
                except OSError:
                    port.vm.stats.drop("dgram_send_failed")
