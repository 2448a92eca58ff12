"""The bad-input catalogue beyond experiments.toml (see test_config.py for the file itself).

Each case goes through the real CLI (and, for run-time problems, the real worker) and is
checked for its one-line message, its exit status, and that runs.db and runs/ are unchanged,
or, for a run that fails, that only that run is marked failed.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path

import orjson
import pytest

from expt.store import SCHEMA_VERSION

from conftest import expt, write_project


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith("runs.db-")}


# (arguments, expected exit status, expected text on stderr)
REFUSED = [
    (["show", "../etc/passwd"], 2, "'../etc/passwd' is not a run id"),
    (["show", "tiny/1"], 2, "'tiny/1' is not a run id"),
    (["logs", ".."], 2, "'..' is not a run id"),
    (["show", "nope-1"], 2, "no run or experiment 'nope-1'"),
    (["show", "tiny-"], 2, "'tiny-' is ambiguous: it starts 2 run ids (tiny-1, tiny-2)"),
    (["show", "tiny"], 2, "'tiny' names 2 runs (tiny-1, tiny-2); give one run id"),
    (["compare", "tiny-1"], 2, "compare needs at least two runs"),
    (["export", "--format", "xls"], 2, "--format 'xls': expected csv, md, latex or json"),
    (["resume", "tiny-1"], 2, "tiny-1 is completed; only stopped, crashed, failed or pruned runs can be resumed"),
    (["run", "tinny"], 2, "no experiment 'tinny' (did you mean 'tiny'?)"),
    (["recipes", "finetun"], 2, "unknown recipe 'finetun' (did you mean 'finetune'?)"),
    (["ls", "--bogus-option"], 2, "No such option"),
    (["stop", "nope"], 2, "no run or experiment 'nope'"),
]


@pytest.mark.slow
@pytest.mark.parametrize("args,code,message", REFUSED, ids=[" ".join(a) for a, _, _ in REFUSED])
def test_refused_commands_change_nothing(finished_project: Path, tmp_path: Path, args, code, message):
    project = tmp_path / "proj"
    shutil.copytree(finished_project, project)
    before = _snapshot(project)
    result = expt(*args, cwd=project)
    assert result.returncode == code, result.stdout + result.stderr
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert _snapshot(project) == before


def test_a_runs_db_from_a_newer_schema_is_refused_untouched(tmp_path: Path):
    project = write_project(tmp_path / "proj")
    db = project / "runs.db"
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    conn.close()
    before = db.read_bytes()
    result = expt("ls", cwd=project)
    assert result.returncode == 1 and "newer than this expt understands" in result.stderr
    assert result.stderr.count("\n") == 1 and db.read_bytes() == before


def test_a_corrupt_runs_db_is_a_clear_error(tmp_path: Path):
    project = write_project(tmp_path / "proj")
    (project / "runs.db").write_bytes(b"garbage" * 1000)
    result = expt("ls", cwd=project)
    assert result.returncode == 1 and "not a database" in result.stderr and "expt reindex" in result.stderr


def test_no_experiments_file(tmp_path: Path):
    result = expt("run", "demo", cwd=tmp_path)
    assert result.returncode == 2 and "experiments.toml: no such file (use -f PATH or set EXPT_FILE)" in result.stderr


def test_an_empty_data_folder_is_caught_before_queueing(tmp_path: Path):
    project = write_project(tmp_path / "proj", "[experiments.e]\nrecipe = 'finetune'\nmodel = 'test_efficientnet'\n"
                                               "dataset = 'imagefolder'\ndata_dir = 'empty'\n")
    (project / "empty").mkdir()
    result = expt("run", "e", cwd=project)
    assert result.returncode == 2 and "e: data_dir 'empty' is empty (dataset 'imagefolder'; expected class sub-folders" in result.stderr
    assert not (project / "runs").exists()


def test_a_corrupt_metrics_line_is_skipped_and_counted(finished_project: Path, tmp_path: Path):
    project = tmp_path / "proj"
    shutil.copytree(finished_project, project)
    metrics = project / "runs" / "tiny-1" / "metrics.jsonl"
    good = metrics.read_bytes()
    (project / "runs.db").unlink()
    metrics.write_bytes(good.replace(b"\n", b"\n\x00garbage{{\n", 1))
    assert expt("reindex", cwd=project).returncode == 0
    shown = orjson.loads(expt("show", "tiny-1", "--json", cwd=project).stdout)
    assert shown["status"] == "completed" and len(shown["metrics"]["top1"]) == 2


FAILING_RUNS = [
    ("not-a-checkpoint", "checkpoint = 'bad.pt'\n", "checkpoint 'bad.pt' is not a PyTorch checkpoint"),
    ("too-few-images", "shots = 500\n", "training images, fewer than shots = 500"),
    ("imagefolder-without-images", "dataset = 'imagefolder'\ndata_dir = 'noimages'\n",
     "the class folders hold no images"),
]


@pytest.mark.slow
@pytest.mark.parametrize("name,extra,message", FAILING_RUNS, ids=[c[0] for c in FAILING_RUNS])
def test_a_run_that_cannot_work_fails_alone_with_one_line(tmp_path: Path, name, extra, message):
    project = write_project(tmp_path / "proj", "[experiments.e]\nrecipe = 'finetune'\nmodel = 'test_efficientnet'\n"
                                               "pretrained = false\nimg_size = 32\nepochs = 1\n" + extra)
    (project / "bad.pt").write_bytes(b"this is not a checkpoint")
    (project / "noimages" / "cats").mkdir(parents=True)
    (project / "noimages" / "cats" / "readme.txt").write_text("no images here")
    result = expt("run", "e", cwd=project)
    assert result.returncode == 1
    runs = orjson.loads(expt("ls", "--json", cwd=project).stdout)
    assert [r["status"] for r in runs] == ["failed"]
    assert message in runs[0]["error"] and "\n" not in runs[0]["error"]
    assert "Traceback" not in (project / "runs" / "e-1" / "log.txt").read_text()


# -- numbers, names and paths that experiments.toml may hold but a run cannot use (issue 13) -------------------

@pytest.fixture(scope="module")
def recorded_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project whose runs.db holds one completed run with metrics, written by Store, Tracker and ingest."""
    from expt.core.recipes import get_recipe
    from expt.core.tracking import Tracker
    from expt.store import Store

    folder = write_project(tmp_path_factory.mktemp("recorded") / "proj")
    with Store(folder / "runs.db") as store:
        run = store.create_run(folder / "runs", experiment="tiny", recipe="finetune", metric="top1", goal="max",
                               params=get_recipe("finetune").params.defaults(), varying={"mode": "e2e"})
        with Tracker(run.path) as tracker:
            tracker.log_status("running", pid=1, host="test")
            for step in (1, 2):
                tracker.log_metrics(step, train_loss=1.0 / step, top1=40.0 * step)
            tracker.log_summary(best_top1=80.0, best_epoch=2)
            tracker.log_status("completed")
        store.ingest([run])
    return folder


def _rows(db: Path) -> dict[str, list[tuple]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {t: sorted(map(tuple, conn.execute(f'SELECT * FROM "{t}"')), key=repr) for t in tables}
    finally:
        conn.close()


def _refused(recorded_project: Path, tmp_path: Path, text: str, name: str) -> list[str]:
    """``expt run NAME`` on a copy of the recorded project with ``text`` as experiments.toml: exit 2, no
    traceback, runs.db's rows and every file as they were; returns stderr's lines."""
    project = tmp_path / "proj"
    shutil.copytree(recorded_project, project)
    (project / "experiments.toml").write_text(text)
    rows, files = _rows(project / "runs.db"), _snapshot(project)
    assert rows["runs"] and rows["metrics"]
    result = expt("run", name, cwd=project, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert _rows(project / "runs.db") == rows and _snapshot(project) == files
    return result.stderr.splitlines()


def _float_params() -> list[tuple[str, str]]:
    from expt.core.recipes import all_recipes

    return [(r.name, p.name) for r in all_recipes().values() for p in r.params
            if float in p.types or p.item_type is float]


def _toml_value(recipe: str, param: str, number: str) -> str:
    from expt.core.recipes import get_recipe

    declared = get_recipe(recipe).params.get(param)
    if declared.item_type is float:
        return f"[{number}, {number}]"
    return number


# each of TOML's non-finite floats, each in one of the places a value can be
NON_FINITE = [("value", "nan"), ("sweep", "inf"), ("cases", "-inf")]


@pytest.mark.parametrize("where,number", NON_FINITE, ids=[f"{w}-{n}" for w, n in NON_FINITE])
@pytest.mark.parametrize("recipe,param", _float_params(), ids=[f"{r}.{p}" for r, p in _float_params()])
def test_nan_and_infinity_are_refused_for_every_float_parameter(recorded_project: Path, tmp_path: Path,
                                                                recipe, param, where, number):
    from expt.core.recipes import get_recipe

    value = _toml_value(recipe, param, number)
    head = f"[experiments.e]\nrecipe = '{recipe}'\n" + ("epochs = 0\n" if "epochs" in get_recipe(recipe).params else "")
    body = {"value": f"{param} = {value}\n", "sweep": f"[experiments.e.sweep]\n{param} = [{value}]\n",
            "cases": f"cases = [{{{param} = {value}}}]\n"}[where]
    key = {"value": f"e.{param}", "sweep": f"e.sweep.{param}", "cases": f"e.cases.{param}"}[where]
    lines = _refused(recorded_project, tmp_path, head + body, "e")
    line = len(head.splitlines()) + 1 + (where == "sweep")
    assert lines == [f"error: experiments.toml:{line}: {key}: {number} is not a finite number"]


def test_the_non_finite_test_covers_every_recipe_that_has_float_parameters():
    assert {r for r, _ in _float_params()} == {"command", "finetune", "metric", "scaling"}
    assert ("finetune", "test_fraction") in _float_params() and ("finetune", "scale") in _float_params()


def test_nan_inside_a_table_parameter_is_refused(recorded_project: Path, tmp_path: Path):
    lines = _refused(recorded_project, tmp_path, "[experiments.e]\nrecipe = 'metric'\nloss = 'arcface'\n"
                                                 "loss_args = {margin = nan}\n", "e")
    assert lines == ["error: experiments.toml:4: e.loss_args: nan is not a finite number"]


def test_an_experiment_name_too_long_for_its_run_folders_is_refused(recorded_project: Path, tmp_path: Path):
    name = "a" * 300
    lines = _refused(recorded_project, tmp_path, f"[experiments.{name}]\nrecipe = 'finetune'\n", name)
    assert lines == [f"error: experiments.toml:1: {'a' * 40}...: experiment names are at most 200 characters (their "
                     "runs' folders are NAME-NUMBER, and a file name may have 255 bytes); this one has 300"]


def test_the_longest_name_makes_run_folders_any_file_system_takes(tmp_path: Path):
    from expt.errors import UsageError
    from expt.store import Store

    with Store(tmp_path / "runs.db") as store:
        run = store.create_run(tmp_path / "runs", experiment="a" * 200, recipe="finetune", params={}, varying={})
        assert run.path.is_dir() and len(f"{'a' * 200}-{2**63 - 1}".encode()) < 255
        with pytest.raises(UsageError, match="experiment names are at most 200 characters"):
            store.create_run(tmp_path / "runs", experiment="b" * 201, recipe="finetune", params={}, varying={})
        assert [r.experiment for r in store.runs()] == ["a" * 200] and len(list((tmp_path / "runs").iterdir())) == 1


SEEDS = [
    ("beyond-64-bit", "seed = 99999999999999999999\n", 3, "e.seed: 99999999999999999999 is above the maximum "
     "9223372036854775807"),
    ("uint64-max-with-repeat", "seed = 18446744073709551615\nrepeat = 2\n", 3, "e.seed: 18446744073709551615 is "
     "above the maximum 9223372036854775807"),
    ("the-last-seed-plus-repeat", "seed = 9223372036854775807\nrepeat = 2\n", 3, "e.seed: with repeat = 2 the runs "
     "take seeds 9223372036854775807 .. 9223372036854775808, above the maximum 9223372036854775807"),
    ("negative", "seed = -1\n", 3, "e.seed: -1 is below the minimum 0"),
    ("sweep-beyond", "[experiments.e.sweep]\nseed = [1, 9223372036854775808]\n", 4,
     "e.sweep.seed: 9223372036854775808 is above the maximum 9223372036854775807"),
    ("split-seed", "split_seed = 18446744073709551616\n", 3, "e.split_seed: 18446744073709551616 is above the maximum "
     "9223372036854775807"),
    ("int-beyond-64-bit", "shots = 99999999999999999999\n", 3, "e.shots: 99999999999999999999 does not fit in a "
     "64-bit integer (-9223372036854775808 .. 9223372036854775807)"),
]


@pytest.mark.parametrize("extra,line,message", [s[1:] for s in SEEDS], ids=[s[0] for s in SEEDS])
def test_seeds_beyond_what_runs_db_and_torch_take_are_refused(recorded_project: Path, tmp_path: Path,
                                                              extra, line, message):
    lines = _refused(recorded_project, tmp_path, "[experiments.e]\nrecipe = 'finetune'\n" + extra, "e")
    assert lines == [f"error: experiments.toml:{line}: {message}"]


def test_the_largest_seed_with_its_repeats_is_accepted(tmp_path: Path):
    project = write_project(tmp_path / "proj", "[experiments.e]\nrecipe = 'finetune'\nseed = 9223372036854775806\n"
                                               "repeat = 2\n")
    result = expt("run", "e", "--dry-run", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "9,223,372,036,854,775,807" in result.stdout and not (project / "runs").exists()
