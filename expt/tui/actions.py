"""What the TUI's thread workers do: the same library calls as the CLI, each returning a result message.

Every function here runs in a worker thread with its own Store connection (sqlite3
connections belong to the thread that opened them), never on the event loop, and never
touches a widget. Problems a user can fix are raised as ExptError and shown as
notifications; runs started here are the same detached workers as ``expt run --detach``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from expt import analysis
from expt.core import runfiles
from expt.core.runfiles import FINAL_STATUSES
from expt.core.tracking import read_table
from expt.errors import UsageError
from expt.formatting import inert
from expt.project import Project
from expt.store import Run, Store
from expt.tui.messages import (ActionDone, CompareLoaded, LaunchPlanned, RunLoaded, RunsLoaded, RunUpdated,
                               SamplesLoaded)
from expt.query import Query
from expt.tui.rows import load_rows

PAGE = 200  # rows the runs table loads at a time
LOG_TAIL = 400  # log lines shown when a run opens
LOG_CHUNK = 1 << 20
NEIGHBOURS = "neighbours.json"
SAMPLES_TABLE = "samples"
PICTURES_PER_CLASS = 16
MAX_QUERIES = 200


def _store(project: Project) -> Store:
    return Store(project.db_path)


# -- reading ---------------------------------------------------------------------------------------------


def load_page(project: Project, where: Query, offset: int = 0, limit: int = PAGE) -> RunsLoaded:
    """The newest ``limit`` runs matching ``where`` after ``offset``, and (on the first page) every
    running one however old (a resumed run from last month is still news)."""
    condition, args = where.sql()
    with _store(project) as store:
        version = store.version()
        runs = store.page(condition, args, limit=limit, offset=offset)
        if offset == 0:
            running = "status IN ('running', 'starting')" + (f" AND ({condition})" if condition else "")
            seen = {r.rid for r in runs}
            runs += [r for r in store.runs(running, args) if r.rid not in seen]
        rows = load_rows(store, runs)
        total = store.count()
        matching = store.count(condition, args) if condition else total
    return RunsLoaded([rows[r.rid] for r in runs], total, matching, version, append=offset > 0)


def _table_files(run: Run) -> list[Path]:
    folder = run.path / runfiles.TABLES
    return sorted(p for p in folder.glob("*.json") if p.stem != SAMPLES_TABLE) if folder.is_dir() else []


def _tables(run: Run) -> tuple[dict[str, tuple[list[str], list[dict[str, Any]]]], tuple[float, ...]]:
    tables = {}
    stamp = []
    for path in _table_files(run):
        try:
            stamp.append(path.stat().st_mtime)
            tables[path.stem] = read_table(path)
        except (OSError, ValueError, KeyError):
            continue
    return tables, tuple(stamp)


def _read_log(path: Path, offset: int, tail: int | None = None) -> tuple[list[str], int]:
    """New complete lines of the log from ``offset`` (the last ``tail`` lines when opening)."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return [], 0
    if size < offset:  # the log was replaced: start again
        offset = 0
    if tail is not None and size - offset > LOG_CHUNK:
        offset = size - LOG_CHUNK
    if size == offset:
        return [], offset
    with open(path, "rb") as handle:
        handle.seek(offset)
        data = handle.read(min(size - offset, LOG_CHUNK * 4))
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset
    lines = [inert(line.removesuffix("\r")) for line in data[:end].decode(errors="replace").split("\n")]
    return (lines[-tail:] if tail is not None else lines), offset + end + 1


def load_run(project: Project, run_id: str) -> RunLoaded:
    with _store(project) as store:
        run = store.get(run_id)
        if run is None:
            raise UsageError(f"run {run_id} is no longer in runs.db")
        metrics = store.metrics(run)
    log, offset = _read_log(run.path / runfiles.LOG, 0, tail=LOG_TAIL)
    tables, stamp = _tables(run)
    return RunLoaded(run, metrics, log, offset, tables, stamp)


def update_run(project: Project, run_id: str, steps: dict[str, int], log_offset: int,
               tables_stamp: tuple[float, ...]) -> RunUpdated:
    """What is new in an open run: metric points after ``steps``, log lines after ``log_offset``."""
    with _store(project) as store:
        run = store.get(run_id)
        if run is None:
            raise UsageError(f"run {run_id} is no longer in runs.db")
        metrics = store.metrics(run, since=steps)
    log, offset = _read_log(run.path / runfiles.LOG, log_offset)
    tables, stamp = _tables(run)
    return RunUpdated(run, metrics, log, offset, tables if stamp != tables_stamp else None, stamp)


def load_compare(project: Project, run_ids: list[str], metric: str | None) -> CompareLoaded:
    with _store(project) as store:
        runs = [run for run in (store.get(i) for i in run_ids) if run is not None]
        if len(runs) < 2:
            raise UsageError("compare needs at least two runs that are still in runs.db")
        names = sorted({name for run in runs for name in store.metric_names(run)})
        chosen = metric if metric in names else (runs[0].metric if runs[0].metric in names else
                                                  (names[0] if names else runs[0].metric or ""))
        curves = {run.id: store.metrics(run, [chosen]).get(chosen, []) for run in runs}
    return CompareLoaded(runs, analysis.compare_data(runs), chosen, names, curves)


def load_samples(project: Project, run_id: str) -> SamplesLoaded:
    """A finetune run's selection (``expt.samples``), else a metric run's ``neighbours.json``, else a note."""
    from expt.samples import by_class, read_samples

    with _store(project) as store:
        run = store.get(run_id)
    if run is None:
        raise UsageError(f"run {run_id} is no longer in runs.db")
    neighbours_path = run.path / NEIGHBOURS
    if neighbours_path.is_file():
        try:
            data = orjson.loads(neighbours_path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as error:
            return SamplesLoaded(run, note=f"{neighbours_path}: cannot read it ({error})")
        if isinstance(data, dict) and isinstance(data.get("queries"), list):
            return SamplesLoaded(run, neighbours=data, pictures=_neighbour_pictures(run.path, data))
        return SamplesLoaded(run, note=f"{neighbours_path}: no 'queries' list in it")
    try:
        chosen = read_samples(run.path, run.id)
    except UsageError:
        return SamplesLoaded(run, note="no samples recorded for this run")
    groups = by_class(chosen)
    pictures = {name: [p for s in items[:PICTURES_PER_CLASS] if (p := _picture(s.path)) is not None]
                for name, items in groups.items()}
    return SamplesLoaded(run, classes=pictures, counts={name: len(items) for name, items in groups.items()})


def _picture(path: Path | None) -> Any:
    """A PNG read into memory here, in the worker, so that drawing it never waits for the disk."""
    if path is None:
        return None
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError):
        return None


def _neighbour_pictures(run_dir: Path, data: dict[str, Any]) -> dict[str, Any]:
    pictures: dict[str, Any] = {}
    for query in data["queries"][:MAX_QUERIES]:
        for item in [query, *query.get("neighbours", [])]:
            relative = item.get("image") or ""
            if relative and relative not in pictures and ".." not in Path(relative).parts:
                picture = _picture(run_dir / relative)
                if picture is not None:
                    pictures[relative] = picture
    return pictures


# -- acting ------------------------------------------------------------------------------------------------


def plan_launch(project: Project, name: str) -> LaunchPlanned:
    """``launcher.plan`` (with the recipe's preflight) and the pool it would run on, for the confirmation."""
    from expt.config import load_config
    from expt.core import launcher, scheduler

    config = load_config(project.config_path)
    plan = launcher.plan(config, name)
    settings = scheduler.pool_settings(config.launcher)
    size = plan.experiment.search.trials if plan.experiment.search else plan.size  # a search: its trials
    return LaunchPlanned(name, size, describe_pool(settings), len(plan.expansion.skipped))


def describe_pool(settings: Any) -> str:
    if settings.backend == "slurm":
        partition = settings.slurm.get("partition")
        return "Slurm" + (f" (partition {partition})" if partition else "")
    slots = settings.slots()
    names = list(dict.fromkeys(slot.name.split("#")[0] for slot in slots))
    return f"{', '.join(names)}, {len(slots)} at a time"


def edit_run(project: Project, run_id: str, tags: list[str] | None = None, note: str | None = None) -> ActionDone:
    """What ``expt tag/untag`` and ``expt note`` do (expt.bookkeeping): the run's tags made ``tags``, its note ``note``."""
    from expt import bookkeeping

    with _store(project) as store:
        run = store.get(run_id)
        if run is None:
            raise UsageError(f"run {run_id} is no longer in runs.db")
        if tags is not None:
            before = list(run.tags)
            run = bookkeeping.set_tags(store, run, tags)
            line = (f"{run_id}: tags {' '.join(run.tags) or '(none)'}" if run.tags != before
                    else f"{run_id}: tags unchanged")
        else:
            run, changed = bookkeeping.set_note(store, run, note or "")
            line = (f"{run_id}: note unchanged" if not changed else
                    f"noted on {run_id}" if run.note else f"cleared the note of {run_id}")
    return ActionDone("tags" if tags is not None else "note", [line], [run_id])


def launch(project: Project, name: str) -> ActionDone:
    """What ``expt run NAME --detach`` does: plan, enqueue, save the pool, start a detached scheduler."""
    from expt.config import load_config
    from expt.core import launcher, scheduler

    config = load_config(project.config_path)
    plan = launcher.plan(config, name)
    settings = scheduler.pool_settings(config.launcher)
    if plan.experiment.search is not None:  # a study: the scheduler asks its trials as slots free up
        from expt.core import study

        with _store(project) as store:
            settings.save(project)
            state, resumed = study.start(store, project, plan.experiment)
            started = scheduler.ensure_scheduler(project, store)
        return ActionDone("launch", [f"{name}: a study of {state.target} trials on {describe_pool(settings)}",
                                     "a background scheduler runs its trials" + ("" if started else
                                                                                 " (it was already running)")],
                          [r.id for r in resumed])
    with _store(project) as store:
        runs = launcher.enqueue(store, project, plan)
        settings.save(project)
        started = scheduler.ensure_scheduler(project, store)
    span = runs[0].id if len(runs) == 1 else f"{runs[0].id} .. {runs[-1].id}"
    lines = [f"{name}: {len(runs)} run{'s' * (len(runs) != 1)} queued ({span}) on {describe_pool(settings)}",
             "a background scheduler is running them" + ("" if started else " (it was already running)"),
             *(f"warning: {warning}" for warning in plan.warnings)]
    return ActionDone("launch", lines, [r.id for r in runs])


def stop(project: Project, run_ids: list[str]) -> ActionDone:
    """What ``expt stop`` does: queued runs are cancelled, running ones checkpoint and end 'stopped'."""
    from expt.core import scheduler

    with _store(project) as store:
        store.ingest()
        targets = [run for run in (store.get(i) for i in run_ids) if run and run.status not in FINAL_STATUSES]
        if not targets:
            return ActionDone("stop", ["nothing to stop: those runs have ended"])
        notes = scheduler.stop(store, targets)
    return ActionDone("stop", notes, [r.id for r in targets])


def resume(project: Project, run_ids: list[str]) -> ActionDone:
    """What ``expt resume --detach`` does: queue the runs again and make sure a scheduler serves them."""
    from expt.config import load_config
    from expt.core import launcher, scheduler

    with _store(project) as store:
        runs = [run for run in (store.get(i) for i in run_ids) if run is not None]
        if not runs:
            raise UsageError("no run to resume")
        resumed = launcher.resume(store, runs)
        launcher_table = load_config(project.config_path).launcher if project.config_path.is_file() else {}
        scheduler.pool_settings(launcher_table).save(project)
        scheduler.ensure_scheduler(project, store)
    if not resumed:
        return ActionDone("resume", ["nothing to resume"])
    return ActionDone("resume", [f"resuming {', '.join(r.id for r in resumed)} from the last checkpoint"],
                      [r.id for r in resumed])
