"""How the core hears of a host socket's error: one of the ``FLOW_*`` kinds."""

from __future__ import annotations

import errno

from slirpnet.core.flows import (
    FLOW_EXHAUSTED,
    FLOW_FAILED,
    FLOW_REFUSED,
    FLOW_RESET,
    FLOW_UNREACHABLE,
)
from slirpnet.shell.fdreserve import out_of_fds

_UNREACHABLE = frozenset((errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN))
_RESET = frozenset((errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED))


def error_kind(error: OSError) -> str:
    if error.errno == errno.ECONNREFUSED:
        return FLOW_REFUSED
    if error.errno in _UNREACHABLE:
        return FLOW_UNREACHABLE
    if error.errno in _RESET:
        return FLOW_RESET
    if out_of_fds(error):
        return FLOW_EXHAUSTED
    return FLOW_FAILED
