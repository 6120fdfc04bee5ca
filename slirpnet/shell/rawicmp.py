"""One raw ICMP socket shared by every echo flow of a namespace, where we are privileged.

A raw socket sees every ICMP message the host receives, so each flow gets an
identifier of its own on the wire and replies are matched by (source, identifier).
The core restores the guest's own identifier on the way back.
"""

from __future__ import annotations

import itertools
import random
import socket
from typing import TYPE_CHECKING

import trio

from slirpnet.core.flows import EchoFlow, Flow
from slirpnet.wire import icmp, ipv4
from slirpnet.wire.errors import WireError

if TYPE_CHECKING:
    from slirpnet.shell.runtime import NamespaceRuntime


class RawIcmp:
    def __init__(self, runtime: NamespaceRuntime, sock: socket.socket) -> None:
        self.runtime = runtime
        self.sock = sock
        self._flows: dict[int, EchoFlow] = {}  # our identifier -> flow
        self._idents: dict[Flow, int] = {}
        self._candidates = itertools.cycle(range(1, 0x10000))
        for _ in range(random.randrange(0x10000)):
            next(self._candidates)
        self._scope = trio.CancelScope()

    @classmethod
    def open(cls, runtime: NamespaceRuntime) -> RawIcmp:
        """Raises ``PermissionError`` without CAP_NET_RAW."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        sock.setblocking(False)
        raw = cls(runtime, sock)
        runtime.nursery.start_soon(raw._receive)
        return raw

    def add(self, flow: EchoFlow) -> None:
        if len(self._flows) >= 0xFFFF:
            raise OSError("no ICMP identifier left")
        ident = next(self._candidates)
        while ident in self._flows:
            ident = next(self._candidates)
        self._flows[ident] = flow
        self._idents[flow] = ident

    def remove(self, flow: Flow) -> None:
        ident = self._idents.pop(flow, None)
        if ident is not None:
            del self._flows[ident]

    def send(self, flow: Flow, payload: bytes | memoryview) -> None:
        try:
            request = icmp.IcmpMessage.parse(payload, verify_checksum=False)
        except WireError:
            return  # the core only sends echo requests it parsed
        ours = icmp.IcmpMessage.echo(
            icmp.TYPE_ECHO_REQUEST, self._idents[flow], request.seq, request.payload
        )
        self.sock.sendto(ours.encode(), (str(flow.host_address), 0))

    def close(self) -> None:
        self._scope.cancel()

    async def _receive(self) -> None:
        try:
            with self._scope:
                while True:
                    await trio.lowlevel.wait_readable(self.sock)
                    self._drain()
        finally:
            self.sock.close()

    def _drain(self) -> None:
        while True:
            try:
                data = self.sock.recv(65535)
            except BlockingIOError:
                return
            try:
                packet = ipv4.IPv4Packet.parse(data, verify_checksum=False)
                message = icmp.IcmpMessage.parse(packet.payload)
            except WireError:
                continue
            flow = self._flows.get(message.ident)
            if (
                message.type == icmp.TYPE_ECHO_REPLY
                and flow is not None
                and packet.src == flow.host_address
            ):
                self.runtime.report_received(flow, bytes(packet.payload))
