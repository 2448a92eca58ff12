"""``python -m expt.core.worker RUN_DIR``: one run, one process.

Reads runs/<id>/config.toml, calls the recipe with a Tracker, and records the
final status. SIGTERM asks the recipe to stop at its next step: it checkpoints
and the run ends ``stopped``. An exception ends it ``failed`` with the traceback
in log.txt and its last line in the run's ``error``. If a checkpoint is present
the recipe resumes from it (``expt resume``).
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import sys
import traceback
from pathlib import Path
from typing import Any, Protocol

from expt.core import runfiles, sysmon
from expt.core.tracking import RunCrashed, StopRequested, Tracker
from expt.errors import ExptError
from expt.params import SYS_INTERVAL

EXIT_FAILED = 1
EXIT_STOPPED = 3
EXIT_LEFT = 4  # stopped by a cluster that decides how the run goes on (a requeue), or the reaper marks it crashed


class ClusterJob(Protocol):
    """The worker's half that a cluster backend brings (Slurm's ``backends.slurm.JobSide``)."""

    def started(self, tracker: Tracker) -> dict[str, Any]:
        """Install the cluster's signal handlers; the fields for the ``running`` event (device, job id ...)."""

    def describe(self) -> str:
        """Where the run executes, for its first log line."""

    def leave(self, tracker: Tracker) -> bool:
        """After a stop on a signal, with the checkpoint saved: True if the cluster is ending or requeueing the
        job (the run gets no final status here), False for a plain stop (the run ends ``stopped``)."""


def run(run_dir: Path, job: ClusterJob | None = None) -> int:
    tracker = Tracker(run_dir)
    signal.signal(signal.SIGTERM, tracker.request_stop)
    signal.signal(signal.SIGINT, tracker.request_stop)
    monitor = None
    try:
        tracker.start_heartbeat()
        config = runfiles.read_config(run_dir)
        fields = job.started(tracker) if job is not None else {}
        tracker.log_status("running", pid=os.getpid(), host=socket.gethostname(), versions=versions(), **fields)
        tracker.log(f"expt worker {config['id']}: recipe {config['recipe']}, pid {os.getpid()} on "
                    f"{socket.gethostname()}, {job.describe() if job is not None else _assigned_device()}")
        from expt.core.recipes import get_recipe

        recipe = get_recipe(config["recipe"])
        monitor = sysmon.start(tracker, config["params"].get("sys_interval", SYS_INTERVAL.default))
        try:
            recipe.run(dict(config["params"]), tracker)
        finally:
            if monitor is not None:
                try:
                    monitor.finish()
                except Exception:  # noqa: BLE001  (out of memory, say) the recipe's own error is the one to report
                    pass
    except StopRequested:
        if job is not None and job.leave(tracker):
            return EXIT_LEFT
        status = runfiles.stop_status(run_dir)
        tracker.log(f"{status} on request; the checkpoint is saved: `expt resume` continues the run")
        tracker.log_status(status)
        return EXIT_STOPPED
    except RunCrashed as error:
        tracker.log(f"crashed: {error}")
        tracker.log_status("crashed", error=str(error).splitlines()[0])
        return EXIT_FAILED
    except ExptError as error:
        tracker.log(f"error: {error}")
        tracker.log_status("failed", error=str(error).splitlines()[0])
        return EXIT_FAILED
    except BaseException as error:  # the run must end with a recorded status whatever happened
        try:
            traceback.print_exc()
            sys.stderr.flush()
        except OSError:
            pass
        try:
            tracker.log_status("failed", error=explain(error, monitor.memory_detail() if monitor else None))
        except OSError:
            pass  # the disk is full: the reaper marks the run crashed
        return EXIT_FAILED
    else:
        tracker.log_status("completed")
        return 0
    finally:
        try:
            tracker.close()
        except OSError as error:
            print(f"expt worker: could not flush metrics: {error}", file=sys.stderr)


def explain(error: BaseException, memory: str | None = None) -> str:
    """One line for a run's ``error``: the exception's last line, with advice for the usual causes; ``memory``
    (what the system monitor saw of the GPUs' memory) goes with an out-of-memory error."""
    last = traceback.format_exception_only(type(error), error)[-1].strip()[:400]
    text = str(error).lower()
    if isinstance(error, MemoryError) or "out of memory" in text or "can't allocate memory" in text:
        seen = f" ({memory})" if memory and "cuda" in text else ""
        return f"out of memory{seen} (lower batch_size, eval_batch_size or img_size): {last}"
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return f"disk full while writing the run's files: {last}"
    return last


VERSIONED = ("expt", "torch", "timm")  # the packages whose versions a run's ``running`` event records


def versions() -> dict[str, str]:
    """Python's and the installed packages' versions (``expt report`` shows them); read from the packages'
    metadata, so nothing is imported here (a recipe imports torch when it needs it)."""
    from importlib import metadata
    import platform

    found = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def _assigned_device() -> str:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return f"cuda:{visible}" if visible not in (None, "", "-1") else "cpu"


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m expt.core.worker RUN_DIR", file=sys.stderr)
        raise SystemExit(2)
    run_dir = Path(args[0])
    if not (run_dir / runfiles.CONFIG).is_file():
        print(f"expt worker: {run_dir / runfiles.CONFIG}: no such file", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(run(run_dir))


if __name__ == "__main__":
    main()
