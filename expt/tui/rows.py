"""What the runs table shows of a run, read from runs.db in a thread, and the filter language of `/`.

A ``RunRow`` is plain data (a ``Run`` with its latest loss, the tail of its main metric and,
while it runs, its latest load: GPU utilisation or CPU percent from its ``sys/`` lines), built
off the event loop and handed to the screens in messages. The `/` filter is an
``expt.query.Query`` with two faces: a SQL condition for loading a page of runs, and a predicate for
the live updates, so a run that starts matching while the screen is open appears in it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterable

from expt.query import Query
from expt.store import Run, Store

LOSS_KEYS = ("train_loss", "loss")
TREND_POINTS = 8


@dataclass(frozen=True)
class RunRow:
    """One run as the runs table shows it."""

    run: Run
    loss: float | None = None
    trend: tuple[float, ...] = ()
    load: float | None = None  # an active run's latest GPU utilisation or CPU percent (its load_key)

    @property
    def rid(self) -> int:
        return self.run.rid

    @property
    def id(self) -> str:
        return self.run.id

    @property
    def version(self) -> int:
        return self.run.version

    def elapsed(self, now: float | None = None) -> float | None:
        run = self.run
        if run.started_at is None:
            return None
        end = run.ended_at if run.ended_at is not None else (now or time.time()) if run.active else None
        return None if end is None else max(0.0, end - run.started_at)

    def eta(self, now: float | None = None) -> float | None:
        """Seconds left at the pace of the epochs done so far (None when it cannot be told)."""
        run = self.run
        if run.status != "running" or not run.epochs or not run.epoch or run.epoch >= run.epochs:
            return None
        elapsed = self.elapsed(now)
        return None if elapsed is None else elapsed / run.epoch * (run.epochs - run.epoch)

    @property
    def progress(self) -> str:
        run = self.run
        return f"{run.epoch}/{run.epochs}" if run.epochs and run.epoch is not None else ""

    @property
    def load_text(self) -> str:
        """``g0 35%`` (on cuda:0, at 35% utilisation), ``cpu 45%``; "" when no load is known (the run ended)."""
        short = short_device(self.run.device)
        return f"{short} {self.load:.0f}%" if self.load is not None and short else ""


def short_device(device: str | None) -> str:
    """``cuda:0#2`` -> ``g0``, ``cpu#1`` -> ``cpu``; any other name (a Slurm cluster) as it is."""
    name = (device or "").split("#")[0]
    return "g" + name[5:] if name.startswith("cuda:") else name


def load_key(device: str | None) -> str | None:
    """The ``sys/`` metric that says how busy a run on ``device`` keeps it: its GPU's utilisation, or for a CPU run
    its process tree's CPU percent; None where the device is not known (a Slurm run)."""
    name = (device or "").split("#")[0]
    if name.startswith("cuda:") and name[5:].isdigit():
        return f"sys/gpu{name[5:]}/util"
    return "sys/cpu_percent" if name == "cpu" else None


def load_rows(store: Store, runs: list[Run], points: int = TREND_POINTS) -> dict[int, RunRow]:
    """Rows for ``runs`` (by rid): a few indexed queries per metric key, never a scan of the metrics."""
    losses: dict[int, list[float | None]] = {}
    for key in LOSS_KEYS:
        missing = [r for r in runs if r.rid not in losses]
        if not missing:
            break
        losses.update(store.recent_values(missing, key, 1))
    trends: dict[int, list[float | None]] = {}
    by_metric: dict[str, list[Run]] = {}
    for run in runs:
        if run.metric:
            by_metric.setdefault(run.metric, []).append(run)
    for metric, group in by_metric.items():
        trends.update(store.recent_values(group, metric, points))
    loads: dict[int, float | None] = {}
    by_load: dict[str, list[Run]] = {}
    for run in runs:
        key = load_key(run.device) if run.active else None
        if key is not None:
            by_load.setdefault(key, []).append(run)
    for key, group in by_load.items():
        loads.update(store.last_values(group, key))
    return {r.rid: RunRow(r, (losses.get(r.rid) or [None])[-1],
                          tuple(v for v in trends.get(r.rid, ()) if v is not None), loads.get(r.rid)) for r in runs}


# -- the filter ------------------------------------------------------------------------------------------

FILTER_HELP = ("words match id, experiment, status, params, tags; status=running  tag=best  "
               "best_top1 > 80 and mode = 'cbn'  not, or, ( )")


def parse_filter(text: str) -> Query:
    """The `/` filter's text as a Query (expt.query: the language of `expt ls --where`); raises QueryError."""
    return Query.parse(text, source="filter")


def matching(rows: Iterable[RunRow], where: Query) -> list[RunRow]:
    return [row for row in rows if where.matches(row.run)]
