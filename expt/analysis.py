"""Comparing runs: what differs, groups of seeds, mean and confidence intervals, which value is best.

Few-shot results swing with the sampled images, so runs that differ only in their
seed are grouped and summarised as mean, standard deviation and a 95% confidence
interval (Student's t) with n. Pure Python: used by the CLI and the TUI alike.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from expt.core.runfiles import is_sys_key
from expt.store import Run

SEED_KEYS = ("seed",)

# Two-sided 97.5% quantiles of Student's t for 1..30 degrees of freedom; the normal value beyond.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t_quantile(df: int) -> float:
    return _T975[df - 1] if 1 <= df <= len(_T975) else 1.960


@dataclass(frozen=True)
class Stat:
    """Mean, sample standard deviation and 95% CI half-width of n values."""

    mean: float
    std: float
    ci95: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Stat | None:
        values = [float(v) for v in values if _is_number(v)]
        if not values:
            return None
        if len(values) == 1:
            return cls(values[0], 0.0, 0.0, 1)
        std = statistics.stdev(values)
        return cls(statistics.fmean(values), std, t_quantile(len(values) - 1) * std / math.sqrt(len(values)),
                   len(values))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def differing_keys(dicts: Sequence[dict[str, Any]], ignore: Iterable[str] = ()) -> list[str]:
    """Keys whose values are not the same in every dict (a missing key counts as a value)."""
    ignore = set(ignore)
    keys = list(dict.fromkeys(k for d in dicts for k in d))
    missing = object()
    return [k for k in keys if k not in ignore and len({_freeze(d.get(k, missing)) for d in dicts}) > 1]


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


@dataclass
class Group:
    """Runs with the same recipe and params but for the seed (a group of one is a plain run)."""

    runs: list[Run]

    @property
    def first(self) -> Run:
        return self.runs[0]

    @property
    def label(self) -> str:
        if len(self.runs) == 1:
            return self.first.id
        experiments = {r.experiment for r in self.runs}
        if len(experiments) == 1:
            return f"{self.first.experiment}-{{{','.join(str(r.seq) for r in self.runs)}}}"
        return "+".join(r.id for r in self.runs)

    @property
    def params(self) -> dict[str, Any]:
        return {k: v for k, v in self.first.params.items() if k not in SEED_KEYS}

    def stat(self, key: str) -> Stat | None:
        return Stat.of(r.summary.get(key) for r in self.runs)


def group_by_seed(runs: Sequence[Run]) -> list[Group]:
    """Groups in order of first appearance."""
    groups: dict[Any, Group] = {}
    for run in runs:
        key = (run.recipe, _freeze({k: v for k, v in run.params.items() if k not in SEED_KEYS}))
        groups.setdefault(key, Group([])).runs.append(run)
    return list(groups.values())


def direction(key: str, runs: Sequence[Run] = ()) -> str | None:
    """'max' or 'min' when a larger or smaller value of ``key`` is better, None when neither is."""
    for run in runs:
        if run.metric and key in (run.metric, f"best_{run.metric}", f"final_{run.metric}"):
            return run.goal
    lowered = key.lower()
    if "loss" in lowered or lowered.endswith("error") or lowered.startswith("precision_drop"):
        return "min"
    if any(word in lowered for word in ("top1", "top5", "acc", "precision", "map", "recall", "f1")):
        return "max"
    return None


def numeric_summary_keys(runs: Sequence[Run], sys: bool = False) -> list[str]:
    """Summary keys holding numbers in at least one run: the recipes' own columns first (their results
    table), then the ranking metric, then the rest; the system metrics' (peak memory ...) only with ``sys``."""
    keys = list(dict.fromkeys(k for r in runs for k, v in r.summary.items()
                              if _is_number(v) and (sys or not is_sys_key(k))))
    columns = [k for k in recipe_columns(runs) if k in keys]
    first = [f"best_{r.metric}" for r in runs if r.metric and f"best_{r.metric}" in keys]
    return list(dict.fromkeys(columns + first + keys))


def recipe_columns(runs: Sequence[Run]) -> list[str]:
    """The summary keys the runs' recipes declare as their results table (``@recipe(columns=...)``)."""
    from expt.core.recipes import all_recipes

    recipes = all_recipes()
    names = dict.fromkeys(r.recipe for r in runs)
    return list(dict.fromkeys(k for name in names if name in recipes for k in recipes[name].columns))


def default_sort(runs: Sequence[Run]) -> str | None:
    """The summary key to order runs by when none is asked for: their recipe's ``sort``, if they share one."""
    from expt.core.recipes import all_recipes

    names = {r.recipe for r in runs}
    recipe = all_recipes().get(names.pop()) if len(names) == 1 else None
    return recipe.sort if recipe is not None else None


def best_index(values: Sequence[float | None], goal: str | None) -> int | None:
    """Position of the best value, or None without a goal or with fewer than two numbers."""
    numbers = [(v, i) for i, v in enumerate(values) if _is_number(v)]
    if goal is None or len(numbers) < 2:
        return None
    return (max if goal == "max" else min)(numbers)[1]


def compare_data(runs: Sequence[Run], sys: bool = False) -> dict[str, Any]:
    """The ``expt compare --json`` contract: runs, params_diff, summary (one value per run), groups; the system
    metrics' summary keys only with ``sys``."""
    keys = differing_keys([r.params for r in runs])
    summary_keys = numeric_summary_keys(runs, sys) + [k for r in runs for k, v in r.summary.items()
                                                       if not _is_number(v)]
    groups = group_by_seed(runs)
    return {
        "runs": [r.id for r in runs],
        "params_diff": {k: [r.params.get(k) for r in runs] for k in keys},
        "summary": {k: [r.summary.get(k) for r in runs] for k in dict.fromkeys(summary_keys)},
        "groups": [{"runs": [r.id for r in g.runs], "label": g.label,
                    "stats": {k: s.__dict__ for k in numeric_summary_keys(g.runs, sys) if (s := g.stat(k))}}
                   for g in groups],
    }
