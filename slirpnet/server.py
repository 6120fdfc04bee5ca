"""The server: every namespace of a config, each in its own nursery, with its transports."""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import shlex
import socket
import stat
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from pathlib import Path

import trio
from attrs import define, evolve

from slirpnet.config import Address, ConfigError, NamespaceConfig, ServerConfig
from slirpnet.control.api import ControlApi
from slirpnet.control.http import serve_http
from slirpnet.control.metrics import MetricsEndpoint
from slirpnet.core.settings import NetworkSettings
from slirpnet.framing import QEMU_STREAM, VDE_STREAM
from slirpnet.logs import namespace_var
from slirpnet.shell.leasestore import LeaseStore, lease_file
from slirpnet.shell.paths import ensure_directory, socket_directory_mode
from slirpnet.shell.port import Port
from slirpnet.shell.resolvconf import system_upstreams
from slirpnet.shell.runtime import NamespaceRuntime
from slirpnet.shell.transports import (
    Attach,
    keep_connected,
    serve_datagrams,
    serve_listener,
    serve_stream,
)

log = logging.getLogger(__name__)

BACKLOG = 64


@define
class _Server:
    """What the namespaces of a server share."""

    runtimes: dict[str, NamespaceRuntime]  # every live network by name: the API's and metrics'
    sockets: dict[Address, socket.socket]  # inherited from systemd, taken by their listeners
    pcap_dir: Path | None
    state_dir: Path | None  # where leases are kept; None: nowhere
    stop: Callable[[], None]


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
    if config.pcap_dir is not None:
        ensure_directory(config.pcap_dir, 0o700, "pcap")  # captures hold all the guests say
    async with trio.open_nursery() as nursery:
        server = _Server(
            {},
            dict(inherited or {}),
            config.pcap_dir,
            _state_dir(config.state_dir),
            nursery.cancel_scope.cancel,
        )
        for namespace in config.namespaces:
            await nursery.start(_run_namespace, namespace, server)
        if config.control is not None:
            await nursery.start(
                _serve_control,
                config.control,
                server.sockets,
                ControlApi(server.runtimes, config.pcap_dir),
                config.control_optional,
            )
        if config.metrics is not None:
            sock = trio.socket.from_stdlib_socket(_tcp_socket(config.metrics, "metrics"))
            listener = trio.SocketListener(sock)
            nursery.start_soon(serve_http, listener, MetricsEndpoint(server.runtimes))
            log.info("metrics on http://%s:%d/metrics", config.metrics.host, config.metrics.port)
        task_status.started(list(server.runtimes.values()))


def _state_dir(path: Path | None) -> Path | None:
    """The state directory, made if need be; None (with a warning) if it cannot be."""
    if path is None:
        return None
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        log.warning("state-dir %s: %s; leases will not outlive this server", path, error)
        return None
    return path


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
    server: _Server,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    namespace_var.set(config.name)
    settings = config.settings
    if not settings.dns_upstreams:
        settings = evolve(settings, dns_upstreams=system_upstreams())
    created: list[Path] = []
    try:
        async with AsyncExitStack() as stack:
            attach: Attach
            if config.isolate:
                attach = _IsolatedNetworks(config.name, settings, server).attach
            else:
                runtime = await stack.enter_async_context(
                    _open_network(config.name, settings, server, keep_leases=True)
                )
                for forward in config.forwards:
                    runtime.forwards.add(forward)
                attach = runtime.attach
            nursery = await stack.enter_async_context(trio.open_nursery())
            for address in config.listen:
                _start_listener(attach, nursery, address, server.sockets, created, config)
            for address in config.connect:
                nursery.start_soon(
                    keep_connected, attach, _opener(address), str(address), QEMU_STREAM
                )
            if config.stdio:
                nursery.start_soon(_serve_stdio, attach, config.stdio, server.stop)
            log.info(
                "namespace %s on %s, upstream DNS %s%s",
                settings.network,
                ", ".join(str(a) for a in (*config.listen, *config.connect)) or "stdio",
                ", ".join(str(u) for u in settings.dns_upstreams) or "none",
                "; a network of its own for each VM" if config.isolate else "",
            )
            task_status.started()
    finally:
        for path in created:
            with suppress(OSError):
                path.unlink()


@asynccontextmanager
async def _open_network(
    name: str, settings: NetworkSettings, server: _Server, *, keep_leases: bool
) -> AsyncIterator[NamespaceRuntime]:
    """A network, listed in ``server.runtimes`` while it runs; its leases kept if asked."""
    async with NamespaceRuntime.open(name, settings) as runtime:
        runtime.pcap_dir = server.pcap_dir
        if keep_leases and server.state_dir is not None:
            store = LeaseStore(lease_file(server.state_dir, name), runtime.segment.dhcp)
            store.restore(trio.current_time())
            runtime.on_leases_changed = store.changed
            runtime.nursery.start_soon(store.keep_saved)
        server.runtimes[name] = runtime
        try:
            yield runtime
        finally:
            del server.runtimes[name]


class _IsolatedNetworks:
    """``--isolate``: each VM that connects gets a network of its own, ``NAME.vmN``, with
    the namespace's settings, as each QEMU with ``-netdev user`` has its own libslirp.
    Its leases are not kept: alone on its network, a VM gets the first address again."""

    def __init__(self, name: str, settings: NetworkSettings, server: _Server) -> None:
        self.name = name
        self.settings = settings
        self.server = server
        self._numbers = itertools.count(1)

    @asynccontextmanager
    async def attach(self, vm_name: str) -> AsyncIterator[Port]:
        name = f"{self.name}.vm{next(self._numbers)}"
        token = namespace_var.set(name)  # this VM's task: its log lines name its network
        try:
            async with (
                _open_network(name, self.settings, self.server, keep_leases=False) as runtime,
                runtime.attach(vm_name) as port,
            ):
                yield port
        finally:
            namespace_var.reset(token)


def _start_listener(
    attach: Attach,
    nursery: trio.Nursery,
    address: Address,
    sockets: dict[Address, socket.socket],
    created: list[Path],
    config: NamespaceConfig,
) -> None:
    inherited = sockets.pop(address, None)
    if inherited is not None:
        _serve_socket(attach, nursery, address, inherited)
        return
    if address.kind == "tcp":
        sock = _tcp_socket(address, "listen")
    else:
        kind = socket.SOCK_STREAM if address.kind == "unix" else socket.SOCK_DGRAM
        sock = bind_unix(Path(address.path), kind, mode=config.socket_mode)
        created.append(Path(address.path))
    _serve_socket(attach, nursery, address, sock)


def _serve_socket(
    attach: Attach, nursery: trio.Nursery, address: Address, sock: socket.socket
) -> None:
    label = str(address)
    if address.kind in ("unix", "tcp"):
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        nursery.start_soon(serve_listener, attach, listener, label, QEMU_STREAM)
    else:
        nursery.start_soon(serve_datagrams, attach, sock, label)


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


async def _serve_stdio(attach: Attach, kind: str, stop_server: Callable[[], None]) -> None:
    """One VM on stdin/stdout (``dpipe vde_plug SWITCH = slirpnet serve --stdio vde``)."""
    stream = trio.StapledStream(
        trio.lowlevel.FdStream(os.dup(1)), trio.lowlevel.FdStream(os.dup(0))
    )
    await serve_stream(
        attach, stream, f"stdio:{kind}", VDE_STREAM if kind == "vde" else QEMU_STREAM
    )
    stop_server()  # like slirpvde: the one VM is gone, so is the server


def qemu_arguments(address: Address, server: bool = False, mac: str | None = None) -> str:
    """The QEMU flags that plug a VM's NIC into ``address``, quoted for a shell.

    ``server`` is for an address we connect to: QEMU listens there (``server=on``).
    ``mac`` goes on the NIC: VMs sharing a network each need their own.
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
    device = "virtio-net-pci,netdev=net0" + (f",mac={mac}" if mac else "")
    return f"-netdev {shlex.quote(netdev)} -device {device}"


def suggested_mac(namespace: str, address: Address) -> str:
    """A MAC to print in the QEMU arguments for a shared network, so that users see where
    each VM's own goes: QEMU's locally administered 52:54:00 prefix, the rest derived
    from the listener so that it stays the same from one start to the next."""
    digest = hashlib.sha256(f"{namespace} {address}".encode()).digest()
    return "52:54:00:" + ":".join(f"{byte:02x}" for byte in digest[:3])


def _qemu_path(path: str) -> str:
    # Absolute, for QEMU may run elsewhere; and QEMU's option syntax separates keys with
    # commas, so a comma in a value is doubled.
    return os.path.abspath(path).replace(",", ",,")
