"""The server: every namespace of a config, each in its own nursery, with its transports."""

from __future__ import annotations

import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from contextlib import suppress
from pathlib import Path

import trio
from attrs import evolve

from slirpnet.config import Address, ConfigError, NamespaceConfig, ServerConfig
from slirpnet.framing import QEMU_STREAM, VDE_STREAM
from slirpnet.logs import namespace_var
from slirpnet.shell.resolvconf import system_upstreams
from slirpnet.shell.runtime import NamespaceRuntime
from slirpnet.shell.transports import keep_connected, serve_datagrams, serve_listener, serve_stream

log = logging.getLogger(__name__)

BACKLOG = 64


async def run_server(
    config: ServerConfig,
    *,
    task_status: trio.TaskStatus[list[NamespaceRuntime]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled, or until the VM on stdin/stdout goes away.

    Listeners are all bound before ``task_status.started`` (so a bad address is an
    error before anything runs), and their unix socket files are removed on exit.
    """
    async with trio.open_nursery() as nursery:
        runtimes = []
        for namespace in config.namespaces:
            runtime = await nursery.start(_run_namespace, namespace, nursery.cancel_scope.cancel)
            runtimes.append(runtime)
        task_status.started(runtimes)


async def _run_namespace(
    config: NamespaceConfig,
    stop_server: Callable[[], None],
    *,
    task_status: trio.TaskStatus[NamespaceRuntime] = trio.TASK_STATUS_IGNORED,
) -> None:
    namespace_var.set(config.name)
    settings = config.settings
    if not settings.dns_upstreams:
        settings = evolve(settings, dns_upstreams=system_upstreams())
    created: list[Path] = []
    try:
        async with (
            NamespaceRuntime.open(config.name, settings) as runtime,
            trio.open_nursery() as nursery,
        ):
            for address in config.listen:
                _start_listener(runtime, nursery, address, created)
            for address in config.connect:
                nursery.start_soon(
                    keep_connected, runtime, _opener(address), str(address), QEMU_STREAM
                )
            if config.stdio:
                nursery.start_soon(_serve_stdio, runtime, config.stdio, stop_server)
            log.info(
                "namespace %s on %s, upstream DNS %s",
                settings.network,
                ", ".join(str(a) for a in (*config.listen, *config.connect)) or "stdio",
                ", ".join(str(u) for u in settings.dns_upstreams) or "none",
            )
            task_status.started(runtime)
    finally:
        for path in created:
            with suppress(OSError):
                path.unlink()


def _start_listener(
    runtime: NamespaceRuntime, nursery: trio.Nursery, address: Address, created: list[Path]
) -> None:
    label = str(address)
    if address.kind == "tcp":
        try:
            sock = socket.create_server((address.host, address.port), backlog=BACKLOG)
        except OSError as error:
            raise ConfigError("listen", f"{label}: {error.strerror}") from None
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        nursery.start_soon(serve_listener, runtime, listener, label, QEMU_STREAM)
        return
    kind = socket.SOCK_STREAM if address.kind == "unix" else socket.SOCK_DGRAM
    sock = bind_unix(Path(address.path), kind)
    created.append(Path(address.path))
    if address.kind == "unix":
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        nursery.start_soon(serve_listener, runtime, listener, label, QEMU_STREAM)
    else:
        nursery.start_soon(serve_datagrams, runtime, sock, label)


def bind_unix(path: Path, kind: socket.SocketKind) -> socket.socket:
    """A unix socket bound at ``path``, owner-only; a stale file from a dead server is replaced."""
    _clear_stale(path, kind)
    sock = socket.socket(socket.AF_UNIX, kind)
    try:
        # The guest is untrusted but the host user is: only they may plug VMs in.
        old_umask = os.umask(0o177)
        try:
            sock.bind(str(path))
        finally:
            os.umask(old_umask)
        if kind == socket.SOCK_STREAM:
            sock.listen(BACKLOG)
    except OSError as error:
        sock.close()
        raise ConfigError("listen", f"{path}: {error.strerror}") from None
    return sock


def _clear_stale(path: Path, kind: socket.SocketKind) -> None:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ConfigError("listen", f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, kind)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        path.unlink()  # nobody listens: left by a server that died
        return
    except OSError:
        pass
    finally:
        probe.close()
    raise ConfigError("listen", f"{path} is in use by a running server")


def _opener(address: Address) -> Callable[[], Awaitable[trio.abc.Stream]]:
    async def open_stream() -> trio.abc.Stream:
        if address.kind == "unix":
            return await trio.open_unix_socket(address.path)
        return await trio.open_tcp_stream(address.host, address.port)

    return open_stream


async def _serve_stdio(
    runtime: NamespaceRuntime, kind: str, stop_server: Callable[[], None]
) -> None:
    """One VM on stdin/stdout (``dpipe vde_plug SWITCH = slirpnet serve --stdio vde``)."""
    stream = trio.StapledStream(
        trio.lowlevel.FdStream(os.dup(1)), trio.lowlevel.FdStream(os.dup(0))
    )
    await serve_stream(
        runtime, stream, f"stdio:{kind}", VDE_STREAM if kind == "vde" else QEMU_STREAM
    )
    stop_server()  # like slirpvde: the one VM is gone, so is the server


def qemu_arguments(address: Address) -> str:
    """The QEMU flags that connect a VM's NIC to ``address``."""
    device = "-device virtio-net-pci,netdev=net0"
    if address.kind == "unix":
        netdev = f"stream,id=net0,server=off,addr.type=unix,addr.path={address.path}"
    elif address.kind == "tcp":
        netdev = (
            f"stream,id=net0,server=off,addr.type=inet,"
            f"addr.host={address.host},addr.port={address.port}"
        )
    else:
        netdev = (
            f"dgram,id=net0,local.type=unix,local.path={address.path}.qemu,"
            f"remote.type=unix,remote.path={address.path}"
        )
    return f"-netdev {netdev} {device}"
