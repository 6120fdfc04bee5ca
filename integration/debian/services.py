"""Loopback services for the Debian guest's checks: an HTTP server the guest fetches from
(and waits on, for steps the host takes while the guest runs), and a DNS upstream that
speaks EDNS as real resolvers do.

Both listen on 127.0.0.1 at an ephemeral port, in the test's own trio nursery.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from scapy.layers.dns import DNS, DNSRROPT

from integration.services import DnsUpstream

_MAX_REQUEST = 16384
_EDNS_PAYLOAD = 1232  # the DNS flag day 2020 size, what resolvers and servers now offer
_DO = 0x8000  # DNSSEC OK, the top bit of the OPT record's flags (RFC 3225 §3)


class HttpServer:
    """HTTP/1.0 GET of ``/files/NAME`` (200 with the bytes) and ``/mark/NAME`` (200 once the
    host has called ``mark(NAME)``, else 404), one request per connection."""

    def __init__(self, files: dict[str, bytes], host: str = "127.0.0.1") -> None:
        self.files = files
        self.host = host  # a loopback address: the guest reaches it through the gateway
        self.port = 0
        self.requests: list[str] = []  # the paths asked for, in order
        self._marks: set[str] = set()

    def mark(self, name: str) -> None:
        self._marks.add(name)

    def wait_function(self) -> str:
        """A shell function for guest scripts: ``wait_host NAME SECONDS`` returns 0 once the
        host has called ``mark(NAME)``, 1 when SECONDS pass first."""
        return (
            "wait_host() {\n"
            "    i=0\n"
            '    while [ "$i" -lt "$2" ]; do\n'
            f'        curl -fsS "http://10.0.2.2:{self.port}/mark/$1" && return 0\n'
            "        sleep 1; i=$((i + 1))\n"
            "    done\n"
            "    return 1\n"
            "}\n"
        )

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host=self.host)
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            request = b""
            while b"\r\n\r\n" not in request and len(request) < _MAX_REQUEST:
                chunk = await stream.receive_some()
                if not chunk:
                    return
                request += chunk
            method, path, *_ = request.split(b"\r\n", 1)[0].decode(errors="replace").split()
            self.requests.append(path)
            status, body = self._respond(method, path)
            head = f"HTTP/1.0 {status}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            await stream.send_all(head.encode() + body)

    def _respond(self, method: str, path: str) -> tuple[str, bytes]:
        kind, _, name = path.lstrip("/").partition("/")
        if method != "GET":
            return "405 Method Not Allowed", b""
        if kind == "files" and name in self.files:
            return "200 OK", self.files[name]
        if kind == "mark" and name in self._marks:
            return "200 OK", f"{name}\n".encode()
        return "404 Not Found", b""


@asynccontextmanager
async def http_server(
    files: dict[str, bytes], host: str = "127.0.0.1"
) -> AsyncIterator[HttpServer]:
    server = HttpServer(files, host)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        yield server
        nursery.cancel_scope.cancel()


class EdnsDnsUpstream(DnsUpstream):
    """DnsUpstream that answers a query with an OPT record (RFC 6891 §6.1.1) when the query
    had one, as any resolver of today does: a guest's resolver that then falls back to plain
    DNS does so because of what came between."""

    def answer(self, message: bytes, transport: str) -> bytes | None:
        reply = super().answer(message, transport)
        if reply is None:
            return None
        options = [record for record in DNS(message).ar if isinstance(record, DNSRROPT)]
        if not options:
            return reply
        with_opt = DNS(reply)
        # The DO bit is copied from the query (RFC 3225 §3); the rest of the flags are zero.
        with_opt.ar = DNSRROPT(rclass=_EDNS_PAYLOAD, z=int(options[0].z) & _DO)
        with_opt.arcount = None  # counted again when built
        return bytes(with_opt)


@asynccontextmanager
async def edns_dns_upstream(records: dict[str, str]) -> AsyncIterator[EdnsDnsUpstream]:
    server = EdnsDnsUpstream(records)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        yield server
        nursery.cancel_scope.cancel()
