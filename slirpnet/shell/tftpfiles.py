"""The files of the core's TFTP transfers (core/tftp.py): opened beneath the root, read.

A guest names the file, so the name is hostile.  The core has refused absolute
names and ".." already; what is left is links.  A path is walked a component at
a time from a descriptor of the root, as openat2's RESOLVE_BENEATH does: each
component is opened relative to the directory before it with O_NOFOLLOW, and a
symbolic link met on the way is read and followed by hand, its ".." taking the
walk up only as far as the root and an absolute target refused.  So a link
within the root works, and none leads out of it.  What is served is a regular
file: no directory, device or FIFO (opened with O_NONBLOCK, so a FIFO cannot
stall the server before it is refused).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from typing import TYPE_CHECKING

from slirpnet.core.flows import FLOW_EXHAUSTED, FLOW_FAILED, ReadFlow, TftpFlow
from slirpnet.core.tftp import DENIED, FILE_SIZE, NOT_FOUND
from slirpnet.shell.fdreserve import out_of_fds

if TYPE_CHECKING:
    from slirpnet.shell.runtime import NamespaceRuntime

log = logging.getLogger(__name__)

MAX_LINKS = 40  # links followed in one path, as Linux's own limit (ELOOP)
_NOT_FOUND = frozenset((errno.ENOENT, errno.ENOTDIR))
_DENIED = frozenset((errno.EACCES, errno.EPERM, errno.ELOOP))
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK


class OutsideRootError(PermissionError):
    """The path, or a link on it, leads out of the root."""


def open_beneath(root: int, path: str) -> int:
    """A descriptor of the regular file ``path`` names beneath the directory open as ``root``.

    Raises OSError: OutsideRootError for a way out of the root, PermissionError for a
    file that is not a regular one, FileNotFoundError and the like from the system.
    """
    directories = [root]  # the walk so far, each opened in the one before
    try:
        pending = list(reversed(path.split("/")))  # components still to walk, next last
        links = 0
        while pending:
            name = pending.pop()
            if name in ("", "."):
                continue
            if name == "..":
                if len(directories) == 1:
                    raise OutsideRootError(errno.EACCES, "leads out of the TFTP root", path)
                os.close(directories.pop())
                continue
            here = directories[-1]
            if stat.S_ISLNK(os.stat(name, dir_fd=here, follow_symlinks=False).st_mode):
                links += 1
                target = os.readlink(name, dir_fd=here)
                if links > MAX_LINKS or target.startswith("/"):
                    raise OutsideRootError(errno.EACCES, "a link out of the TFTP root", path)
                pending.extend(reversed(target.split("/")))
                continue
            flags = _OPEN_FLAGS if not _more(pending) else _OPEN_FLAGS | os.O_DIRECTORY
            # O_NOFOLLOW: a component swapped for a link since the stat fails (ELOOP).
            fd = os.open(name, flags, dir_fd=here)
            if _more(pending):
                directories.append(fd)
                continue
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise PermissionError(errno.EACCES, "not a regular file", path)
            return fd
        raise PermissionError(errno.EISDIR, "names a directory", path)
    finally:
        for fd in directories[1:]:
            os.close(fd)


def _more(pending: list[str]) -> bool:
    """Are there components left to walk (not counting "." and empty ones)?"""
    return any(name not in ("", ".") for name in pending)


def read_at(fd: int, offset: int, size: int) -> bytes:
    """``size`` bytes at ``offset``, fewer only at the end of the file."""
    parts = []
    while size > 0:
        data = os.pread(fd, size, offset)
        if not data:
            break
        parts.append(data)
        offset += len(data)
        size -= len(data)
    return b"".join(parts)


class TftpFiles:
    """The open files of one namespace's transfers, answering the core's actions."""

    def __init__(self, runtime: NamespaceRuntime) -> None:
        self.runtime = runtime
        self._files: dict[TftpFlow, int] = {}

    def open(self, flow: TftpFlow) -> None:
        root = self.runtime.segment.settings.tftp_root
        assert root is not None  # the core serves TFTP only with a root
        try:
            root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as error:
            log.warning("TFTP: the root %s cannot be opened: %s", root, error.strerror)
            self.runtime.report_error(flow, _failure(error))
            return
        try:
            fd = open_beneath(root_fd, flow.path)
            size = os.fstat(fd).st_size
        except OSError as error:
            self.runtime.report_error(flow, _open_error(root, flow.path, error))
            return
        finally:
            os.close(root_fd)
        self._files[flow] = fd
        self.runtime.report_received(flow, FILE_SIZE.pack(size))

    def read(self, action: ReadFlow) -> None:
        flow = action.flow
        if not isinstance(flow, TftpFlow) or flow not in self._files:
            return  # closed since
        fd = self._files[flow]
        try:
            data = read_at(fd, action.offset, action.size)
        except OSError as error:
            log.warning("TFTP: reading %s failed: %s", flow.path, error)
            self.runtime.report_error(flow, _failure(error))
            return
        self.runtime.report_received(flow, data)

    def close(self, flow: TftpFlow) -> None:
        fd = self._files.pop(flow, None)
        if fd is not None:
            os.close(fd)

    def close_all(self) -> None:
        for flow in list(self._files):
            self.close(flow)


def _open_error(root: str, path: str, error: OSError) -> str:
    """The flow_error kind for a failed open, logged where the guest is not to blame."""
    if isinstance(error, OutsideRootError) or error.errno in _DENIED:
        log.info("TFTP: refused %s: %s", path, error.strerror)
        return DENIED
    if error.errno in _NOT_FOUND:
        return NOT_FOUND
    kind = _failure(error)
    log.warning("TFTP: cannot open %s beneath %s: %s", path, root, error)
    return kind


def _failure(error: OSError) -> str:
    return FLOW_EXHAUSTED if out_of_fds(error) else FLOW_FAILED
