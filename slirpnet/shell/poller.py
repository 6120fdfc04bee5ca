"""One epoll set for a namespace's host sockets, waited on by one task.

A trio task per connection (with its nursery, cancel scope and trio's own epoll
registration) cost about 100 µs of a connection's 500, measured on a
connect-request-close workload; a socket in this set costs an ``epoll_ctl`` or
two.  The set itself is one file descriptor that trio waits on, so the rest of the
server stays trio's.  Level-triggered: a handler that leaves data unread hears of
it again in the next round.

A round hands each ready socket's events to its handler, at most ``ROUND`` of
them, then calls ``after`` once (the runtime's flush): the handlers only tell the
core, which is what makes the round one batch.
"""

from __future__ import annotations

import select
from collections.abc import Callable

import trio

ROUND = 64  # events per round: then the flush, and a checkpoint for everyone else

IN = select.EPOLLIN
OUT = select.EPOLLOUT

Handler = Callable[[int], None]


class Poller:
    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._handlers: dict[int, Handler] = {}
        self._masks: dict[int, int] = {}

    def watch(self, fd: int, mask: int, handler: Handler) -> None:
        """Hear of ``mask`` (IN, OUT or both) on ``fd``; 0 stops hearing of it.

        Unregistered rather than kept with an empty mask: epoll reports hang-ups and
        errors whatever the mask, and level-triggered they would repeat every round.
        """
        before = self._masks.get(fd, 0)
        if mask == before:
            if mask:
                self._handlers[fd] = handler
            return
        if not mask:
            self.forget(fd)
            return
        if before:
            self._epoll.modify(fd, mask)
        else:
            self._epoll.register(fd, mask)
        self._masks[fd] = mask
        self._handlers[fd] = handler

    def forget(self, fd: int) -> None:
        """Hear no more of ``fd``: called before it is closed."""
        if self._masks.pop(fd, 0):
            self._epoll.unregister(fd)
        self._handlers.pop(fd, None)

    def __len__(self) -> int:
        return len(self._masks)

    async def run(self, after: Callable[[], None]) -> None:
        while True:
            await trio.lowlevel.wait_readable(self._epoll)
            for fd, events in self._epoll.poll(0, ROUND):
                # One closed in this round is gone from the handlers; its number
                # cannot be reused before the flush, which alone opens sockets.
                handler = self._handlers.get(fd)
                if handler is not None:
                    handler(events)
            after()

    def __enter__(self) -> Poller:
        return self

    def __exit__(self, *_: object) -> None:
        """Closed once no task runs ``run`` and no socket is left to forget."""
        self._epoll.close()
