"""The Slurm backend against a real Slurm (issue 18): `make test-slurm` brings one up with scripts/slurm-up.

One node, two fake GPUs (character devices handed out through GRES), partitions `debug` (default) and
`urgent` (preempts `debug`), no accounting. Everything goes through the real CLI as a subprocess and real
sbatch, squeue, scancel and scontrol; every wait is on what the user would see (`expt ps --json`, `expt show
--json`, the run's log). Skipped where no cluster answers (`make test` on a machine without Slurm).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from conftest import TINY_TOML, dead, expt, wait_for, write_project


def _cluster_up() -> bool:
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return False
    try:
        state = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return any(s.strip() in ("idle", "mixed", "allocated") for s in state.splitlines())


pytestmark = [pytest.mark.slurm, pytest.mark.slow,
              pytest.mark.skipif(not _cluster_up(), reason="no Slurm cluster answers here: `make test-slurm` "
                                 "brings one up (scripts/slurm-up)")]

ENDLESS = """
recipe = "finetune"
model = "test_efficientnet"
pretrained = false
shots = 5
img_size = 32
epochs = 5000
batch_size = 10
lr = 0.05
"""

SCRIPT = r'''
import csv, os, sys
out = sys.argv[1]
print(f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')} SLURM_JOB_ID={os.environ['SLURM_JOB_ID']}",
      flush=True)
path = os.path.join(out, "timm", "summary.csv")
os.makedirs(os.path.dirname(path), exist_ok=True)
with open(path, "w", newline="") as handle:
    writer = csv.DictWriter(handle, fieldnames=["epoch", "train_loss", "eval_top1"])
    writer.writeheader()
    for epoch in range(3):
        writer.writerow({"epoch": epoch, "train_loss": 1.0 / (epoch + 1), "eval_top1": 50.0 + epoch})
'''


def cluster_toml(**launcher: object) -> str:
    settings = {"backend": "slurm", "time": 10, "cpus_per_task": 1, "mem_gb": 1, "gpus_per_task": 1, **launcher}
    return (TINY_TOML + "\n[experiments.endless]" + ENDLESS + "\n[experiments.three]" + ENDLESS + "repeat = 3\n"
            + '\n[experiments.script]\nrecipe = "command"\ncommand = "{python} script.py {run_dir}"\n'
            'metrics = ["timm/summary.csv"]\n'
            + "\n[launcher]\n" + "".join(f"{k} = {orjson.dumps(v).decode()}\n" for k, v in settings.items()))


@pytest.fixture
def cluster_project(tmp_path: Path):
    """A project on the cluster (``cluster_project(**launcher)``); its jobs are cancelled when the test ends,
    passed or not, so no test leaves the two GPUs taken for the next."""
    folders: list[Path] = []

    def make(name: str = "proj", **launcher: object) -> Path:
        folder = write_project(tmp_path / name, cluster_toml(**launcher))
        (folder / "script.py").write_text(SCRIPT)
        folders.append(folder)
        return folder

    yield make
    for folder in folders:
        jobs = _job_ids(folder)
        if jobs:
            subprocess.run(["scancel", *jobs], capture_output=True, timeout=60)
            wait_for(lambda: not _active_jobs(jobs), timeout=120, interval=0.5,
                     what=f"jobs {jobs} to leave the cluster")


def _job_ids(folder: Path) -> list[str]:
    import sqlite3

    if not (folder / "runs.db").exists():
        return []
    with sqlite3.connect(folder / "runs.db") as conn:
        return [row[0] for row in conn.execute("SELECT DISTINCT job_id FROM runs WHERE job_id IS NOT NULL")]


def _active_jobs(jobs: list[str]) -> dict[str, str]:
    """Those of ``jobs`` Slurm still has pending, running or completing, with their state."""
    done = subprocess.run(["squeue", "-h", "-j", ",".join(jobs), "-o", "%i|%T"], capture_output=True, text=True,
                          timeout=30)
    return dict(line.split("|", 1) for line in done.stdout.split())


def ps(folder: Path) -> dict[str, dict]:
    result = expt("ps", "--json", cwd=folder)
    assert result.returncode == 0, result.stdout + result.stderr
    return {run["id"]: run for run in orjson.loads(result.stdout)["runs"]}


def show(folder: Path, run_id: str) -> dict:
    result = expt("show", run_id, "--json", cwd=folder)
    assert result.returncode == 0, result.stdout + result.stderr
    return orjson.loads(result.stdout)


def log(folder: Path, run_id: str) -> str:
    return (folder / "runs" / run_id / "log.txt").read_text()


def epoch_at_least(folder: Path, run_id: str, epoch: int):
    """The run's `expt show --json` once it runs and has logged ``epoch`` epochs."""
    run = show(folder, run_id)
    return run if run["status"] == "running" and (run["epoch"] or 0) >= epoch else None


def steps(run: dict, key: str = "top1") -> list[int]:
    return [step for step, _ in run["metrics"][key]]


def written_steps(folder: Path, run_id: str, key: str = "top1") -> list[int]:
    """The steps of ``key`` in the run's metrics.jsonl, as its workers wrote them."""
    lines = (folder / "runs" / run_id / "metrics.jsonl").read_bytes().splitlines()
    return sorted({record["step"] for record in map(orjson.loads, lines) if key in record})


def every_epoch_once(run: dict, folder: Path) -> bool:
    """Every epoch's metrics, written by however many jobs, are in runs.db, none lost, none twice (the progress
    column can lag the last one by one: a stop after an epoch's metrics comes before the next progress event)."""
    done = steps(run)
    return done == written_steps(folder, run["id"]) == list(range(1, len(done) + 1)) and len(done) >= run["epoch"]


# -- the tests ------------------------------------------------------------------------------------------------


def test_a_sweep_runs_on_both_gpus_completes_and_is_ingested(cluster_project):
    folder = cluster_project()
    result = expt("run", "tiny", cwd=folder)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "on slurm" in result.stdout and "Best metric" in result.stdout
    runs = [show(folder, run_id) for run_id in ("tiny-1", "tiny-2")]
    assert [r["status"] for r in runs] == ["completed", "completed"]
    assert all(r["summary"]["best_top1"] >= 0 and steps(r) == [1, 2] for r in runs)
    assert all(r["backend"] == "slurm" and r["job_id"].isdigit() for r in runs)
    assert runs[0]["job_id"] != runs[1]["job_id"]
    assert sorted(r["device"] for r in runs) == ["cuda:0", "cuda:1"]  # the two GPUs Slurm handed out at once
    for run in runs:
        gpu = run["device"].removeprefix("cuda:")
        assert f"Slurm job {run['job_id']} on " in log(folder, run["id"])
        assert f"CUDA_VISIBLE_DEVICES={gpu}" in log(folder, run["id"])
        started = [orjson.loads(line) for line in (folder / "runs" / run["id"] / "metrics.jsonl").read_bytes()
                   .splitlines() if b'"running"' in line]
        assert started[0]["job_id"] == run["job_id"] and started[0]["cuda_visible_devices"] == gpu
        script = (folder / "runs" / run["id"] / "slurm" / f"{run['job_id']}_submission.sh").read_text()
        assert "#SBATCH --gpus-per-node=1" in script and "#SBATCH --job-name=" + run["id"] in script
    assert "Slurm job" not in expt("ps", cwd=folder).stdout  # nothing is left active


def test_a_third_run_waits_pending_stop_reaches_the_worker_and_resume_resubmits_it(cluster_project):
    folder = cluster_project()
    assert expt("run", "three", "--detach", cwd=folder).returncode == 0

    def two_running_one_pending():
        runs = ps(folder)
        running = [r for r in runs.values() if r["status"] == "running" and (r["epoch"] or 0) >= 1]
        pending = [r for r in runs.values() if r["status"] == "starting" and "PENDING" in (r["job"] or "")]
        return runs if len(running) == 2 and len(pending) == 1 else None

    runs = wait_for(two_running_one_pending, timeout=240, interval=0.5, what="two runs on the GPUs, one pending")
    assert sorted(r["device"] for r in runs.values() if r["status"] == "running") == ["cuda:0", "cuda:1"]
    waiting = next(r for r in runs.values() if r["status"] == "starting")
    assert waiting["device"] == "slurm:pending" and waiting["job"] == f"job {waiting['job_id']} PENDING (Resources)"
    table = expt("ps", cwd=folder, columns=160).stdout
    assert "slurm:pending" in table and "PENDING (Resources)" in table and "RUNNING on" in table
    _tui_shows(folder, waiting["id"], "slurm:pending")

    first = next(r for r in runs.values() if r["status"] == "running")
    before = first["job_id"]
    assert "cancelled Slurm job" in expt("stop", waiting["id"], cwd=folder).stdout
    assert f"stopping Slurm job {before} (SIGTERM)" in expt("stop", first["id"], cwd=folder).stdout
    wait_for(lambda: show(folder, first["id"])["status"] == "stopped", timeout=120, interval=0.5,
             what=f"{first['id']} to checkpoint and stop")
    wait_for(lambda: show(folder, waiting["id"])["status"] == "stopped", timeout=60, interval=0.5,
             what=f"{waiting['id']} to be cancelled")
    assert "stopped on request; the checkpoint is saved" in log(folder, first["id"])  # the worker's own handler
    assert (folder / "runs" / first["id"] / "checkpoint.pt").is_file()
    assert show(folder, waiting["id"])["started_at"] is None
    epochs_before = show(folder, first["id"])["epoch"]

    assert expt("resume", first["id"], "--detach", cwd=folder).returncode == 0
    resumed = wait_for(lambda: epoch_at_least(folder, first["id"], epochs_before + 1), timeout=240, interval=0.5,
                       what=f"{first['id']} to run again")
    assert resumed["job_id"] != before  # a new job, the same run
    text = log(folder, first["id"])
    assert f"Slurm job {resumed['job_id']} on " in text and "resuming at epoch" in text
    expt("stop", "three", cwd=folder)
    wait_for(lambda: all(r["status"] == "stopped" for r in (show(folder, f"three-{i}") for i in (1, 2, 3))),
             timeout=120, interval=0.5, what="every run of three to stop")
    assert every_epoch_once(show(folder, first["id"]), folder)  # across the two jobs


def _tui_shows(folder: Path, run_id: str, text: str) -> None:
    import asyncio

    from conftest import until_shown
    from expt.project import Project
    from expt.tui.app import create_app

    async def scenario():
        app = create_app(Project(folder / "experiments.toml"), interval=0.2, image_mode="halfcell")
        async with app.run_test(size=(160, 30)) as pilot:
            await until_shown(pilot, app, run_id, text, timeout=60)

    asyncio.run(scenario())


def test_a_job_that_slurm_cancels_ends_crashed_with_slurms_reason_and_every_line(cluster_project):
    folder = cluster_project()
    assert expt("run", "endless", "--detach", cwd=folder).returncode == 0
    run = wait_for(lambda: epoch_at_least(folder, "endless-1", 2), timeout=240, interval=0.5,
                   what="endless-1 to log two epochs")
    subprocess.run(["scancel", run["job_id"]], check=True, timeout=30)
    wait_for(lambda: show(folder, "endless-1")["status"] == "crashed", timeout=120, interval=0.5,
             what="endless-1 to be marked crashed")
    run = show(folder, "endless-1")
    assert run["error"].startswith(f"Slurm job {run['job_id']} ended CANCELLED: JOB {run['job_id']} ON ")
    assert "CANCELLED AT" in run["error"] and "\n" not in run["error"]
    assert every_epoch_once(run, folder) and run["epoch"] >= 2
    assert f"Slurm ends job {run['job_id']}" in log(folder, "endless-1")  # it saved its checkpoint first
    assert (folder / "runs" / "endless-1" / "checkpoint.pt").is_file()


def test_a_job_past_its_time_limit_ends_crashed_with_the_time_limit_as_reason(cluster_project):
    folder = cluster_project(time=1, requeues=0)
    assert expt("run", "endless", "--detach", cwd=folder).returncode == 0
    wait_for(lambda: show(folder, "endless-1")["status"] == "crashed", timeout=300, interval=1,
             what="endless-1 to reach its time limit (1 minute; Slurm checks every 30 s or so)")
    run = show(folder, "endless-1")
    assert run["error"].startswith(f"Slurm job {run['job_id']} ended TIMEOUT (TimeLimit): ")
    assert run["error"].endswith("DUE TO TIME LIMIT")
    assert every_epoch_once(run, folder) and steps(run)
    assert "TimeLimit): the checkpoint is saved" in log(folder, "endless-1")


@pytest.mark.skipif(_cluster_up() and "urgent" not in subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True,
                    text=True).stdout, reason="the cluster has no partition `urgent` that preempts the default one")
def test_a_preempted_job_and_a_time_limit_warning_requeue_and_continue_the_same_run(cluster_project):
    folder = cluster_project()
    assert expt("run", "endless", "--detach", cwd=folder).returncode == 0
    run = wait_for(lambda: epoch_at_least(folder, "endless-1", 2), timeout=240, interval=0.5,
                   what="endless-1 to log two epochs")
    job = run["job_id"]
    # A job in the higher-priority partition needs both GPUs: Slurm preempts ours (SIGTERM, a 10 s grace, kill)
    # and requeues it.
    urgent = subprocess.run(["sbatch", "-p", "urgent", "--gpus-per-node=2", "--mem=100M", "-o", os.devnull,
                             "--wrap", "sleep 1"], capture_output=True, text=True, check=True, timeout=30)
    urgent_job = urgent.stdout.split()[-1]
    try:
        wait_for(lambda: "BeginTime" in (ps(folder).get("endless-1", {}).get("job") or ""), timeout=180,
                 interval=0.5, what="the preempted job to be requeued")
        assert ps(folder)["endless-1"]["device"] == "slurm:preempted"
        assert f"Slurm preempts job {job}" in log(folder, "endless-1")
        # Slurm lets a requeued job start again cred_expire + 1 s later (AuthInfo; 15 s here, 120 s by default)
        wait_for(lambda: log(folder, "endless-1").count("resuming at epoch") == 1 and
                 epoch_at_least(folder, "endless-1", 1), timeout=180, interval=0.5, what="the requeued job to resume")
    finally:
        subprocess.run(["scancel", urgent_job], capture_output=True, timeout=30)

    # submitit's time-limit warning (what Slurm sends signal_delay s before the end): checkpoint, requeue, go on
    subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=30)
    wait_for(lambda: "BeginTime" in (ps(folder).get("endless-1", {}).get("job") or ""), timeout=120, interval=0.5,
             what="the warned job to requeue itself")
    assert f"Slurm job {job}: its time limit is near: requeued" in log(folder, "endless-1")
    resumed = wait_for(lambda: log(folder, "endless-1").count("resuming at epoch") == 2 and
                       epoch_at_least(folder, "endless-1", 1), timeout=180, interval=0.5,
                       what="the job to resume a second time")
    assert resumed["job_id"] == job and f"Slurm job {job}, restart 2 on" in log(folder, "endless-1")
    wait_for(lambda: epoch_at_least(folder, "endless-1", resumed["epoch"] + 1), timeout=120, interval=0.5,
             what="one more epoch")
    expt("stop", "endless-1", cwd=folder)
    wait_for(lambda: show(folder, "endless-1")["status"] == "stopped", timeout=120, interval=0.5, what="the stop")
    assert every_epoch_once(show(folder, "endless-1"), folder)


def test_detached_runs_survive_the_submitting_process_and_another_process_follows_them(cluster_project):
    folder = cluster_project()
    assert expt("run", "tiny", "--detach", cwd=folder).returncode == 0
    submitted = wait_for(lambda: (lambda runs: runs if len(runs) == 2 and all(r["job_id"] for r in runs.values())
                                  else None)(ps(folder)), timeout=120, interval=0.3, what="both jobs submitted")
    scheduler_pid = int((folder / "runs" / ".scheduler.lock").read_text().split()[0])
    os.kill(scheduler_pid, signal.SIGKILL)  # the login node's process that submitted them
    wait_for(lambda: dead(scheduler_pid), timeout=30, what="the scheduler to die")
    result = expt("ps", "--json", cwd=folder)
    assert orjson.loads(result.stdout)["scheduler"] is False
    assert {r["job_id"] for r in orjson.loads(result.stdout)["runs"]} <= {r["job_id"] for r in submitted.values()}
    wait_for(lambda: all(show(folder, f"tiny-{i}")["status"] == "completed" for i in (1, 2)), timeout=240,
             interval=0.5, what="both runs to complete with no expt process watching")
    assert "nothing queued or running" in expt("ps", cwd=folder).stdout


def test_a_command_run_goes_through_the_same_backend(cluster_project):
    folder = cluster_project()
    result = expt("run", "script", cwd=folder)
    assert result.returncode == 0, result.stdout + result.stderr
    run = show(folder, "script-1")
    assert run["status"] == "completed" and run["backend"] == "slurm"
    assert run["metrics"]["eval_top1"] == [[1, 50.0], [2, 51.0], [3, 52.0]]  # timm epochs count from 0
    gpu = run["device"].removeprefix("cuda:")
    assert f"CUDA_VISIBLE_DEVICES={gpu} SLURM_JOB_ID={run['job_id']}" in log(folder, "script-1")  # its stdout


def test_a_job_slurm_refuses_fails_the_run_with_sbatchs_line(cluster_project):
    folder = cluster_project(mem_gb=100_000)
    result = expt("run", "tiny", cwd=folder)
    assert result.returncode == 1
    run = show(folder, "tiny-1")
    assert run["status"] == "failed" and run["job_id"] is None
    assert run["error"].startswith("Slurm refused the job: sbatch: error: ")


def test_the_environment_of_the_submitting_process_reaches_the_job(cluster_project):
    """sbatch's default --export=ALL: PYTHONPATH (this checkout, not whatever expt is installed) and the rest."""
    folder = cluster_project()
    marker = f"expt-{time.time()}"
    env = {**os.environ, "EXPT_TEST_MARKER": marker}
    (folder / "env.py").write_text("import os, expt\nprint('marker', os.environ.get('EXPT_TEST_MARKER'), "
                                   "'expt from', os.path.dirname(os.path.dirname(expt.__file__)))\n")
    with open(folder / "experiments.toml", "a") as handle:
        handle.write('\n[experiments.env]\nrecipe = "command"\ncommand = "{python} env.py"\n')
    result = subprocess.run([sys.executable, "-m", "expt", "run", "env"], cwd=folder, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    expected = os.path.dirname(os.path.dirname(__import__("expt").__file__))
    assert f"marker {marker} expt from {expected}" in log(folder, "env-1")


SEARCH = '''
[experiments.sq]
recipe = "command"
command = "{python} search.py {run_dir} {q}"
q = 0.5
metrics = ["timm/summary.csv"]

[experiments.sq.search]
sampler = "random"
trials = 3
seed = 1

[experiments.sq.search.space]
q = {low = 0.0, high = 1.0}
'''

SEARCH_SCRIPT = r"""
import csv, os, sys
out, q = sys.argv[1], float(sys.argv[2])
path = os.path.join(out, "timm", "summary.csv")
os.makedirs(os.path.dirname(path), exist_ok=True)
with open(path, "w", newline="") as handle:
    writer = csv.DictWriter(handle, fieldnames=["epoch", "eval_top1"])
    writer.writeheader()
    for epoch in range(2):
        writer.writerow({"epoch": epoch, "eval_top1": q * (epoch + 1)})
"""


def test_a_searchs_trials_are_slurm_jobs(cluster_project):
    folder = cluster_project()
    with open(folder / "experiments.toml", "a") as handle:
        handle.write(SEARCH)
    (folder / "search.py").write_text(SEARCH_SCRIPT)
    result = expt("run", "sq", cwd=folder, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    report = orjson.loads(expt("study", "sq", "--json", cwd=folder).stdout)
    assert report["note"] == "done" and not report["active"]
    runs = orjson.loads(expt("ls", "sq", "--json", cwd=folder).stdout)
    assert len(runs) == 3 and {r["status"] for r in runs} == {"completed"}
    jobs = {show(folder, r["id"])["job_id"] for r in runs}
    assert len(jobs) == 3 and all(job.isdigit() for job in jobs)
    assert all(show(folder, r["id"])["backend"] == "slurm" for r in runs)
