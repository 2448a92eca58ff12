"""What the runs table shows of a run, read from runs.db in a thread, and the filter language of `/`.

A ``RunRow`` is plain data (a ``Run`` with its latest loss, the tail of its main metric and,
while it runs, its latest load: GPU utilisation or CPU percent from its ``sys/`` lines), built
off the event loop and handed to the screens in messages. ``RunFilter`` is one filter with two
faces: a SQL condition for loading a page of runs, and a predicate for the live updates, so a run
that starts matching while the screen is open appears in it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Iterable

import orjson

from expt.store import Run, Store

LOSS_KEYS = ("train_loss", "loss")
TREND_POINTS = 8
_PARAM_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


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

FILTER_HELP = "words match id, experiment, status, params; status=running  experiment=NAME  PARAM=VALUE"


def _value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


@dataclass(frozen=True)
class RunFilter:
    """Every term must hold: words (substrings), ``status=A,B``, ``experiment=NAME``, ``PARAM=VALUE``."""

    words: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    experiments: tuple[str, ...] = ()
    params: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def parse(cls, text: str) -> RunFilter:
        words: list[str] = []
        statuses: list[str] = []
        experiments: list[str] = []
        params: list[tuple[str, Any]] = []
        for token in text.split():
            key, sep, value = token.partition("=")
            if not sep:
                key, sep, value = token.partition(":")
            if not sep or not value or not _PARAM_KEY.match(key):
                words.append(token.lower())
            elif key in ("status", "s"):
                statuses.extend(v for v in value.split(",") if v)
            elif key in ("experiment", "exp", "e"):
                experiments.extend(v for v in value.split(",") if v)
            else:
                params.append((key, _value(value)))
        return cls(tuple(words), tuple(statuses), tuple(experiments), tuple(params))

    def __bool__(self) -> bool:
        return bool(self.words or self.statuses or self.experiments or self.params)

    def sql(self) -> tuple[str, list[Any]]:
        """A WHERE condition for ``Store.page`` / ``Store.count`` ("" when everything matches)."""
        terms: list[str] = []
        args: list[Any] = []
        if self.statuses:
            terms.append(f"status IN ({', '.join('?' * len(self.statuses))})")
            args += self.statuses
        if self.experiments:
            terms.append(f"experiment IN ({', '.join('?' * len(self.experiments))})")
            args += self.experiments
        for key, value in self.params:
            terms.append("json_extract(params, ?) = ?")
            args += [f'$."{key}"', int(value) if isinstance(value, bool) else value]
        for word in self.words:
            pattern = "%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            terms.append("(" + " OR ".join(f"{column} LIKE ? ESCAPE '\\'"
                                           for column in ("id", "experiment", "status", "params")) + ")")
            args += [pattern] * 4
        return " AND ".join(terms), args

    def matches(self, run: Run) -> bool:
        """The same test as ``sql()``, on a run already in memory."""
        if self.statuses and run.status not in self.statuses:
            return False
        if self.experiments and run.experiment not in self.experiments:
            return False
        for key, value in self.params:
            if key not in run.params or run.params[key] != value:
                return False
        if self.words:
            haystack = " ".join((run.id, run.experiment, run.status,
                                 orjson.dumps(run.params, option=orjson.OPT_SERIALIZE_NUMPY).decode())).lower()
            if not all(word in haystack for word in self.words):
                return False
        return True


def matching(rows: Iterable[RunRow], where: RunFilter) -> list[RunRow]:
    return [row for row in rows if where.matches(row.run)]
