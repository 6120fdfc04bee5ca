"""Per-VM counters: traffic each way, every dropped frame under its reason, and events."""

from __future__ import annotations

from collections import Counter

from attrs import define, field


@define
class Stats:
    frames_in: int = 0  # from the VM
    bytes_in: int = 0
    frames_out: int = 0  # to the VM
    bytes_out: int = 0
    drops: Counter[str] = field(factory=Counter)  # frames not used, by reason
    events: Counter[str] = field(factory=Counter)  # things worth counting that are not drops

    def drop(self, reason: str) -> None:
        self.drops[reason] += 1

    def count(self, event: str) -> None:
        self.events[event] += 1
