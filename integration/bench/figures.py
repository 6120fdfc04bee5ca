"""The comparison's figures: samples per backend, medians, speed-ups and targets; table and JSON.

A speed-up above 1 always means slirpnet is ahead: slirpnet / libslirp for rates,
libslirp / slirpnet for times and costs.  Medians of the rounds are compared, since
a neighbour's burst of work on a shared machine hits one sample, not all of them.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

COLUMNS = ("slirpnet", "libslirp")


@dataclass
class Figure:
    key: str
    label: str
    unit: str
    higher_is_better: bool
    samples: dict[str, list[float]] = field(default_factory=dict)  # by column
    target: str = ""  # what is asked, in words
    met: bool | None = None  # None: no target

    def add(self, column: str, value: float) -> None:
        self.samples.setdefault(column, []).append(value)

    def median(self, column: str) -> float | None:
        values = self.samples.get(column)
        return statistics.median(values) if values else None

    def speedup(self) -> float | None:
        ours, theirs = self.median("slirpnet"), self.median("libslirp")
        if not ours or not theirs:
            return None
        return ours / theirs if self.higher_is_better else theirs / ours

    def expect(self, target: str, met: bool) -> None:
        self.target, self.met = target, met

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            **{
                column: {"median": self.median(column), "samples": self.samples.get(column, [])}
                for column in COLUMNS
            },
            "speedup": self.speedup(),
            "target": self.target,
            "met": self.met,
        }


def table(figures: list[Figure]) -> str:
    """A plain-text table, one figure per line."""
    width = max(len(f"{f.label} ({f.unit})") for f in figures)
    lines = [
        f"{'figure':<{width}}  {'slirpnet':>10}  {'libslirp':>10}  {'speed-up':>8}  target",
        "-" * (width + 50),
    ]
    for figure in figures:
        speedup = figure.speedup()
        verdict = {None: "", True: "  ok", False: "  MISSED"}[figure.met]
        lines.append(
            f"{f'{figure.label} ({figure.unit})':<{width}}  "
            f"{_number(figure.median('slirpnet')):>10}  {_number(figure.median('libslirp')):>10}  "
            f"{'' if speedup is None else f'{speedup:.2f}x':>8}  {figure.target}{verdict}"
        )
    return "\n".join(lines)


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if value < 10 else f"{value:.1f}"
