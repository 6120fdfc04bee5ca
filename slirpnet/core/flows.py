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
from typing import Final

from slirpnet.core.addr import IPAddress, key_int
from slirpnet.core.forwards import Forward
from slirpnet.core.guestfwd import GuestForward
from slirpnet.core.settings import Upstream
from slirpnet.core.tcp import TcpEndpoint
from slirpnet.core.vm import Vm

# How a host socket failed, as the shell reports it (``Segment.flow_error``).
FLOW_REFUSED: Final = "refused"  # the host said port unreachable
FLOW_UNREACHABLE: Final = "unreachable"  # the host said host or network unreachable
FLOW_RESET: Final = "reset"  # the host peer reset the connection
FLOW_FAILED: Final = "failed"  # no host socket could be had
FLOW_EXHAUSTED: Final = "exhausted"  # no host socket: the host is out of file descriptors

PROTO_ICMP: Final = 1
PROTO_TCP: Final = 6
PROTO_UDP: Final = 17
PROTO_ICMPV6: Final = 58


@dataclass(frozen=True)
class Endpoint:
    """Where a guest sent from: the address its replies go back to."""

    mac: bytes
    address: IPAddress
    port: int  # or the echo identifier


# Protocol, guest address, guest port (or echo identifier), the address the guest
# addressed and its port (0 for echo); addresses in key_int's one space for both families.
FlowKey = tuple[int, int, int, int, int]


def flow_key(
    proto: int, guest: IPAddress, guest_port: int, dst: IPAddress, dst_port: int
) -> FlowKey:
    return (proto, key_int(guest), guest_port, key_int(dst), dst_port)


def echo_key(guest: IPAddress, ident: int, dst: IPAddress) -> FlowKey:
    proto = PROTO_ICMP if dst.version == 4 else PROTO_ICMPV6
    return (proto, key_int(guest), ident, key_int(dst), 0)


@dataclass(eq=False)
class Flow:
    """One host socket's worth of NAT state.  Compared by identity."""

    vm: Vm = field(repr=False)
    guest: Endpoint
    host_address: IPAddress  # where the host socket sends
    host_port: int
    deadline: float  # idle expiry, moved forward by traffic
    closed: bool = field(init=False)
    scheduled: float = field(init=False)  # earliest timer entry queued

    def __post_init__(self) -> None:
        self.closed = False
        self.scheduled = math.inf

    @property
    def key(self) -> FlowKey | None:
        """Where its VM's ``flows`` holds it; None for a flow held otherwise."""
        return None

    @property
    def kind(self) -> str:
        """What the control API calls it: "tcp", "udp", "icmp", "dns"."""
        raise NotImplementedError


@dataclass(eq=False)
class UdpFlow(Flow):
    """A guest's UDP conversation with one destination: a connected host UDP socket.

    Or, with ``forward``, a host peer's datagrams to a forwarded port: the host
    address and port are the peer's, and the forward's own socket carries them.
    """

    @property
    def kind(self) -> str:
        return "udp"

    dst_address: IPAddress  # as the guest addressed it, the source of its replies
    dst_port: int
    forward: Forward | None = None

    @property
    def key(self) -> FlowKey:
        guest = self.guest
        return flow_key(PROTO_UDP, guest.address, guest.port, self.dst_address, self.dst_port)


@dataclass(eq=False)
class TcpFlow(Flow):
    """A guest's TCP connection: our endpoint facing the guest, a host socket behind it."""

    @property
    def kind(self) -> str:
        return "tcp"

    dst_address: IPAddress
    dst_port: int
    endpoint: TcpEndpoint = field(repr=False)
    forward: Forward | None = None  # a connection accepted on a forward: its socket is given
    # Where else the host socket may connect, in turn, when the connect to the host address
    # fails or takes longer than the DNS timeout: the DNS relay's other upstreams.
    fallbacks: tuple[Upstream, ...] = ()
    # A connection to a guestfwd's address and port: its host end is the guestfwd's
    # target (host_address and host_port are the address and port the guest reached).
    guestfwd: GuestForward | None = None
    host_closed: bool = field(init=False)
    # What every frame to the guest starts with: the Ethernet header, then our address
    # and the guest's as integers and as bytes (made with the first frame; see
    # fastpath.send_segments).
    frame_head: tuple[bytes, int, int, bytes, bytes] | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.host_closed = False
        self.frame_head = None

    @property
    def key(self) -> FlowKey:
        guest = self.guest
        return flow_key(PROTO_TCP, guest.address, guest.port, self.dst_address, self.dst_port)


@dataclass(eq=False)
class EchoFlow(Flow):
    """A guest's ICMP echo identifier towards one destination: a ping or raw socket."""

    @property
    def kind(self) -> str:
        return "icmp"

    dst_address: IPAddress

    @property
    def key(self) -> FlowKey:
        return echo_key(self.guest.address, self.guest.port, self.dst_address)


@dataclass(eq=False)
class DnsFlow(Flow):
    """One guest query on its way to one upstream resolver over UDP."""

    @property
    def kind(self) -> str:
        return "dns"

    query: bytes
    attempt: int  # which upstream, in order


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


Action = OpenFlow | SendFlow | ShutdownFlow | ResumeFlow | CloseFlow
