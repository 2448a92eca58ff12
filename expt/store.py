"""runs.db: the SQLite index of runs/, and the ingest that keeps it current.

runs.db is a cache of the run folders (see expt.core.runfiles): every field here
comes from a run's config.toml or from the lines of its metrics.jsonl, so
``reindex`` can rebuild it at any time. Ingest reads new lines by byte offset and
applies them in one transaction together with the new offset: a process that
dies mid-ingest leaves the old offset and no rows, so nothing is lost or counted
twice.

The schema is created and migrated with sqlite-utils' ``Migrations`` (imported only
when a migration is due); the read paths use the standard ``sqlite3`` module so
that ``expt ls`` starts fast (sqlite_utils imports numpy, ~110 ms).
"""

from __future__ import annotations

import fcntl
import math
import os
import socket
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import orjson

from expt.core import runfiles
from expt.core.runfiles import ACTIVE_STATUSES, FINAL_STATUSES
from expt.errors import NotFoundError, StoreError, UsageError
from expt.project import name_too_long

SCHEMA_VERSION = 2
INGEST_CHUNK = 8 << 20

_RUN_COLUMNS = (
    "rid", "id", "experiment", "seq", "recipe", "description", "status", "params", "varying", "summary",
    "metric", "goal", "origin", "created_at", "started_at", "ended_at", "run_dir", "pid", "host", "device",
    "backend", "job_id", "epoch", "epochs", "phase", "error", "stop_requested", "offset", "bad_lines", "version",
    "tags", "note",
)
_SELECT_RUNS = f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs"


def _migrations():
    from sqlite_utils import Migrations

    migrations = Migrations("expt")

    @migrations()
    def m001_initial(db):
        db["runs"].create({
            "rid": int, "id": str, "experiment": str, "seq": int, "recipe": str, "description": str,
            "status": str, "params": str, "varying": str, "summary": str, "metric": str, "goal": str,
            "origin": str, "created_at": float, "started_at": float, "ended_at": float, "run_dir": str,
            "pid": int, "host": str, "device": str, "backend": str, "job_id": str, "epoch": int,
            "epochs": int, "phase": str, "error": str, "stop_requested": int, "offset": int,
            "bad_lines": int, "version": int,
        }, pk="rid", not_null={"id", "experiment", "seq", "recipe", "status", "params", "run_dir"},
            defaults={"description": "", "varying": "{}", "summary": "{}", "origin": "expt",
                      "stop_requested": 0, "offset": 0, "bad_lines": 0, "version": 0})
        db["runs"].create_index(["id"], unique=True)
        db["runs"].create_index(["experiment", "seq"])
        db["runs"].create_index(["status"])
        db["runs"].create_index(["version"])
        db["metric_keys"].create({"id": int, "name": str}, pk="id", not_null={"name"})
        db["metric_keys"].create_index(["name"], unique=True)
        db.execute("CREATE TABLE metrics (run INTEGER NOT NULL, key INTEGER NOT NULL, step INTEGER NOT NULL, "
                   "value REAL, PRIMARY KEY (run, key, step)) WITHOUT ROWID")
        db["meta"].create({"key": str, "value": int}, pk="key")
        db["meta"].insert({"key": "version", "value": 0})

    @migrations()
    def m002_tags_and_note(db):  # issue 16: tags and note event lines (expt tag, expt note)
        db["runs"].add_column("tags", str, not_null_default="[]")
        db["runs"].add_column("note", str, not_null_default="")

    return migrations


@dataclass
class Run:
    """One row of runs.db, with its JSON columns decoded."""

    rid: int
    id: str
    experiment: str
    seq: int
    recipe: str
    description: str
    status: str
    params: dict[str, Any]
    varying: dict[str, Any]
    summary: dict[str, Any]
    metric: str | None
    goal: str | None
    origin: str
    created_at: float | None
    started_at: float | None
    ended_at: float | None
    run_dir: str
    pid: int | None = None
    host: str | None = None
    device: str | None = None
    backend: str | None = None
    job_id: str | None = None
    epoch: int | None = None
    epochs: int | None = None
    phase: str | None = None
    error: str | None = None
    stop_requested: int = 0
    offset: int = 0
    bad_lines: int = 0
    version: int = 0
    tags: list[str] = field(default_factory=list)
    note: str = ""
    metrics: dict[str, list[list[float]]] | None = field(default=None, repr=False)

    @classmethod
    def from_row(cls, row: tuple) -> Run:
        values = dict(zip(_RUN_COLUMNS, row))
        for key in ("params", "varying", "summary"):
            values[key] = orjson.loads(values[key] or "{}")
        values["tags"] = orjson.loads(values["tags"] or "[]")
        values["note"] = values["note"] or ""
        return cls(**values)

    @property
    def path(self) -> Path:
        return Path(self.run_dir)

    @property
    def best(self) -> float | None:
        """The run's best value of its ranking metric (``summary['best_<metric>']``)."""
        return self.summary.get(f"best_{self.metric}") if self.metric else None

    @property
    def duration(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.ended_at if self.ended_at is not None else (time.time() if self.status in ACTIVE_STATUSES else None)
        return None if end is None else max(0.0, end - self.started_at)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    def to_json(self) -> dict[str, Any]:
        data = {
            "id": self.id, "experiment": self.experiment, "recipe": self.recipe, "status": self.status,
            "description": self.description, "params": self.params, "varying": self.varying,
            "summary": self.summary, "metric": self.metric, "goal": self.goal, "best": self.best,
            "created_at": self.created_at, "started_at": self.started_at, "ended_at": self.ended_at,
            "duration": self.duration, "run_dir": self.run_dir, "pid": self.pid, "host": self.host,
            "device": self.device, "backend": self.backend, "job_id": self.job_id, "epoch": self.epoch,
            "epochs": self.epochs, "phase": self.phase, "error": self.error, "origin": self.origin,
            "tags": self.tags, "note": self.note,
        }
        if self.metrics is not None:
            data["metrics"] = self.metrics
        return data


class Store:
    """A connection to runs.db. One per thread: sqlite3 connections are not shared."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        try:
            self.conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        except sqlite3.Error as error:
            raise StoreError(f"{self.path}: cannot open: {error}") from None
        self._keys: dict[str, int] = {}
        self._folder_seqs: dict[Path, dict[str, int]] = {}
        try:
            self.conn.execute("PRAGMA busy_timeout = 30000")
            self._check_schema()
            self.conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.DatabaseError as error:
            self.conn.close()
            raise StoreError(f"{self.path}: {error} (move it aside and run `expt reindex` to rebuild it)") from None

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema ---------------------------------------------------------------------------------------

    def _user_version(self) -> int:
        return self.conn.execute("PRAGMA user_version").fetchone()[0]

    def _check_schema(self) -> None:
        version = self._user_version()
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path} has schema version {version}, newer than this expt understands "
                             f"({SCHEMA_VERSION}): upgrade expt, or move it aside and run `expt reindex`")
        if version < SCHEMA_VERSION:
            self._migrate()

    def _migrate(self) -> None:
        import sqlite_utils

        lock_path = self.path.with_name(f".{self.path.name}.migrate.lock")
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self._user_version() >= SCHEMA_VERSION:
                return
            self.conn.execute("PRAGMA journal_mode = WAL")
            _migrations().apply(sqlite_utils.Database(self.conn))
            self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- transactions ---------------------------------------------------------------------------------

    @contextmanager
    def write(self) -> Iterator[int]:
        """A write transaction taken at once (BEGIN IMMEDIATE); yields its change version."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            raise StoreError(f"{self.path}: {error}") from None
        try:
            version = self.conn.execute(
                "UPDATE meta SET value = value + 1 WHERE key = 'version' RETURNING value").fetchone()[0]
            yield version
            self.conn.execute("COMMIT")
        except BaseException as error:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            if isinstance(error, sqlite3.OperationalError):
                raise StoreError(f"{self.path}: {error}") from None
            raise

    def version(self) -> int:
        return self.conn.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()[0]

    # -- creating runs --------------------------------------------------------------------------------

    def create_run(self, runs_dir: Path, *, experiment: str, recipe: str, params: dict[str, Any],
                   varying: dict[str, Any], description: str = "", metric: str | None = None,
                   goal: str | None = None, origin: str = "expt", status: str = "queued",
                   meta: dict[str, Any] | None = None) -> Run:
        """Allocate ``<experiment>-<n>``, write its folder and config.toml, record it as ``status``.

        ``meta`` adds keys to config.toml's header (e.g. an imported run's source folder).
        """
        if too_long := name_too_long(experiment):
            raise UsageError(f"experiment {experiment[:40]}...: {too_long}")
        runs_dir.mkdir(parents=True, exist_ok=True)
        seq = self._next_seq(runs_dir, experiment)
        while True:
            run_id = f"{experiment}-{seq}"
            run_dir = runs_dir / run_id
            try:
                run_dir.mkdir()
                break
            except FileExistsError:
                seq += 1
        meta = {**(meta or {}), "id": run_id, "experiment": experiment, "seq": seq, "recipe": recipe,
                "description": description, "metric": metric, "goal": goal, "origin": origin,
                "created_at": time.time()}
        try:
            runfiles.write_config(run_dir, meta, params, varying)
            (run_dir / runfiles.METRICS).touch()
            return self._insert_run(meta, params, varying, run_dir, status)
        except BaseException:
            _remove_tree(run_dir)
            raise

    def _next_seq(self, runs_dir: Path, experiment: str) -> int:
        """One above the highest number in runs.db and among the folders in runs/ (which may hold runs the
        database has lost). The folders are scanned once per Store: later runs are in the database, and
        ``create_run`` steps past any folder that appeared meanwhile."""
        row = self.conn.execute("SELECT MAX(seq) FROM runs WHERE experiment = ?", (experiment,)).fetchone()
        if runs_dir not in self._folder_seqs:
            seqs: dict[str, int] = {}
            for entry in os.scandir(runs_dir):
                name, _, suffix = entry.name.rpartition("-")
                if name and suffix.isdigit():
                    seqs[name] = max(seqs.get(name, 0), int(suffix))
            self._folder_seqs[runs_dir] = seqs
        return max(row[0] or 0, self._folder_seqs[runs_dir].get(experiment, 0)) + 1

    def _insert_run(self, meta: dict[str, Any], params: dict[str, Any], varying: dict[str, Any],
                    run_dir: Path, status: str) -> Run:
        with self.write() as version:
            cursor = self.conn.execute(
                "INSERT INTO runs (id, experiment, seq, recipe, description, status, params, varying, metric, "
                "goal, origin, created_at, run_dir, version) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (meta["id"], meta["experiment"], meta["seq"], meta["recipe"], meta.get("description", ""),
                 status, _dumps(params), _dumps(varying), meta.get("metric"), meta.get("goal"),
                 meta.get("origin", "expt"), meta["created_at"], str(run_dir), version))
            rid = cursor.lastrowid
        return self.run_by_rid(rid)

    # -- reading --------------------------------------------------------------------------------------

    def runs(self, where: str = "", args: Iterable[Any] = (), *, order: str = "rid",
             limit: int | None = None) -> list[Run]:
        sql = _SELECT_RUNS + (f" WHERE {where}" if where else "") + f" ORDER BY {order}"
        if limit is not None:
            sql = f"SELECT * FROM ({_SELECT_RUNS}{f' WHERE {where}' if where else ''} ORDER BY rid DESC " \
                  f"LIMIT {int(limit)}) ORDER BY {order}"
        return [Run.from_row(row) for row in self.conn.execute(sql, tuple(args))]

    def run_by_rid(self, rid: int) -> Run:
        row = self.conn.execute(_SELECT_RUNS + " WHERE rid = ?", (rid,)).fetchone()
        if row is None:
            raise NotFoundError(f"no run with rid {rid}")
        return Run.from_row(row)

    def get(self, run_id: str) -> Run | None:
        row = self.conn.execute(_SELECT_RUNS + " WHERE id = ?", (run_id,)).fetchone()
        return Run.from_row(row) if row else None

    def count(self, where: str = "", args: Iterable[Any] = ()) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM runs" + (f" WHERE {where}" if where else ""),
                                 tuple(args)).fetchone()[0]

    def page(self, where: str = "", args: Iterable[Any] = (), *, limit: int, offset: int = 0) -> list[Run]:
        """Runs newest first, ``limit`` of them after skipping ``offset``: a view of a long history."""
        sql = _SELECT_RUNS + (f" WHERE {where}" if where else "") + " ORDER BY rid DESC LIMIT ? OFFSET ?"
        return [Run.from_row(row) for row in self.conn.execute(sql, (*args, int(limit), int(offset)))]

    def status_counts(self) -> dict[str, int]:
        return dict(self.conn.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall())

    def changed_since(self, version: int) -> list[Run]:
        return self.runs("version > ?", (version,))

    def resolve(self, refs: Iterable[str]) -> list[Run]:
        """Runs named by ids, unique id prefixes or experiment names, in the order given, without repeats."""
        found: dict[str, Run] = {}
        for ref in refs:
            for run in self.resolve_one(ref):
                found.setdefault(run.id, run)
        return list(found.values())

    def resolve_one(self, ref: str) -> list[Run]:
        if not ref or "/" in ref or ".." in ref or "\\" in ref or "\0" in ref:
            raise UsageError(f"{ref!r} is not a run id (ids look like 'demo-3')")
        run = self.get(ref)
        if run is not None:
            return [run]
        by_experiment = self.runs("experiment = ?", (ref,), order="seq")
        if by_experiment:
            return by_experiment
        escaped = ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        matches = self.runs("id LIKE ? ESCAPE '\\'", (escaped + "%",), order="id")
        if len(matches) == 1:
            return matches
        if matches:
            shown = ", ".join(m.id for m in matches[:8]) + (", ..." if len(matches) > 8 else "")
            raise UsageError(f"{ref!r} is ambiguous: it starts {len(matches)} run ids ({shown})")
        raise NotFoundError(f"no run or experiment {ref!r} in {self.path} (see `expt ls`)")

    def metric_names(self, run: Run) -> list[str]:
        rows = self.conn.execute(
            "SELECT DISTINCT k.name FROM metrics m JOIN metric_keys k ON k.id = m.key WHERE m.run = ? ORDER BY k.name",
            (run.rid,))
        return [name for (name,) in rows]

    def metrics(self, run: Run, keys: Iterable[str] | None = None,
                since: dict[str, int] | None = None) -> dict[str, list[list[float]]]:
        """``{key: [[step, value], ...]}`` in step order; ``since`` keeps steps after a per-key step."""
        sql = ("SELECT k.name, m.step, m.value FROM metrics m JOIN metric_keys k ON k.id = m.key "
               "WHERE m.run = ?")
        args: list[Any] = [run.rid]
        if keys is not None:
            keys = list(keys)
            sql += f" AND k.name IN ({', '.join('?' * len(keys))})"
            args += keys
        sql += " ORDER BY m.key, m.step"
        result: dict[str, list[list[float]]] = {}
        for name, step, value in self.conn.execute(sql, args):
            if since is not None and step <= since.get(name, -math.inf):
                continue
            result.setdefault(name, []).append([step, value])
        return result

    def last_values(self, runs: list[Run], key: str) -> dict[int, float | None]:
        """The value at the highest step of ``key`` for each run (by rid)."""
        key_id = self._key_id(key, create=False)
        if key_id is None or not runs:
            return {}
        out: dict[int, float | None] = {}
        for run in runs:
            row = self.conn.execute("SELECT value FROM metrics WHERE run = ? AND key = ? ORDER BY step DESC LIMIT 1",
                                    (run.rid, key_id)).fetchone()
            if row:
                out[run.rid] = row[0]
        return out

    def recent_values(self, runs: Iterable[Run], key: str, n: int = 1) -> dict[int, list[float | None]]:
        """The values of ``key`` at each run's last ``n`` steps (by rid), in step order."""
        key_id = self._key_id(key, create=False)
        if key_id is None:
            return {}
        out: dict[int, list[float | None]] = {}
        sql = "SELECT value FROM metrics WHERE run = ? AND key = ? ORDER BY step DESC LIMIT ?"
        for run in runs:
            values = [value for (value,) in self.conn.execute(sql, (run.rid, key_id, n))]
            if values:
                out[run.rid] = values[::-1]
        return out

    # -- updating runs --------------------------------------------------------------------------------

    def update_run(self, run: Run, *, when: tuple[str, ...] | None = None, **columns: Any) -> bool:
        """Set columns of ``run`` (only while its status is in ``when``); True if the row changed."""
        with self.write() as version:
            return self._update(run.rid, columns, version, when)

    def _update(self, rid: int, columns: dict[str, Any], version: int, when: tuple[str, ...] | None = None) -> bool:
        for key in ("params", "varying", "summary", "tags"):
            if key in columns:
                columns[key] = _dumps(columns[key])
        assignments = "".join(f"{name} = ?, " for name in columns)
        sql = f"UPDATE runs SET {assignments}version = ? WHERE rid = ?"
        args = [*columns.values(), version, rid]
        if when:
            sql += f" AND status IN ({', '.join('?' * len(when))})"
            args += list(when)
        return self.conn.execute(sql, args).rowcount == 1

    def delete(self, runs: list[Run]) -> None:
        """Remove runs from runs.db and their folders from disk."""
        with self.write():
            for run in runs:
                self.conn.execute("DELETE FROM metrics WHERE run = ?", (run.rid,))
                self.conn.execute("DELETE FROM runs WHERE rid = ?", (run.rid,))
        for run in runs:
            _remove_tree(run.path)

    # -- ingest ---------------------------------------------------------------------------------------

    def ingest(self, runs: Iterable[Run] | None = None) -> int:
        """Apply new lines of the runs' metrics.jsonl (default: every active run); returns lines applied."""
        if runs is None:
            runs = self.runs(f"status IN ({', '.join('?' * len(ACTIVE_STATUSES))})", ACTIVE_STATUSES)
        total = 0
        for run in runs:
            total += self.ingest_run(run)
        return total

    def ingest_run(self, run: Run) -> int:
        path = run.path / runfiles.METRICS
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            return 0
        applied = 0
        while size > run.offset:
            with self.write() as version:
                offset = self.conn.execute("SELECT offset FROM runs WHERE rid = ?", (run.rid,)).fetchone()
                if offset is None or offset[0] >= size:
                    break
                with open(path, "rb") as handle:
                    handle.seek(offset[0])
                    data = handle.read(min(size - offset[0], INGEST_CHUNK))
                end = data.rfind(b"\n")
                if end < 0:
                    if len(data) >= INGEST_CHUNK:  # one line longer than a chunk: skip it as bad
                        end = len(data) - 1
                    else:
                        break  # a line still being written: wait for its end
                lines = self._apply(run.rid, data[: end + 1], version)
                self.conn.execute("UPDATE runs SET offset = ? WHERE rid = ?", (offset[0] + end + 1, run.rid))
                applied += lines
            run.offset = offset[0] + end + 1
        return applied

    def _key_id(self, name: str, create: bool = True) -> int | None:
        key_id = self._keys.get(name)
        if key_id is None:
            row = self.conn.execute("SELECT id FROM metric_keys WHERE name = ?", (name,)).fetchone()
            if row is None:
                if not create:
                    return None
                row = self.conn.execute("INSERT INTO metric_keys (name) VALUES (?) RETURNING id", (name,)).fetchone()
            key_id = self._keys[name] = row[0]
        return key_id

    def _apply(self, rid: int, data: bytes, version: int) -> int:
        """Apply complete lines to run ``rid`` inside the caller's transaction."""
        row = self.conn.execute("SELECT status, summary, params, started_at, tags FROM runs WHERE rid = ?",
                                (rid,)).fetchone()
        status, summary_text, params_text, started_at, tags_text = row
        summary = params = tags = None
        columns: dict[str, Any] = {}
        points: list[tuple[int, int, int, Any]] = []
        keys = self._keys
        bad = lines = 0
        loads = orjson.loads
        for line in data.split(b"\n"):
            if not line.strip():
                continue
            lines += 1
            try:
                record = loads(line)
                event = record.get("event")
            except (orjson.JSONDecodeError, AttributeError):
                bad += 1
                continue
            if event is None:
                step = record.get("step")
                if type(step) is not int:
                    bad += 1
                    continue
                for name, value in record.items():
                    if name == "step" or name == "t":
                        continue
                    key_id = keys.get(name) or self._key_id(name)
                    points.append((rid, key_id, step, value if type(value) in (float, int) else None))
            elif event == "status":
                new = record.get("status")
                if new == "queued" and status not in FINAL_STATUSES:
                    continue  # a resume already claimed by the scheduler
                status = new
                columns["status"] = new
                if new == "running":
                    if started_at is None:
                        started_at = columns["started_at"] = record.get("t")
                    for key in ("pid", "host", "device"):
                        if key in record:
                            columns[key] = record[key]
                    columns["ended_at"] = None
                elif new in FINAL_STATUSES:
                    columns["ended_at"] = record.get("t")
                    columns["error"] = record.get("error")
                    columns["stop_requested"] = 0
                elif new == "queued":
                    columns.update(ended_at=None, error=None, stop_requested=0, epoch=None, phase=None)
            elif event == "launch":
                if status in FINAL_STATUSES:
                    continue
                status = columns["status"] = "starting"
                for key in ("pid", "host", "device", "backend", "job_id"):
                    if key in record:
                        columns[key] = record[key]
            elif event == "summary":
                summary = summary if summary is not None else orjson.loads(summary_text)
                summary.update(record.get("values", {}))
            elif event == "params":
                params = params if params is not None else orjson.loads(params_text)
                params.update(record.get("values", {}))
            elif event == "progress":
                for key in ("epoch", "epochs", "phase"):
                    if key in record:
                        columns[key] = record[key]
            elif event == runfiles.TAGS_EVENT:
                tags = tags if tags is not None else orjson.loads(tags_text or "[]")
                added, removed = record.get("add") or [], record.get("remove") or []
                if not all(isinstance(t, str) for t in (*added, *removed)):
                    bad += 1
                    continue
                tags = [t for t in tags if t not in removed] + [t for t in dict.fromkeys(added) if t not in tags]
            elif event == runfiles.NOTE_EVENT:
                text = record.get("text")
                if not isinstance(text, str):
                    bad += 1
                    continue
                columns["note"] = text
            else:
                bad += 1
        if points:
            self.conn.executemany("INSERT OR REPLACE INTO metrics (run, key, step, value) VALUES (?,?,?,?)", points)
        if summary is not None:
            columns["summary"] = summary
        if params is not None:
            columns["params"] = params
        if tags is not None:
            columns["tags"] = tags
        if bad:
            self.conn.execute("UPDATE runs SET bad_lines = bad_lines + ? WHERE rid = ?", (bad, rid))
        self._update(rid, columns, version)
        return lines

    # -- rebuilding -----------------------------------------------------------------------------------

    def reindex(self, runs_dir: Path) -> int:
        """Drop every row and rebuild runs.db from the run folders; returns the number of runs."""
        with self.write():
            self.conn.execute("DELETE FROM metrics")
            self.conn.execute("DELETE FROM runs")
        folders = sorted((p for p in runs_dir.iterdir() if (p / runfiles.CONFIG).is_file()),
                         key=lambda p: os.stat(p / runfiles.CONFIG).st_mtime) if runs_dir.is_dir() else []
        count = 0
        for folder in folders:
            try:
                meta = runfiles.read_config(folder)
            except (OSError, ValueError):
                continue
            meta = {**meta, "id": folder.name}
            meta.setdefault("experiment", folder.name.rsplit("-", 1)[0])
            meta.setdefault("seq", int(folder.name.rsplit("-", 1)[-1]) if folder.name[-1].isdigit() else 0)
            meta.setdefault("created_at", os.stat(folder / runfiles.CONFIG).st_mtime)
            run = self._insert_run(meta, meta.get("params", {}), meta.get("varying", {}), folder, "queued")
            self.ingest_run(run)
            count += 1
        return count


def _dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def this_host() -> str:
    return socket.gethostname()


def open_store(db_path: Path) -> Store:
    if not db_path.parent.is_dir():
        raise UsageError(f"{db_path.parent}: no such folder")
    return Store(db_path)
