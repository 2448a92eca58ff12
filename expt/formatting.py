"""How both front ends write numbers, durations and statuses: plain strings and rich Text, no I/O.

The CLI (``expt.cli.render``) and the TUI (``expt.tui.format``) are independent of each other
(import-linter); what they share lives here.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from rich.text import Text

STATUS_STYLES = {
    "queued": "dim", "starting": "cyan", "running": "bold cyan", "completed": "green",
    "failed": "bold red", "stopped": "yellow", "crashed": "bold magenta", "pruned": "blue",
}

SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float | None], width: int = 24) -> str:
    """A line of block characters for ``values`` (the last ``width``; None as a space)."""
    shown = list(values)[-width:]
    numbers = [v for v in shown if v is not None and math.isfinite(v)]
    if not numbers:
        return ""
    low, high = min(numbers), max(numbers)
    span = (high - low) or 1.0
    return "".join(" " if v is None or not math.isfinite(v) else SPARK[min(7, int((v - low) / span * 7.999))]
                   for v in shown)


_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]|\r(?!\n)")


def inert(text: object) -> str:
    """User text made safe for a terminal: control codes and bidi overrides are shown escaped (``\\x1b``), never obeyed.

    Newlines (``\\n``, ``\\r\\n``) and tabs stay; markup is the caller's concern (rich ``Text``, ``markup=False``).
    """
    return _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(text))


def plain(text: object, style: str = "") -> Text:
    """User text as a rich Text: never parsed as markup, control codes made inert."""
    from rich.text import Text  # here, not at the top: expt.track prints with inert() and must not import rich

    return Text(inert(text), style=style)


def status_text(status: str) -> Text:
    from rich.text import Text

    return Text(status, style=STATUS_STYLES.get(status, ""))


def duration(seconds: float | None) -> str:
    """12s, 3m07s, 5h02m, 3d04h."""
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
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, dict) for v in value):
        return tables_digest(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(number(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{inert(k)}={number(v)}" for k, v in value.items()) + "}"
    return inert(value)


def tables_digest(tables: Sequence[dict[str, Any]]) -> str:
    """A list of tables (e.g. a scaling recipe's stage table) in a few characters: its length and a short
    hash, so runs whose tables differ show different cells (`expt show --json` has them in full)."""
    import hashlib

    import orjson

    digest = hashlib.blake2s(orjson.dumps(list(tables), option=orjson.OPT_SORT_KEYS), digest_size=3).hexdigest()
    return f"[{len(tables)} tables #{digest}]"


def spread(value: float) -> str:
    """A ± or sd figure: two significant digits."""
    return f"{value:.2g}" if abs(value) < 100 else f"{value:,.0f}"


_spread = spread  # for the functions below, whose ``spread`` argument shadows it


def stat(value: Any, spread: bool = False) -> str:
    """An ``analysis.Stat`` as compare prints it: ``mean ±ci95``; with ``spread`` also ``sd`` (a single run, or
    values all the same, is its value)."""
    if value is None:
        return ""
    if value.n == 1 or value.std == 0:
        return number(value.mean)
    text = f"{number(value.mean)} ±{_spread(value.ci95)}"
    return f"{text} sd {_spread(value.std)}" if spread else text


def mean_ci(value: Any, runs: int = 1, pm: str = "±") -> str:
    """An ``analysis.Stat`` as a pivot table's cell: ``83.2 ± 1.4 (n=3)``; one value as itself, with ``(n=1)``
    when it stands for a cell of ``runs`` > 1 (the others not completed)."""
    if value is None:
        return ""
    if value.n == 1:
        return number(value.mean) + (" (n=1)" if runs > 1 else "")
    return f"{number(value.mean)} {pm} {_spread(value.ci95)} (n={value.n})"
