"""Directories the server writes to (sockets, captures), made when missing.

``/run/slirpnet/vm.sock`` should work on a machine where ``/run/slirpnet`` does not
exist yet, as systemd's ``RuntimeDirectory=`` would make it.  Only the missing
directories are made, and with ``mode``: owner-only unless others must reach a
socket inside (``--socket-mode``).  A directory that exists is left as it is.
"""

from __future__ import annotations

import os
from pathlib import Path

from slirpnet.config import ConfigError


def ensure_directory(path: Path, mode: int, key: str) -> None:
    """Make ``path`` and its missing parents with ``mode``; a ``ConfigError`` if it cannot be."""
    if path.is_dir():
        return
    missing = []
    for directory in (path, *path.parents):
        if directory.exists():
            break
        missing.append(directory)
    old_umask = os.umask(0)  # the mode as given, whatever the umask says
    try:
        for directory in reversed(missing):
            directory.mkdir(mode)
    except OSError as error:
        raise ConfigError(key, f"cannot make the directory {directory}: {error.strerror}") from None
    finally:
        os.umask(old_umask)
    if not path.is_dir():
        raise ConfigError(key, f"{path} is not a directory")


def socket_directory_mode(socket_mode: int) -> int:
    """The mode of a directory made for unix sockets of ``socket_mode``: whoever may
    connect to the socket may pass through the directory (and list it), and no one else."""
    mode = 0o700
    if socket_mode & 0o070:
        mode |= 0o050
    if socket_mode & 0o007:
        mode |= 0o005
    return mode
