"""Where runs execute: the interface the scheduler calls, and the pool settings every backend reads.

A backend is one file in this package with one class (``local.LocalBackend``: worker processes on this
machine; ``slurm.SlurmBackend``: jobs through submitit; ``script.ScriptBackend``: a user's own script that
records itself with expt.track, never queued). The scheduler calls four methods and nothing else:

- ``submit(store, queued, settings, cwd) -> launched``: claim queued runs (a conditional update, so two
  schedulers never start one run twice) and start them, as many as it has room for;
- ``alive(runs) -> ids``: which of these starting or running runs still have a process or job (when the
  backend cannot tell, it says alive: the reaper must never mark a live run crashed);
- ``cancel(store, run) -> note``: ask a starting or running run to stop (SIGTERM: it checkpoints and ends
  ``stopped``);
- ``describe(runs) -> {id: line}``: what the backend says about each run now, in a few words (``expt ps``
  shows it; the reaper quotes it as the error of a run that ended without a final status).

A run remembers its backend (``runs.backend``), so whichever expt process looks at it later asks the same
one. Nothing here, nor in a backend, imports the scheduler (an import-linter contract).
"""

from __future__ import annotations

import importlib
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import orjson

if TYPE_CHECKING:
    from expt.project import Project
    from expt.store import Run, Store

SETTINGS_NAME = ".scheduler.json"
STALE_HEARTBEAT = 60.0  # seconds without a heartbeat before a run whose process cannot be asked counts as dead
SLURM_KEYS = ("cluster", "partition", "account", "time", "gpus_per_task", "cpus_per_task", "mem_gb", "requeues",
              "sbatch")


class Backend(Protocol):
    """What the scheduler asks of a place where runs execute (see the module docstring)."""

    name: str

    def submit(self, store: Store, queued: list[Run], settings: PoolSettings, cwd: Path) -> list[Run]: ...

    def alive(self, runs: list[Run]) -> set[str]: ...

    def cancel(self, store: Store, run: Run) -> str: ...

    def describe(self, runs: list[Run]) -> dict[str, str]: ...


NAMES = ("local", "slurm", "script")  # one module each in this package, whose BACKEND is the class


def get(name: str | None) -> Backend:
    """The backend called ``name`` (a run's ``backend`` column; runs from before backends were named are local).

    Imported by name, so that no backend module imports another through this package."""
    module = importlib.import_module(f"{__name__}.{name if name in NAMES else 'local'}")
    return module.BACKEND()


# -- the pool: how many runs at a time and where ---------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    """Where one local run executes: a GPU (``cuda:1``, or ``cuda:1#2`` when shared) or a CPU slot."""

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
    return PoolSettings(gpus=gpu_list, runs_per_gpu=launcher.get("runs_per_gpu", 1),
                        jobs=jobs or launcher.get("jobs", 0) or 1, backend=launcher.get("backend", "local"),
                        slurm={k: launcher[k] for k in SLURM_KEYS if k in launcher})


# -- processes on this machine (every backend that can run here needs them) -------------------------------


def process_alive(pid: int | None, started: int | None = None) -> bool:
    """Is ``pid`` a live (not zombie) expt worker on this machine (or submitit's local job around one)?

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
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        return b"expt.core.worker" in cmdline or b"submitit" in cmdline
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


def crash_reason(run_dir: Path, process: str = "worker") -> str:
    """Why a run's process is gone without a final status, as far as this machine can tell."""
    reason = f"the {process} process died without a final status (killed, out of memory, or the machine restarted)"
    try:
        stats = os.statvfs(run_dir)
        if stats.f_bavail * stats.f_frsize < 1 << 20:
            reason = f"the {process} process died without a final status: the disk holding its folder is full"
    except OSError:
        pass
    return reason
