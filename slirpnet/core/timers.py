"""A deadline queue with lazy cancellation, for idle timeouts that move on every packet.

Pushing on every packet would cost a heap operation per frame.  Instead an
item carries its own ``deadline`` and is pushed once; when its entry comes due
the owner compares the item's current deadline and pushes it again if it moved.
An item that is done with is not looked for either; its entries stay until
``prune`` sweeps them out, which the owner does once there are enough of them.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Deadlines(Generic[T]):
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, T]] = []
        self._order = itertools.count()  # ties break by insertion, never by comparing items

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, when: float, item: T) -> None:
        heapq.heappush(self._heap, (when, next(self._order), item))

    def next_time(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def prune(self, dead: Callable[[T], bool]) -> None:
        """Drop the entries of ``dead`` items: until it comes due, an entry keeps its item
        (and all the item holds) alive."""
        self._heap = [entry for entry in self._heap if not dead(entry[2])]
        heapq.heapify(self._heap)

    def pop_due(self, now: float) -> list[T]:
        """Items whose entry is at or before ``now``; the caller checks they are still due."""
        due = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            due.append(heapq.heappop(heap)[2])
        return due
