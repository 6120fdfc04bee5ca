"""A small HTTP/1.1 server on trio, for the control API and the metrics endpoint.

h11 does the protocol (it is the sans-I/O design our core follows); this module
only moves bytes.  Handlers are plain functions from a ``Request`` to a
``Response``: everything they answer from is in memory.  Every connection is
bounded in time and in request size, so a stuck or hostile client costs one
task and a little memory, never the server.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import h11
import trio
from attrs import frozen

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
IDLE_TIMEOUT = 30.0  # for a request to arrive whole
READ_SIZE = 16 * 1024
JSON = "application/json"


@frozen
class Request:
    method: str
    path: str  # percent-decoded, without the query
    query: dict[str, str]
    body: bytes

    def json(self) -> Any:
        if not self.body:
            return {}
        try:
            return json.loads(self.body)
        except ValueError as error:
            raise HttpError(400, f"the body is not JSON: {error}") from None


@frozen
class Response:
    status: int
    body: bytes
    content_type: str = JSON

    @classmethod
    def json(cls, value: object, status: int = 200) -> Response:
        return cls(status, json.dumps(value, indent=1).encode() + b"\n")


class HttpError(Exception):
    """An answer other than success, with the reason as a JSON body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def response(self) -> Response:
        return Response.json({"error": self.message, "status": self.status}, self.status)


Handler = Callable[[Request], Response]


async def serve_http(listener: trio.abc.Listener[trio.abc.Stream], handler: Handler) -> None:
    async with listener, trio.open_nursery() as nursery:
        while True:
            try:
                stream = await listener.accept()
            except OSError as error:  # EMFILE and the like: keep serving
                log.warning("control connection not accepted: %s", error)
                await trio.sleep(0.1)
                continue
            nursery.start_soon(_connection, stream, handler)


async def _connection(stream: trio.abc.Stream, handler: Handler) -> None:
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_BODY)
    async with stream:
        try:
            while True:
                with trio.move_on_after(IDLE_TIMEOUT):
                    request = await _read_request(connection, stream)
                if request is None:
                    return
                response = _answer(handler, request)
                await _send(connection, stream, response)
                if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
                    return
                connection.start_next_cycle()
        except (h11.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            return


def _answer(handler: Handler, request: Request) -> Response:
    try:
        return handler(request)
    except HttpError as error:
        return error.response()
    except Exception:
        log.exception("control request %s %s failed", request.method, request.path)
        return HttpError(500, "internal error: see the server's log").response()


async def _read_request(connection: h11.Connection, stream: trio.abc.Stream) -> Request | None:
    head: h11.Request | None = None
    body = bytearray()
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(READ_SIZE)
            connection.receive_data(bytes(data))
            continue
        if isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                raise h11.RemoteProtocolError("request body too large")
        elif isinstance(event, h11.EndOfMessage) and head is not None:
            target = urlsplit(head.target.decode("ascii", "replace"))
            return Request(
                method=head.method.decode("ascii"),
                path=unquote(target.path),
                query=dict(parse_qsl(target.query)),
                body=bytes(body),
            )
        else:  # ConnectionClosed, or a close before a whole request
            return None


async def _send(connection: h11.Connection, stream: trio.abc.Stream, response: Response) -> None:
    headers = [
        ("Content-Type", response.content_type),
        ("Content-Length", str(len(response.body))),
    ]
    events = (
        h11.Response(status_code=response.status, headers=headers),
        h11.Data(data=response.body),
        h11.EndOfMessage(),
    )
    await stream.send_all(b"".join(connection.send(event) or b"" for event in events))
