"""Formatting shared by the CLI commands: statuses, durations, numbers, run tables."""

from __future__ import annotations

import math
import time
from typing import Any, Sequence

from rich.table import Table
from rich.text import Text

from expt.analysis import Stat
from expt.store import Run

STATUS_STYLES = {
    "queued": "dim", "starting": "cyan", "running": "bold cyan", "completed": "green",
    "failed": "bold red", "stopped": "yellow", "crashed": "bold magenta",
}


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, ""))


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def when(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    fmt = "%H:%M:%S" if time.time() - timestamp < 86400 else "%Y-%m-%d %H:%M"
    return time.strftime(fmt, time.localtime(timestamp))


def number(value: Any) -> str:
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
            return f"{value:.4g}" if abs(value) < 1 else f"{value:.2f}".rstrip("0").rstrip(".") \
                if abs(value) < 100 else f"{value:.1f}"
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, dict) for v in value):
        return tables_digest(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(number(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={number(v)}" for k, v in value.items()) + "}"
    return str(value)


def tables_digest(tables: Sequence[dict[str, Any]]) -> str:
    """A list of tables (e.g. a scaling recipe's stage table) in a few characters: its length and a short
    hash, so runs whose tables differ show different cells (`expt show --json` has them in full)."""
    import hashlib

    import orjson

    digest = hashlib.blake2s(orjson.dumps(list(tables), option=orjson.OPT_SORT_KEYS), digest_size=3).hexdigest()
    return f"[{len(tables)} tables #{digest}]"


def stat(value: Stat | None, spread: bool = False) -> str:
    """``mean ±ci95``; with ``spread`` also ``sd`` (for seed groups; a single run is its value)."""
    if value is None:
        return ""
    if value.n == 1 or value.std == 0:
        return number(value.mean)
    text = f"{number(value.mean)} ±{_spread(value.ci95)}"
    return f"{text} sd {_spread(value.std)}" if spread else text


def _spread(value: float) -> str:
    return f"{value:.2g}" if abs(value) < 100 else f"{value:,.0f}"


def params_text(params: dict[str, Any], keys: Sequence[str]) -> str:
    return " ".join(f"{k}={number(params.get(k))}" for k in keys if k in params)


def progress(run: Run) -> str:
    """Epochs done of epochs planned (and the phase while the run is active)."""
    if not run.epochs or run.epoch is None:
        return ""
    phase = f" {run.phase}" if run.phase and run.active else ""
    return f"{run.epoch}/{run.epochs}{phase}"


def runs_table(runs: Sequence[Run], differing: Sequence[str], title: str | None = None) -> Table:
    table = Table(title=title, header_style="bold", pad_edge=False, box=None)
    table.add_column("id", style="bold", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("params" if differing else "experiment", overflow="fold")
    table.add_column("best", justify="right", no_wrap=True)
    table.add_column("epoch", justify="right", no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    table.add_column("created", no_wrap=True, style="dim")
    for run in runs:
        best = run.best
        best_text = f"{number(best)}" if best is not None else ""
        table.add_row(run.id, status_text(run.status),
                      params_text(run.params, differing) if differing else run.experiment,
                      best_text, progress(run), duration(run.duration), when(run.created_at))
    return table


Series = tuple[str, list[int], list[float]]  # label, steps, values


def curves_chart(lines: Sequence[Series], title: str, width: int, height: int = 16, xlabel: str = "epoch"
                 ) -> Text | None:
    """Curves drawn in the terminal with plotext (None when no curve has two points)."""
    if not lines or all(len(steps) < 2 for _, steps, _ in lines):
        return None
    import plotext as plt

    plt.clf()
    plt.plotsize(min(width, 100), height)
    plt.theme("clear")
    for label, steps, values in lines[:12]:
        plt.plot(steps, values, label=label)
    plt.title(title)
    plt.xlabel(xlabel)
    return Text.from_ansi(plt.build())
