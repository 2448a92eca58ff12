"""Search experiments (issue 15): Optuna samplers and pruners over expt's own slots, through the real CLI.

The sampler tests train real tiny models (timm's test_efficientnet on digits); the pruner, crash and
concurrency tests use a small script as a `command` run whose per-epoch metric is a function of its
parameter, so what the pruner must do is known in advance. Every wait is on what `expt study --json`
or `expt ls` says.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from conftest import dead, expt, wait_for, write_project

SCRIPT = r'''
import argparse, csv, os, time
p = argparse.ArgumentParser()
p.add_argument("--out"); p.add_argument("--q", type=float); p.add_argument("--epochs", type=int)
p.add_argument("--pace", type=float, default=0.3); p.add_argument("--resume", action="store_true")
a = p.parse_args()
path = os.path.join(a.out, "timm", "summary.csv")
os.makedirs(os.path.dirname(path), exist_ok=True)
with open(path, "w", newline="") as h:
    w = csv.DictWriter(h, fieldnames=["epoch", "eval_top1"])
    w.writeheader()
    for e in range(a.epochs):
        time.sleep(a.pace)
        w.writerow({"epoch": e, "eval_top1": a.q * (e + 1)})
        h.flush()
'''


def command_experiment(name: str, search: str, space: str = "q = {low = 0.0, high = 1.0}", epochs: int = 4,
                       pace: float = 0.3) -> str:
    return f'''
[experiments.{name}]
recipe = "command"
command = "{{python}} train.py --out {{run_dir}} --q {{q}} --epochs {{epochs}} --pace {pace}"
resume_args = "--resume"
python = "{sys.executable}"
q = 0.5
epochs = {epochs}
metrics = ["timm/summary.csv"]

[experiments.{name}.search]
{search}

[experiments.{name}.search.space]
{space}
'''


def command_project(tmp_path: Path, text: str) -> Path:
    folder = write_project(tmp_path / "proj", text)
    (folder / "train.py").write_text(SCRIPT)
    return folder


def study(project: Path, name: str) -> dict:
    result = expt("study", name, "--json", cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    return orjson.loads(result.stdout)


def finished(project: Path, name: str):
    """The study's report once it is done (for wait_for)."""
    if not (project / "runs" / ".studies" / f"{name}.journal").exists():
        return None
    report = study(project, name)
    return report if report["note"] == "done" and not report["active"] else None


def runs_of(project: Path, name: str) -> list[dict]:
    result = expt("ls", name, "--json", cwd=project)
    assert result.returncode == 0, result.stderr
    return orjson.loads(result.stdout)


def trial_of(run: dict) -> int:
    import tomllib

    return tomllib.loads((Path(run["run_dir"]) / "config.toml").read_text())["trial"]


# -- validation: one line naming file, line, experiment and key; exit 2; nothing queued --------------------------

BASE = """\
[experiments.s]
recipe = "finetune"
model = "test_efficientnet"
epochs = 2
{sweep}
[experiments.s.search]
sampler = "{sampler}"

[experiments.s.search.space]
{space}
"""


@pytest.mark.parametrize("sampler,space,sweep,line,message", [
    ("bayes", "lr = {low = 0.01, high = 0.1}", "", 7, "s.search.sampler: unknown sampler 'bayes'"),
    ("tpe", "lrr = {low = 0.01, high = 0.1}", "", 10, "s.search.space.lrr: not a parameter of the recipe "
     "(did you mean 'lr'?)"),
    ("tpe", "lr = {low = 0.1, high = 0.01}", "", 10, "s.search.space.lr: low (0.1) is above high (0.01)"),
    ("tpe", "weight_decay = {low = 0.0, high = 0.1, log = true}", "", 10,
     "s.search.space.weight_decay: log = true needs low > 0, got 0"),
    ("random", "lr = {low = 0.01, high = 0.1}", "[experiments.s.sweep]\nlr = [0.1, 0.2]\n", 12,
     "s.search.space.lr: 'lr' is also swept ([experiments.s.sweep]): search it or sweep it, not both"),
    ("grid", "lr = {low = 0.01, high = 0.1}", "", 10, "s.search.space.lr: the grid sampler needs a list"),
    ("tpe", "mode = {low = 1, high = 2}", "", 10, "s.search.space.mode: mode is str, not a number"),
])
def test_a_bad_search_table_is_one_line_and_exit_2(project_dir: Path, cli, sampler, space, sweep, line, message):
    (project_dir / "experiments.toml").write_text(BASE.format(sampler=sampler, space=space, sweep=sweep))
    result = cli("run", "s")
    assert result.exit_code == 2, result.output
    errors = [x for x in result.output.splitlines() if x.startswith("error:")]
    assert len(errors) == 1, result.output
    assert errors[0].startswith(f"error: experiments.toml:{line}: {message}"), errors[0]
    assert not (project_dir / "runs").exists() or not any((project_dir / "runs").glob("s-*"))


def test_a_search_reads_into_the_experiment():
    from expt.config import parse_config

    config = parse_config(BASE.format(sampler="tpe", sweep="[experiments.s.sweep]\nmode = ['e2e', 'fc']\n",
                                      space="lr = {low = 1e-4, high = 0.3, log = true}\nbatch_size = [8, 16]\n"
                                            "shots = {low = 1, high = 5}"), Path("experiments.toml"))
    spec = config.experiment("s").search
    assert (spec.sampler, spec.trials, spec.metric, spec.direction, spec.pruner) == ("tpe", 20, "best_top1",
                                                                                     "maximize", "none")
    assert spec.space["lr"].kind == "float" and spec.space["lr"].log
    assert spec.space["shots"].kind == "int"
    assert spec.space["batch_size"].choices == (8, 16)
    assert spec.space["mode"].choices == ("e2e", "fc")  # a sweep beside a search is a categorical dimension
    assert config.experiment("s").sweep == {}


def test_the_recipes_constraint_makes_points_infeasible_not_runs(tmp_path: Path):
    """The scaling recipe's alpha * beta^2 * gamma^2 ~ 2 (constrain = true): infeasible points are told to Optuna as
    infeasible (its constraints) and never queued."""
    from expt.config import load_config
    from expt.core import scheduler, study
    from expt.core.recipes import scaling
    from expt.project import Project
    from expt.store import Store

    folder = write_project(tmp_path / "proj", """\
[experiments.scale]
recipe = "scaling"
phi = 1.0
constrain = true
tolerance = 0.5

[experiments.scale.search]
sampler = "random"
trials = 6

[experiments.scale.search.space]
alpha = {low = 0.9, high = 1.5}
beta = {low = 0.9, high = 1.3}
gamma = {low = 0.9, high = 1.3}
""")
    proj = Project(folder / "experiments.toml")
    experiment = load_config(proj.config_path).experiment("scale")
    with Store(proj.db_path) as store:
        study.start(store, proj, experiment)
        made = study.step(store, proj, scheduler.PoolSettings(jobs=6))
        assert len(made) == 6
        for run in made:
            assert abs(scaling.constraint(run.params) - 2.0) <= 0.5 and min(
                run.params[k] for k in ("alpha", "beta", "gamma")) >= 1
        report = study.report(store, proj.runs_dir, "scale", importances=False)
        assert report["counts"]["infeasible"] > 0 and report["counts"]["running"] == 6
        optuna_study = study.open_study(proj.runs_dir, study.load_state(proj.runs_dir, "scale"))
        infeasible = [t for t in optuna_study.trials if t.user_attrs.get("infeasible")]
        assert infeasible and all(t.constraints["recipe"] > 0 for t in infeasible)
        assert all(t.constraints["recipe"] == 0 for t in optuna_study.trials if "run" in t.user_attrs)
        scheduler.stop(store, made)
        assert not study.load_state(proj.runs_dir, "scale").active  # stopping every trial pauses the study


# -- samplers on real tiny training runs ----------------------------------------------------------------------

TINY = """
[experiments.{name}]
recipe = "finetune"
model = "test_efficientnet"
pretrained = false
shots = 2
img_size = 32
epochs = 1
batch_size = 8
eval_batch_size = 512

[experiments.{name}.search]
sampler = "{sampler}"
trials = 2
seed = 3
startup_trials = 1

[experiments.{name}.search.space]
{space}
"""
RANGES = "lr = {low = 0.01, high = 0.2, log = true}\nweight_decay = {low = 0.0, high = 0.01}"
SAMPLERS = {"tpe": RANGES, "random": RANGES, "cmaes": RANGES, "qmc": RANGES,
            "grid": "lr = [0.01, 0.1]\nweight_decay = [0.0]"}


@pytest.mark.slow
def test_every_sampler_runs_its_trials_as_runs(tmp_path: Path):
    text = "".join(TINY.format(name=f"s_{s}", sampler=s, space=space).replace("startup_trials = 1\n", "")
                   if s in ("random", "grid", "qmc") else TINY.format(name=f"s_{s}", sampler=s, space=space)
                   for s, space in SAMPLERS.items())
    project = write_project(tmp_path / "proj", text)
    for sampler in SAMPLERS:
        result = expt("run", f"s_{sampler}", "--detach", "--jobs", "2", cwd=project)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"s_{sampler}: study ({sampler} sampler" in result.stdout
    for sampler in SAMPLERS:
        report = wait_for(lambda: finished(project, f"s_{sampler}"), timeout=400, what=f"the {sampler} study")
        assert report["counts"]["completed"] == 2, report
        assert report["best"]["value"] is not None and 0 <= report["best"]["value"] <= 100
        runs = runs_of(project, f"s_{sampler}")
        assert len(runs) == 2 and {r["status"] for r in runs} == {"completed"}
        by_trial = {trial_of(r): r for r in runs}
        assert sorted(by_trial) == [0, 1]
        for row in report["trials_table"]:
            run = by_trial[row["trial"]]
            assert run["id"] == row["run"]
            assert {k: run["params"][k] for k in row["params"]} == row["params"] == run["varying"]
            assert 0.01 <= run["params"]["lr"] <= 0.2
    grid = {r["params"]["lr"] for r in runs_of(project, "s_grid")}
    assert grid == {0.01, 0.1}  # the grid: every point once
    shown = expt("study", "s_tpe", cwd=project)
    assert shown.returncode == 0 and "best: trial" in shown.stdout and "parameter importances" in shown.stdout


# -- pruners: a command run's per-epoch metric feeds them ------------------------------------------------------

PRUNERS = ("median", "hyperband", "successive_halving")


@pytest.mark.slow
def test_every_pruner_prunes_the_hopeless_trials_and_they_resume(tmp_path: Path):
    """Grid order with seed 1 is q = 0.9 first: every later trial is worse at every epoch than a finished one."""
    text = "".join(command_experiment(
        f"p_{p}", f'sampler = "grid"\nseed = 1\npruner = "{p}"\npruner_startup = 1\nparallel = 1',
        space="q = [0.1, 0.2, 0.3, 0.9]", epochs=8, pace=0.4) for p in PRUNERS)
    project = command_project(tmp_path, text)
    for pruner in PRUNERS:
        result = expt("run", f"p_{pruner}", "--detach", "--jobs", "3", cwd=project)
        assert result.returncode == 0, result.stdout + result.stderr
    for pruner in PRUNERS:
        report = wait_for(lambda: finished(project, f"p_{pruner}"), timeout=300, what=f"the {pruner} study")
        assert report["counts"]["pruned"] >= 1, report
        assert report["best"]["params"] == {"q": 0.9}
        pruned = [r for r in report["trials_table"] if r["status"] == "pruned"]
        assert all(r["epochs"] < 8 and r["params"]["q"] < 0.9 for r in pruned), pruned
        assert report["epochs_run"] < report["epochs_planned"] == 32
    listed = orjson.loads(expt("ls", "--status", "pruned", "--json", cwd=project).stdout)
    assert listed and {r["status"] for r in listed} == {"pruned"}
    table = expt("ls", "p_median", cwd=project).stdout
    assert "pruned" in table
    run = listed[0]
    assert "pruned on request" in (Path(run["run_dir"]) / "log.txt").read_text()
    resumed = expt("resume", run["id"], cwd=project)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    after = orjson.loads(expt("show", run["id"], "--json", cwd=project).stdout)
    assert after["status"] == "completed" and after["epoch"] == 8


# -- crashes and concurrency -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_killed_scheduler_loses_no_trial_and_runs_none_twice(tmp_path: Path):
    project = command_project(tmp_path, command_experiment("k", 'sampler = "tpe"\ntrials = 5\nstartup_trials = 2',
                                                           epochs=3, pace=1.0))
    from expt.core import study as study_module

    result = expt("run", "k", "--detach", cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    state = wait_for(lambda: study_module.load_state(project / "runs", "k"), what="the study created")

    def completed() -> int:  # read in this process: a poll through `expt study` lets more trials finish meanwhile
        return sum(t.state.name == "COMPLETE" for t in study_module.open_study(project / "runs", state).get_trials())

    wait_for(lambda: completed() >= 2, timeout=120, what="two trials done")
    lock = project / "runs" / ".scheduler.lock"
    pid = int(lock.read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: dead(pid), what="the scheduler gone")
    # a scheduler killed between asking a trial and queueing its run leaves a trial without a run
    optuna_study = study_module.open_study(project / "runs", state, 99)
    asked = len(optuna_study.get_trials())  # 3 (one trial runs): on a very loaded machine it may be all 5
    trials = max(5, asked + 1)  # the orphan is a trial like the others: it counts towards the 5, or comes after them
    orphan = optuna_study.ask()
    orphan.suggest_float("q", 0.0, 1.0)
    again = expt("run", "k", cwd=project)
    assert again.returncode == 0, again.stdout + again.stderr
    report = study(project, "k")
    assert report["counts"]["completed"] == trials and report["done"] == trials, report
    runs = runs_of(project, "k")
    assert len(runs) == trials and {r["status"] for r in runs} == {"completed"}
    assert sorted(trial_of(r) for r in runs) == list(range(trials))
    orphan_run = next(r for r in runs if trial_of(r) == orphan.number)
    assert orphan_run["params"]["q"] == orphan.params["q"]
    # runs.db is still a cache of runs/
    before = runs_of(project, "k")
    assert expt("reindex", cwd=project).returncode == 0
    after = runs_of(project, "k")
    assert [{k: v for k, v in r.items() if k != "duration"} for r in after] == \
        [{k: v for k, v in r.items() if k != "duration"} for r in before]
    assert study(project, "k")["best"] == report["best"]


@pytest.mark.slow
def test_two_expt_run_at_once_never_exceed_trials(tmp_path: Path):
    project = command_project(tmp_path, command_experiment("c", 'sampler = "random"\ntrials = 4', epochs=2,
                                                           pace=0.2))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "expt", "run", "c", "--jobs", "2"], cwd=project, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    runs = runs_of(project, "c")
    assert len(runs) == 4 and sorted(trial_of(r) for r in runs) == [0, 1, 2, 3]
    assert study(project, "c")["counts"]["completed"] == 4
    more = expt("run", "c", "--trials", "6", "--jobs", "2", cwd=project)  # --trials extends the study
    assert more.returncode == 0, more.stdout + more.stderr
    assert len(runs_of(project, "c")) == 6


# -- the TUI -----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_tui_launches_a_study_and_shows_its_progress_and_trials(tmp_path: Path):
    import asyncio

    from conftest import screen_text, until, until_shown
    from expt.project import Project
    from expt.tui.app import create_app

    project = command_project(tmp_path, command_experiment("t", 'sampler = "random"\ntrials = 3\nseed = 2',
                                                           epochs=2, pace=0.2))

    async def scenario():
        app = create_app(Project(project / "experiments.toml"), interval=0.2, image_mode="halfcell")
        async with app.run_test(size=(100, 30), notifications=True) as pilot:
            await pilot.press("2")
            screen = app.experiments_screen
            await until(pilot, lambda: screen.table.row_count == 1, what="the experiment")
            await until_shown(pilot, app, "a study: 3 trials, random sampler over q")
            await pilot.press("enter")
            await until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen", what="the confirmation")
            assert "3 runs" in screen_text(app)
            await pilot.press("y")  # launched, the app shows the runs as they come
            await until_shown(pilot, app, "t-3", "3 completed", timeout=120)
            await pilot.press("2")
            await until_shown(pilot, app, "3/3 trials", "best", "(done)", timeout=30)
            await pilot.press("s")
            await until_shown(pilot, app, "study t", "random sampler", "importances", timeout=30)
            text = screen_text(app)
            assert text.count("completed") >= 3 and "t-1" in text and "t-3" in text
            await pilot.press("enter")  # the best trial's run
            await until(pilot, lambda: type(app.screen).__name__ == "RunDetailScreen", what="the trial's run")
            await pilot.press("q")

    asyncio.run(scenario())
