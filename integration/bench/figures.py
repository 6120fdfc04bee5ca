"""The comparison's figures: samples per column, medians, speed-ups and targets; table and JSON.

The columns are slirpnet's native build, its pure-Python reference (``SLIRPNET_PURE=1``)
and libslirp.  A speed-up above 1 always means slirpnet's native build is ahead:
ours / theirs for rates, theirs / ours for times and costs; "vs pure" is the same
ratio of the native build over the pure one, the gain of the native code.  Medians of
the rounds are compared, since a neighbour's burst of work on a shared machine hits
one sample, not all of them.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

NATIVE, PURE, LIBSLIRP = "slirpnet", "pure", "libslirp"
COLUMNS = (NATIVE, PURE, LIBSLIRP)


@dataclass
class Figure:
    key: str
    label: str
    unit: str
    higher_is_better: bool
    samples: dict[str, list[float]] = field(default_factory=dict)  # by column
    target: str = ""  # what is asked, in words
    met: bool | None = None  # None: no target
    note: str = ""  # more about the target, under the table (a stretch goal, say)

    def add(self, column: str, value: float) -> None:
        self.samples.setdefault(column, []).append(value)

    def median(self, column: str) -> float | None:
        values = self.samples.get(column)
        return statistics.median(values) if values else None

    def ratio(self, ours: str, theirs: str) -> float | None:
        """How far column ``ours`` is ahead of ``theirs`` (above 1: ahead)."""
        mine, other = self.median(ours), self.median(theirs)
        if not mine or not other:
            return None
        return mine / other if self.higher_is_better else other / mine

    def speedup(self) -> float | None:
        """The native build against libslirp."""
        return self.ratio(NATIVE, LIBSLIRP)

    def native_gain(self) -> float | None:
        """The native build against the pure-Python one."""
        return self.ratio(NATIVE, PURE)

    def expect(self, target: str, met: bool, note: str = "") -> None:
        self.target, self.met, self.note = target, met, note

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
            "native_gain": self.native_gain(),
            "target": self.target,
            "met": self.met,
            "note": self.note,
        }


def table(figures: list[Figure]) -> str:
    """A plain-text table, one figure per line; a target with a note is starred and the
    note follows the table."""
    width = max(len(f"{f.label} ({f.unit})") for f in figures)
    header = (
        f"{'figure':<{width}}  {NATIVE:>8}  {PURE:>8}  {LIBSLIRP:>8}  "
        f"{'speed-up':>8}  {'vs pure':>7}  target"
    )
    rows, notes = [], list(dict.fromkeys(f.note for f in figures if f.note))
    for figure in figures:
        verdict = {None: "", True: " ok", False: " MISSED"}[figure.met]
        star = "*" * (notes.index(figure.note) + 1) if figure.note else ""
        row = (
            f"{f'{figure.label} ({figure.unit})':<{width}}  "
            + "  ".join(f"{_number(figure.median(column)):>8}" for column in COLUMNS)
            + f"  {_times(figure.speedup()):>8}  {_times(figure.native_gain()):>7}"
            + f"  {figure.target}{star}{verdict}"
        )
        rows.append(row.rstrip())
    rule = "-" * max(len(line) for line in (header, *rows))
    return "\n".join(
        [header, rule, *rows, *(f"{'*' * (n + 1)} {note}" for n, note in enumerate(notes))]
    )


def _times(ratio: float | None) -> str:
    return "" if ratio is None else f"{ratio:.2f}x"


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if value < 10 else f"{value:.1f}"
