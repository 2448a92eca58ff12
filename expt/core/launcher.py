"""From an experiment to queued runs, and watching them to the end: what ``expt run`` and the TUI share."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from expt.config import Config, Expansion, Experiment, Point
from expt.core import runfiles
from expt.core.recipes import get_recipe
from expt.core.runfiles import FINAL_STATUSES, SCRIPT_RECIPE
from expt.core.scheduler import Scheduler
from expt.errors import ConfigError, UsageError
from expt.project import Project
from expt.store import Run, Store


@dataclass
class Plan:
    """What launching an experiment will do, checked before anything is written."""

    experiment: Experiment
    expansion: Expansion
    warnings: list[str] = field(default_factory=list)  # said once when it starts, not errors

    @property
    def size(self) -> int:
        return len(self.expansion.points)


def plan(config: Config, name: str) -> Plan:
    """Expand ``name`` and run each recipe's preflight (data on disk ...); raise with every problem."""
    experiment = config.experiment(name)
    expansion = experiment.expand()
    if experiment.search is not None:  # one point: the base params (each trial samples its own)
        expansion = Expansion([Point(dict(experiment.params), {})], [])
    if not expansion.points:
        raise UsageError(f"experiment {name!r}: every point of its sweep was skipped "
                         f"({expansion.skipped[0][1] if expansion.skipped else 'empty sweep'})")
    recipe = get_recipe(experiment.recipe)
    problems: list[str] = []
    if recipe.preflight:
        for point in expansion.points:
            for message in recipe.preflight(point.params):
                line = f"{name}: {message}"
                if line not in problems:
                    problems.append(line)
    if problems:
        raise ConfigError(problems)
    return Plan(experiment, expansion, _warnings(experiment))


def _warnings(experiment: Experiment) -> list[str]:
    """The command's own parameters that its command never uses (a typo in the table, say)."""
    if not experiment.free:
        return []
    from expt.core.recipes.command import unused

    idle = unused(experiment.params, list(experiment.free))
    if not idle:
        return []
    return [f"experiment {experiment.name!r}: {', '.join(idle)} {'is' if len(idle) == 1 else 'are'} never used by "
            "its command (no {" + idle[0] + "} placeholder); the runs record it as a parameter all the same"]


def enqueue(store: Store, project: Project, plan: Plan) -> list[Run]:
    """Record every point as a queued run with its folder and config.toml."""
    experiment = plan.experiment
    recipe = get_recipe(experiment.recipe)
    runs = []
    for point in plan.expansion.points:
        metric, goal = recipe.metric_and_goal(point.params)
        runs.append(store.create_run(project.runs_dir, experiment=experiment.name, recipe=experiment.recipe,
                                     params=point.params, varying=point.varying, description=experiment.description,
                                     metric=metric, goal=goal))
    return runs


def rerun(store: Store, project: Project, run: Run) -> Run:
    """A fresh run with the same experiment, recipe and params."""
    if run.origin != "expt":
        raise UsageError(f"{run.id} was imported ({run.origin}); expt cannot run it again")
    if run.recipe == SCRIPT_RECIPE:
        raise UsageError(f"{run.id} was recorded by its own script (expt.track); run the script again")
    return store.create_run(project.runs_dir, experiment=run.experiment, recipe=run.recipe, params=run.params,
                            varying=run.varying, description=run.description, metric=run.metric, goal=run.goal)


def resume(store: Store, runs: list[Run]) -> list[Run]:
    """Queue stopped, crashed or failed runs again; their workers continue from the last checkpoint.

    Runs that are completed or still active are passed over (an experiment's name means all its runs);
    it is an error only when none of ``runs`` can be resumed.
    """
    for run in runs:
        if run.origin != "expt":
            raise UsageError(f"{run.id} was imported ({run.origin}); there is nothing to resume")
        if run.recipe == SCRIPT_RECIPE:
            raise UsageError(f"{run.id} was recorded by its own script (expt.track); expt cannot resume it")
    resumable = [run for run in runs if run.status in runfiles.RESUMABLE_STATUSES]
    for run in resumable:
        recipe = get_recipe(run.recipe)
        if recipe.resumable and (reason := recipe.resumable(run.params)):
            raise UsageError(f"{run.id} cannot be resumed: {reason}")
    if runs and not resumable:
        run = runs[0]
        raise UsageError(f"{run.id} is {run.status}; only stopped, crashed, failed or pruned runs can be resumed")
    resumed = []
    for run in resumable:
        (run.path / runfiles.PRUNE).unlink(missing_ok=True)  # resumed, a pruned run runs to its end
        if store.update_run(run, when=FINAL_STATUSES, status="queued", ended_at=None, error=None,
                            stop_requested=0, pid=None):
            runfiles.append_event(run.path, "status", status="queued", note="resume")
            resumed.append(run)
    return resumed


def watch(store: Store, scheduler: Scheduler, run_ids: list[str], interval: float = 0.5
          ) -> Iterator[list[Run]]:
    """Schedule (when the lock is ours or free) and yield the runs' latest rows until all are final."""
    while True:
        scheduler.acquire()
        scheduler.tick(store)
        runs = [r for r in (store.get(i) for i in run_ids) if r is not None]
        yield runs
        if all(r.status in FINAL_STATUSES for r in runs):
            return
        time.sleep(interval)


def summary_line(run: Run, digits: int | None = None) -> str:
    """The seed's closing line, ``Best metric: X (epoch N)`` (X rounded to ``digits`` if given)."""
    best = run.best
    if best is None:
        return run.error or ""
    shown = round(best, digits) if digits is not None and isinstance(best, float) else best
    epoch = run.summary.get("best_epoch")
    return f"Best metric: {shown} (epoch {epoch})" if epoch is not None else f"Best metric: {shown}"


def describe_point(varying: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in varying.items())
