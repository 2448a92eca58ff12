"""Stop, resume and failure through the real worker and the real CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from expt.core import runfiles
from expt.store import Store

from conftest import ended, expt, ingested_run, training_metrics, wait_for, write_project

pytestmark = pytest.mark.slow

BODY = """\
recipe = "finetune"
model = "test_efficientnet"
pretrained = false
shots = 6
img_size = 32
epochs = 6
batch_size = 8
lr = 0.05
augment = true
drop_rate = 0.2
seed = 3
"""
TOML = f"[experiments.straight]\n{BODY}\n[experiments.interrupted]\n{BODY}\n" \
       "[experiments.broken]\nrecipe = 'finetune'\nmodel = 'test_efficientnet'\ncheckpoint = 'missing.pt'\n"


def _metrics(store: Store, run_id: str) -> dict:
    run = store.get(run_id)
    return training_metrics(store, run)


def test_stopped_and_resumed_run_matches_one_that_ran_straight_through(tmp_path: Path):
    project = write_project(tmp_path / "proj", TOML)
    assert expt("run", "straight", cwd=project).returncode == 0
    assert expt("run", "interrupted", "--detach", cwd=project).returncode == 0

    def partway() -> bool:
        run = ingested_run(project, "interrupted-1")
        return run.status == "running" and (run.epoch or 0) >= 2

    wait_for(partway, timeout=120, interval=0.05, what="interrupted-1 to reach epoch 3")
    stopped = expt("stop", "interrupted-1", cwd=project)
    assert "stopping" in stopped.stdout, stopped.stdout + stopped.stderr

    assert wait_for(lambda: ended(project, "interrupted-1"), timeout=120, what="the stop") == "stopped"
    resumed = expt("resume", "interrupted-1", cwd=project)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming at epoch" in (project / "runs" / "interrupted-1" / "log.txt").read_text()
    with Store(project / "runs.db") as store:
        assert store.get("interrupted-1").status == "completed"
        straight, interrupted = _metrics(store, "straight-1"), _metrics(store, "interrupted-1")
        assert straight == interrupted
        assert store.get("straight-1").summary["best_top1"] == store.get("interrupted-1").summary["best_top1"]


def test_a_failing_run_records_its_error_and_resume_refuses_completed_runs(tmp_path: Path):
    project = write_project(tmp_path / "proj", TOML)
    result = expt("run", "broken", cwd=project)
    assert result.returncode == 1
    assert "checkpoint 'missing.pt': no such file" in result.stdout
    shown = expt("show", "broken-1", cwd=project)
    assert "error: checkpoint 'missing.pt': no such file" in shown.stdout
    assert "Traceback" not in (project / "runs" / "broken-1" / "log.txt").read_text()
    assert expt("run", "straight", cwd=project).returncode == 0
    refused = expt("resume", "straight-1", cwd=project)
    assert refused.returncode == 2 and "only stopped, crashed, failed or pruned runs" in refused.stderr


def test_resuming_an_experiment_passes_over_its_completed_runs(tmp_path: Path):
    project = write_project(tmp_path / "proj", TOML)
    assert expt("run", "broken", cwd=project).returncode == 1
    with Store(project / "runs.db") as store:
        completed = store.create_run(project / "runs", experiment="broken", recipe="finetune",
                                     params=store.get("broken-1").params, varying={})
        runfiles.append_event(completed.path, "status", status="completed")
        store.ingest()
    resumed = expt("resume", "broken", "--detach", cwd=project)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming broken-1 (1 completed or active runs left as they are)" in resumed.stdout
    with Store(project / "runs.db") as store:
        assert store.get(completed.id).status == "completed"
