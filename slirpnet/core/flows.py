"""NAT flows and the actions that ask the host for their sockets.

The core never touches a socket.  It names each host socket by the flow that
needs it; the shell keeps the socket beside the flow and reports back through
the segment's ``flow_*`` methods.  Every flow that is opened is closed by a
``CloseFlow``, whatever ends it: idle timeout, error, or its VM leaving.

These are dataclasses, which mypyc compiles to native classes (see setup.py).  Two
habits follow from it: a field set after ``__init__`` is given its value in
``__post_init__`` (mypyc leaves a ``field(init=False)`` default unset), and a class
made for every frame writes its ``__init__`` out (``SendFlow``): the one dataclasses
generates stays interpreted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from slirpnet.core.forwards import Forward
from slirpnet.core.tcp import TcpEndpoint
from slirpnet.core.vm import Vm


@dataclass(frozen=True)
class Endpoint:
    """Where a guest sent from: the address its replies go back to."""

    mac: bytes
    address: IPv4Address
    port: int  # or the echo identifier


FlowKey = tuple[int, int, int, int]  # guest address, guest port, destination, destination port


@dataclass(eq=False)
class Flow:
    """One host socket's worth of NAT state.  Compared by identity."""

    vm: Vm = field(repr=False)
    guest: Endpoint
    host_address: IPv4Address  # where the host socket sends
    host_port: int
    deadline: float  # idle expiry, moved forward by traffic
    closed: bool = field(init=False)
    scheduled: float = field(init=False)  # earliest timer entry queued

    def __post_init__(self) -> None:
        self.closed = False
        self.scheduled = math.inf


@dataclass(eq=False)
class UdpFlow(Flow):
    """A guest's UDP conversation with one destination: a connected host UDP socket.

    Or, with ``forward``, a host peer's datagrams to a forwarded port: the host
    address and port are the peer's, and the forward's own socket carries them.
    """

    dst_address: IPv4Address  # as the guest addressed it, the source of its replies
    dst_port: int
    forward: Forward | None = None

    @property
    def key(self) -> FlowKey:
        return (int(self.guest.address), self.guest.port, int(self.dst_address), self.dst_port)


@dataclass(eq=False)
class TcpFlow(Flow):
    """A guest's TCP connection: our endpoint facing the guest, a host socket behind it."""

    dst_address: IPv4Address
    dst_port: int
    endpoint: TcpEndpoint = field(repr=False)
    forward: Forward | None = None  # a connection accepted on a forward: its socket is given
    host_closed: bool = field(init=False)
    # What every frame to the guest starts with: the Ethernet header, then our address
    # and the guest's as integers (made with the first frame; see Segment._tcp_output).
    frame_head: tuple[bytes, int, int] | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.host_closed = False
        self.frame_head = None

    @property
    def key(self) -> FlowKey:
        return (int(self.guest.address), self.guest.port, int(self.dst_address), self.dst_port)


@dataclass(eq=False)
class EchoFlow(Flow):
    """A guest's ICMP echo identifier towards one destination: a ping or raw socket."""

    dst_address: IPv4Address


@dataclass(eq=False)
class DnsFlow(Flow):
    """One guest query on its way to one upstream resolver over UDP."""

    query: bytes
    attempt: int  # which upstream, in order


@dataclass(eq=False)
class TftpFlow(Flow):
    """A guest's read from the gateway's TFTP server (core/tftp.py holds its transfer):
    the shell opens ``path`` read-only beneath ``settings.tftp_root``."""

    path: str  # relative to the TFTP root, checked by the core: no "..", not absolute
    port: int  # the transfer's port on the gateway address (RFC 1350 §4, its TID)


@dataclass(frozen=True)
class OpenFlow:
    flow: Flow


@dataclass(init=False)
class SendFlow:
    flow: Flow
    payload: bytes | memoryview  # a view of the guest's frame, which is never changed

    def __init__(self, flow: Flow, payload: bytes | memoryview) -> None:
        self.flow = flow
        self.payload = payload


@dataclass(frozen=True)
class ShutdownFlow:
    """After what was sent, shut the host socket for writing (the guest's FIN)."""

    flow: Flow


@dataclass(frozen=True)
class ResumeFlow:
    """The flow can take host data again: read from the host socket."""

    flow: Flow


@dataclass(frozen=True)
class CloseFlow:
    flow: Flow
    abort: bool = False  # with a RST: SO_LINGER 0


@dataclass(frozen=True)
class ReadFlow:
    """Read ``size`` bytes at ``offset`` of a TftpFlow's file: answered by
    ``flow_received`` with fewer only at the end of the file (see core/tftp.py)."""

    flow: Flow
    offset: int
    size: int


Action = OpenFlow | SendFlow | ShutdownFlow | ResumeFlow | CloseFlow | ReadFlow
