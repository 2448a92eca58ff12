"""Formatting shared by the CLI commands: statuses, durations, numbers, run tables."""

from __future__ import annotations

import time
from typing import Any, Sequence

from rich.text import Text

from expt.formatting import STATUS_STYLES, duration, inert, number, plain, stat, status_text, tables_digest  # noqa: F401
from expt.store import Run


def when(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    fmt = "%H:%M:%S" if time.time() - timestamp < 86400 else "%Y-%m-%d %H:%M"
    return time.strftime(fmt, time.localtime(timestamp))


def params_text(params: dict[str, Any], keys: Sequence[str]) -> str:
    return " ".join(f"{inert(k)}={number(params.get(k))}" for k in keys if k in params)


def progress(run: Run) -> str:
    """Epochs done of epochs planned (and the phase while the run is active)."""
    if not run.epochs or run.epoch is None:
        return ""
    phase = f" {run.phase}" if run.phase and run.active else ""
    return f"{run.epoch}/{run.epochs}{phase}"


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
