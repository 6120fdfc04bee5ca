"""The server: every namespace of a config, each in its own nursery, with its transports."""

from __future__ import annotations

import logging
import os
import shlex
import socket
import stat
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from pathlib import Path

import trio
from attrs import evolve

from slirpnet.config import Address, ConfigError, NamespaceConfig, ServerConfig
from slirpnet.control.api import ControlApi
from slirpnet.control.http import serve_http
from slirpnet.control.metrics import MetricsEndpoint
from slirpnet.framing import QEMU_STREAM, VDE_STREAM
from slirpnet.logs import namespace_var
from slirpnet.shell.paths import ensure_directory, socket_directory_mode
from slirpnet.shell.resolvconf import system_upstreams
from slirpnet.shell.runtime import NamespaceRuntime
from slirpnet.shell.transports import keep_connected, serve_datagrams, serve_listener, serve_stream

log = logging.getLogger(__name__)

BACKLOG = 64


async def run_server(
    config: ServerConfig,
    *,
    inherited: Mapping[Address, socket.socket] | None = None,
    task_status: trio.TaskStatus[list[NamespaceRuntime]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled, or until the VM on stdin/stdout goes away.

    Listeners are all bound before ``task_status.started`` (so a bad address is an
    error before anything runs), and their unix socket files are removed on exit.
    """
    sockets = dict(inherited or {})
    if config.pcap_dir is not None:
        ensure_directory(config.pcap_dir, 0o700, "pcap")  # captures hold all the guests say
    async with trio.open_nursery() as nursery:
        runtimes: dict[str, NamespaceRuntime] = {}
        for namespace in config.namespaces:
            runtime = await nursery.start(
                _run_namespace, namespace, sockets, nursery.cancel_scope.cancel
            )
            runtime.pcap_dir = config.pcap_dir
            runtimes[namespace.name] = runtime
        if config.control is not None:
            await nursery.start(
                _serve_control,
                config.control,
                sockets,
                ControlApi(runtimes, config.pcap_dir),
                config.control_optional,
            )
        if config.metrics is not None:
            sock = trio.socket.from_stdlib_socket(_tcp_socket(config.metrics, "metrics"))
            listener = trio.SocketListener(sock)
            nursery.start_soon(serve_http, listener, MetricsEndpoint(runtimes))
            log.info("metrics on http://%s:%d/metrics", config.metrics.host, config.metrics.port)
        task_status.started(list(runtimes.values()))


async def _serve_control(
    address: Address,
    sockets: dict[Address, socket.socket],
    api: ControlApi,
    optional: bool,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    path = Path(address.path)
    sock = sockets.pop(address, None)
    if sock is None:
        try:
            sock = bind_unix(path, socket.SOCK_STREAM, "control")
        except ConfigError as error:
            if not optional:
                raise
            # The default place, taken (another server) or out of reach: serving VMs matters more.
            log.warning("no control API: %s (--control PATH puts it elsewhere)", error)
            task_status.started()
            return
    else:
        path = Path()  # systemd's socket file: not ours to remove
    try:
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        log.info("control API on %s", address)
        task_status.started()
        await serve_http(listener, api)
    finally:
        if path != Path():
            with suppress(OSError):
                path.unlink()


def _tcp_socket(address: Address, key: str) -> socket.socket:
    try:
        return socket.create_server((address.host, address.port), backlog=BACKLOG)
    except OSError as error:
        raise ConfigError(key, f"{address}: {error.strerror}") from None


async def _run_namespace(
    config: NamespaceConfig,
    sockets: dict[Address, socket.socket],
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
            for forward in config.forwards:
                runtime.forwards.add(forward)
            for address in config.listen:
                _start_listener(runtime, nursery, address, sockets, created, config.socket_mode)
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
    runtime: NamespaceRuntime,
    nursery: trio.Nursery,
    address: Address,
    sockets: dict[Address, socket.socket],
    created: list[Path],
    mode: int,
) -> None:
    inherited = sockets.pop(address, None)
    if inherited is not None:
        _serve_socket(runtime, nursery, address, inherited)
        return
    if address.kind == "tcp":
        sock = _tcp_socket(address, "listen")
    else:
        kind = socket.SOCK_STREAM if address.kind == "unix" else socket.SOCK_DGRAM
        sock = bind_unix(Path(address.path), kind, mode=mode)
        created.append(Path(address.path))
    _serve_socket(runtime, nursery, address, sock)


def _serve_socket(
    runtime: NamespaceRuntime, nursery: trio.Nursery, address: Address, sock: socket.socket
) -> None:
    label = str(address)
    if address.kind in ("unix", "tcp"):
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        nursery.start_soon(serve_listener, runtime, listener, label, QEMU_STREAM)
    else:
        nursery.start_soon(serve_datagrams, runtime, sock, label)


def bind_unix(
    path: Path, kind: socket.SocketKind, key: str = "listen", *, mode: int = 0o600
) -> socket.socket:
    """A unix socket bound at ``path`` with permissions ``mode`` (owner-only unless told);
    a stale file from a dead server is replaced, a missing directory made."""
    ensure_directory(path.parent, socket_directory_mode(mode), key)
    _clear_stale(path, kind, key)
    sock = socket.socket(socket.AF_UNIX, kind)
    try:
        # The guest is untrusted but the host user is: only they may plug VMs in, unless
        # they say who else may.  Born owner-only, so that no one gets in before chmod.
        old_umask = os.umask(0o177)
        try:
            sock.bind(str(path))
        finally:
            os.umask(old_umask)
        if mode != 0o600:
            os.chmod(path, mode)
        if kind == socket.SOCK_STREAM:
            sock.listen(BACKLOG)
    except OSError as error:
        sock.close()
        raise ConfigError(key, f"{path}: {error.strerror}") from None
    return sock


def _clear_stale(path: Path, kind: socket.SocketKind, key: str) -> None:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ConfigError(key, f"{path} exists and is not a socket")
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
    raise ConfigError(key, f"{path} is in use by a running server")


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


def qemu_arguments(address: Address, server: bool = False) -> str:
    """The QEMU flags that plug a VM's NIC into ``address``, quoted for a shell.

    ``server`` is for an address we connect to: QEMU listens there (``server=on``).
    """
    if address.kind == "unixgram":
        netdev = (
            f"dgram,id=net0,local.type=unix,local.path={_qemu_path(address.path + '.qemu')},"
            f"remote.type=unix,remote.path={_qemu_path(address.path)}"
        )
    else:
        if address.kind == "unix":
            where = f"addr.type=unix,addr.path={_qemu_path(address.path)}"
        else:
            where = f"addr.type=inet,addr.host={address.host},addr.port={address.port}"
        netdev = f"stream,id=net0,server={'on' if server else 'off'},{where}"
    return f"-netdev {shlex.quote(netdev)} -device virtio-net-pci,netdev=net0"


def _qemu_path(path: str) -> str:
    # Absolute, for QEMU may run elsewhere; and QEMU's option syntax separates keys with
    # commas, so a comma in a value is doubled.
    return os.path.abspath(path).replace(",", ",,")
