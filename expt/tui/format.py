"""How the TUI writes numbers, durations, statuses and trends: plain strings and rich Text, no I/O.

The CLI has its own formatting in ``expt.cli.render``; the two front ends are independent
(import-linter), so the few functions both need are small enough to keep here too.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from rich.text import Text

STATUS_STYLES = {
    "queued": "dim", "starting": "cyan", "running": "bold cyan", "completed": "green",
    "failed": "bold red", "stopped": "yellow", "crashed": "bold magenta",
}
SPARK_BLOCKS = "▁▂▃▄▅▆▇█"


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, ""))


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(round(max(0.0, seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400 * 2:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def number(value: Any) -> str:
    """Short, readable numbers: 0.1234, 88.21, 12,345, 3e-05; lists and dicts element by element."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value).lower()
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value.is_integer() and abs(value) < 1e15:
            return number(int(value))
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            if abs(value) < 1:
                return f"{value:.4g}"
            return f"{value:.2f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:.1f}"
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(number(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={number(v)}" for k, v in value.items()) + "}"
    return str(value)


def spread(value: float) -> str:
    return f"{value:.2g}" if abs(value) < 100 else f"{value:,.0f}"


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
