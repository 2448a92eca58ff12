"""The script backend: a run recorded by the user's own script through expt.track (its process is the run).

Such a run is never queued: the script creates it (``launch`` and ``running`` events with its pid and its
start time as the job id) and writes it. It is alive while that very process is (a pid the system has given to
another process since does not count); a script on another host, which this machine cannot ask, while its
heartbeat is fresh. Stopping it is a SIGTERM to the script alone (its group is the user's shell job).
"""

from __future__ import annotations

import time
from pathlib import Path

from expt.core import runfiles
from expt.core.backends import STALE_HEARTBEAT, PoolSettings, crash_reason, process_alive, process_start, signal_worker
from expt.store import Run, Store, this_host


def script_alive(run: Run) -> bool:
    """Is the script of ``run`` alive on this machine: its pid, started when its job id says?"""
    # the job id is the start time recorded when it began; without one, alive and not a zombie is all we know
    started = int(run.job_id) if run.job_id and run.job_id.isdigit() else process_start(run.pid or 0)
    return process_alive(run.pid, started)


class ScriptBackend:
    """A user's script that records itself (expt.track): nothing to submit, its own process to watch."""

    name = "script"

    def submit(self, store: Store, queued: list[Run], settings: PoolSettings, cwd: Path) -> list[Run]:
        return []  # script runs are never queued: the script itself starts them

    def alive(self, runs: list[Run]) -> set[str]:
        here = this_host()
        living = set()
        for run in runs:
            if run.host == here:
                if script_alive(run):
                    living.add(run.id)
            else:
                age = runfiles.heartbeat_age(run.path)
                if age is None or age < STALE_HEARTBEAT:
                    living.add(run.id)
        return living

    def cancel(self, store: Store, run: Run) -> str:
        if run.host not in (None, this_host()):
            return f"{run.id}: runs on {run.host}; stop it from there"
        if script_alive(run) and signal_worker(run.pid, group=False):
            return f"{run.id}: stopping (SIGTERM to its script, pid {run.pid}); it ends 'stopped'"
        if store.update_run(run, when=("starting", "running"), status="stopped", ended_at=time.time()):
            runfiles.append_event(run.path, "status", status="stopped")
            store.ingest_run(run)
        return f"{run.id}: its script is gone; the run is marked 'stopped'"

    def describe(self, runs: list[Run]) -> dict[str, str]:
        living = self.alive(runs)
        return {run.id: f"script pid {run.pid} on {run.host}" if run.id in living
                else crash_reason(run.path, "script") for run in runs}


BACKEND = ScriptBackend
