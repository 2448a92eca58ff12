"""experiments.toml -> validated experiments -> one parameter dict per run.

The file is only parsed (tomllib), never evaluated. Every problem becomes one line
``FILE:LINE: EXPERIMENT.KEY: what is wrong``; all problems are collected and raised
together as a ConfigError before anything runs or is written.
"""

from __future__ import annotations

import difflib
import itertools
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from expt.core import search as search_table
from expt.core.recipes import Recipe, all_recipes, unknown_recipe_message
from expt.errors import ConfigError, NotFoundError, UsageError
from expt.params import Param, ParamSet, free_param, params
from expt.project import display_path, name_too_long

# Keys of an experiment table that are not recipe parameters.
EXPERIMENT_KEYS = ("recipe", "description", "sweep", "cases", "repeat", "search")
TOP_LEVEL_KEYS = ("defaults", "launcher", "experiments")
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(-[A-Za-z_][A-Za-z0-9_]*)*$")

LAUNCHER = params(
    Param("backend", str, "local", "where runs execute: this machine or a Slurm cluster", choices=("local", "slurm")),
    Param("jobs", int, 0, "runs at a time without GPUs (0: 1)", min=0, max=256),
    Param("gpus", str, "", "GPU indices to use, e.g. '0,1,3' (default: CUDA_VISIBLE_DEVICES or all)"),
    Param("runs_per_gpu", int, 1, "runs sharing one GPU", min=1, max=64),
    Param("cluster", str, "slurm", "with backend = 'slurm': 'slurm', or 'local' for submitit's local executor "
          "(jobs as local processes, to try a set-up without a cluster)", choices=("slurm", "local")),
    Param("partition", str, "", "Slurm partition"),
    Param("account", str, "", "Slurm account"),
    Param("time", int, 240, "Slurm time limit in minutes", min=1),
    Param("gpus_per_task", int, 1, "GPUs per Slurm task", min=0),
    Param("cpus_per_task", int, 8, "CPUs per Slurm task", min=1),
    Param("mem_gb", int, 32, "memory per Slurm task in GB", min=1),
    Param("requeues", int, 3, "times a Slurm job is requeued when its time limit nears (SIGUSR2, up to 90 s "
          "before): it checkpoints and continues in the same run; 0: the run ends crashed at its time limit",
          min=0, max=100),
    Param("sbatch", dict, {}, "extra sbatch options, e.g. {constraint = 'a100'}"),
)


@dataclass(frozen=True)
class Point:
    """One run to be: its full parameters and the values that vary inside its experiment."""

    params: dict[str, Any]
    varying: dict[str, Any]


@dataclass(frozen=True)
class Expansion:
    points: list[Point]
    skipped: list[tuple[dict[str, Any], str]]


@dataclass(frozen=True)
class Experiment:
    """A validated experiment: base params (defaults filled) plus its sweep."""

    name: str
    recipe: str
    description: str
    params: dict[str, Any]
    sweep: dict[str, list[Any]] = field(default_factory=dict)
    cases: list[dict[str, Any]] = field(default_factory=list)
    repeat: int = 1
    free: tuple[str, ...] = ()  # keys the recipe does not declare (a recipe with open parameters)
    search: search_table.SearchSpec | None = None  # [experiments.NAME.search]: trials sampled, not a grid

    def expand(self) -> Expansion:
        """Cases x the cartesian grid of ``sweep`` x ``repeat`` seeds, minus skipped points."""
        recipe = all_recipes()[self.recipe]
        keys = list(self.sweep)
        grid = [dict(zip(keys, values)) for values in itertools.product(*self.sweep.values())]
        points, skipped = [], []
        for case in self.cases or [{}]:
            for cell in grid:
                varying = {**case, **cell}
                candidate = {**self.params, **varying}
                reason = recipe.skip(candidate) if recipe.skip else None
                if reason:
                    skipped.append((varying, reason))
                    continue
                for r in range(self.repeat):
                    seeded = dict(varying)
                    if self.repeat > 1:
                        seeded["seed"] = self.params["seed"] + r
                    points.append(Point({**self.params, **seeded}, seeded))
        return Expansion(points, skipped)

    @property
    def size(self) -> int:
        return self.search.trials if self.search else len(self.expand().points)


@dataclass(frozen=True)
class Config:
    path: Path
    experiments: dict[str, Experiment]
    launcher: dict[str, Any]

    def experiment(self, name: str) -> Experiment:
        if name in self.experiments:
            return self.experiments[name]
        known = list(self.experiments)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        listing = ", ".join(known) if known else "none"
        raise NotFoundError(f"{display_path(self.path)}: no experiment {name!r}{hint}; experiments: {listing}")


def load_config(path: Path) -> Config:
    """Parse and validate ``path``; raise ConfigError listing every problem."""
    shown = display_path(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{shown}: no such file (use -f PATH or set EXPT_FILE)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"{shown}: cannot read: {error}") from None
    return parse_config(text, Path(path))


def parse_config(text: str, path: Path) -> Config:
    shown = display_path(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([_syntax_problem(shown, error)]) from None
    checker = _Checker(shown, _Locator(text), Path(path).absolute().parent)
    config = checker.check(data, path)
    if checker.problems:
        raise ConfigError(checker.problems)
    return config


def _syntax_problem(shown: str, error: tomllib.TOMLDecodeError) -> str:
    message = str(error)
    found = re.search(r"\(at line (\d+), column (\d+)\)", message)
    if found:
        reason = message[: found.start()].strip()
        return f"{shown}:{found.group(1)}: TOML syntax error: {reason} (column {found.group(2)})"
    return f"{shown}: TOML syntax error: {message}"


class _Locator:
    """Finds the line of a table header or key, so problems can name it."""

    _header = re.compile(r"^\s*\[{1,2}\s*([^\[\]]+?)\s*\]{1,2}\s*(#.*)?$")
    _key = re.compile(r"^\s*([A-Za-z0-9_\-.\"' ]+?)\s*=")

    def __init__(self, text: str):
        self.lines: dict[tuple[str, ...], int] = {}
        table: tuple[str, ...] = ()
        for number, line in enumerate(text.splitlines(), start=1):
            header = self._header.match(line)
            if header:
                table = _split_key(header.group(1))
                for depth in range(1, len(table) + 1):
                    self.lines.setdefault(table[:depth], number)
                continue
            key = self._key.match(line)
            if key:
                self.lines.setdefault(table + _split_key(key.group(1)), number)

    def line(self, *path: str) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None


def _split_key(key: str) -> tuple[str, ...]:
    return tuple(part.strip().strip("\"'") for part in key.split("."))


class _Checker:
    def __init__(self, shown: str, locator: _Locator, root: Path):
        self.shown = shown
        self.locator = locator
        self.root = root
        self.problems: list[str] = []

    def problem(self, path: tuple[str, ...], where: str, message: str) -> None:
        line = self.locator.line(*path)
        location = f"{self.shown}:{line}" if line else self.shown
        self.problems.append(f"{location}: {where}: {message}")

    def check(self, data: dict[str, Any], path: Path) -> Config:
        recipes = all_recipes()
        for key in data:
            if key not in TOP_LEVEL_KEYS:
                close = difflib.get_close_matches(key, TOP_LEVEL_KEYS, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.problem((key,), key, f"unknown top-level key{hint}; expected {', '.join(TOP_LEVEL_KEYS)}")
        defaults = self._table(data, "defaults")
        launcher = self._check_launcher(self._table(data, "launcher"))
        experiments_table = self._table(data, "experiments")
        if "experiments" not in data:
            self.problem((), "experiments", "no [experiments.NAME] table: nothing to run")
        all_param_names = {n for r in recipes.values() for n in r.params.names()}
        for key in defaults:
            if key not in all_param_names:
                close = difflib.get_close_matches(key, sorted(all_param_names), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.problem(("defaults", key), f"defaults.{key}", f"not a parameter of any recipe{hint}")
        experiments = {}
        for name, table in experiments_table.items():
            experiment = self._check_experiment(name, table, defaults, recipes)
            if experiment is not None:
                experiments[name] = experiment
        return Config(path, experiments, launcher)

    def _table(self, data: dict[str, Any], key: str) -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            self.problem((key,), key, f"must be a table ([{key}]), got {type(value).__name__}")
            return {}
        return value

    def _check_launcher(self, table: dict[str, Any]) -> dict[str, Any]:
        return self._check_values(("launcher",), "launcher", table, LAUNCHER, what="launcher setting")

    def _check_values(self, path: tuple[str, ...], where: str, table: dict[str, Any], spec: ParamSet,
                      what: str = "parameter", allowed_extra: tuple[str, ...] = ()) -> dict[str, Any]:
        values = spec.defaults()
        for key, value in table.items():
            if key in allowed_extra:
                continue
            param = spec.get(key)
            if param is None:
                suggestion = spec.suggest(key) or next(iter(difflib.get_close_matches(key, allowed_extra, n=1)), None)
                hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
                self.problem(path + (key,), f"{where}.{key}", f"unknown {what}{hint}")
                continue
            error = param.check(value)
            if error:
                self.problem(path + (key,), f"{where}.{key}", error)
            else:
                values[key] = self._value(param, value)
        return values

    def _value(self, param: Param, value: Any) -> Any:
        """A checked value as the runs get it: an int where a float is meant as a float; a relative path as
        relative to experiments.toml's folder, made absolute here once for validation, the worker and Slurm."""
        if param.types == (float,) and isinstance(value, int):
            return float(value)
        if param.path and isinstance(value, str) and value:
            return str(self.root / Path(value).expanduser())
        return value

    def _check_experiment(self, name: str, table: Any, defaults: dict[str, Any],
                          recipes: dict[str, Recipe]) -> Experiment | None:
        path = ("experiments", name)
        if not isinstance(table, dict):
            self.problem(path, name, "must be a table ([experiments.NAME])")
            return None
        if not NAME_PATTERN.match(name):
            self.problem(path, name, "experiment names use letters, digits, '_' and '-' (not ending in '-NUMBER'), "
                                     "starting with a letter")
            return None
        if too_long := name_too_long(name):
            self.problem(path, f"{name[:40]}...", too_long)
            return None
        recipe_name = table.get("recipe")
        if recipe_name is None:
            self.problem(path, name, f"missing 'recipe'; recipes: {', '.join(recipes)}")
            return None
        if recipe_name not in recipes:
            self.problem(path + ("recipe",), f"{name}.recipe", unknown_recipe_message(str(recipe_name), list(recipes)))
            return None
        recipe = recipes[recipe_name]
        before = len(self.problems)
        spec = self._spec(recipe, table)
        merged = {k: v for k, v in defaults.items() if k in recipe.params}
        merged.update({k: v for k, v in table.items() if k not in EXPERIMENT_KEYS})
        base = self._check_values(path, name, merged, spec, allowed_extra=EXPERIMENT_KEYS)
        description = table.get("description", "")
        if not isinstance(description, str):
            self.problem(path + ("description",), f"{name}.description", "expected str")
        repeat = table.get("repeat", 1)
        if isinstance(repeat, bool) or not isinstance(repeat, int) or not 1 <= repeat <= 1000:
            self.problem(path + ("repeat",), f"{name}.repeat", f"expected an int from 1 to 1000, got {repeat!r}")
            repeat = 1
        seed = recipe.params.get("seed")
        if repeat > 1 and seed is not None and seed.max is not None and base["seed"] + repeat - 1 > seed.max:
            self.problem(path + ("seed",), f"{name}.seed", f"with repeat = {repeat} the runs take seeds {base['seed']} "
                         f".. {base['seed'] + repeat - 1}, above the maximum {seed.max}")
        sweep = self._check_sweep(name, table.get("sweep", {}), spec)
        cases = self._check_cases(name, table.get("cases", []), spec)
        if repeat > 1 and ("seed" in sweep or any("seed" in c for c in cases)):
            self.problem(path + ("repeat",), f"{name}.repeat", "use either 'repeat' or a sweep over 'seed', not both")
        search = None
        if "search" in table and len(self.problems) == before:
            metric, goal = recipe.metric_and_goal(base)
            search = search_table.check(name, table["search"], spec, metric=metric, goal=goal, sweep=sweep,
                                        problem=self.problem, repeat=repeat, cases=cases)
            sweep = {}  # its lists are categorical dimensions of the search
        if len(self.problems) > before:
            return None
        free = tuple(p.name for p in spec if p.name not in recipe.params)
        experiment = Experiment(name, recipe_name, description, base, sweep, cases, repeat, free, search)
        if recipe.validate:
            seen = set()
            searched = set(search.space) if search else set()
            for point in experiment.expand().points:
                for problem in recipe.validate(point.params):
                    if problem in seen or (search and (not isinstance(problem, tuple) or problem[0] in searched)):
                        continue  # a search checks its sampled points as it asks them (infeasible: not run)
                    seen.add(problem)
                    if isinstance(problem, tuple):
                        key, message = problem
                        self.problem(path + tuple(key.split(".")), f"{name}.{key}", message)
                    else:
                        self.problem(path, name, problem)
        return None if len(self.problems) > before else experiment

    @staticmethod
    def _spec(recipe: Recipe, table: dict[str, Any]) -> ParamSet:
        """The recipe's parameters, and for a recipe with open parameters every other key the experiment uses
        (in its table, its sweep or its cases) as a parameter of any TOML value."""
        if not recipe.open_params:
            return recipe.params
        keys = [k for k in table if k not in EXPERIMENT_KEYS]
        sweep, cases = table.get("sweep"), table.get("cases")
        keys += list(sweep) if isinstance(sweep, dict) else []
        search = table.get("search")
        space = search.get("space") if isinstance(search, dict) else None
        keys += list(space) if isinstance(space, dict) else []
        keys += [k for case in cases for k in case] if isinstance(cases, list) and all(
            isinstance(c, dict) for c in cases) else []
        extra = [free_param(k) for k in dict.fromkeys(keys) if k not in recipe.params]
        return ParamSet(recipe.params.params + tuple(extra))

    def _check_sweep(self, name: str, sweep: Any, spec: ParamSet) -> dict[str, list[Any]]:
        path = ("experiments", name, "sweep")
        if not isinstance(sweep, dict):
            self.problem(path, f"{name}.sweep", "must be a table of lists, e.g. [experiments.NAME.sweep] lr = [0.1, 0.01]")
            return {}
        checked = {}
        for key, values in sweep.items():
            where = f"{name}.sweep.{key}"
            param = spec.get(key)
            if param is None:
                suggestion = spec.suggest(key)
                hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
                self.problem(path + (key,), where, f"unknown parameter{hint}")
                continue
            if not isinstance(values, list) or not values:
                self.problem(path + (key,), where, f"a sweep needs a non-empty list of values, got {values!r}")
                continue
            for value in values:
                error = param.check(value)
                if error:
                    self.problem(path + (key,), where, error)
                    break
            else:
                checked[key] = [self._value(param, v) for v in values]
        return checked

    def _check_cases(self, name: str, cases: Any, spec: ParamSet) -> list[dict[str, Any]]:
        path = ("experiments", name, "cases")
        if not isinstance(cases, list) or not all(isinstance(c, dict) for c in cases):
            self.problem(path, f"{name}.cases", "must be a list of tables, e.g. cases = [{lr = 0.1, shots = 1}]")
            return []
        checked = []
        for case in cases:
            values = {}
            for key, value in case.items():
                param = spec.get(key)
                where = f"{name}.cases.{key}"
                if param is None:
                    suggestion = spec.suggest(key)
                    hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
                    self.problem(path, where, f"unknown parameter{hint}")
                elif error := param.check(value):
                    self.problem(path, where, error)
                else:
                    values[key] = self._value(param, value)
            checked.append(values)
        return checked
