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
    (["export", "--format", "xls"], 2, "--format 'xls': expected csv, md or json"),
    (["resume", "tiny-1"], 2, "tiny-1 is completed; only stopped, crashed or failed runs can be resumed"),
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
