"""expt.track, W&B's logging API for a user's own script: ``log`` of 4 metrics a call, in points per second, against
expt's own ``Tracker.log_metrics`` (what a worker calls) and against W&B offline and trackio.

expt.track's figures: under ``expt run`` (``$EXPT_TRACK`` set: protocol lines appended to a file), with a step and
with W&B's own counter, and standalone (a run of its own in a project, written through a Tracker). Each repeat logs
into a fresh run and is timed from the first ``log`` to the end of ``finish()`` (the last write), not ``init``.

W&B (``WANDB_MODE=offline``) and trackio are not expt's dependencies: they are measured in the Python named by
``$EXPT_BENCH_PEERS_PYTHON`` (e.g. ``python3 -m venv /tmp/trackvenv && /tmp/trackvenv/bin/pip install wandb trackio``),
one process a repeat, timed inside it the same way (``run.log`` then ``run.finish()``; ``trackio.log`` then
``trackio.finish()``).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import orjson

import common
from common import Bench, ratio_at_least, rate

NAMES = ("train_loss", "lr", "grad_norm", "top1")
PEERS_ENV = "EXPT_BENCH_PEERS_PYTHON"

PEER = r"""
import glob, json, os, sqlite3, sys, tempfile, time
tool, calls, work = sys.argv[1], int(sys.argv[2]), sys.argv[3]
names = ("train_loss", "lr", "grad_norm", "top1")
if tool == "wandb":
    os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true")
    import wandb as module
    run = module.init(project="bench", dir=work, config={"lr": 0.1})
    log, finish = run.log, run.finish
else:
    os.environ["TRACKIO_DIR"] = work
    import trackio as module
    module.init(project="bench", config={"lr": 0.1})
    log, finish = module.log, module.finish
start = time.perf_counter()
for step in range(calls):
    log({name: 0.5 + step * 1e-6 for name in names}, step=step)
finish()
elapsed = time.perf_counter() - start
if tool == "trackio":  # every row is in its database once finish() returns
    [db] = glob.glob(os.path.join(work, "*.db"))
    stored = sqlite3.connect(db).execute("SELECT COUNT(*) FROM metrics").fetchone()[0]
else:  # W&B offline writes its records to a .wandb file
    stored = calls if any(os.path.getsize(p) for p in glob.glob(os.path.join(work, "wandb", "*", "*.wandb"))) else 0
print(json.dumps({"seconds": elapsed, "stored": stored, "version": module.__version__}))
"""


def main() -> None:
    bench = Bench("track", "expt.track: W&B's logging API",
                  "`expt.track.log` of 4 metrics a call (`import expt.track as wandb`) under `expt run` (protocol "
                  "lines appended to $EXPT_TRACK) and standalone (a run of its own, through a Tracker), against "
                  "expt's `Tracker.log_metrics` and against W&B offline and trackio, each timed from the first log to "
                  "the end of finish().")
    points = bench.size(200_000, 2_000)
    peer_points = bench.size(20_000, 400)
    n = bench.repeats(5)
    work = Path(tempfile.mkdtemp(prefix="expt-bench-track-"))
    peers_python = os.environ.get(PEERS_ENV)
    peers, missing = available_peers(peers_python)
    try:
        bench.progress(f"expt.track and Tracker: {n} repeats of {points:,} points"
                       + (f"; {', '.join(peers)}: {peer_points:,} points a repeat" if peers else ""))
        figures, versions = measure(work, points, peer_points, n, peers, peers_python)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    tracker, tracker_name = figures["tracker"], "Tracker.log_metrics"
    met = [
        bench.row("expt.track log under expt run, step given", figures["protocol"], tracker, tracker_name,
                  ratio_at_least(0.5)),
        bench.row("expt.track log under expt run, W&B's step counter", figures["protocol_counter"], tracker,
                  tracker_name, ratio_at_least(0.5)),
        bench.row("expt.track log standalone (a Tracker underneath)", figures["standalone"], tracker, tracker_name,
                  ratio_at_least(0.5)),
    ]
    labels = {"wandb": "W&B offline run.log", "trackio": "trackio.log"}
    tools = {"wandb": "W&B", "trackio": "trackio"}
    for peer in peers:
        bench.row("expt.track log under expt run, step given", figures["protocol"], figures[peer], labels[peer])
    for peer in peers:
        bench.row(labels[peer], figures[peer], tracker, tracker_name)
    if not all(met):
        bench.note("Why a target is missed: the ratios move with the load on this machine (compare the medians "
                   "with the best repeats); rerun on an idle machine before reading a miss as a regression.")
    bench.note(f"{points:,} points per repeat for expt ({points // len(NAMES):,} calls of {len(NAMES)} metrics), "
               f"{n} repeats interleaved; rates are points per second (median, best repeat); ratios use medians. "
               "Each repeat logs into a fresh run and includes finish(), the final write.")
    if peers:
        bench.note(f"{' and '.join(f'{tools[p]} {versions[p]}' for p in peers)}, in {peers_python}: {peer_points:,} "
                   f"points ({peer_points // len(NAMES):,} calls) a repeat, each repeat in a process of its own "
                   "(W&B offline, its service writing a .wandb file; trackio, its SQLite database), timed in it from "
                   "the first log to the end of finish(), when every point is written. Fewer points than expt's "
                   "keep the peers' repeats to seconds; it flatters W&B, whose offline log slows down as its run "
                   "grows (tried once here: 50,000 calls ran at 0.6x the rate of 5,000).")
    for note in missing:
        bench.note(note)
    bench.write()


def available_peers(python: str | None) -> tuple[list[str], list[str]]:
    """The peers importable by ``python``, and a note for each one that is not."""
    why = ("not expt's dependencies; set ${env} to a Python that has them (`python3 -m venv /tmp/trackvenv && "
           "/tmp/trackvenv/bin/pip install wandb trackio`)").replace("${env}", PEERS_ENV)
    if not python:
        return [], [f"No W&B or trackio rows: {PEERS_ENV} is not set (W&B and trackio are {why})."]
    found, missing = [], []
    for tool in ("wandb", "trackio"):
        done = subprocess.run([python, "-c", f"import {tool}"], capture_output=True, timeout=300)
        if done.returncode == 0:
            found.append(tool)
        else:
            missing.append(f"No {tool} row: {python} cannot import {tool} (it is {why}).")
    return found, missing


def measure(work: Path, points: int, peer_points: int, n: int, peers: list[str],
            peers_python: str | None) -> tuple[dict[str, common.Figure], dict[str, str]]:
    import expt.track as wandb
    from expt.core.tracking import Tracker
    from expt.store import Store

    calls = points // len(NAMES)
    counter = iter(range(10**9))

    def fresh() -> Path:
        folder = work / f"r{next(counter)}"
        folder.mkdir()
        return folder

    def tracker_log() -> float:
        folder = fresh()
        with Store(folder / "runs.db") as store:
            run = store.create_run(folder / "runs", experiment="bench", recipe="script", params={}, varying={})
        start = time.perf_counter()
        with Tracker(run.path) as tracker:
            for step in range(calls):
                tracker.log_metrics(step, **{name: 0.5 + step * 1e-6 for name in NAMES})
        elapsed = time.perf_counter() - start
        check(run.path / "metrics.jsonl", calls, lambda r: "event" not in r)
        return elapsed

    def protocol_log(with_step: bool) -> float:
        folder = fresh()
        track = folder / "track.jsonl"
        os.environ.update(EXPT_TRACK=str(track), EXPT_RUN_DIR=str(folder), EXPT_RUN_ID="bench-1")
        try:
            run = wandb.init(config={"lr": 0.1})
        finally:
            for key in ("EXPT_TRACK", "EXPT_RUN_DIR", "EXPT_RUN_ID"):
                os.environ.pop(key)
        start = time.perf_counter()
        if with_step:
            for step in range(calls):
                run.log({name: 0.5 + step * 1e-6 for name in NAMES}, step=step)
        else:
            for step in range(calls):
                run.log({name: 0.5 + step * 1e-6 for name in NAMES})
        run.finish()
        elapsed = time.perf_counter() - start
        check(track, calls, lambda r: r["kind"] == "metrics")
        return elapsed

    def standalone_log() -> float:
        folder = fresh()
        (folder / "experiments.toml").write_text("# a project for bench_track.py\n")
        os.environ["EXPT_FILE"] = str(folder / "experiments.toml")
        try:
            with contextlib.redirect_stderr(io.StringIO()):  # its one line about the run it created
                run = wandb.init(project="bench", config={"lr": 0.1})
        finally:
            os.environ.pop("EXPT_FILE")
        start = time.perf_counter()
        for step in range(calls):
            run.log({name: 0.5 + step * 1e-6 for name in NAMES}, step=step)
        run.finish()
        elapsed = time.perf_counter() - start
        check(Path(run.dir) / "metrics.jsonl", calls, lambda r: "event" not in r)
        return elapsed

    versions: dict[str, str] = {}

    def peer(tool: str) -> float:
        folder = fresh()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("PYTHONPATH", None)
        done = subprocess.run([peers_python, "-c", PEER, tool, str(peer_points // len(NAMES)), str(folder)],
                              capture_output=True, text=True, timeout=600, env=env, cwd=folder)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} exited {done.returncode}: {done.stderr.strip()[-800:]}")
        result = orjson.loads(done.stdout.strip().splitlines()[-1])
        if result["stored"] != peer_points // len(NAMES):
            raise RuntimeError(f"{tool} stored {result['stored']} of {peer_points // len(NAMES)} rows")
        versions[tool] = result["version"]
        return result["seconds"]

    times = common.interleaved({"tracker": tracker_log, "protocol": lambda: protocol_log(True),
                                "protocol_counter": lambda: protocol_log(False), "standalone": standalone_log}, n)
    # the peers after expt's figures, not among them: W&B's service process outlives its client for a moment
    if peers:
        times.update(common.interleaved({tool: (lambda tool=tool: peer(tool)) for tool in peers}, n))
    figures = {name: rate(peer_points if name in peers else points, t, "points/s") for name, t in times.items()}
    return figures, versions


def check(path: Path, expected: int, is_metrics) -> None:
    lines = sum(1 for line in path.read_bytes().splitlines() if is_metrics(orjson.loads(line)))
    if lines != expected:
        raise RuntimeError(f"{path}: {lines} metric lines, expected {expected}")


if __name__ == "__main__":
    main()
