"""The run folder: the durable record of a run, from which runs.db can always be rebuilt.

    runs/<id>/config.toml    what was asked: experiment, recipe, resolved params
    runs/<id>/metrics.jsonl  what happened: metric lines and events, append-only
    runs/<id>/log.txt        the worker's stdout and stderr
    runs/<id>/heartbeat      touched every few seconds while the worker lives
    runs/<id>/checkpoint.pt  the latest training state (for stop and resume)

A metric line is ``{"step": N, "t": T, "<name>": value, ...}``; an event line has an
``"event"`` key (status, launch, summary, params, progress, and tags and note: the
user's bookkeeping, ``{"event": "tags", "add": [...], "remove": [...]}`` and
``{"event": "note", "text": ...}`` where the last note wins and "" clears it). Lines are appended whole with
O_APPEND, so several writers (the worker, the scheduler, the reaper) can share a file.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import orjson

from expt import tomlw

CONFIG = "config.toml"
METRICS = "metrics.jsonl"
LOG = "log.txt"
HEARTBEAT = "heartbeat"
CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
TABLES = "tables"
TRACK = "track.jsonl"  # what expt.track writes under a command run; the worker follows it
TRACK_ENV, RUN_DIR_ENV, RUN_ID_ENV = "EXPT_TRACK", "EXPT_RUN_DIR", "EXPT_RUN_ID"  # what a command run is told
LINE_KEYS = frozenset(("step", "t", "event"))  # keys of a metrics.jsonl line that are never metric names
FOLLOW_STATE = ".follow.json"
TAGS_EVENT, NOTE_EVENT = "tags", "note"  # the user's bookkeeping (expt/bookkeeping.py): kept by reindex
PRUNE = "prune"  # written by a study's pruner before its SIGTERM: the stopped run ends 'pruned' (core/study.py)
SYS_PREFIX = "sys/"  # system metrics (core/sysmon.py): CPU, memory, I/O, GPU
SYS_SUMMARY = ("peak_rss_mb", "mean_cpu_percent", "peak_gpu_mem_mb", "mean_gpu_util")  # how far a command run's metric files were read

# a run recorded by a user's own script through expt.track (standalone): its recipe and backend
SCRIPT_RECIPE = SCRIPT_BACKEND = "script"

FINAL_STATUSES = ("completed", "failed", "stopped", "crashed", "pruned")
RESUMABLE_STATUSES = ("stopped", "crashed", "failed", "pruned")
ACTIVE_STATUSES = ("queued", "starting", "running")


def write_config(run_dir: Path, meta: dict[str, Any], params: dict[str, Any], varying: dict[str, Any]) -> None:
    header = f"expt run {meta['id']} (experiment {meta['experiment']}, recipe {meta['recipe']})"
    text = tomlw.dumps({**meta, "params": params, "varying": varying}, header=header)
    tmp = run_dir / f".{CONFIG}.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, run_dir / CONFIG)


def read_config(run_dir: Path) -> dict[str, Any]:
    import tomllib  # here, not at the top: the read commands never parse a config.toml

    with open(run_dir / CONFIG, "rb") as handle:
        return tomllib.load(handle)


def encode(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"


def append_event(run_dir: Path, event: str, **fields: Any) -> None:
    """Append one event line from outside the worker (scheduler, reaper, CLI).

    A line left unfinished by a dead writer is closed first, so it is skipped as
    one bad line rather than glued to this event.
    """
    line = encode({"event": event, "t": time.time(), **fields})
    fd = os.open(run_dir / METRICS, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        os.write(fd, line)
    finally:
        os.close(fd)


def heartbeat_age(run_dir: Path, now: float | None = None) -> float | None:
    """Seconds since the worker last touched its heartbeat, or None if it never did."""
    try:
        return (now or time.time()) - os.stat(run_dir / HEARTBEAT).st_mtime
    except OSError:
        return None


def count_status(run_dir: Path, status: str) -> int:
    """How many status events ``status`` the run's metrics.jsonl holds (e.g. its starts: ``running``)."""
    needle = orjson.dumps({"status": status})[1:-1]
    try:
        data = (run_dir / METRICS).read_bytes()
    except OSError:
        return 0
    return sum(1 for line in data.splitlines() if b'"event":"status"' in line and needle in line)


def is_sys_key(key: str) -> bool:
    """A system metric or its summary: kept out of the training metrics' tables unless asked for (--sys)."""
    return key.startswith(SYS_PREFIX) or key in SYS_SUMMARY


def stop_status(run_dir: Path) -> str:
    """What a run asked to stop ends as: ``pruned`` when a study's pruner asked, else ``stopped``."""
    return "pruned" if (run_dir / PRUNE).exists() else "stopped"


def write_all(fd: int, data: bytes | bytearray) -> None:
    """Write ``data`` whole to ``fd`` (os.write may take less than it is given)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
