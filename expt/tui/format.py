"""How the TUI writes numbers, durations, statuses and trends: plain strings and rich Text, no I/O.

What the CLI formats too (numbers, durations, statuses) comes from ``expt.formatting``; this module
adds what only the TUI draws. User text (descriptions, params, run names, errors, log lines) reaches a
widget as ``plain`` Text or through ``markup=False``, never as a markup string.
"""

from __future__ import annotations

import math
from typing import Sequence

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


def truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def as_markup(text: object) -> str:
    """User text for the few places that take only a markup string (the command palette's help): inert,
    its brackets escaped."""
    return escape(inert(text))
