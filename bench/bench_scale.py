"""Item 3 (the CLI and the database size; the TUI's open time is bench_tui.py): a runs.db of 10,000
finished runs x 3 metrics x 100 steps, built through expt's real write path (Store.create_run, Tracker,
Store.ingest), then `expt ls`, `expt compare` of two runs and `expt show` as a user runs them.

The baseline of each command is the same command on a 10-run project, measured in the same session:
the ratio is what 10,000 runs cost over 10.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from pathlib import Path

import common
from common import Bench, result_under, seconds, value


def main() -> None:
    bench = Bench("scale", "Scale: 10,000 runs",
                  "Wall time of `expt` commands, each a new process, on a runs.db of 10,000 finished runs "
                  "x 3 metrics x 100 steps, and the database's size per million points.")
    runs = bench.size(10_000, 200)
    small_runs = 10
    work = Path(tempfile.mkdtemp(prefix="expt-bench-scale-"))
    try:
        big, small = work / "big", work / "small"
        bench.progress(f"building a project of {runs:,} runs")
        built = common.build_project(big, runs)
        small_built = common.build_project(small, small_runs)
        bench.progress("timing the commands")
        commands = {
            "ls": ["ls"],
            "ls_experiment": ["ls", "bench000"],
            "compare": ["compare", built["first"], built["second"]],
            "show": ["show", built["first"]],
        }
        fns = {}
        for name, args in commands.items():
            fns[name] = common.Command([common.EXPT, *args], cwd=big)
            small_args = [small_built["first"] if a == built["first"] else
                          small_built["second"] if a == built["second"] else a for a in args]
            fns[f"{name}_small"] = common.Command([common.EXPT, *small_args], cwd=small)
        for fn in fns.values() if not bench.quick else ():
            fn()  # once untimed: the files in the page cache, as on a machine in use
        times = common.interleaved(fns, bench.repeats(5, 1))
        sizes = _sizes(big, built)
        bench.progress("MLflow's store of the same shape")
        mlflow = _mlflow_size(bench) if common.mlflow_available() else None
    finally:
        bench.progress("removing the project")
        shutil.rmtree(work, ignore_errors=True)
    target = result_under(0.5, "s")
    base = f"the same on {small_runs} runs"
    met = [bench.row("`expt ls` (the newest 50)", times["ls"], times["ls_small"], base, target),
           bench.row("`expt ls bench000` (one experiment's 100 runs)", times["ls_experiment"],
                     times["ls_experiment_small"], f"`expt ls bench000` on {small_runs} runs", target),
           bench.row("`expt compare` of two runs", times["compare"], times["compare_small"], base, target),
           bench.row("`expt show` of one run (300 points)", times["show"], times["show_small"], base, target)]
    warm = 0 if bench.quick else 1
    for name, label in (("ls", "`expt ls`"), ("compare", "`expt compare`")):
        bench.row(f"{label}: CPU time (user + system)", fns[name].cpu_figure(warm),
                  fns[f"{name}_small"].cpu_figure(warm), f"{base}, CPU time")
    per_million = 1e6 / built["points"] / 2**20
    db = value(built["db_bytes"] * per_million, "MiB")
    jsonl = value(sizes["jsonl"] * per_million, "MiB")
    bench.row("runs.db per million points (whole file)", db, jsonl, "the same points in the runs' metrics.jsonl")
    if sizes["metrics"] is not None:
        bench.row("runs.db per million points (metrics table only)", value(sizes["metrics"] * per_million, "MiB"),
                  value(20 * 1e6 / 2**20, "MiB"), "20 bytes a point (run, key, step as int32, value as float64)")
    if mlflow is not None:
        bench.row("runs.db per million points (whole file)", db, value(mlflow["per_million"], "MiB"),
                  f"MLflow's sqlite store ({mlflow['runs']} runs of the same shape, less its empty schema)")
    else:
        bench.note(common.MLFLOW_MISSING)
    build = seconds([built["create"] + built["log"] + built["ingest"]])
    bench.row(f"building it: {runs:,} x create_run + Tracker + ingest", build)
    if False in met:
        worst = max(common.ratio(times[name], times[f"{name}_small"]) for name in commands)
        bench.note(f"Why a target is missed: the same commands on {small_runs} runs take nearly as long (at most "
                   f"{worst:.2f}x), so the time is start-up and rendering, not the 10,000 runs: the CPU-time rows "
                   "and the Start-up section break it down (interpreter, imports, typer's pydantic, the command).")
    bench.note(f"{built['points']:,} points in {runs:,} runs ({runs // 100} experiments of 100 runs varying mode, "
               f"shots and seed over the finetune recipe's {len(_defaults())} params); each command ran "
               f"{'once untimed, then ' if not bench.quick else ''}{bench.repeats(5, 1)} times interleaved with its "
               "baseline. Building took "
               f"{built['create']:.1f} s to create the runs, {built['log']:.1f} s to log them (Tracker) and "
               f"{built['ingest']:.1f} s to ingest them (one transaction a run).")
    bench.write()


def _defaults() -> dict:
    from expt.core.recipes import get_recipe

    return get_recipe("finetune").params.defaults()


def _sizes(project: Path, built: dict) -> dict:
    jsonl = sum((run / "metrics.jsonl").stat().st_size for run in (project / "runs").iterdir()
                if (run / "metrics.jsonl").is_file())
    conn = sqlite3.connect(project / "runs.db")
    try:
        metrics = conn.execute("SELECT SUM(pgsize) FROM dbstat WHERE name = 'metrics'").fetchone()[0]
    except sqlite3.OperationalError:  # an sqlite built without the dbstat table
        metrics = None
    finally:
        conn.close()
    return {"jsonl": jsonl, "metrics": metrics}


def _mlflow_size(bench: Bench) -> dict:
    work = common.scratch_dir("expt-bench-mlflow-")
    try:
        runs = bench.size(100, 10)
        common.build_mlflow(work / "empty.db", 0)
        built = common.build_mlflow(work / "mlflow.db", runs)
        grown = (work / "mlflow.db").stat().st_size - (work / "empty.db").stat().st_size
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"runs": runs, "per_million": grown / built["points"] * 1e6 / 2**20}


if __name__ == "__main__":
    main()
