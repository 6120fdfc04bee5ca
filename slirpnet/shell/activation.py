"""systemd socket activation: listening sockets handed to us as fds 3, 4, ... (sd_listen_fds(3)).

systemd sets ``LISTEN_PID`` to our pid and ``LISTEN_FDS`` to the count.  Each
socket is matched to a ``--listen`` (or ``--control``) address by what it is
bound to, so a unit's ``ListenStream=/run/slirpnet/vm.sock`` serves the
config's ``unix:/run/slirpnet/vm.sock``; with no ``--listen`` at all, every
inherited socket is a VM listener.  An inherited unix socket's file belongs to
systemd: we never replace or remove it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import MutableMapping

from attrs import evolve

from slirpnet.config import Address, ConfigError, ServerConfig

LISTEN_FDS_START = 3


def inherited_sockets(
    environ: MutableMapping[str, str] = os.environ,
) -> dict[Address, socket.socket]:
    """The sockets systemd passed us, by the address each serves; consumes the variables."""
    pid = environ.pop("LISTEN_PID", None)
    count = environ.pop("LISTEN_FDS", None)
    environ.pop("LISTEN_FDNAMES", None)  # so that children never take them for their own
    if pid is None or count is None or pid != str(os.getpid()):
        return {}
    if not count.isdigit():
        raise ConfigError("LISTEN_FDS", f"{count!r} is not a count of sockets")
    found = {}
    for fd in range(LISTEN_FDS_START, LISTEN_FDS_START + int(count)):
        try:
            sock = socket.socket(fileno=fd)
        except OSError as error:
            raise ConfigError("LISTEN_FDS", f"fd {fd} is not a socket: {error.strerror}") from None
        os.set_inheritable(fd, False)
        found[address_of(sock)] = sock
    return found


def address_of(sock: socket.socket) -> Address:
    """The ``--listen`` address a bound socket serves."""
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        path = name.decode() if isinstance(name, bytes) else name
        kind = "unix" if sock.type == socket.SOCK_STREAM else "unixgram"
        return Address(kind, path=path)
    if sock.family == socket.AF_INET and sock.type == socket.SOCK_STREAM:
        host, port = name
        return Address("tcp", host=host, port=port)
    raise ConfigError("LISTEN_FDS", f"fd {sock.fileno()} is a socket slirpnet cannot serve")


def with_inherited_listeners(
    config: ServerConfig, inherited: dict[Address, socket.socket]
) -> ServerConfig:
    """With no ``--listen`` anywhere, every inherited socket but the control one serves VMs."""
    if not inherited or any(ns.listen for ns in config.namespaces):
        return config
    addresses = tuple(address for address in inherited if address != config.control)
    first, *rest = config.namespaces
    return evolve(config, namespaces=(evolve(first, listen=addresses), *rest))
