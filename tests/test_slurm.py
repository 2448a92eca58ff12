"""The Slurm backend through submitit's local executor (``cluster = "local"``): same worker, same folders, same ingest.

Kept for what the real cluster (tests/test_slurm_cluster.py, `make test-slurm`) cannot show: the backend's
submitit path in `make test` on any machine, Slurm or not, and the `cluster = "local"` option itself (its
liveness by the job's pid, its stop by a signal to the worker's pid on this host)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from expt.store import Store

from conftest import TINY_TOML, expt, wait_for, write_project

pytestmark = pytest.mark.slow

SLURM_TOML = TINY_TOML + '\n[launcher]\nbackend = "slurm"\ncluster = "local"\ntime = 10\ncpus_per_task = 1\n'


def test_runs_submitted_through_submitit_complete_and_are_ingested(tmp_path: Path):
    project = write_project(tmp_path / "proj", SLURM_TOML)
    result = expt("run", "tiny", cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "on slurm" in result.stdout
    runs = orjson.loads(expt("ls", "--json", cwd=project).stdout)
    assert [r["status"] for r in runs] == ["completed", "completed"]
    assert all(r["summary"]["best_top1"] >= 0 for r in runs)
    assert (project / "runs" / "tiny-1" / "slurm").is_dir()
    assert "expt worker tiny-1" in (project / "runs" / "tiny-1" / "log.txt").read_text()  # the job's output
    with Store(project / "runs.db") as store:
        run = store.get("tiny-1")
        assert run.backend == "slurm" and run.job_id


def test_a_slurm_run_stops_cleanly(tmp_path: Path):
    project = write_project(tmp_path / "proj", SLURM_TOML)
    assert expt("run", "long", "--detach", cwd=project).returncode == 0

    def running() -> bool:
        with Store(project / "runs.db") as store:
            store.ingest()
            run = store.get("long-1")
            return run.status == "running" and (run.epoch or 0) >= 1

    wait_for(running, timeout=120, interval=0.2, what="long-1 to run under submitit")
    assert "stopping" in expt("stop", "long-1", cwd=project).stdout

    def stopped() -> bool:
        with Store(project / "runs.db") as store:
            store.ingest()
            return store.get("long-1").status == "stopped"

    wait_for(stopped, timeout=120, interval=0.2, what="long-1 to stop")
