"""The files a `command` run's script writes, followed as they grow and turned into the run's metric lines.

Three kinds, told by name: ``track.jsonl`` (the `expt.track` protocol: ``{"kind": "metrics" | "summary" |
"config" | "finish", ...}``), CSV files with a header (one metric line per row; an ``epoch`` column counted from
0, as timm's summary.csv has, is step ``epoch + 1`` like `expt import timm`; else a ``step`` column; else the row
number), and other JSON-lines files (one object per line, the same step rules). Only whole lines are read; where
each file was read up to, and the best value so far, are kept in ``.follow.json`` so a resumed run goes on
without repeating or losing a line.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from expt.core.runfiles import FOLLOW_STATE as STATE
from expt.core.runfiles import LINE_KEYS
from expt.core.runfiles import TRACK as TRACK_FILE
from expt.core.tracking import atomic_write

if TYPE_CHECKING:
    from expt.core.tracking import Tracker

RESERVED = LINE_KEYS


class Follower:
    def __init__(self, run_dir: Path, files: list[str], tracker: Tracker, *, metric: str, goal: str,
                 epochs: int | None = None) -> None:
        self.run_dir = run_dir
        self.files = list(dict.fromkeys(files))
        self.tracker = tracker
        self.metric, self.goal, self.epochs = metric, goal, epochs
        try:
            self.state: dict[str, Any] = orjson.loads((run_dir / STATE).read_bytes())
        except (OSError, orjson.JSONDecodeError):
            self.state = {}
        self.state.setdefault("files", {})
        self._warned: set[str] = set()

    def poll(self) -> None:
        """Read what the files gained since the last call and log it."""
        changed = False
        for name in self.files:
            changed |= self._read(name)
        if changed:
            atomic_write(self.run_dir / STATE, orjson.dumps(self.state))

    def finish(self) -> None:
        best = self.state.get("best")
        if best is not None:
            self.tracker.log_summary(**{f"best_{self.metric}": best[0], "best_epoch": best[1]})

    # -- reading ----------------------------------------------------------------------------------------

    def _read(self, name: str) -> bool:
        path = self.run_dir / name
        try:
            size = os.stat(path).st_size
        except OSError:
            return False
        seen = self.state["files"].setdefault(name, {"offset": 0, "rows": 0, "header": None})
        if size < seen["offset"]:  # rewritten from the start
            seen.update(offset=0, rows=0, header=None)
        if size == seen["offset"]:
            return False
        with open(path, "rb") as handle:
            handle.seek(seen["offset"])
            data = handle.read(size - seen["offset"])
        end = data.rfind(b"\n") + 1
        if not end:
            return False
        seen["offset"] += end
        lines = data[:end].decode("utf-8", "replace").splitlines()
        if name == TRACK_FILE:
            self._track(lines)
        elif name.lower().endswith(".csv"):
            self._csv(name, seen, lines)
        else:
            self._jsonl(name, seen, lines)
        return True

    def _track(self, lines: list[str]) -> None:
        for line in lines:
            record = self._parse(TRACK_FILE, line)
            if not isinstance(record, dict):
                continue
            kind, values = record.get("kind"), record.get("values")
            if kind == "metrics" and type(record.get("step")) is int and isinstance(values, dict):
                self._metrics(record["step"], values)
            elif kind == "summary" and isinstance(values, dict):
                self.tracker.log_summary(**values)
            elif kind == "config" and isinstance(values, dict):
                self.tracker.log_params(**values)

    def _csv(self, name: str, seen: dict[str, Any], lines: list[str]) -> None:
        for row in csv.reader(lines):
            if not row:
                continue
            if seen["header"] is None:
                seen["header"] = [cell.strip() for cell in row]
                continue
            values = dict(zip(seen["header"], (_number(cell) for cell in row)))
            self._row(seen, values)

    def _jsonl(self, name: str, seen: dict[str, Any], lines: list[str]) -> None:
        for line in lines:
            record = self._parse(name, line)
            if isinstance(record, dict):
                self._row(seen, record)

    def _parse(self, name: str, line: str) -> Any:
        if not line.strip():
            return None
        try:
            return orjson.loads(line)
        except orjson.JSONDecodeError:
            if name not in self._warned:
                self._warned.add(name)
                self.tracker.log(f"expt: {name}: a line that is not JSON is skipped: {line[:80]!r}")
            return None

    def _row(self, seen: dict[str, Any], values: dict[str, Any]) -> None:
        seen["rows"] += 1
        epoch, step = values.pop("epoch", None), values.get("step")
        if _is_int(step):
            step = int(step)
        elif _is_int(epoch):
            step = int(epoch) + 1
        else:
            step = seen["rows"]
        self._metrics(step, values)

    def _metrics(self, step: int, values: dict[str, Any]) -> None:
        numbers = {key: float(value) for key, value in values.items()
                   if key not in RESERVED and _is_number(value) and math.isfinite(value)}
        if not numbers:
            return
        self.tracker.log_metrics(step, **numbers)
        if self.epochs and step > self.state.get("progress", 0):
            self.state["progress"] = step
            self.tracker.log_progress(min(step, self.epochs), self.epochs)
        value = numbers.get(self.metric)
        best = self.state.get("best")
        if value is not None and (best is None or (value > best[0] if self.goal == "max" else value < best[0])):
            self.state["best"] = [value, step]
            self.tracker.log_summary(**{f"best_{self.metric}": value, "best_epoch": step})


def _number(cell: str) -> Any:
    text = cell.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return _is_number(value) and math.isfinite(value) and float(value).is_integer()

