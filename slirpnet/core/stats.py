"""Per-VM counters: traffic each way, every dropped frame under its reason, and events."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Stats:
    frames_in: int = 0  # from the VM
    bytes_in: int = 0
    frames_out: int = 0  # to the VM
    bytes_out: int = 0
    drops: Counter[str] = field(default_factory=Counter)  # frames not used, by reason
    # Things worth counting that are not drops.
    events: Counter[str] = field(default_factory=Counter)

    def drop(self, reason: str) -> None:
        self.drops[reason] += 1

    def count(self, event: str, amount: int = 1) -> None:
        self.events[event] += amount

    def add(self, other: Stats) -> None:
        """Fold ``other``'s counts into these."""
        self.frames_in += other.frames_in
        self.bytes_in += other.bytes_in
        self.frames_out += other.frames_out
        self.bytes_out += other.bytes_out
        self.drops.update(other.drops)
        self.events.update(other.events)
