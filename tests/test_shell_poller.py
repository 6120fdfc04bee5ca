"""The namespace's epoll set: events reach their handler, a round ends in one flush, and
a socket no longer watched is not heard of, hung up or not."""

from __future__ import annotations

import socket

import trio

from slirpnet.shell.poller import IN, OUT, Poller


async def test_a_round_hands_each_socket_its_events_then_flushes_once() -> None:
    poller = Poller()
    heard: list[tuple[str, int]] = []
    flushes: list[list[tuple[str, int]]] = []
    a, a_peer = socket.socketpair()
    b, b_peer = socket.socketpair()
    with a, a_peer, b, b_peer:
        poller.watch(a.fileno(), IN, lambda events: heard.append(("a", events)))
        poller.watch(b.fileno(), IN | OUT, lambda events: heard.append(("b", events)))
        a_peer.send(b"x")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poller.run, lambda: flushes.append(list(heard)))
            with trio.fail_after(5):
                while not flushes:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert sorted(heard[:2]) == [("a", IN), ("b", OUT)]
    assert flushes[0] == heard[:2]  # the flush came after both


async def test_a_socket_watched_for_nothing_is_forgotten_even_when_hung_up() -> None:
    poller = Poller()
    heard: list[int] = []
    sock, peer = socket.socketpair()
    with sock:
        poller.watch(sock.fileno(), IN, heard.append)
        poller.watch(sock.fileno(), 0, heard.append)  # epoll would still say "hung up"
        assert len(poller) == 0
        peer.close()
        rounds = 0

        def flushed() -> None:
            nonlocal rounds
            rounds += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(poller.run, flushed)
            await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
    assert heard == [] and rounds == 0


async def test_sockets_are_forgotten_after_the_task_has_ended() -> None:
    """A signal cancels every task at once: a VM's port may close its flows' sockets
    after the poller's task is gone, so the set stays open until the poller is left."""
    with Poller() as poller, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        poller.watch(sock.fileno(), IN, lambda events: None)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poller.run, lambda: None)
            await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        poller.forget(sock.fileno())
        assert len(poller) == 0
