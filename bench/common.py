"""What every benchmark in bench/ shares: repeated timing, figures, targets, the markdown fragment,
and a project of completed runs built through expt's real write path.

A benchmark script does::

    bench = Bench("ingest", "Metric logging and ingest", "200,000 points through ...")
    raw = rate(points, repeat(raw_insert, bench.repeats(5)), "points/s")
    bench.row("expt ingest", ingest, raw, "raw sqlite3 executemany", ratio_at_least(0.5))
    bench.write()

Each figure keeps every repeat: a cell shows the median and the best (min time, max rate); ratios
and targets are judged on medians, which a noisy machine moves least.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(os.environ.get("EXPT_BENCH_OUT") or ROOT / "bench" / "out")
VENV_BIN = Path(sys.executable).parent
EXPT = str(VENV_BIN / "expt")

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# the last commit before issue 13's work on start-up and on the metric evaluation: the "before" of those benchmarks
BEFORE_ISSUE_13 = "2a9399a"


def at_commit(commit: str, path: str) -> bytes | None:
    """``path`` (a file, or a folder as a tar archive) as it was at ``commit``; None without git or that commit."""
    argv = ["git", "show", f"{commit}:{path}"] if Path(ROOT, path).is_file() else ["git", "archive", commit, path]
    try:
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


# -- figures ----------------------------------------------------------------------------------------------


@dataclass
class Figure:
    """One measured quantity, every repeat kept; ``higher_better`` for rates, not for times."""

    values: list[float]
    unit: str
    higher_better: bool = False

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def best(self) -> float:
        return max(self.values) if self.higher_better else min(self.values)

    def cell(self) -> str:
        if len(self.values) == 1:
            return f"{number(self.median)} {self.unit}"
        label = "best" if self.higher_better else "min"
        return f"{number(self.median)} {self.unit} ({label} {number(self.best)}, n={len(self.values)})"


def seconds(values: Sequence[float]) -> Figure:
    return Figure(list(values), "s")


def rate(count: float, times: Figure | Sequence[float], unit: str) -> Figure:
    """``count`` items per second for each repeat's time."""
    values = times.values if isinstance(times, Figure) else times
    return Figure([count / max(t, 1e-12) for t in values], unit, higher_better=True)


def value(x: float, unit: str, higher_better: bool = False) -> Figure:
    return Figure([x], unit, higher_better)


def number(x: float) -> str:
    """A short human figure: 970,000 / 217 / 9.71 / 0.0312."""
    if x != x:
        return "nan"
    magnitude = abs(x)
    if magnitude >= 1000:
        return f"{x:,.0f}"
    if magnitude >= 100:
        return f"{x:.0f}"
    if magnitude >= 10:
        return f"{x:.1f}"
    if magnitude >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def ratio(result: Figure, baseline: Figure) -> float:
    """result / baseline, on medians."""
    return result.median / baseline.median if baseline.median else float("inf")


# -- targets ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """What a row must reach: ``check(result median, ratio)``; ``text`` is the table's target cell."""

    text: str
    check: Callable[[float, float], bool] = field(repr=False)


def ratio_at_least(x: float) -> Target:
    return Target(f">= {number(x)}x", lambda result, r: r >= x)


def ratio_at_most(x: float) -> Target:
    return Target(f"<= {number(x)}x", lambda result, r: r <= x)


def result_under(x: float, unit: str) -> Target:
    return Target(f"< {number(x)} {unit}", lambda result, r: result < x)


def result_at_most(x: float, unit: str) -> Target:
    return Target(f"<= {number(x)} {unit}", lambda result, r: result <= x)


def result_at_least(x: float, unit: str) -> Target:
    return Target(f">= {number(x)} {unit}", lambda result, r: result >= x)


REFERENCE = Target("reference", lambda result, r: True)


# -- timing -----------------------------------------------------------------------------------------------


def repeat(fn: Callable[[], Any], n: int, setup: Callable[[], Any] | None = None) -> Figure:
    """Seconds of ``fn()`` over ``n`` repeats; ``setup()`` runs untimed before each, with the GC paused
    while timing (a collection in the middle of one repeat is noise, not a cost of the code)."""
    times = []
    for _ in range(n):
        if setup is not None:
            setup()
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        finally:
            gc.enable()
    return seconds(times)


def interleaved(fns: dict[str, Callable[[], Any]], n: int) -> dict[str, Figure]:
    """Repeat several measurements in turn (a, b, c, then c, b, a, ...) so a busy moment hits them alike.

    Each function returns its own measured seconds, or a dict of named seconds (steps that must run in
    order, such as logging then ingesting what was logged), or None to be timed whole here."""
    times: dict[str, list[float]] = {}
    for i in range(n):
        order = list(fns.items())
        if i % 2:
            order.reverse()
        for name, fn in order:
            gc.collect()
            start = time.perf_counter()
            measured = fn()
            elapsed = time.perf_counter() - start
            if isinstance(measured, dict):
                for part, t in measured.items():
                    times.setdefault(part, []).append(t)
            else:
                times.setdefault(name, []).append(measured if measured is not None else elapsed)
    return {name: seconds(values) for name, values in times.items()}


class Command:
    """Runs ``argv`` once per call (output discarded) and returns its wall time; a failure raises.

    ``cpu`` keeps each run's CPU seconds (user + system): on a busy machine the wall time includes
    waiting for a core, the CPU time does not, so the two together tell load from cost."""

    def __init__(self, argv: Sequence[str], cwd: Path | None = None, env: dict[str, str] | None = None):
        self.argv, self.cwd, self.env = list(argv), cwd, {**os.environ, **(env or {})}
        self.cpu: list[float] = []

    def __call__(self) -> float:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(self.argv, cwd=self.cwd, env=self.env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        elapsed = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(self.argv)} exited {done.returncode}: {done.stderr.strip()[-500:]}")
        self.cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        return elapsed

    def cpu_figure(self, skip: int = 0) -> Figure:
        """CPU seconds of the runs after the first ``skip`` (untimed warm-up runs)."""
        return Figure(self.cpu[skip:], "s CPU")


def command(argv: Sequence[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> Command:
    """A callable that runs ``argv`` and returns its wall time (see Command)."""
    return Command(argv, cwd, env)


# -- the benchmark and its fragment -----------------------------------------------------------------------


class Bench:
    """Parses ``--quick``, prints the header, collects rows and notes, writes ``bench/out/<topic>.md``."""

    def __init__(self, topic: str, title: str, what: str, argv: Sequence[str] | None = None,
                 extra_args: Callable[[argparse.ArgumentParser], None] | None = None):
        parser = argparse.ArgumentParser(description=f"{title}: {what}")
        parser.add_argument("--quick", action="store_true", help="tiny sizes, one or two repeats (the smoke test)")
        if extra_args is not None:
            extra_args(parser)
        self.args = parser.parse_args(argv)
        self.quick: bool = self.args.quick
        self.topic, self.title, self.what = topic, title, what
        self.rows: list[tuple[str, ...]] = []
        self.notes: list[str] = []
        self.started = time.perf_counter()
        print(f"# bench {topic}", flush=True)
        print(f"{title}: {what}" + (" [quick]" if self.quick else ""), flush=True)

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def repeats(self, full: int, quick: int = 1) -> int:
        return quick if self.quick else full

    def row(self, what: str, result: Figure, baseline: Figure | None = None, baseline_name: str = "",
            target: Target = REFERENCE) -> bool | None:
        """Add a table row; returns whether the target is met (None for a reference figure)."""
        r = ratio(result, baseline) if baseline is not None else float("nan")
        base = f"{baseline_name}: {baseline.cell()}" if baseline is not None else (baseline_name or "—")
        met = None if target is REFERENCE else target.check(result.median, r)
        cells = (what, result.cell(), base, f"{r:.2f}x" if r == r else "—", target.text,
                 "—" if met is None else ("yes" if met else "**no**"))
        self.rows.append(cells)
        print("  " + " | ".join(cells), flush=True)
        return met

    def text_row(self, what: str, result: str, baseline: str = "—", ratio_text: str = "—",
                 target: str = "reference", met: bool | None = None) -> None:
        """A row whose figures are not timings (agreement, sizes that are computed, not repeated)."""
        cells = (what, result, baseline, ratio_text, target, "—" if met is None else ("yes" if met else "**no**"))
        self.rows.append(cells)
        print("  " + " | ".join(cells), flush=True)

    def progress(self, text: str) -> None:
        """A line on the console only (what is being measured now, seconds since the start)."""
        print(f"  [{time.perf_counter() - self.started:5.0f} s] {text}", flush=True)

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}", flush=True)

    def write(self) -> Path:
        OUT.mkdir(parents=True, exist_ok=True)
        lines = [f"## {self.title}", "", self.what + (" (quick sizes)" if self.quick else ""), "",
                 "| what | result | baseline (same run) | ratio | target | met |",
                 "|---|---|---|---|---|---|"]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in self.rows]
        if self.notes:
            lines.append("")
            lines += [f"- {note}" for note in self.notes]
        lines += ["", f"_{time.perf_counter() - self.started:.0f} s for this benchmark._", ""]
        path = OUT / f"{self.topic}.md"
        path.write_text("\n".join(lines), encoding="utf-8")
        print(f"wrote {path}", flush=True)
        return path


# -- a project of finished runs ---------------------------------------------------------------------------

PROJECT_TOML = """\
# written by bench/common.py: a project of finished runs for the read-path benchmarks
[experiments.bench]
recipe = "finetune"
model = "test_efficientnet"
pretrained = false
"""

METRICS = ("train_loss", "top1", "eval_loss")


def build_project(folder: Path, runs: int, steps: int = 100, per_experiment: int = 100) -> dict[str, Any]:
    """A project with ``runs`` completed finetune runs of ``len(METRICS)`` metrics x ``steps`` steps each,
    written the way a worker writes them (Tracker) and ingested by expt's Store, as ``expt run`` would.

    Runs go ``per_experiment`` to an experiment (``bench000``, ``bench001``, ...), varying mode, shots and
    seed. Returns the sizes and the seconds each phase took.
    """
    from expt.core.recipes import get_recipe
    from expt.core.tracking import Tracker
    from expt.store import Store

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "experiments.toml").write_text(PROJECT_TOML)
    runs_dir = folder / "runs"
    defaults = get_recipe("finetune").params.defaults()
    modes, shots = ("e2e", "fc", "cbn", "bn", "knn"), (1, 3, 10)
    timings = {"create": 0.0, "log": 0.0, "ingest": 0.0}
    created = []
    with Store(folder / "runs.db") as store:
        start = time.perf_counter()
        for i in range(runs):
            k = i % per_experiment
            varying = {"mode": modes[k % 5], "shots": shots[(k // 5) % 3], "seed": k // 15}
            created.append(store.create_run(
                runs_dir, experiment=f"bench{i // per_experiment:03d}", recipe="finetune",
                params={**defaults, **varying}, varying=varying, metric="top1", goal="max"))
        timings["create"] = time.perf_counter() - start
        start = time.perf_counter()
        for i, run in enumerate(created):
            with Tracker(run.path, flush_interval=3600) as tracker:
                tracker.log_status("running", pid=os.getpid(), host="bench")
                best = 0.0
                for step in range(1, steps + 1):
                    top1 = 100.0 * (1 - 0.9 ** step) * (0.8 + 0.2 * ((i * 7919) % 101) / 100)
                    best = max(best, top1)
                    tracker.log_metrics(step, train_loss=2.3 * 0.97 ** step, top1=top1, eval_loss=2.0 * 0.98 ** step)
                tracker.log_summary(best_top1=best, best_epoch=steps, final_top1=top1, train_seconds=12.5)
                tracker.log_status("completed")
        timings["log"] = time.perf_counter() - start
        start = time.perf_counter()
        store.ingest(created)
        timings["ingest"] = time.perf_counter() - start
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    points = runs * steps * len(METRICS)
    return {"runs": runs, "points": points, "db_bytes": (folder / "runs.db").stat().st_size,
            "first": created[0].id if created else None, "second": created[1].id if len(created) > 1 else None,
            **timings}


def build_mlflow(db_path: Path, runs: int, steps: int = 100) -> dict[str, Any]:
    """The same runs as ``build_project`` (params, metrics, summary values, status) logged through MLflow's
    client API into a sqlite tracking store at ``db_path``, in one MLflow experiment; returns its id."""
    from mlflow.entities import Metric, Param, RunStatus
    from mlflow.tracking import MlflowClient

    from expt.core.recipes import get_recipe

    quiet_mlflow()
    client = MlflowClient(tracking_uri=f"sqlite:///{db_path}")
    experiment = client.create_experiment("bench")
    defaults = get_recipe("finetune").params.defaults()
    modes, shots = ("e2e", "fc", "cbn", "bn", "knn"), (1, 3, 10)
    start = time.perf_counter()
    for i in range(runs):
        k = i % 100
        params = {**defaults, "mode": modes[k % 5], "shots": shots[(k // 5) % 3], "seed": k // 15}
        run_id = client.create_run(experiment, run_name=f"bench{i // 100:03d}-{k + 1}").info.run_id
        now = int(time.time() * 1000)
        metrics, best = [], 0.0
        for step in range(1, steps + 1):
            top1 = 100.0 * (1 - 0.9 ** step) * (0.8 + 0.2 * ((i * 7919) % 101) / 100)
            best = max(best, top1)
            metrics += [Metric("train_loss", 2.3 * 0.97 ** step, now, step), Metric("top1", top1, now, step),
                        Metric("eval_loss", 2.0 * 0.98 ** step, now, step)]
        metrics += [Metric("best_top1", best, now, 0), Metric("final_top1", top1, now, 0)]
        first = 1000 - len(params)  # MLflow takes at most 1,000 entities a batch
        client.log_batch(run_id, params=[Param(key, str(v)) for key, v in params.items()], metrics=metrics[:first])
        for chunk in range(first, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[chunk:chunk + 1000])
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
    return {"experiment": experiment, "runs": runs, "points": runs * steps * len(METRICS),
            "seconds": time.perf_counter() - start}


def scratch_dir(prefix: str) -> Path:
    """A temporary folder, in memory (/dev/shm) where there is one: for stores whose build is not what is
    measured, so a build that commits once per call does not spend the benchmark's budget on fsync."""
    shm = Path("/dev/shm")
    where = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=where))


def mlflow_available() -> bool:
    try:
        import mlflow  # noqa: F401
    except ImportError:
        return False
    return True


MLFLOW_MISSING = "MLflow is not installed: `make bench` installs the `bench` extra (mlflow-skinny, sqlalchemy, alembic)"


def quiet_mlflow() -> None:
    """MLflow logs each schema migration at INFO on first use of a sqlite store: not benchmark output."""
    import logging

    for name in ("mlflow", "alembic", "sqlalchemy"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
