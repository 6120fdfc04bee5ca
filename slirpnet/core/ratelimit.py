"""A token bucket: at most ``rate`` units a second, and ``burst`` at once (RFC 2697's idea)."""

from __future__ import annotations

from attrs import define, field


@define
class TokenBucket:
    rate: float  # tokens added per second
    burst: float  # the most the bucket holds
    tokens: float = field()
    updated: float | None = None  # when tokens were last added; None: never used

    @tokens.default
    def _full(self) -> float:
        return self.burst

    def take(self, now: float, amount: float = 1.0) -> bool:
        """Take ``amount`` tokens if there are that many; False (and nothing taken) if not."""
        if self.updated is not None and now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now if self.updated is None else max(self.updated, now)
        if self.tokens < amount:
            return False
        self.tokens -= amount
        return True
