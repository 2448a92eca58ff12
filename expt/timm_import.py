"""Import folders written by timm's ``train.py`` as completed runs (the seed's "plot summary.csv").

timm 1.0.x writes ``args.yaml`` (``yaml.safe_dump`` of its arguments; ``lr`` may be null) and
``summary.csv`` (csv.DictWriter, so CRLF line endings; one row per epoch counted from 0;
columns ``epoch, train_loss, eval_loss, eval_top1, eval_top5, lr``, accuracies in percent).
An imported run is written like any other run folder (config.toml, metrics.jsonl with its
status events) and then ingested, so ``expt reindex`` rebuilds it too. timm's epoch N is
expt's step N + 1 (expt counts epochs from 1).
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from expt.core import runfiles
from expt.errors import UsageError
from expt.project import Project
from expt.store import Run, Store

SUMMARY = "summary.csv"
ARGS = "args.yaml"
ORIGIN = "timm"
RANKING_METRIC = "eval_top1"


@dataclass
class TimmFolder:
    path: Path
    params: dict[str, Any]
    rows: list[dict[str, float]]
    started_at: float
    ended_at: float


def find_folders(paths: list[Path]) -> list[Path]:
    """Each path that holds a summary.csv, else its sub-folders that do (e.g. timm's ``output/train``)."""
    found: list[Path] = []
    for path in paths:
        path = Path(path).expanduser()
        if not path.is_dir():
            raise UsageError(f"{path}: no such folder")
        if (path / SUMMARY).is_file():
            found.append(path.resolve())
            continue
        children = sorted(p.resolve() for p in path.iterdir() if (p / SUMMARY).is_file())
        if not children:
            raise UsageError(f"{path}: no {SUMMARY} in it or in its sub-folders (not a timm train.py output folder)")
        found.extend(children)
    return list(dict.fromkeys(found))


def read_folder(path: Path) -> TimmFolder:
    """Parse one train.py output folder; a malformed file is a one-line error naming it."""
    summary = path / SUMMARY
    rows = []
    with open(summary, newline="", encoding="utf-8") as handle:
        for number, row in enumerate(csv.DictReader(handle), start=2):
            try:
                values = {k.strip(): float(v) for k, v in row.items() if k and v not in (None, "")}
                values["epoch"] = int(values["epoch"])
            except (KeyError, ValueError):
                raise UsageError(f"{summary}:{number}: not a row of timm's summary.csv "
                                 f"(expected numbers under epoch, train_loss, eval_top1 ...)") from None
            rows.append(values)
    if not rows:
        raise UsageError(f"{summary}: no epochs in it yet")
    params = _read_args(path / ARGS)
    args_mtime = os.stat(path / ARGS).st_mtime if (path / ARGS).is_file() else os.stat(summary).st_mtime
    return TimmFolder(path, params, rows, started_at=min(args_mtime, os.stat(summary).st_mtime),
                      ended_at=os.stat(summary).st_mtime)


def _read_args(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise UsageError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping of train.py arguments")
    return {str(k): v for k, v in data.items() if _storable(v)}


def _storable(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, (bool, int, float, str)):
        return not (isinstance(value, float) and not math.isfinite(value))
    if isinstance(value, list):
        return all(_storable(v) for v in value)
    return False


def summarize(rows: list[dict[str, float]]) -> dict[str, Any]:
    """Best and final values: best eval_top1 and its epoch (expt's 1-based), final of every column."""
    summary: dict[str, Any] = {"epochs": len(rows)}
    ranked = [r for r in rows if RANKING_METRIC in r]
    if ranked:
        best = max(ranked, key=lambda r: r[RANKING_METRIC])
        summary[f"best_{RANKING_METRIC}"] = best[RANKING_METRIC]
        summary["best_epoch"] = best["epoch"] + 1
    for key, value in rows[-1].items():
        if key != "epoch":
            summary[f"final_{key}"] = value
    return summary


def _lines(folder: TimmFolder) -> bytes:
    records: list[dict[str, Any]] = [
        {"event": "status", "t": folder.started_at, "status": "running", "host": "", "device": "timm"}]
    span = max(0.0, folder.ended_at - folder.started_at)
    for i, row in enumerate(folder.rows):
        t = folder.started_at + span * (i + 1) / len(folder.rows)
        records.append({"step": row["epoch"] + 1, "t": t, **{k: v for k, v in row.items() if k != "epoch"}})
    records.append({"event": "summary", "t": folder.ended_at, "values": summarize(folder.rows)})
    records.append({"event": "status", "t": folder.ended_at, "status": "completed"})
    return b"".join(runfiles.encode(r) for r in records)


def imported_sources(store: Store) -> dict[str, str]:
    """Source folder -> run id of the runs imported so far."""
    sources = {}
    for run in store.runs("origin = ?", (ORIGIN,)):
        try:
            source = runfiles.read_config(run.path).get("source")
        except (OSError, ValueError):
            continue
        if source:
            sources[source] = run.id
    return sources


def import_folders(store: Store, project: Project, paths: list[Path], experiment: str = "timm"
                   ) -> list[tuple[Run | str, bool]]:
    """Record each folder as a completed run; returns (run, True) per import, (existing id, False) per repeat."""
    folders = [read_folder(p) for p in find_folders(paths)]
    done = imported_sources(store)
    results: list[tuple[Run | str, bool]] = []
    for folder in folders:
        source = str(folder.path)
        if source in done:
            results.append((done[source], False))
            continue
        run = store.create_run(project.runs_dir, experiment=experiment, recipe=ORIGIN, params=folder.params,
                               varying={}, description=folder.path.name, metric=RANKING_METRIC, goal="max",
                               origin=ORIGIN, meta={"source": source})
        with open(run.path / runfiles.METRICS, "ab") as handle:
            handle.write(_lines(folder))
        store.ingest_run(run)
        done[source] = run.id
        results.append((store.get(run.id), True))
    return results
