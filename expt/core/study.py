"""A search experiment's Optuna study: Optuna decides, expt runs, records and shows.

The study lives in ``runs/.studies/``: ``NAME.journal`` is Optuna's journal file storage (append-only,
no server, no lock on runs.db; the source of truth for the sampler) and ``NAME.json`` what ``expt run
NAME`` asked for (the experiment's base params, the search table, the number of trials, whether the
study is active). Each trial is one ordinary run (``NAME-<n>``), queued with the trial's sampled params
and ``study``/``trial`` in its config.toml; the trial's user attribute ``run`` names it.

Whoever schedules runs (the owner of the scheduler lock: ``expt run``, ``--detach``'s scheduler, the
TUI's) calls ``step`` every tick: it tells Optuna the runs that ended (completed: the metric from the
summary; pruned; failed), reports each running trial's new per-epoch values to the pruner and asks it
to stop the ones it prunes (SIGTERM, checkpoint kept, status ``pruned``), and asks new trials for the
free slots. A point the recipe rejects (``validate``, ``skip``: e.g. the scaling recipe's constraint) is
told as infeasible through Optuna's constraints and never runs. Only the lock owner asks and tells, so
two ``expt run NAME`` at once never exceed ``trials``; a trial asked but not yet given a run (a crash in
between) is found and given one on the next tick, and the run of a trial is found by its config.toml.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from expt.core import runfiles
from expt.core.runfiles import ACTIVE_STATUSES, FINAL_STATUSES
from expt.core.search import SearchSpec
from expt.store import Run, Store

if TYPE_CHECKING:
    import optuna

    from expt.config import Experiment
    from expt.project import Project

STUDIES = ".studies"
MAX_INFEASIBLE = 500  # points in a row the recipe rejects before the study gives up asking


@dataclass
class StudyState:
    """``runs/.studies/NAME.json``: what the study runs and how far it should go."""

    experiment: str
    recipe: str
    description: str
    params: dict[str, Any]
    search: SearchSpec
    metric: str | None = None  # the runs' ranking metric and goal (as any run of the recipe)
    goal: str | None = None
    target: int = 0
    active: bool = True
    note: str = ""
    created_at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "search": self.search.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StudyState:
        data = dict(data)
        data["search"] = SearchSpec.from_json(data["search"])
        return cls(**data)


def studies_dir(runs_dir: Path) -> Path:
    return runs_dir / STUDIES


def state_path(runs_dir: Path, name: str) -> Path:
    return studies_dir(runs_dir) / f"{name}.json"


def journal_path(runs_dir: Path, name: str) -> Path:
    return studies_dir(runs_dir) / f"{name}.journal"


def load_state(runs_dir: Path, name: str) -> StudyState | None:
    try:
        return StudyState.from_json(orjson.loads(state_path(runs_dir, name).read_bytes()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_state(runs_dir: Path, state: StudyState) -> None:
    path = state_path(runs_dir, state.experiment)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(orjson.dumps(state.to_json(), option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    os.replace(tmp, path)


def states(runs_dir: Path) -> list[StudyState]:
    """Every study of the project (one stat when there is none)."""
    folder = studies_dir(runs_dir)
    if not folder.is_dir():
        return []
    found = []
    for entry in sorted(os.listdir(folder)):
        if entry.endswith(".json") and not entry.startswith("."):
            state = load_state(runs_dir, entry[: -len(".json")])
            if state is not None:
                found.append(state)
    return found


def pending(runs_dir: Path) -> bool:
    """Is a study active (trials to ask or to tell)? A detached scheduler serves on while one is."""
    return any(state.active for state in states(runs_dir))


# -- Optuna ---------------------------------------------------------------------------------------------

_STORAGES: dict[Path, Any] = {}


def _optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna


def storage(runs_dir: Path, name: str):
    """The study's JournalStorage (one per process and file: it replays the journal incrementally)."""
    path = journal_path(runs_dir, name)
    if path not in _STORAGES:
        optuna = _optuna()
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path.parent.mkdir(parents=True, exist_ok=True)
        _STORAGES[path] = JournalStorage(JournalFileBackend(str(path)))
        del optuna
    return _STORAGES[path]


def open_study(runs_dir: Path, state: StudyState, n_trials: int = 0) -> optuna.Study:
    """The study with a sampler seeded for the next ask (``seed + trials so far``: a scheduler that starts
    again does not ask the points it asked before) and the experiment's pruner."""
    optuna = _optuna()
    spec = state.search
    return optuna.create_study(study_name=state.experiment, storage=storage(runs_dir, state.experiment),
                               direction=spec.direction, load_if_exists=True, sampler=_sampler(spec, n_trials),
                               pruner=_pruner(spec, state.params.get("epochs")))


def _sampler(spec: SearchSpec, n_trials: int):
    optuna = _optuna()
    samplers = optuna.samplers
    seed = spec.seed + n_trials
    if spec.sampler == "tpe":
        return samplers.TPESampler(seed=seed, n_startup_trials=10 if spec.startup_trials is None else
                                   spec.startup_trials, constant_liar=True)
    if spec.sampler == "random":
        return samplers.RandomSampler(seed=seed)
    if spec.sampler == "cmaes":
        return samplers.CmaEsSampler(seed=seed, n_startup_trials=1 if spec.startup_trials is None else
                                     spec.startup_trials, warn_independent_sampling=False)
    if spec.sampler == "qmc":  # the sequence's position is in the storage; its scramble must stay the same
        return samplers.QMCSampler(seed=spec.seed, scramble=True, warn_asynchronous_seeding=False,
                                   warn_independent_sampling=False)

    class Grid(samplers.GridSampler):
        """Optuna's grid, without its ``study.stop()`` at the last point (ask/tell has no optimize loop to
        stop: expt counts the trials)."""

        def after_trial(self, study, trial, state, values) -> None:
            return None

    return Grid({k: list(d.choices) for k, d in spec.space.items()}, seed=spec.seed)  # its order: from the seed


def _pruner(spec: SearchSpec, epochs: Any):
    pruners = _optuna().pruners
    if spec.pruner == "median":
        return pruners.MedianPruner(n_startup_trials=spec.pruner_startup, n_warmup_steps=spec.pruner_warmup)
    if spec.pruner == "hyperband":
        return pruners.HyperbandPruner(min_resource=max(1, spec.pruner_warmup),
                                       max_resource=epochs if isinstance(epochs, int) and epochs > 1 else "auto")
    if spec.pruner == "successive_halving":
        return pruners.SuccessiveHalvingPruner(min_resource=max(1, spec.pruner_warmup), reduction_factor=3)
    return pruners.NopPruner()


def _suggest(trial: Any, dim: Any) -> Any:
    if dim.kind == "categorical":
        return trial.suggest_categorical(dim.name, list(dim.choices))
    if dim.kind == "int":
        return trial.suggest_int(dim.name, dim.low, dim.high, step=dim.step or 1, log=dim.log)
    return trial.suggest_float(dim.name, dim.low, dim.high, step=dim.step, log=dim.log)


# -- starting, continuing, pausing ------------------------------------------------------------------------


def start(store: Store, project: Project, experiment: Experiment, trials: int | None = None) -> tuple[StudyState,
                                                                                                     list[Run]]:
    """Create or continue the study of ``experiment`` and mark it active; requeue its trials' stopped or
    crashed runs (they continue from their checkpoints). ``trials`` raises (or sets) the total."""
    from expt.core import launcher
    from expt.core.recipes import get_recipe

    spec = experiment.search
    assert spec is not None
    runs_dir = project.runs_dir
    previous = load_state(runs_dir, experiment.name)
    metric, goal = get_recipe(experiment.recipe).metric_and_goal(experiment.params)
    target = trials if trials is not None else max(spec.trials, previous.target if previous else 0)
    if spec.sampler == "grid":
        target = min(target, spec.grid_size)
    state = StudyState(experiment.name, experiment.recipe, experiment.description, experiment.params, spec, metric,
                       goal, target, True, "", previous.created_at if previous else time.time())
    save_state(runs_dir, state)
    study = open_study(runs_dir, state)
    paused = []
    for trial in study.get_trials(deepcopy=False, states=(_optuna().trial.TrialState.RUNNING,)):
        run = store.get(trial.user_attrs.get("run", ""))
        if run is not None and run.status in ("stopped", "crashed"):
            paused.append(run)
    resumed = launcher.resume(store, paused) if paused else []
    return state, resumed


def pause(runs_dir: Path, name: str, note: str = "") -> bool:
    """Ask no more trials for ``name`` (its runs go on unless stopped); True if it was active."""
    state = load_state(runs_dir, name)
    if state is None or not state.active:
        return False
    state.active, state.note = False, note
    save_state(runs_dir, state)
    return True


def after_stop(store: Store, runs: list[Run]) -> None:
    """``expt stop`` (the CLI, Ctrl-C, the TUI) stopped these runs: a study all of whose active runs were
    stopped is paused (a pruned run is not a stop)."""
    by_experiment: dict[tuple[Path, str], set[str]] = {}
    for run in runs:
        if not (run.path / runfiles.PRUNE).exists():
            by_experiment.setdefault((run.path.parent, run.experiment), set()).add(run.id)
    for (runs_dir, name), stopped in by_experiment.items():
        state = load_state(runs_dir, name)
        if state is None or not state.active:
            continue
        active = store.runs(f"experiment = ? AND status IN ({', '.join('?' * len(ACTIVE_STATUSES))})",
                            (name, *ACTIVE_STATUSES))
        if all(r.id in stopped or r.stop_requested for r in active):
            pause(runs_dir, name, "stopped")


# -- the scheduler's step ----------------------------------------------------------------------------------


def step(store: Store, project: Project, settings: Any) -> list[Run]:
    """Tell, prune and ask for every active study; returns the runs queued for new trials."""
    runs_dir = project.runs_dir
    active = [s for s in states(runs_dir) if s.active]
    if not active:
        return []
    free = _free_slots(store, settings)
    created: list[Run] = []
    for state in active:
        try:
            made = _step_study(store, project, state, free - len(created))
        except Exception as error:  # a study that cannot go on must not stop the scheduler or spin it
            print(f"{time.strftime('%F %T')} study {state.experiment}: {type(error).__name__}: {error}",
                  file=sys.stderr, flush=True)
            pause(runs_dir, state.experiment, f"error: {error}")
            continue
        created += made
    return created


def _free_slots(store: Store, settings: Any) -> int:
    queued = store.count("status = 'queued'")
    if settings.backend == "slurm":
        return max(0, 4 - queued)
    from expt.store import this_host

    busy = {r.device for r in store.runs("status IN ('starting', 'running') AND host = ?", (this_host(),))}
    free = [slot for slot in settings.slots() if slot.name not in busy]
    return max(0, len(free) - queued)


def _step_study(store: Store, project: Project, state: StudyState, free: int) -> list[Run]:
    optuna = _optuna()
    TrialState = optuna.trial.TrialState
    runs_dir = project.runs_dir
    study = open_study(runs_dir, state)
    trials = study.get_trials(deepcopy=False)
    mapped = {t.user_attrs["run"] for t in trials if "run" in t.user_attrs}
    in_flight = 0
    for frozen in trials:
        if frozen.state != TrialState.RUNNING or frozen.user_attrs.get("infeasible"):
            continue
        run = _run_of(store, project, state, frozen, mapped)
        if run is None:
            study.tell(frozen.number, state=TrialState.FAIL, skip_if_finished=True)
            continue
        if run.status in ACTIVE_STATUSES:
            in_flight += 1
            if run.status == "running" and state.search.pruner != "none":
                _maybe_prune(store, study, state, frozen, run)
        elif run.status in FINAL_STATUSES:
            _tell(store, study, state, frozen, run)
    counted = sum(1 for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("infeasible"))
    want = state.target - counted
    if state.search.parallel:
        free = min(free, state.search.parallel - in_flight)
    created = []
    infeasible = 0
    while want > 0 and free > 0:
        n = len(study.get_trials(deepcopy=False))
        study = open_study(runs_dir, state, n)
        run = _ask(store, project, state, study)
        if run is None:
            infeasible += 1
            if infeasible >= MAX_INFEASIBLE:
                pause(runs_dir, state.experiment, f"{MAX_INFEASIBLE} sampled points in a row were infeasible")
                return created
            continue
        infeasible = 0
        created.append(run)
        want -= 1
        free -= 1
    if want <= 0 and in_flight == 0 and not created:
        pause(runs_dir, state.experiment, "done")
    return created


def _ask(store: Store, project: Project, state: StudyState, study: Any) -> Run | None:
    """One new trial: a queued run, or None when the recipe rejects the point (told as infeasible)."""
    from expt.core.recipes import get_recipe

    recipe = get_recipe(state.recipe)
    trial = study.ask()
    sampled = {name: _suggest(trial, dim) for name, dim in state.search.space.items()}
    params = {**state.params, **sampled}
    problems = [p if isinstance(p, str) else f"{p[0]}: {p[1]}" for p in (recipe.validate(params)
                                                                         if recipe.validate else [])]
    reason = recipe.skip(params) if recipe.skip else None
    if reason:
        problems.append(reason)
    constrained = recipe.validate is not None or recipe.skip is not None
    if problems:
        trial.set_constraint("recipe", float(len(problems)))
        trial.set_user_attr("infeasible", problems[0])
        worst = -math.inf if state.search.direction == "maximize" else math.inf
        study.tell(trial, worst)
        return None
    if constrained:
        trial.set_constraint("recipe", 0.0)
    run = store.create_run(project.runs_dir, experiment=state.experiment, recipe=state.recipe, params=params,
                           varying=sampled, description=state.description, metric=state.metric, goal=state.goal,
                           meta={"study": state.experiment, "trial": trial.number})
    trial.set_user_attr("run", run.id)
    return run


def _run_of(store: Store, project: Project, state: StudyState, frozen: Any, mapped: set[str]) -> Run | None:
    """The run of a running trial; one found by its config.toml, or made now, when the scheduler died
    between asking the trial and recording its run."""
    run_id = frozen.user_attrs.get("run")
    if run_id is not None:
        return store.get(run_id)
    for run in store.runs("experiment = ?", (state.experiment,)):
        if run.id in mapped:
            continue
        try:
            meta = runfiles.read_config(run.path)
        except (OSError, ValueError):
            continue
        if meta.get("study") == state.experiment and meta.get("trial") == frozen.number:
            _set_run(project, state, frozen, run.id)
            return run
    params = {**state.params, **frozen.params}
    run = store.create_run(project.runs_dir, experiment=state.experiment, recipe=state.recipe, params=params,
                           varying=dict(frozen.params), description=state.description, metric=state.metric,
                           goal=state.goal, meta={"study": state.experiment, "trial": frozen.number})
    _set_run(project, state, frozen, run.id)
    return run


def _set_run(project: Project, state: StudyState, frozen: Any, run_id: str) -> None:
    storage(project.runs_dir, state.experiment).set_trial_user_attr(frozen._trial_id, "run", run_id)


def _value(store: Store, state: StudyState, run: Run) -> float | None:
    value = run.summary.get(state.search.metric)
    if value is None:
        value = store.last_values([run], state.search.prune_on).get(run.rid)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _tell(store: Store, study: Any, state: StudyState, frozen: Any, run: Run) -> None:
    TrialState = _optuna().trial.TrialState
    _report_new(store, study, state, frozen, run, check=False)
    if run.status == "completed":
        value = _value(store, state, run)
        if value is None:
            study.tell(frozen.number, state=TrialState.FAIL, skip_if_finished=True)
        else:
            study.tell(frozen.number, value, skip_if_finished=True)
    elif run.status == "pruned":
        study.tell(frozen.number, state=TrialState.PRUNED, skip_if_finished=True)
    elif run.status == "failed":
        study.tell(frozen.number, state=TrialState.FAIL, skip_if_finished=True)
    # stopped, crashed: the trial waits (paused); `expt run NAME` resumes its run


def _report_new(store: Store, study: Any, state: StudyState, frozen: Any, run: Run,
                check: bool = True) -> tuple[Any, bool]:
    """Report the run's per-epoch values the trial has not seen (the pruner compares trials step by step);
    returns the Trial (None: nothing new) and whether the pruner (``check``) prunes it."""
    optuna = _optuna()
    key = state.search.prune_on
    values = store.metrics(run, [key]).get(key, [])
    seen = frozen.intermediate_values
    trial = optuna.trial.Trial(study, frozen._trial_id)
    new = False
    for step_, value in values:
        step_ = int(step_)
        if step_ in seen or value is None or not math.isfinite(value):
            continue
        trial.report(float(value), step_)
        new = True
        if check and study.pruner.prune(study, study._storage.get_trial(frozen._trial_id)):
            return trial, True
    return (trial if new else None), False


def _maybe_prune(store: Store, study: Any, state: StudyState, frozen: Any, run: Run) -> None:
    if (run.path / runfiles.PRUNE).exists() or run.stop_requested:
        return
    _, prune = _report_new(store, study, state, frozen, run)
    if not prune:
        return
    from expt.core import scheduler

    steps = study._storage.get_trial(frozen._trial_id).intermediate_values
    (run.path / runfiles.PRUNE).write_text(f"pruned by the study's {state.search.pruner} pruner at epoch "
                                           f"{max(steps, default=0)}\n")
    scheduler.stop(store, [run])


# -- what the CLI and the TUI show -----------------------------------------------------------------------------


def report(store: Store, runs_dir: Path, name: str, importances: bool = True) -> dict[str, Any] | None:
    """The study as ``expt study`` and the TUI show it: counts, best trial, trials best first, the best value
    so far per trial, and the parameter importances (Optuna's default evaluator over the finished trials)."""
    state = load_state(runs_dir, name)
    if state is None or not journal_path(runs_dir, name).exists():
        return None
    optuna = _optuna()
    TrialState = optuna.trial.TrialState
    study = open_study(runs_dir, state)
    spec = state.search
    maximize = spec.direction == "maximize"
    rows = []
    counts = {"completed": 0, "running": 0, "pruned": 0, "failed": 0, "paused": 0, "infeasible": 0}
    best_so_far: list[float] = []
    best = None
    for trial in study.get_trials(deepcopy=False):
        run = store.get(trial.user_attrs.get("run", "")) if "run" in trial.user_attrs else None
        infeasible = trial.user_attrs.get("infeasible")
        if infeasible:
            status = "infeasible"
        elif trial.state == TrialState.COMPLETE:
            status = "completed"
        elif trial.state == TrialState.PRUNED:
            status = "pruned"
        elif trial.state == TrialState.FAIL:
            status = "failed"
        elif run is not None and run.status in ("stopped", "crashed"):
            status = "paused"
        else:
            status = "running"
        counts[status] += 1
        value = trial.value if trial.state == TrialState.COMPLETE and not infeasible else None
        if value is not None and (best is None or (value > best if maximize else value < best)):
            best = value
        if not infeasible and trial.state.is_finished():
            best_so_far.append(best if best is not None else math.nan)
        steps = trial.intermediate_values
        rows.append({"trial": trial.number, "run": run.id if run else trial.user_attrs.get("run"),
                     "status": status, "run_status": run.status if run else None, "value": value,
                     "last": steps[max(steps)] if steps else None, "epochs": run.epoch if run else None,
                     "params": dict(trial.params), "note": infeasible or ""})
    ranked = sorted(rows, key=lambda r: (r["value"] is None, -(r["value"] or 0) if maximize else (r["value"] or 0),
                                         r["trial"]))
    best_row = next((r for r in ranked if r["value"] is not None), None)
    epochs = state.params.get("epochs") if isinstance(state.params.get("epochs"), int) else None
    ran = sum(r["epochs"] or 0 for r in rows if r["status"] != "infeasible")
    planned = epochs * sum(1 for r in rows if r["status"] != "infeasible") if epochs else None
    data: dict[str, Any] = {
        "experiment": name, "recipe": state.recipe, "sampler": spec.sampler, "pruner": spec.pruner,
        "metric": spec.metric, "direction": spec.direction, "seed": spec.seed, "trials": state.target,
        "active": state.active, "note": state.note, "counts": counts,
        "done": counts["completed"] + counts["pruned"] + counts["failed"], "best": best_row,
        "best_so_far": [None if math.isnan(v) else v for v in best_so_far], "trials_table": ranked,
        "space": {k: d.describe() for k, d in spec.space.items()}, "epochs_run": ran, "epochs_planned": planned,
        "journal": str(journal_path(runs_dir, name)),
    }
    if importances:
        data["importances"], data["importances_note"] = _importances(study, optuna)
    return data


def _importances(study: Any, optuna: Any) -> tuple[dict[str, float], str]:
    TrialState = optuna.trial.TrialState
    finished = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if not t.user_attrs.get("infeasible") and t.value is not None and math.isfinite(t.value)]
    varied = {k for t in finished for k in t.params}
    if len(finished) < 2 or not varied:
        return {}, "needs at least 2 completed trials"
    copy = optuna.create_study(direction=study.direction)
    copy.add_trials(finished)
    try:
        found = optuna.importance.get_param_importances(copy)
    except (ValueError, RuntimeError, ZeroDivisionError) as error:
        return {}, f"not available: {error}"
    return {k: float(v) for k, v in found.items()}, ""
