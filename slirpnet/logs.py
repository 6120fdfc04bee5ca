"""Log lines that always say which namespace and which VM they are about.

The namespace comes from a context variable that every task of a namespace
inherits; the VM (its port's name and its MAC) from the ``extra=vm.log_context``
of the call, since one task (a flush) may speak for any VM of its namespace.
Lines about no VM in particular say ``vm=- mac=-``.
"""

from __future__ import annotations

import contextvars
import json
import logging
import logging.handlers
import sys
import time

namespace_var: contextvars.ContextVar[str] = contextvars.ContextVar("slirpnet_ns", default="-")


class _Context(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "ns"):
            record.ns = namespace_var.get()
        if not hasattr(record, "vm"):
            record.vm = "-"
        if not hasattr(record, "mac"):
            record.mac = "-"
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "ns": getattr(record, "ns", "-"),
            "vm": getattr(record, "vm", "-"),
            "mac": getattr(record, "mac", "-"),
            "msg": record.getMessage(),
            "logger": record.name,
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line)


class HeldLogs:
    """Log lines held back while the server starts: ``release`` lets them (and all later
    lines) out, ``discard`` drops them when starting failed and one error line says why."""

    def __init__(self, handler: logging.Handler) -> None:
        self._handler = handler
        # Flushed by hand only: no level or count lets a line out early.
        self._memory = logging.handlers.MemoryHandler(
            capacity=sys.maxsize, flushLevel=logging.CRITICAL + 1, target=handler
        )
        self._memory.addFilter(_Context())  # the namespace of the task that logs, not flushes

    @property
    def handler(self) -> logging.Handler:
        return self._memory

    def release(self) -> None:
        root = logging.getLogger("slirpnet")
        if self._memory in root.handlers:
            self._memory.flush()
            root.handlers[:] = [self._handler]

    def discard(self) -> None:
        self._memory.buffer.clear()
        self.release()


def configure(level: str, fmt: str, *, hold: bool = False) -> HeldLogs:
    """Lines to stderr at ``level`` in ``fmt``; with ``hold``, not before ``release``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_Context())
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)s ns=%(ns)s vm=%(vm)s mac=%(mac)s %(message)s"
            )
        )
    held = HeldLogs(handler)
    root = logging.getLogger("slirpnet")
    root.handlers[:] = [held.handler if hold else handler]
    root.setLevel(level.upper())
    root.propagate = False
    return held
