"""The ``[experiments.NAME.search]`` table: which sampler, how many trials, which metric, the space.

Parsing and validation only (no Optuna here: experiments.toml is read by every command and the TUI);
``expt.core.study`` drives the study itself. A space entry is a list (categorical) or a range table
``{low, high, log}`` (an int range where the parameter is an int, else a float range). A sweep beside a
search joins the space as categorical choices; a key may be searched or swept, not both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from expt.params import ParamSet

SAMPLERS = ("tpe", "random", "cmaes", "grid", "qmc")
PRUNERS = ("none", "median", "hyperband", "successive_halving")
DIRECTIONS = ("maximize", "minimize")
SEARCH_KEYS = ("sampler", "trials", "metric", "direction", "pruner", "seed", "space", "startup_trials",
               "pruner_startup", "pruner_warmup", "parallel")
RANGE_KEYS = ("low", "high", "log", "step")
DEFAULT_TRIALS = 20


@dataclass(frozen=True)
class Dimension:
    """One searched parameter: ``kind`` float, int or categorical."""

    name: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    def to_json(self) -> dict[str, Any]:
        if self.kind == "categorical":
            return {"name": self.name, "kind": self.kind, "choices": list(self.choices)}
        return {"name": self.name, "kind": self.kind, "low": self.low, "high": self.high, "log": self.log,
                "step": self.step}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Dimension:
        return cls(data["name"], data["kind"], data.get("low"), data.get("high"), bool(data.get("log")),
                   data.get("step"), tuple(data.get("choices") or ()))

    def describe(self) -> str:
        if self.kind == "categorical":
            return "[" + ", ".join(map(str, self.choices)) + "]"
        return f"{self.low:g} .. {self.high:g}" + (" (log)" if self.log else "") + \
            (f" step {self.step:g}" if self.step else "")


@dataclass(frozen=True)
class SearchSpec:
    """A validated search table. ``metric`` is a summary key (the value told to Optuna); ``prune_on`` the
    per-epoch metric the pruner reads."""

    sampler: str
    trials: int
    metric: str
    direction: str
    pruner: str
    seed: int
    space: dict[str, Dimension] = field(default_factory=dict)
    startup_trials: int | None = None
    pruner_startup: int = 5
    pruner_warmup: int = 0
    parallel: int = 0  # most trials in flight at once (0: as many as the pool has free slots)

    @property
    def prune_on(self) -> str:
        return self.metric[len("best_"):] if self.metric.startswith("best_") else self.metric

    @property
    def grid_size(self) -> int:
        return math.prod(len(d.choices) for d in self.space.values()) if self.space else 0

    def to_json(self) -> dict[str, Any]:
        return {"sampler": self.sampler, "trials": self.trials, "metric": self.metric, "direction": self.direction,
                "pruner": self.pruner, "seed": self.seed, "space": [d.to_json() for d in self.space.values()],
                "startup_trials": self.startup_trials, "pruner_startup": self.pruner_startup,
                "pruner_warmup": self.pruner_warmup, "parallel": self.parallel}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SearchSpec:
        space = {d["name"]: Dimension.from_json(d) for d in data.get("space", [])}
        return cls(data["sampler"], data["trials"], data["metric"], data["direction"], data["pruner"], data["seed"],
                   space, data.get("startup_trials"), data.get("pruner_startup", 5), data.get("pruner_warmup", 0),
                   data.get("parallel", 0))


Report = Callable[[tuple[str, ...], str, str], None]  # (key path, where, message): config's _Checker.problem


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check(name: str, table: Any, spec: ParamSet, *, metric: str, goal: str, sweep: dict[str, list[Any]],
          problem: Report, repeat: int = 1, cases: list | None = None) -> SearchSpec | None:
    """Validate ``[experiments.NAME.search]``; every problem goes to ``problem`` (one line each)."""
    path = ("experiments", name, "search")
    where = f"{name}.search"
    if not isinstance(table, dict):
        problem(path, where, "must be a table: [experiments.NAME.search] with sampler, trials and a space")
        return None
    before = _Counter(problem)
    report = before.report
    for key in table:
        if key not in SEARCH_KEYS:
            import difflib

            close = difflib.get_close_matches(key, SEARCH_KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            report(path + (key,), f"{where}.{key}", f"unknown search setting{hint}; settings: {', '.join(SEARCH_KEYS)}")
    sampler = table.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        import difflib

        close = difflib.get_close_matches(str(sampler), SAMPLERS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        report(path + ("sampler",), f"{where}.sampler", f"unknown sampler {sampler!r}{hint}; samplers: "
               f"{', '.join(SAMPLERS)}")
    pruner = table.get("pruner", "none")
    if pruner not in PRUNERS:
        report(path + ("pruner",), f"{where}.pruner", f"unknown pruner {pruner!r}; pruners: {', '.join(PRUNERS)}")
    ints = {}
    for key, default, low in (("trials", None, 1), ("seed", 0, 0), ("startup_trials", None, 0),
                              ("pruner_startup", 5, 0), ("pruner_warmup", 0, 0), ("parallel", 0, 0)):
        value = table.get(key, default)
        if value is not None and (not _int(value) or value < low or value > 2**31):
            report(path + (key,), f"{where}.{key}", f"expected an int from {low}, got {value!r}")
            value = default
        ints[key] = value
    chosen_metric = table.get("metric", f"best_{metric}")
    if not isinstance(chosen_metric, str) or not chosen_metric:
        report(path + ("metric",), f"{where}.metric", f"expected a metric name, got {chosen_metric!r}")
        chosen_metric = f"best_{metric}"
    direction = table.get("direction", "maximize" if goal == "max" else "minimize")
    direction = {"max": "maximize", "min": "minimize"}.get(direction, direction)
    if direction not in DIRECTIONS:
        report(path + ("direction",), f"{where}.direction", f"expected maximize or minimize, got {direction!r}")
    if repeat > 1:
        report(("experiments", name, "repeat"), f"{name}.repeat", "a search runs one run per trial: drop 'repeat' "
               "(or search 'seed')")
    if cases:
        report(("experiments", name, "cases"), f"{name}.cases", "cases and a search do not combine: search the "
               "keys instead (a list is categorical)")
    space = _check_space(name, table.get("space"), spec, sweep, report, sampler)
    if before.count:
        return None
    trials = ints["trials"]
    if sampler == "grid":
        trials = min(trials, math.prod(len(d.choices) for d in space.values())) if trials else \
            math.prod(len(d.choices) for d in space.values())
    return SearchSpec(sampler, trials or DEFAULT_TRIALS, chosen_metric, direction, pruner, ints["seed"], space,
                      ints["startup_trials"], ints["pruner_startup"], ints["pruner_warmup"], ints["parallel"])


class _Counter:
    def __init__(self, problem: Report):
        self.problem = problem
        self.count = 0

    def report(self, path: tuple[str, ...], where: str, message: str) -> None:
        self.count += 1
        self.problem(path, where, message)


def _check_space(name: str, space: Any, spec: ParamSet, sweep: dict[str, list[Any]], report: Report,
                 sampler: Any) -> dict[str, Dimension]:
    path = ("experiments", name, "search", "space")
    where = f"{name}.search.space"
    if space is None:
        space = {}
    if not isinstance(space, dict):
        report(path, where, "must be a table: [experiments.NAME.search.space] with KEY = {low, high} or a list")
        return {}
    if not space and not sweep:
        report(("experiments", name, "search"), f"{name}.search", "nothing to search: add "
               "[experiments.NAME.search.space] with KEY = {low = ..., high = ...} or KEY = [choices]")
        return {}
    dims: dict[str, Dimension] = {}
    for key, entry in space.items():
        at, here = path + (key,), f"{where}.{key}"
        param = spec.get(key)
        if param is None:
            suggestion = spec.suggest(key)
            hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
            report(at, here, f"not a parameter of the recipe{hint}")
            continue
        if key in sweep:
            report(at, here, f"{key!r} is also swept ([experiments.{name}.sweep]): search it or sweep it, not both")
            continue
        if isinstance(entry, list):
            if not entry:
                report(at, here, "an empty list: give the choices to search")
                continue
            bad = next((error for value in entry if (error := param.check(value))), None)
            if bad:
                report(at, here, bad)
                continue
            dims[key] = Dimension(key, "categorical", choices=tuple(_as_param(param, v) for v in entry))
            continue
        if not isinstance(entry, dict):
            report(at, here, f"expected {{low = ..., high = ...}} or a list of choices, got {entry!r}")
            continue
        unknown = [k for k in entry if k not in RANGE_KEYS]
        if unknown:
            report(at, here, f"unknown range key {unknown[0]!r}; a range has {', '.join(RANGE_KEYS)}")
            continue
        if "low" not in entry or "high" not in entry:
            report(at, here, "a range needs both low and high")
            continue
        low, high, log, step = entry["low"], entry["high"], entry.get("log", False), entry.get("step")
        numeric = [t for t in param.types if t in (int, float)]
        if not numeric:
            report(at, here, f"{key} is {param.type_name()}, not a number: give a list of choices")
            continue
        if not _number(low) or not _number(high):
            report(at, here, f"low and high must be finite numbers, got {low!r} and {high!r}")
            continue
        if not isinstance(log, bool):
            report(at, here, f"log must be true or false, got {log!r}")
            continue
        if step is not None and (not _number(step) or step <= 0):
            report(at, here, f"step must be a positive number, got {step!r}")
            continue
        if low > high:
            report(at, here, f"low ({low:g}) is above high ({high:g})")
            continue
        if log and low <= 0:
            report(at, here, f"log = true needs low > 0, got {low:g}")
            continue
        if log and step is not None:
            report(at, here, "log and step do not combine")
            continue
        kind = "float" if float in numeric else "int"
        if kind == "int" and not (_int(low) and _int(high) and (step is None or _int(step))):
            report(at, here, f"{key} is an int: low, high and step must be ints, got {low!r} and {high!r}")
            continue
        bad = param.check(low) or param.check(high)
        if bad:
            report(at, here, bad)
            continue
        if kind == "float":
            low, high = float(low), float(high)
        dims[key] = Dimension(key, kind, low, high, log, step)
    for key, values in sweep.items():  # a sweep beside a search is a categorical dimension of it
        if key not in space:
            dims[key] = Dimension(key, "categorical", choices=tuple(values))
    if sampler == "grid":
        for key, dim in dims.items():
            if dim.kind != "categorical":
                report(path + (key,), f"{where}.{key}", "the grid sampler needs a list of values for each key, "
                       "e.g. [0.01, 0.1]")
    return dims


def _as_param(param: Any, value: Any) -> Any:
    if param.types == (float,) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value
