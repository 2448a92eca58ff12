"""runs.db: ingest by byte offset, crash safety, partial and corrupt lines, resolution, schema, reindex."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import orjson
import pytest

from expt.core import runfiles
from expt.errors import NotFoundError, StoreError, UsageError
from expt.store import SCHEMA_VERSION, Store

from conftest import wait_for


@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "runs.db") as store:
        yield store


def new_run(store: Store, runs_dir: Path, experiment: str = "exp", **params):
    return store.create_run(runs_dir, experiment=experiment, recipe="finetune", params={"lr": 0.1, **params},
                            varying={}, metric="top1", goal="max")


def append(run_dir: Path, data: bytes) -> None:
    with open(run_dir / runfiles.METRICS, "ab") as handle:
        handle.write(data)


def metric_lines(n: int, start: int = 0) -> bytes:
    return b"".join(orjson.dumps({"step": i, "loss": 1.0 / (i + 1), "top1": float(i)}) + b"\n"
                    for i in range(start, start + n))


def count_points(store: Store) -> int:
    return store.conn.execute("SELECT COUNT(*) FROM metrics").fetchone()[0]


def test_ids_are_sequential_per_experiment_and_folders_exist(store, tmp_path):
    runs = [new_run(store, tmp_path / "runs") for _ in range(3)] + [new_run(store, tmp_path / "runs", "other")]
    assert [r.id for r in runs] == ["exp-1", "exp-2", "exp-3", "other-1"]
    assert all((r.path / runfiles.CONFIG).is_file() for r in runs)
    config = runfiles.read_config(runs[1].path)
    assert config["params"] == {"lr": 0.1} and config["id"] == "exp-2"


def test_id_allocation_skips_folders_left_on_disk(store, tmp_path):
    (tmp_path / "runs" / "exp-1").mkdir(parents=True)
    assert new_run(store, tmp_path / "runs").id == "exp-2"


def test_ingest_is_idempotent(store, tmp_path):
    run = new_run(store, tmp_path / "runs")
    append(run.path, metric_lines(100))
    assert store.ingest_run(run) == 100
    assert store.ingest_run(store.get(run.id)) == 0
    assert count_points(store) == 200
    append(run.path, metric_lines(10, start=100))
    store.ingest()
    assert count_points(store) == 220
    assert store.metrics(store.get(run.id), ["top1"])["top1"][-1] == [109, 109.0]


def test_half_written_line_waits_and_corrupt_line_is_skipped(store, tmp_path):
    run = new_run(store, tmp_path / "runs")
    append(run.path, metric_lines(2) + b'{"step": 2, "loss": 0.')
    store.ingest_run(run)
    assert count_points(store) == 4
    append(run.path, b'5}\nnot json at all\n{"step": "x", "loss": 1}\n' + metric_lines(1, start=3))
    store.ingest_run(store.get(run.id))
    fresh = store.get(run.id)
    assert store.metrics(fresh, ["loss"])["loss"] == [[0, 1.0], [1, 0.5], [2, 0.5], [3, 0.25]]
    assert fresh.bad_lines == 2


def test_events_update_the_run(store, tmp_path):
    run = new_run(store, tmp_path / "runs")
    runfiles.append_event(run.path, "launch", pid=123, host="h", device="cpu", backend="local")
    runfiles.append_event(run.path, "status", status="running", pid=123, host="h")
    runfiles.append_event(run.path, "progress", epoch=2, epochs=5)
    runfiles.append_event(run.path, "summary", values={"best_top1": 50.0, "best_epoch": 2})
    runfiles.append_event(run.path, "summary", values={"final_top1": 49.0})
    store.ingest_run(run)
    fresh = store.get(run.id)
    assert (fresh.status, fresh.pid, fresh.device, fresh.epoch, fresh.epochs) == ("running", 123, "cpu", 2, 5)
    assert fresh.summary == {"best_top1": 50.0, "best_epoch": 2, "final_top1": 49.0}
    assert fresh.best == 50.0 and fresh.started_at is not None
    runfiles.append_event(run.path, "status", status="failed", error="boom")
    store.ingest_run(fresh)
    fresh = store.get(run.id)
    assert (fresh.status, fresh.error) == ("failed", "boom") and fresh.ended_at is not None


def test_event_after_a_dead_writers_partial_line_is_not_lost(store, tmp_path):
    run = new_run(store, tmp_path / "runs")
    append(run.path, metric_lines(1) + b'{"step": 1, "lo')
    runfiles.append_event(run.path, "status", status="crashed")
    store.ingest_run(run)
    fresh = store.get(run.id)
    assert fresh.status == "crashed" and fresh.bad_lines == 1 and count_points(store) == 2


def test_queued_event_does_not_undo_a_scheduler_claim(store, tmp_path):
    run = new_run(store, tmp_path / "runs")
    runfiles.append_event(run.path, "status", status="stopped")
    store.ingest_run(run)
    runfiles.append_event(run.path, "status", status="queued", note="resume")
    assert store.update_run(store.get(run.id), when=("stopped",), status="queued")
    assert store.update_run(store.get(run.id), when=("queued",), status="starting")
    store.ingest_run(store.get(run.id))
    assert store.get(run.id).status == "starting"


_INGEST_CHILD = textwrap.dedent("""
    import sys, expt.store as s
    s.INGEST_CHUNK = 4096
    store = s.Store(sys.argv[1])
    print("ready", flush=True)
    store.ingest()
""")


def test_an_ingest_killed_half_way_loses_and_duplicates_nothing(store, tmp_path):
    run = new_run(store, tmp_path / "runs")
    n = 60_000
    append(run.path, metric_lines(n))
    child = subprocess.Popen([sys.executable, "-c", _INGEST_CHILD, str(store.path)], stdout=subprocess.PIPE)
    assert child.stdout.readline().strip() == b"ready"
    wait_for(lambda: store.get(run.id).offset > 0, timeout=60, interval=0.01, what="the child to commit a chunk")
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    partial = store.get(run.id)
    assert partial.offset < (run.path / runfiles.METRICS).stat().st_size, "the child finished before the kill"
    lines_before_offset = (run.path / runfiles.METRICS).read_bytes()[: partial.offset].count(b"\n")
    assert count_points(store) == 2 * lines_before_offset
    store.ingest_run(partial)
    assert count_points(store) == 2 * n
    assert store.metrics(store.get(run.id), ["top1"])["top1"][-1] == [n - 1, float(n - 1)]


def test_concurrent_ingesters_count_each_line_once(tmp_path):
    with Store(tmp_path / "runs.db") as store:
        run = new_run(store, tmp_path / "runs")
    append(run.path, metric_lines(20_000))
    code = "import sys, expt.store as s; s.INGEST_CHUNK = 8192; s.Store(sys.argv[1]).ingest()"
    children = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "runs.db")]) for _ in range(3)]
    assert all(child.wait(timeout=120) == 0 for child in children)
    with Store(tmp_path / "runs.db") as store:
        assert count_points(store) == 40_000
        assert store.get(run.id).offset == (run.path / runfiles.METRICS).stat().st_size


def test_resolve_ids_prefixes_experiments_and_bad_refs(store, tmp_path):
    for _ in range(12):
        new_run(store, tmp_path / "runs", "demo")
    new_run(store, tmp_path / "runs", "dml")
    assert [r.id for r in store.resolve(["demo-1"])] == ["demo-1"]
    assert len(store.resolve(["demo"])) == 12
    assert [r.id for r in store.resolve(["dml-"])] == ["dml-1"]
    assert [r.id for r in store.resolve(["demo-3", "demo-3", "dml-1"])] == ["demo-3", "dml-1"]
    with pytest.raises(UsageError, match="'demo-' is ambiguous: it starts 12 run ids"):
        store.resolve_one("demo-")
    with pytest.raises(NotFoundError, match="no run or experiment 'nope'"):
        store.resolve_one("nope")
    for bad in ("../etc", "demo/1", ".."):
        with pytest.raises(UsageError, match="is not a run id"):
            store.resolve_one(bad)


def test_a_newer_schema_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "runs.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="newer than this expt understands"):
        Store(path)
    assert path.read_bytes() == before


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path):
    path = tmp_path / "runs.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a database"):
        Store(path)


def test_reindex_rebuilds_the_same_runs(store, tmp_path):
    runs_dir = tmp_path / "runs"
    for i in range(3):
        run = new_run(store, runs_dir, lr=0.1 * i)
        append(run.path, metric_lines(5 + i))
        runfiles.append_event(run.path, "status", status="running", pid=1, host="h")
        runfiles.append_event(run.path, "summary", values={"best_top1": float(i)})
        runfiles.append_event(run.path, "status", status="completed")
    store.ingest(store.runs())
    before = [(r.to_json(), store.metrics(r)) for r in store.runs()]
    assert store.reindex(runs_dir) == 3
    after = [(r.to_json(), store.metrics(r)) for r in store.runs()]
    assert after == before


def test_changed_since_reports_only_changed_runs(store, tmp_path):
    a, b = new_run(store, tmp_path / "runs"), new_run(store, tmp_path / "runs")
    version = store.version()
    runfiles.append_event(b.path, "progress", epoch=1, epochs=3)
    store.ingest([a, b])
    assert [r.id for r in store.changed_since(version)] == [b.id]


def test_delete_removes_rows_and_folders(store, tmp_path):
    run = new_run(store, tmp_path / "runs")
    append(run.path, metric_lines(3))
    store.ingest_run(run)
    store.delete([run])
    assert store.get(run.id) is None and not run.path.exists() and count_points(store) == 0


def test_a_full_disk_while_ingesting_keeps_the_database_intact(tmp_path):
    """SQLite's max_page_count stands in for a full disk: the ingest fails, nothing is half-written."""
    with Store(tmp_path / "runs.db") as store:
        run = new_run(store, tmp_path / "runs")
        append(run.path, metric_lines(50))
        store.ingest_run(run)
        pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
        store.conn.execute(f"PRAGMA max_page_count = {pages + 2}")
        append(run.path, metric_lines(50_000, start=50))
        with pytest.raises(StoreError, match="full"):
            store.ingest_run(store.get(run.id))
        assert count_points(store) == 100
        assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        store.conn.execute("PRAGMA max_page_count = 1073741823")
        store.ingest_run(store.get(run.id))
        assert count_points(store) == 2 * 50_050
