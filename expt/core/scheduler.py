"""The queue, the pool of slots, and process control: launch, stop, reap.

The queue is the ``queued`` rows of runs.db. Whoever holds ``runs/.scheduler.lock``
(an ``expt run``, the TUI's background scheduler, or ``expt run --detach``) launches
queued runs, oldest first, into free slots: one per GPU (``runs_per_gpu`` to share)
or ``jobs`` CPU slots. The lock is an flock, so a dead owner holds nothing.

Workers start in their own session: a closed terminal, a lost SSH connection or a
quit TUI stops none of them. A run whose process is gone without a final status is
marked ``crashed`` by the reaper, which any expt process runs.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from expt.core import runfiles
from expt.core.runfiles import ACTIVE_STATUSES, SCRIPT_BACKEND
from expt.project import Project
from expt.store import Run, Store, this_host

LOCK_NAME = ".scheduler.lock"
SETTINGS_NAME = ".scheduler.json"
STALE_HEARTBEAT = 60.0  # seconds without a heartbeat before a run on another host counts as dead


@dataclass(frozen=True)
class Slot:
    """Where one run executes: a GPU (``cuda:1``, or ``cuda:1#2`` when shared) or a CPU slot."""

    name: str
    env: dict[str, str] = field(default_factory=dict)


def detect_gpus() -> list[str]:
    """GPU indices from CUDA_VISIBLE_DEVICES, else from nvidia-smi; none without NVIDIA GPUs."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def make_slots(gpus: list[str], runs_per_gpu: int = 1, jobs: int = 0) -> list[Slot]:
    """One slot per GPU and share; without GPUs, ``jobs`` CPU slots splitting the cores between them."""
    if gpus:
        return [Slot(f"cuda:{g}" + (f"#{k + 1}" if runs_per_gpu > 1 else ""), {"CUDA_VISIBLE_DEVICES": g})
                for g in gpus for k in range(runs_per_gpu)]
    jobs = max(1, jobs)
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    return [Slot("cpu" if jobs == 1 else f"cpu#{k + 1}", {"OMP_NUM_THREADS": threads, "CUDA_VISIBLE_DEVICES": ""})
            for k in range(jobs)]


@dataclass
class PoolSettings:
    """How many runs at a time and where; written by whoever queues runs, read by the scheduler."""

    gpus: list[str] = field(default_factory=list)
    runs_per_gpu: int = 1
    jobs: int = 1
    backend: str = "local"
    slurm: dict[str, Any] = field(default_factory=dict)

    def slots(self) -> list[Slot]:
        return make_slots(self.gpus, self.runs_per_gpu, self.jobs)

    def save(self, project: Project) -> None:
        project.runs_dir.mkdir(parents=True, exist_ok=True)
        path = project.runs_dir / SETTINGS_NAME
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(orjson.dumps(self.__dict__))
        os.replace(tmp, path)

    @classmethod
    def load(cls, project: Project) -> PoolSettings:
        try:
            return cls(**orjson.loads((project.runs_dir / SETTINGS_NAME).read_bytes()))
        except (OSError, ValueError, TypeError):
            return cls(gpus=detect_gpus())


def pool_settings(launcher: dict[str, Any], *, gpus: str | None = None, jobs: int | None = None) -> PoolSettings:
    """Resolve the pool from command-line options, then [launcher] in experiments.toml, then the machine."""
    chosen = gpus if gpus is not None else launcher.get("gpus", "")
    gpu_list = [g.strip() for g in chosen.split(",") if g.strip()] if chosen else detect_gpus()
    slurm_keys = ("cluster", "partition", "account", "time", "gpus_per_task", "cpus_per_task", "mem_gb", "sbatch")
    return PoolSettings(gpus=gpu_list, runs_per_gpu=launcher.get("runs_per_gpu", 1),
                        jobs=jobs or launcher.get("jobs", 0) or 1, backend=launcher.get("backend", "local"),
                        slurm={k: launcher[k] for k in slurm_keys if k in launcher})


# -- process control ------------------------------------------------------------------------------------


def worker_command(run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "expt.core.worker", str(run_dir)]


def launch(store: Store, run: Run, slot: Slot, cwd: Path) -> subprocess.Popen | None:
    """Claim a queued run and start its worker in a new session; None if someone else claimed it."""
    if not store.update_run(run, when=("queued",), status="starting", device=slot.name, host=this_host(),
                            backend="local", pid=None, stop_requested=0):
        return None
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **slot.env}
    with open(run.path / runfiles.LOG, "ab") as log:
        process = subprocess.Popen(worker_command(run.path), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    store.update_run(run, pid=process.pid)
    runfiles.append_event(run.path, "launch", pid=process.pid, host=this_host(), device=slot.name, backend="local")
    return process


def process_alive(pid: int | None, started: int | None = None) -> bool:
    """Is ``pid`` a live (not zombie) expt worker on this machine?

    With ``started`` (a script run's own process, whatever its command line): is it alive and the very
    process that started at that time (clock ticks after boot, see ``process_start``), so that a pid the
    system has given to another process since does not count.
    """
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        fields = _stat_fields(pid)
        if fields[0] in "ZX":
            return False
        if started is not None:
            return int(fields[19]) == started
        return b"expt.core.worker" in Path(f"/proc/{pid}/cmdline").read_bytes() or _is_slurm_wrapper(pid)
    except (OSError, ValueError, IndexError):
        return True  # no /proc: trust the kill(0)


def process_start(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks after boot (field 22 of /proc/PID/stat); None without /proc."""
    try:
        return int(_stat_fields(pid)[19])
    except (OSError, ValueError, IndexError):
        return None


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat from its third field (the state) on: the command name before it may hold spaces."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2:].split()


def run_process_alive(run: Run) -> bool:
    """Is the local process of ``run`` alive: its worker, or for a script run (expt.track) the script itself?"""
    if run.backend == SCRIPT_BACKEND:
        # its job_id is the start time recorded when it began; without one, alive and not a zombie is all we know
        started = int(run.job_id) if run.job_id and run.job_id.isdigit() else process_start(run.pid or 0)
        return process_alive(run.pid, started)
    return process_alive(run.pid)


def _is_slurm_wrapper(pid: int) -> bool:
    return b"submitit" in Path(f"/proc/{pid}/cmdline").read_bytes()


def stop(store: Store, runs: list[Run]) -> list[str]:
    """Ask runs to stop: queued ones end ``stopped`` at once, running ones get SIGTERM and checkpoint."""
    notes = []
    for run in runs:
        if run.status == "queued":
            if store.update_run(run, when=("queued",), status="stopped", ended_at=time.time()):
                runfiles.append_event(run.path, "status", status="stopped", note="cancelled before it started")
                notes.append(f"{run.id}: cancelled (it had not started)")
            continue
        if run.status not in ("starting", "running"):
            continue
        store.update_run(run, stop_requested=1)
        if run.backend == "slurm":
            from expt.core import slurm

            notes.append(slurm.cancel(run))
        elif run.host not in (None, this_host()):
            notes.append(f"{run.id}: runs on {run.host}; stop it from there")
        elif run.backend == SCRIPT_BACKEND:
            if run_process_alive(run) and signal_worker(run.pid, group=False):
                notes.append(f"{run.id}: stopping (SIGTERM to its script, pid {run.pid}); it ends 'stopped'")
            else:
                notes.append(f"{run.id}: its script is gone; the run is marked 'stopped'")
                reap(store, [store.get(run.id) or run])
        elif run.pid and process_alive(run.pid) and signal_worker(run.pid):
            notes.append(f"{run.id}: stopping (SIGTERM to pid {run.pid}); it checkpoints and ends 'stopped'")
        else:
            notes.append(f"{run.id}: stopping as soon as its worker starts")
    from expt.core import study  # here, not at the top: expt.track imports this module (its contract)

    study.after_stop(store, runs)
    return notes


def signal_worker(pid: int, sig: int = signal.SIGTERM, group: bool = True) -> bool:
    """Signal a worker: its whole process group when it leads one (local workers), else (or with ``group``
    false: a user's script, whose group is its shell job) the process alone."""
    try:
        if group and os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def reap(store: Store, runs: list[Run] | None = None, now: float | None = None) -> list[Run]:
    """Mark active runs whose process is gone as ``crashed`` (``stopped`` if a stop was asked for)."""
    now = now or time.time()
    if runs is None:
        runs = store.runs("status IN ('starting', 'running')")
    dead = []
    for run in runs:
        if run.status not in ("starting", "running"):
            continue
        if run.backend == "slurm":
            from expt.core import slurm

            if slurm.alive(run):
                continue
        elif run.host == this_host():
            if run_process_alive(run) or (run.pid is None and run.status == "starting"):
                continue
        else:
            age = runfiles.heartbeat_age(run.path, now)
            if age is None or age < STALE_HEARTBEAT:
                continue
        store.ingest_run(run)
        fresh = store.get(run.id)
        if fresh is None or fresh.status not in ("starting", "running"):
            continue
        status = runfiles.stop_status(run.path) if fresh.stop_requested else "crashed"
        process = "script" if run.backend == SCRIPT_BACKEND else "worker"
        error = None if status != "crashed" else crash_reason(run.path, process)
        try:
            runfiles.append_event(run.path, "status", status=status, error=error)
            store.ingest_run(fresh)
        except OSError:  # the run's disk is full: record it in runs.db alone
            store.update_run(fresh, status=status, error=error, ended_at=now)
        dead.append(fresh)
    return dead


def crash_reason(run_dir: Path, process: str = "worker") -> str:
    reason = f"the {process} process died without a final status (killed, out of memory, or the machine restarted)"
    try:
        stats = os.statvfs(run_dir)
        if stats.f_bavail * stats.f_frsize < 1 << 20:
            reason = f"the {process} process died without a final status: the disk holding its folder is full"
    except OSError:
        pass
    return reason


# -- the scheduler --------------------------------------------------------------------------------------


class Scheduler:
    """Launches queued runs into free slots while it holds the scheduler lock."""

    def __init__(self, project: Project, settings: PoolSettings | None = None):
        self.project = project
        self.settings = settings
        self.children: dict[int, subprocess.Popen] = {}
        self._lock_file = None

    @property
    def owner(self) -> bool:
        return self._lock_file is not None

    def acquire(self) -> bool:
        """Take the scheduler lock if it is free."""
        if self._lock_file is not None:
            return True
        self.project.runs_dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.project.runs_dir / LOCK_NAME, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()} {this_host()}\n")
        handle.flush()
        self._lock_file = handle
        return True

    def release(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def tick(self, store: Store) -> list[Run]:
        """One round: collect finished children, reap, ingest, launch; returns the runs launched."""
        for pid, process in list(self.children.items()):
            if process.poll() is not None:
                del self.children[pid]
        reap(store)
        store.ingest()
        if not self.owner:
            return []
        settings = self.settings or PoolSettings.load(self.project)
        from expt.core import study  # search experiments (imported here: see stop)

        study.step(store, self.project, settings)  # search experiments: tell, prune, ask trials for free slots
        queued = store.runs("status = 'queued'", order="rid")
        if not queued:
            return []
        if settings.backend == "slurm":
            from expt.core import slurm

            return [run for run in queued if slurm.submit(store, run, settings, self.project.root)]
        busy = {r.device for r in store.runs("status IN ('starting', 'running') AND host = ?", (this_host(),))}
        free = [slot for slot in settings.slots() if slot.name not in busy]
        launched = []
        for run, slot in zip(queued, free):
            process = launch(store, run, slot, self.project.root)
            if process is not None:
                self.children[process.pid] = process
                launched.append(run)
        return launched

    def serve(self, store: Store, interval: float = 0.5) -> None:
        """Run until nothing is queued or running (the detached scheduler's loop)."""
        while True:
            self.tick(store)
            if not store.runs(f"status IN ({', '.join('?' * len(ACTIVE_STATUSES))})", ACTIVE_STATUSES, limit=1) \
                    and not _study_pending(self.project):
                break
            time.sleep(interval)


def _study_pending(project: Project) -> bool:
    """Is a search experiment's study active (trials to ask or tell)? One stat when there is no study."""
    if not (project.runs_dir / ".studies").is_dir():
        return False
    from expt.core import study

    return study.pending(project.runs_dir)


def has_owner(project: Project) -> bool:
    """Does a live process hold the scheduler lock?"""
    path = project.runs_dir / LOCK_NAME
    if not path.exists():
        return False
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def spawn_scheduler(project: Project) -> subprocess.Popen:
    """Start ``python -m expt.core.scheduler ROOT`` in its own session; it serves the queue and exits."""
    project.runs_dir.mkdir(parents=True, exist_ok=True)
    with open(project.runs_dir / "scheduler.log", "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "expt.core.scheduler", str(project.config_path)],
                                cwd=project.root, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def ensure_scheduler(project: Project, store: Store) -> bool:
    """Start a detached scheduler if runs are queued and no one holds the lock; True if one was started."""
    if (store.runs("status = 'queued'", limit=1) or _study_pending(project)) and not has_owner(project):
        spawn_scheduler(project)
        return True
    return False


def main(argv: list[str] | None = None) -> None:
    """The detached scheduler: wait for the lock, serve the queue until it is empty, exit."""
    args = sys.argv[1:] if argv is None else argv
    project = Project(Path(args[0]).absolute())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    scheduler = Scheduler(project)
    with Store(project.db_path) as store:
        while not scheduler.acquire():
            if not store.runs("status = 'queued'", limit=1) and not _study_pending(project):
                return
            time.sleep(1.0)
        print(f"{time.strftime('%F %T')} scheduler {os.getpid()} serving {project.root}", flush=True)
        try:
            scheduler.serve(store)
        finally:
            scheduler.release()
        print(f"{time.strftime('%F %T')} scheduler {os.getpid()}: queue empty, exiting", flush=True)


if __name__ == "__main__":
    main()
