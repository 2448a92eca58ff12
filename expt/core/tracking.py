"""What a worker calls to record its run: metrics, summary, params, status, tables, log lines.

The tracker only appends to files in the run folder (see runfiles); it never opens
runs.db, so any number of workers log at full speed without taking a lock.
Metric lines are buffered and written whole with one ``os.write`` at most every
``flush_interval`` seconds (and at every event); a background thread flushes the
buffer and touches the heartbeat while the worker lives.
"""

from __future__ import annotations

import csv
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterable

import orjson

from expt.core import runfiles

_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE


class StopRequested(Exception):
    """Raised inside a recipe when the run was asked to stop (SIGTERM); the worker records ``stopped``."""


class RunCrashed(Exception):
    """Raised inside a recipe when what it ran died without an exit (a signal expt did not send): the worker
    records ``crashed`` with the message as the run's error."""


class Tracker:
    def __init__(self, run_dir: Path | str, *, flush_interval: float = 0.5, heartbeat_interval: float = 5.0):
        self.run_dir = Path(run_dir)
        self.flush_interval = flush_interval
        self.stop_requested = False
        self._fd = os.open(self.run_dir / runfiles.METRICS, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        self._close_partial_line()
        self._buffer = bytearray()  # one growing buffer: thousands of small bytes objects kept alive cost 10x
        self._lock = threading.Lock()
        self._last_flush = time.monotonic()
        self._closed = threading.Event()
        self._heartbeat_interval = heartbeat_interval
        self._thread: threading.Thread | None = None

    def _close_partial_line(self) -> None:
        size = os.fstat(self._fd).st_size
        if size and os.pread(self._fd, 1, size - 1) != b"\n":
            os.write(self._fd, b"\n")

    # -- lifetime -------------------------------------------------------------------------------------

    def start_heartbeat(self) -> None:
        """Touch ``heartbeat`` and flush metrics from a daemon thread until ``close``."""
        self._beat()
        self._thread = threading.Thread(target=self._heartbeat_loop, name="expt-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        path = self.run_dir / runfiles.HEARTBEAT
        try:
            os.utime(path)
        except FileNotFoundError:
            path.touch()

    def _heartbeat_loop(self) -> None:
        last_beat = time.monotonic()
        while not self._closed.wait(min(self.flush_interval, self._heartbeat_interval)):
            try:
                if time.monotonic() - self._last_flush >= self.flush_interval:
                    self.flush()
                if time.monotonic() - last_beat >= self._heartbeat_interval:
                    self._beat()
                    last_beat = time.monotonic()
            except OSError:
                pass  # the main thread meets the same error on its next write and reports it

    def close(self) -> None:
        self._closed.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self.flush()
        finally:
            os.close(self._fd)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing --------------------------------------------------------------------------------------

    def flush(self) -> None:
        with self._lock:
            if not self._buffer:
                return
            data, self._buffer = self._buffer, bytearray()
            self._last_flush = time.monotonic()
            runfiles.write_all(self._fd, data)

    def _append(self, record: dict[str, Any], flush: bool) -> None:
        line = orjson.dumps(record, option=_DUMPS_OPTIONS)
        with self._lock:
            self._buffer += line
        if flush or time.monotonic() - self._last_flush >= self.flush_interval:
            self.flush()

    def log_metrics(self, step: int, **values: float) -> None:
        """Record metric values at ``step`` (an epoch or an optimizer step, as the recipe chooses)."""
        values["step"] = step
        values["t"] = time.time()
        self._append(values, False)

    def _event(self, event: str, **fields: Any) -> None:
        self._append({"event": event, "t": time.time(), **fields}, True)

    def log_summary(self, **values: Any) -> None:
        """Merge scalars into the run's summary (best and final metrics, counts, timings)."""
        self._event("summary", values=values)

    def log_params(self, **values: Any) -> None:
        """Record parameters resolved at run time (e.g. an 'auto' setting) next to the configured ones."""
        self._event("params", values=values)

    def log_progress(self, epoch: int, epochs: int, phase: str | None = None) -> None:
        fields: dict[str, Any] = {"epoch": epoch, "epochs": epochs}
        if phase is not None:
            fields["phase"] = phase
        self._event("progress", **fields)

    def log_status(self, status: str, **fields: Any) -> None:
        self._event("status", status=status, **fields)

    def log(self, message: str) -> None:
        """A line for log.txt (the worker's stdout)."""
        print(message, file=sys.stdout, flush=True)

    # -- files ----------------------------------------------------------------------------------------

    def path(self, *parts: str) -> Path:
        """A path inside the run folder (parent folders created)."""
        path = self.run_dir.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def log_table(self, name: str, rows: Iterable[dict[str, Any]]) -> Path:
        """Save a table as ``tables/<name>.json`` and ``.csv``; ``expt show --tables`` prints it."""
        rows = list(rows)
        columns = list(dict.fromkeys(key for row in rows for key in row))
        json_path = self.path(runfiles.TABLES, f"{name}.json")
        atomic_write(json_path, orjson.dumps({"columns": columns, "rows": rows}, option=orjson.OPT_SERIALIZE_NUMPY))
        csv_path = json_path.with_suffix(".csv")
        tmp = csv_path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, csv_path)
        return json_path

    # -- stopping -------------------------------------------------------------------------------------

    def request_stop(self, *_: object) -> None:
        """Signal handler: ask the recipe to stop at its next check."""
        self.stop_requested = True

    def check_stop(self) -> None:
        if self.stop_requested:
            raise StopRequested()


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def read_table(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    data = orjson.loads(path.read_bytes())
    return data["columns"], data["rows"]
