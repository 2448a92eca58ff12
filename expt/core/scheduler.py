"""The queue, the scheduler lock and its serve loop, and process control: stop, reap.

The queue is the ``queued`` rows of runs.db. Whoever holds ``runs/.scheduler.lock``
(an ``expt run``, the TUI's background scheduler, or ``expt run --detach``) hands
queued runs, oldest first, to the pool's backend (``expt.core.backends``): the local
one starts a worker per free slot, Slurm's submits a job per run. The lock is an
flock, so a dead owner holds nothing.

A run whose process or job is gone without a final status is marked ``crashed`` by
the reaper, which any expt process runs; the scheduler asks each run's own backend
(submit, alive, cancel, describe) and nothing else.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from expt.core import backends, runfiles
from expt.core.backends import (  # noqa: F401  re-exported: the pool and process helpers lived here
    SETTINGS_NAME, STALE_HEARTBEAT, PoolSettings, Slot, crash_reason, detect_gpus, make_slots, pool_settings,
    process_alive, process_start, signal_worker)
from expt.core.backends.script import script_alive
from expt.core.runfiles import ACTIVE_STATUSES
from expt.project import Project
from expt.store import Run, Store, this_host

LOCK_NAME = ".scheduler.lock"


# -- process control ------------------------------------------------------------------------------------


def run_process_alive(run: Run) -> bool:
    """Is the local process of ``run`` alive: its worker, or for a script run (expt.track) the script itself?"""
    return script_alive(run) if run.backend == "script" else process_alive(run.pid)


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
        notes.append(backends.get(run.backend).cancel(store, run))
    from expt.core import study  # here, not at the top: expt.track imports this module (its contract)

    study.after_stop(store, runs)
    return notes


def describe(runs: list[Run]) -> dict[str, str]:
    """What each run's backend says of it now (``expt ps``: a Slurm job's state and reason)."""
    by_backend: dict[str, list[Run]] = {}
    for run in runs:
        by_backend.setdefault(run.backend or "local", []).append(run)
    said: dict[str, str] = {}
    for name, group in by_backend.items():
        said.update(backends.get(name).describe(group))
    return said


def reap(store: Store, runs: list[Run] | None = None, now: float | None = None) -> list[Run]:
    """Mark active runs whose process or job is gone as ``crashed`` (``stopped`` if a stop was asked for), with
    what their backend says of them as the error."""
    now = now or time.time()
    if runs is None:
        runs = store.runs("status IN ('starting', 'running')")
    by_backend: dict[str, list[Run]] = {}
    for run in runs:
        if run.status in ("starting", "running"):
            by_backend.setdefault(run.backend or "local", []).append(run)
    dead = []
    for name, group in by_backend.items():
        backend = backends.get(name)
        living = backend.alive(group)
        gone = [run for run in group if run.id not in living]
        if not gone:
            continue
        said = backend.describe(gone)
        for run in gone:
            store.ingest_run(run)
            fresh = store.get(run.id)
            if fresh is None or fresh.status not in ("starting", "running"):
                continue
            status = runfiles.stop_status(run.path) if fresh.stop_requested else "crashed"
            error = None if status != "crashed" else said.get(run.id) or crash_reason(run.path)
            try:
                runfiles.append_event(run.path, "status", status=status, error=error)
                store.ingest_run(fresh)
            except OSError:  # the run's disk is full: record it in runs.db alone
                store.update_run(fresh, status=status, error=error, ended_at=now)
            dead.append(fresh)
    return dead


# -- the scheduler --------------------------------------------------------------------------------------


class Scheduler:
    """Launches queued runs into free slots while it holds the scheduler lock."""

    def __init__(self, project: Project, settings: PoolSettings | None = None):
        self.project = project
        self.settings = settings
        self.backends: dict[str, backends.Backend] = {}  # kept: the local one waits for the workers it started
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
        """One round: reap, ingest, hand queued runs to the backend; returns the runs launched."""
        reap(store)
        store.ingest()
        if not self.owner:
            return []
        settings = self.settings or PoolSettings.load(self.project)
        from expt.core import study  # search experiments (imported here: see stop)

        study.step(store, self.project, settings)  # search experiments: tell, prune, ask trials for free slots
        backend = self.backends.get(settings.backend)
        if backend is None:
            backend = self.backends[settings.backend] = backends.get(settings.backend)
        queued = store.runs("status = 'queued'", order="rid")
        return backend.submit(store, queued, settings, self.project.root)  # with none queued: waits for children

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
