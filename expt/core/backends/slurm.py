"""The Slurm backend: each queued run is a batch job submitted through submitit, running the same worker.

The run folders live on the cluster's shared file system; a job's worker writes them exactly as a local
worker does and any expt process ingests them. ``[launcher] cluster = "local"`` uses submitit's local
executor instead (jobs as local processes), to try a set-up without a cluster. submitit writes its own job
files (the sbatch script, the pickled call, the job's stdout and stderr) under ``runs/<id>/slurm/``.

How expt knows a job's state without accounting (no slurmdbd, so ``sacct`` fails and submitit's watcher
says UNKNOWN): ``squeue -t all`` for the jobs slurmctld still holds (pending, running, and finished ones
for MinJobAge, 300 s by default, with their state and reason), the run's own files for the rest: its
final status event says how it ended, and the job's stderr holds slurmstepd's line (``*** JOB 12 ON node
CANCELLED AT ... DUE TO TIME LIMIT ***``) when Slurm ended it. sacct is never called.

The job's side (:func:`job_main`, what submitit pickles): the worker with the job's stdout and stderr in
log.txt, and :class:`JobSide`, which tells the worker what a signal means on Slurm:

- SIGTERM while the job stays RUNNING (``expt stop``: ``scancel --signal=TERM``, or the user's own): stop,
  checkpoint, ``stopped``;
- SIGTERM because Slurm ends the job (``scancel``, the time limit, ``scontrol requeue``, preemption): the
  checkpoint is saved and no final status written: Slurm decides. A requeued job comes back and continues
  from the checkpoint in the same run; an ended one is marked ``crashed`` by the reaper, with Slurm's
  reason. A preempted job waits to be killed, since Slurm requeues only jobs it had to kill;
- SIGUSR2 (submitit's ``--signal``: the time limit is ``signal_delay`` s away): checkpoint, requeue the job
  (``scontrol requeue``, at most ``requeues`` times) and continue from the checkpoint when it restarts.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from expt.core import runfiles
from expt.core.backends import STALE_HEARTBEAT, PoolSettings, process_alive, signal_worker
from expt.store import Run, Store, this_host

if TYPE_CHECKING:
    from expt.core.tracking import Tracker

# Job states in which the job may still run or come back (squeue's %T); any other state has ended it.
ACTIVE_JOB_STATES = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "STOPPED",
                               "SIGNALING", "RESIZING", "STAGE_OUT", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
                               "SPECIAL_EXIT", "RESV_DEL_HOLD"})
SQUEUE_TTL = 2.0  # seconds an answer of squeue is reused: the scheduler reaps twice a second
REQUEUES = 3  # default of [launcher] requeues (submitit's max_num_timeout)
_START = "expt: the worker starts"  # written to the job's stderr at each start: what Slurm says after it is this run's
_STEPD = re.compile(r"\*\*\* ((?:JOB|STEP) \S+ ON \S+ .+?) \*\*\*")


@dataclass(frozen=True)
class Job:
    """What squeue says of one job: ``state`` is empty when Slurm no longer lists it."""

    id: str
    state: str = ""
    reason: str = ""
    nodes: str = ""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_JOB_STATES


_known: dict[str, tuple[float, Job]] = {}


def squeue(job_ids: list[str]) -> dict[str, Job] | None:
    """The jobs' states from one ``squeue -t all`` (answers reused for SQUEUE_TTL s); None if Slurm cannot be
    asked from here (no squeue, or slurmctld does not answer)."""
    if shutil.which("squeue") is None:
        return None
    now = time.monotonic()
    ask = sorted({i for i in job_ids if i not in _known or now - _known[i][0] > SQUEUE_TTL})
    if ask:
        try:
            done = subprocess.run(["squeue", "-h", "-t", "all", "-j", ",".join(ask), "-o", "%i|%T|%r|%N"],
                                  capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        if done.returncode != 0 and "Invalid job id" not in done.stderr:
            return None  # slurmctld is down or unreachable: nothing can be said
        found = {}
        for line in done.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 4:
                found[parts[0]] = Job(parts[0], parts[1], "" if parts[2] == "None" else parts[2], parts[3])
        for job_id in ask:
            _known[job_id] = (now, found.get(job_id, Job(job_id)))
    return {i: _known[i][1] for i in job_ids}


def slurm_says(run: Run) -> str:
    """slurmstepd's last word on the run's job from its stderr (``JOB 12 ON node CANCELLED AT ... DUE TO TIME
    LIMIT``, an oom-kill), or ''."""
    if not run.job_id:
        return ""
    path = run.path / "slurm" / f"{run.job_id}_0_log.err"
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - 65536))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    text = text.rsplit(_START, 1)[-1]  # a requeued job appends to the same file: only its last start counts
    found = _STEPD.findall(text)
    jobs = [line for line in found if line.startswith("JOB")]
    if jobs or found:
        return (jobs or found)[-1]
    oom = [line.strip() for line in text.splitlines() if "oom_kill" in line or "oom-kill" in line]
    return oom[-1].split("error: ", 1)[-1] if oom else ""


def _executor(settings: PoolSettings, folder: Path, name: str) -> Any:
    import submitit

    slurm = settings.slurm
    cluster = slurm.get("cluster", "slurm")
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    minutes = slurm.get("time", 240)
    parameters: dict[str, Any] = {"name": name, "timeout_min": minutes, "cpus_per_task": slurm.get("cpus_per_task", 8)}
    if cluster == "slurm":
        # The time-limit warning (SIGUSR2) comes signal_delay_s before the end; Slurm may send it up to a minute
        # early, so a short job gets a short delay rather than a warning at its start.
        parameters.update(gpus_per_node=slurm.get("gpus_per_task", 1), mem_gb=slurm.get("mem_gb", 32),
                          slurm_signal_delay_s=min(90, max(10, minutes * 60 // 4)),
                          slurm_additional_parameters=dict(slurm.get("sbatch", {})))
        if slurm.get("partition"):
            parameters["slurm_partition"] = slurm["partition"]
        if slurm.get("account"):
            parameters["slurm_account"] = slurm["account"]
    executor.update_parameters(**parameters)
    return executor


class SlurmBackend:
    """Runs as Slurm batch jobs (or submitit's local jobs with ``cluster = "local"``)."""

    name = "slurm"

    def submit(self, store: Store, queued: list[Run], settings: PoolSettings, cwd: Path) -> list[Run]:
        """Submit every queued run: Slurm queues what does not fit now (the job waits PENDING)."""
        cluster = settings.slurm.get("cluster", "slurm")
        requeues = int(settings.slurm.get("requeues", REQUEUES))
        launched = []
        for run in queued:
            if not store.update_run(run, when=("queued",), status="starting", backend="slurm", device=cluster,
                                    host=None, pid=None, job_id=None, stop_requested=0):
                continue
            try:
                executor = _executor(settings, run.path / "slurm", run.id)
                job = executor.submit(job_main, str(run.path), str(cwd), cluster, requeues)
            except Exception as error:  # noqa: BLE001  sbatch refused (a partition, memory, time ...): one line
                message = str(error).strip().splitlines()
                error_line = f"Slurm refused the job: {message[-1] if message else type(error).__name__}"
                runfiles.append_event(run.path, "status", status="failed", error=error_line[:400])
                store.ingest_run(run)
                continue
            job_id = str(job.job_id)
            store.update_run(run, job_id=job_id)
            runfiles.append_event(run.path, "launch", backend="slurm", job_id=job_id,
                                  device="local" if cluster == "local" else "slurm:pending",
                                  host=this_host() if cluster == "local" else None)
            launched.append(run)
        return launched

    def alive(self, runs: list[Run]) -> set[str]:
        living = set()
        jobs = squeue([r.job_id for r in runs if r.job_id and r.device != "local"])
        for run in runs:
            if not run.job_id:  # being submitted right now, or its submitter died before it recorded the id
                age = runfiles.heartbeat_age(run.path)
                if run.status == "starting" or (age is not None and age < STALE_HEARTBEAT):
                    living.add(run.id)
                continue
            if run.device == "local":  # submitit's local executor: the job id is its controller's pid
                if run.job_id.isdigit() and process_alive(int(run.job_id)):
                    living.add(run.id)
                continue
            job = jobs.get(run.job_id) if jobs is not None else None
            if job is not None and job.state:
                if job.active:
                    living.add(run.id)
                continue
            # Slurm cannot be asked from here, or no longer lists the job (it ended over MinJobAge ago):
            # the worker's heartbeat is all there is.
            age = runfiles.heartbeat_age(run.path)
            if (age is not None and age < STALE_HEARTBEAT) or (age is None and jobs is None):
                living.add(run.id)
        return living

    def cancel(self, store: Store, run: Run) -> str:
        """SIGTERM to the job's steps (``scancel --signal=TERM``, not ``--full``: that signals srun too, which then
        kills the step); a job whose worker has not started yet is cancelled outright (nothing to checkpoint)."""
        if run.device == "local":
            if run.host == this_host() and run.pid and signal_worker(run.pid):
                return f"{run.id}: stopping (SIGTERM to pid {run.pid}); it checkpoints and ends 'stopped'"
            return f"{run.id}: stopping as soon as its worker starts"
        if not run.job_id:
            return f"{run.id}: stopping as soon as its job is submitted"
        if shutil.which("scancel") is None:
            return f"{run.id}: Slurm job {run.job_id}: scancel is not available here; stop it where it is"
        if run.status == "starting":
            done = subprocess.run(["scancel", run.job_id], capture_output=True, text=True, timeout=30)
            if done.returncode == 0:
                return f"{run.id}: cancelled Slurm job {run.job_id} (its worker had not started)"
        else:
            done = subprocess.run(["scancel", "--signal=TERM", run.job_id], capture_output=True, text=True,
                                  timeout=30)
            if done.returncode == 0:
                return f"{run.id}: stopping Slurm job {run.job_id} (SIGTERM); it checkpoints and ends 'stopped'"
        return f"{run.id}: scancel {run.job_id}: {(done.stderr.strip() or 'failed').splitlines()[-1]}"

    def describe(self, runs: list[Run]) -> dict[str, str]:
        jobs = squeue([r.job_id for r in runs if r.job_id and r.device != "local"])
        lines = {}
        for run in runs:
            if not run.job_id:
                lines[run.id] = "being submitted"
            elif run.device == "local":
                lines[run.id] = f"submitit local job {run.job_id}"
            elif jobs is None:
                lines[run.id] = f"Slurm job {run.job_id}; Slurm cannot be asked from here (squeue)"
            else:
                lines[run.id] = describe_job(jobs[run.job_id], run)
        return lines


def describe_job(job: Job, run: Run) -> str:
    """A job in Slurm's words: ``job 12 PENDING (Resources)``, ``job 12 RUNNING on node3``, ``job 12 ended
    TIMEOUT (TimeLimit): JOB 12 ON node3 CANCELLED AT ... DUE TO TIME LIMIT``."""
    reason = f" ({job.reason})" if job.reason else ""
    if job.active:
        where = f" on {job.nodes}" if job.nodes and job.state != "PENDING" else ""
        return f"job {job.id} {job.state}{reason}{where}"
    said = slurm_says(run)
    if not job.state:
        return f"Slurm job {job.id} ended and is no longer listed by squeue" + (f": {said}" if said else "")
    return f"Slurm job {job.id} ended {job.state}{reason}" + (f": {said}" if said else "")


# -- the job's side: what runs on the compute node ------------------------------------------------------


def job_main(run_dir: str, cwd: str, cluster: str = "slurm", requeues: int = REQUEUES) -> int:
    """What submitit pickles (by reference) and runs in the job: the worker, in ``cwd`` (the project's folder,
    where a local worker runs too, so a relative path in the params means the same to both), with the job's
    stdout and stderr in the run's log.txt for as long as it runs."""
    from expt.core import worker

    os.chdir(cwd)
    try:
        os.write(2, f"{_START} (job {os.environ.get('SLURM_JOB_ID', '')}, restart "
                    f"{os.environ.get('SLURM_RESTART_COUNT') or 0})\n".encode())
    except OSError:
        pass
    if os.environ.get("SLURM_CPUS_PER_TASK"):  # threads for the CPUs Slurm gave, as a local CPU slot does
        os.environ["OMP_NUM_THREADS"] = os.environ["SLURM_CPUS_PER_TASK"]
    log = os.open(Path(run_dir) / runfiles.LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    saved = os.dup(1), os.dup(2)
    try:
        os.dup2(log, 1)
        os.dup2(log, 2)
        side = JobSide(requeues) if cluster == "slurm" and os.environ.get("SLURM_JOB_ID") else None
        return worker.run(Path(run_dir), side)
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, log):
            os.close(fd)


def scontrol_job(job_id: str) -> dict[str, str] | None:
    """``scontrol show job ID`` as a dict (JobState, Reason, PreemptTime, EndTime ...); None if it cannot say."""
    try:
        done = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return dict(word.split("=", 1) for word in done.stdout.split() if "=" in word)


class JobSide:
    """The worker's Slurm half inside the job (see the module docstring): what a stop means here."""

    def __init__(self, requeues: int = REQUEUES) -> None:
        self.job_id = os.environ["SLURM_JOB_ID"]
        self.restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
        self.requeues = requeues
        self.time_warning = False

    def started(self, tracker: Tracker) -> dict[str, Any]:
        """Install the time-limit warning's handler (over submitit's); the fields of the ``running`` event."""

        def warned(*_: object) -> None:
            if self.restarts < self.requeues:
                self.time_warning = True
                tracker.request_stop()

        signal.signal(signal.SIGUSR2, warned)
        signal.signal(signal.SIGCONT, signal.SIG_DFL)  # submitit logs every SIGCONT Slurm sends with a SIGTERM
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        return {"device": f"cuda:{visible}" if visible not in ("", "-1") else "cpu", "job_id": self.job_id,
                "cuda_visible_devices": visible, "restarts": self.restarts}

    def describe(self) -> str:
        restarted = f", restart {self.restarts}" if self.restarts else ""
        return (f"Slurm job {self.job_id}{restarted} on {os.environ.get('SLURMD_NODENAME', this_host())}, "
                f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')}")

    def leave(self, tracker: Tracker) -> bool:
        """After the worker stopped on a signal, with its checkpoint saved: False for a plain stop (the run ends
        ``stopped``); True when Slurm requeues or ends the job, said in the log (and a requeue as a ``launch``
        event: the run waits for the job again), and the run ends without a final status."""
        requeued = preempted = False
        if self.time_warning:
            done = subprocess.run(["scontrol", "requeue", self.job_id], capture_output=True, text=True, timeout=60)
            if done.returncode != 0:
                tracker.log(f"scontrol requeue {self.job_id} failed ({done.stderr.strip()}): the run stops")
                return False
            requeued = True
            what = (f"Slurm job {self.job_id}: its time limit is near: requeued ({self.restarts + 1} of "
                    f"{self.requeues}); the run continues from its checkpoint when the job starts again")
        else:
            info = scontrol_job(self.job_id)
            if info is None:
                return False  # Slurm cannot be asked: a stop, as on any machine
            state, reason = info.get("JobState", ""), info.get("Reason", "None")
            preempted = info.get("PreemptTime", "None") not in ("None", "Unknown", "")
            if state == "RUNNING" and not preempted:
                return False  # a signal while the job goes on: `expt stop` (scancel --signal=TERM) or the user's own
            requeued = _int(info.get("Restarts")) > self.restarts
            said = state + ("" if reason == "None" else f", {reason}")
            if preempted:
                what = (f"Slurm preempts job {self.job_id} ({said}): the checkpoint is saved; the job waits to be "
                        "killed, then Slurm requeues it and the run continues from the checkpoint")
            elif requeued:
                what = (f"Slurm requeues job {self.job_id} ({said}): the checkpoint is saved; the run continues "
                        "from it when the job starts again")
            else:
                what = (f"Slurm ends job {self.job_id} ({said}): the checkpoint is saved; `expt resume` continues "
                        "the run")
        tracker.log(what)
        tracker.flush()
        if requeued or preempted:
            runfiles.append_event(tracker.run_dir, "launch", backend="slurm", job_id=self.job_id,
                                  device="slurm:preempted" if preempted else "slurm:requeued")
        if preempted:  # Slurm requeues only the jobs it kills: wait for it, at most the grace time and a minute
            deadline = max(_end_time(info.get("EndTime", "")), time.time()) + 60
            while time.time() < deadline:
                time.sleep(0.5)
        return True


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


def _end_time(text: str) -> float:
    try:
        return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return time.time()


BACKEND = SlurmBackend
