"""Issue 8's load figure: 16 workers logging at once while readers ingest and list, against one worker
logging the same points alone.

Writers are real processes logging through ``Tracker`` into real run folders; readers are real processes
that ingest and read runs.db in a loop, as `expt ls` and the TUI do. The baseline is the same number of
points written by one process into one run folder and ingested once, in the same run of the benchmark.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import common
from common import Bench, rate, repeat, value

WRITER = textwrap.dedent("""
    import sys
    from expt.core.tracking import Tracker
    run_dir, n = sys.argv[1], int(sys.argv[2])
    with Tracker(run_dir) as tracker:
        tracker.log_status("running", pid=0, host="load")
        for step in range(n):
            tracker.log_metrics(step, loss=1.0 / (step + 1), acc=step * 0.001, lr=0.1)
        tracker.log_status("completed")
""")

READER = textwrap.dedent("""
    import sys, time
    from expt.store import Store
    stop_file = sys.argv[2]
    import os
    latencies = []
    while not os.path.exists(stop_file):
        start = time.perf_counter()
        with Store(sys.argv[1]) as store:
            store.ingest()
            store.runs()
        latencies.append(time.perf_counter() - start)
        time.sleep(0.05)
    print(" ".join(f"{x:.5f}" for x in latencies))
""")

METRICS_PER_LINE = 3


def make_runs(folder: Path, count: int):
    from expt.store import Store

    with Store(folder / "runs.db") as store:
        return [store.create_run(folder / "runs", experiment="load", recipe="finetune", params={"i": i}, varying={})
                for i in range(count)]


def count_rows(db: Path) -> int:
    from expt.store import Store

    with Store(db) as store:
        store.ingest()
        return store.conn.execute("SELECT COUNT(*) FROM metrics").fetchone()[0]


def alone(work: Path, points: int) -> None:
    """One writer logs every point into one run, then one ingest."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (run,) = make_runs(work, 1)
    subprocess.run([sys.executable, "-c", WRITER, str(run.path), str(points)], check=True)
    assert count_rows(work / "runs.db") == points * METRICS_PER_LINE


def concurrent(work: Path, writers: int, points: int, readers: int) -> dict[str, object]:
    """``writers`` processes log ``points // writers`` lines each while ``readers`` ingest and list."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    runs = make_runs(work, writers)
    stop_file = work / "stop"
    reading = [subprocess.Popen([sys.executable, "-c", READER, str(work / "runs.db"), str(stop_file)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(readers)]
    start = time.perf_counter()
    writing = [subprocess.Popen([sys.executable, "-c", WRITER, str(run.path), str(points // writers)],
                                stderr=subprocess.PIPE, text=True) for run in runs]
    errors = [w.stderr.read() for w in writing if w.wait() != 0]
    rows = count_rows(work / "runs.db")
    elapsed = time.perf_counter() - start
    stop_file.touch()
    latencies, locked = [], False
    for reader in reading:
        out, err = reader.communicate()
        locked |= "locked" in err or reader.returncode != 0
        latencies += [float(x) for x in out.split()]
    return {"seconds": elapsed, "rows": rows, "errors": errors, "locked": locked, "latencies": latencies}


def main() -> None:
    bench = Bench("load", "Sixteen workers logging at once",
                  "16 worker processes log through `Tracker` into their run folders while 2 reader processes "
                  "ingest and list runs.db in a loop (as `expt ls` and the TUI do); throughput from the first "
                  "line to the last one ingested, against one process logging the same points alone.")
    writers, readers = 16, 2
    lines = bench.size(16 * 5_000, 16 * 100)
    n = bench.repeats(3)
    work = common.scratch_dir("expt-bench-load-")
    try:
        alone_times = repeat(lambda: alone(work / "alone", lines), n)
        results = [concurrent(work / "many", writers, lines, readers) for _ in range(n)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    points = lines * METRICS_PER_LINE
    base = rate(points, alone_times, "points/s")
    many = rate(points, [r["seconds"] for r in results], "points/s")
    bench.row(f"{writers} writers + {readers} readers, logged and ingested", many, base,
              "1 writer alone, then one ingest")
    expected = points
    lost_or_doubled = sum(abs(r["rows"] - expected) for r in results)
    failures = sum(len(r["errors"]) for r in results) + sum(bool(r["locked"]) for r in results)
    bench.text_row("metric rows in runs.db (every repeat)", ", ".join(f"{r['rows']:,}" for r in results),
                   f"expected {expected:,}", "—", "none lost or doubled", lost_or_doubled == 0)
    bench.text_row("'database is locked' or failed processes", str(failures), "—", "—", "0", failures == 0)
    latencies = sorted(x for r in results for x in r["latencies"])
    if latencies:
        p95 = latencies[int(0.95 * (len(latencies) - 1))]
        bench.row("reader: ingest + list runs, p95", value(p95, "s"),
                  value(statistics.median(latencies), "s"), "its median")
    bench.write()


if __name__ == "__main__":
    main()
