"""How the TUI writes numbers, durations, statuses and trends: plain strings and rich Text, no I/O.

What the CLI formats too (numbers, durations, statuses) comes from ``expt.formatting``; this module
adds what only the TUI draws. User text (descriptions, params, run names, errors, log lines) reaches a
widget as ``plain`` Text or through ``markup=False``, never as a markup string.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

from textual.markup import escape

from expt.formatting import STATUS_STYLES, duration, inert, number, plain, spread, status_text  # noqa: F401

SPARK_BLOCKS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float | None], width: int = 12) -> str:
    """The last ``width`` values as block characters, scaled between their minimum and maximum."""
    shown = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)][-width:]
    if not shown:
        return ""
    low, high = min(shown), max(shown)
    if high == low:
        return SPARK_BLOCKS[3] * len(shown)
    top = len(SPARK_BLOCKS) - 1
    return "".join(SPARK_BLOCKS[round((v - low) / (high - low) * top)] for v in shown)


def levels(values: Sequence[float | None], top: float = 100.0) -> str:
    """One block per value on a fixed scale from 0 to ``top`` (35% always draws the same block, unlike
    ``sparkline``'s min-max scale); a space where there is no value."""
    top_block = len(SPARK_BLOCKS) - 1
    return "".join(SPARK_BLOCKS[min(top_block, max(0, int(v / top * len(SPARK_BLOCKS))))]
                   if isinstance(v, (int, float)) and math.isfinite(v) else " " for v in values)


def binned(values: Sequence[float | None], first: int, width: int,
           how: Callable[[list[float]], float] = max) -> list[float | None]:
    """``values`` (samples number ``first`` onwards) in at most ``width`` bins of ``ceil(len / width)`` samples,
    aligned to the sample number so that a bin keeps its samples as new ones arrive: each bin's ``how`` (max,
    mean), None for a bin without a value."""
    if not values or width <= 0:
        return []
    size = max(1, math.ceil(len(values) / width))
    bins: dict[int, list[float]] = {}
    for i, value in enumerate(values):
        shown = bins.setdefault((first + i) // size, [])
        if isinstance(value, (int, float)) and math.isfinite(value):
            shown.append(value)
    return [how(bins[k]) if bins[k] else None for k in sorted(bins)[-width:]]


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def gib(mb: float | None) -> str:
    return "" if mb is None else f"{mb / 1024:.1f}"


def truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def as_markup(text: object) -> str:
    """User text for the few places that take only a markup string (the command palette's help): inert,
    its brackets escaped."""
    return escape(inert(text))
