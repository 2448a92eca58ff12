"""The local backend: one worker process per free slot (a GPU, a share of one, or a CPU slot) on this machine.

Workers start in their own session: a closed terminal, a lost SSH connection or a quit TUI stops none of
them. A worker is alive while its pid is (and is still a worker); a run on another host, which this machine
cannot ask, is alive while its heartbeat is fresh.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from expt.core import runfiles
from expt.core.backends import STALE_HEARTBEAT, PoolSettings, Slot, crash_reason, process_alive, signal_worker
from expt.store import Run, Store, this_host


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


class LocalBackend:
    """Worker processes on this machine, one per free slot of the pool."""

    name = "local"

    def __init__(self) -> None:
        self.children: dict[int, subprocess.Popen] = {}  # the workers this process started, waited for here

    def submit(self, store: Store, queued: list[Run], settings: PoolSettings, cwd: Path) -> list[Run]:
        for pid, process in list(self.children.items()):
            if process.poll() is not None:
                del self.children[pid]
        if not queued:
            return []
        busy = {r.device for r in store.runs("status IN ('starting', 'running') AND host = ?", (this_host(),))}
        free = [slot for slot in settings.slots() if slot.name not in busy]
        launched = []
        for run, slot in zip(queued, free):
            process = launch(store, run, slot, cwd)
            if process is not None:
                self.children[process.pid] = process
                launched.append(run)
        return launched

    def alive(self, runs: list[Run]) -> set[str]:
        here = this_host()
        living = set()
        for run in runs:
            if run.host == here:
                if process_alive(run.pid) or (run.pid is None and run.status == "starting"):
                    living.add(run.id)
            else:
                age = runfiles.heartbeat_age(run.path)
                if age is None or age < STALE_HEARTBEAT:
                    living.add(run.id)
        return living

    def cancel(self, store: Store, run: Run) -> str:
        if run.host not in (None, this_host()):
            return f"{run.id}: runs on {run.host}; stop it from there"
        if run.pid and process_alive(run.pid) and signal_worker(run.pid):
            return f"{run.id}: stopping (SIGTERM to pid {run.pid}); it checkpoints and ends 'stopped'"
        return f"{run.id}: stopping as soon as its worker starts"

    def describe(self, runs: list[Run]) -> dict[str, str]:
        living = self.alive(runs)
        return {run.id: (f"pid {run.pid} on {run.host}" if run.pid else "starting") if run.id in living
                else crash_reason(run.path) for run in runs}


BACKEND = LocalBackend
