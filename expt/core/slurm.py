"""The Slurm backend: queued runs are submitted through submitit to the same worker entry point.

The run folders live on the cluster's shared file system; workers write them exactly as
they do locally and any expt process ingests them. ``[launcher] cluster = "local"`` uses
submitit's local executor instead (jobs as local processes), to try a set-up without a
cluster; the tests use it. submitit writes its own job files under ``runs/<id>/slurm/``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from expt.core import runfiles
from expt.store import Run, Store, this_host

if TYPE_CHECKING:
    from expt.core.scheduler import PoolSettings

ENDED_STATES = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
                "BOOT_FAIL", "DEADLINE", "FINISHED", "INTERRUPTED")


def _executor(settings: PoolSettings, folder: Path, name: str) -> Any:
    import submitit

    slurm = settings.slurm
    cluster = slurm.get("cluster", "slurm")
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    parameters: dict[str, Any] = {"name": name, "timeout_min": slurm.get("time", 240),
                                  "cpus_per_task": slurm.get("cpus_per_task", 8)}
    if cluster == "slurm":
        parameters.update(gpus_per_node=slurm.get("gpus_per_task", 1), mem_gb=slurm.get("mem_gb", 32),
                          slurm_additional_parameters=dict(slurm.get("sbatch", {})))
        if slurm.get("partition"):
            parameters["slurm_partition"] = slurm["partition"]
        if slurm.get("account"):
            parameters["slurm_account"] = slurm["account"]
    executor.update_parameters(**parameters)
    return executor


def submit(store: Store, run: Run, settings: PoolSettings, cwd: Path) -> bool:
    """Claim a queued run and submit its worker as a job, to run in ``cwd`` (the project's folder, as a local
    worker does); False if someone else claimed it."""
    from expt.core.worker import run_job

    cluster = settings.slurm.get("cluster", "slurm")
    if not store.update_run(run, when=("queued",), status="starting", backend="slurm", device=cluster,
                            host=None, pid=None, stop_requested=0):
        return False
    job = _executor(settings, run.path / "slurm", run.id).submit(run_job, str(run.path), str(cwd))
    store.update_run(run, job_id=str(job.job_id))
    runfiles.append_event(run.path, "launch", backend="slurm", job_id=str(job.job_id), device=cluster,
                          host=this_host() if cluster == "local" else None)
    return True


def _job(run: Run) -> Any:
    import submitit

    return submitit.SlurmJob(run.path / "slurm", run.job_id)


def alive(run: Run) -> bool:
    """Is the run's job pending or running? A fresh heartbeat answers without asking Slurm."""
    from expt.core.scheduler import STALE_HEARTBEAT, process_alive

    age = runfiles.heartbeat_age(run.path)
    if age is not None and age < STALE_HEARTBEAT:
        return True
    if run.device == "local":  # submitit's local executor: the job id is its controller's pid
        return process_alive(int(run.job_id)) if run.job_id and run.job_id.isdigit() else False
    if not run.job_id or shutil.which("sacct") is None:
        return age is None  # cannot ask; trust a heartbeat that is not stale yet
    return _job(run).state.split(" ")[0] not in ENDED_STATES


def cancel(run: Run) -> str:
    """Ask the run to stop: SIGTERM to its worker, which checkpoints and ends ``stopped``."""
    from expt.core.scheduler import signal_worker

    if run.host == this_host() and run.pid and signal_worker(run.pid):
        return f"{run.id}: stopping (SIGTERM to pid {run.pid}); it checkpoints and ends 'stopped'"
    if run.job_id and shutil.which("scancel"):
        subprocess.run(["scancel", "--signal=TERM", "--full", run.job_id], check=False, timeout=30)
        return f"{run.id}: stopping Slurm job {run.job_id} (SIGTERM); it checkpoints and ends 'stopped'"
    return f"{run.id}: job {run.job_id} is not running on this machine and scancel is not available here"
