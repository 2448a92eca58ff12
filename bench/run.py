"""Run every bench/bench_*.py in its own process and assemble bench/RESULTS.md from their fragments.

    .venv/bin/python bench/run.py            # the full run (`make bench`), writes bench/RESULTS.md
    .venv/bin/python bench/run.py --quick    # tiny sizes, writes bench/out/RESULTS-quick.md
    .venv/bin/python bench/run.py --only ingest --only nn

RESULTS.md starts with the machine (CPU, cores, memory, load), the versions and the date, then a line per
benchmark (targets met and missed, seconds), then each benchmark's fragment in the issue's order.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = Path(os.environ.get("EXPT_BENCH_OUT") or BENCH / "out")
# the order: 1 ingest, 2 overhead, 3 scale (+ the TUI's open time), 4 tui, 5 nn, 6 throughput, 7 startup
ORDER = ("ingest", "overhead", "scale", "tui", "nn", "throughput", "startup")
PACKAGES = ("torch", "timm", "faiss-cpu", "numpy", "scikit-learn", "sqlite-utils", "orjson", "textual",
            "mlflow-skinny", "mlflow", "sqlalchemy")


def scripts() -> list[Path]:
    found = {p.stem.removeprefix("bench_"): p for p in BENCH.glob("bench_*.py")}
    known = [found.pop(topic) for topic in ORDER if topic in found]
    return known + [found[topic] for topic in sorted(found)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds per benchmark)")
    parser.add_argument("--only", action="append", default=[], metavar="TOPIC",
                        help="run only this benchmark (repeatable): " + ", ".join(ORDER))
    parser.add_argument("--output", type=Path, help="where to write the results (default bench/RESULTS.md, "
                        "or bench/out/RESULTS-quick.md with --quick)")
    args = parser.parse_args(argv)
    chosen = [s for s in scripts() if not args.only or s.stem.removeprefix("bench_") in args.only]
    unknown = set(args.only) - {s.stem.removeprefix("bench_") for s in scripts()}
    if unknown:
        parser.error(f"no benchmark {', '.join(sorted(unknown))}; benchmarks: "
                     + ", ".join(s.stem.removeprefix("bench_") for s in scripts()))
    output = args.output or (OUT / "RESULTS-quick.md" if args.quick else BENCH / "RESULTS.md")
    OUT.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "EXPT_BENCH_OUT": str(OUT), "PYTHONUNBUFFERED": "1"}
    started = time.time()
    load_before = os.getloadavg()
    results = []
    for script in chosen:
        topic = script.stem.removeprefix("bench_")
        print(f"\n=== {script.name}", flush=True)
        begin = time.perf_counter()
        rc = subprocess.run([sys.executable, str(script), *(["--quick"] if args.quick else [])], cwd=ROOT,
                            env=env).returncode
        seconds = time.perf_counter() - begin
        fragment = OUT / f"{topic}.md"
        fresh = fragment.is_file() and fragment.stat().st_mtime >= started
        results.append({"topic": topic, "rc": rc, "seconds": seconds,
                        "text": fragment.read_text(encoding="utf-8") if fresh else None})
        print(f"=== {script.name}: exit {rc}, {seconds:.0f} s", flush=True)
    total = time.time() - started
    text = render(results, started, total, load_before, os.getloadavg(), args.quick)
    output.write_text(text, encoding="utf-8")
    print(f"\nwrote {output} ({total:.0f} s in all)")
    return 1 if any(r["rc"] != 0 or r["text"] is None for r in results) else 0


def render(results: list[dict], started: float, total: float, load_before: tuple, load_after: tuple,
           quick: bool) -> str:
    date = datetime.datetime.fromtimestamp(started).astimezone().strftime("%Y-%m-%d %H:%M %Z")
    lines = ["# expt benchmarks" + (" (quick sizes: a smoke run, not figures)" if quick else ""), "",
             f"`make bench` on {date}, {total / 60:.1f} minutes in all. Each figure is the median over its "
             "repeats with the best one beside it (min time, max rate); each ratio is result / baseline on "
             "medians, both measured in the same run, and a target is judged on the median.", "",
             "## Machine", "", *machine(load_before, load_after), "",
             "## Summary", "", "| benchmark | targets met | missed | seconds | exit |", "|---|---|---|---|---|"]
    for r in results:
        met, missed = count_targets(r["text"] or "")
        status = "ok" if r["rc"] == 0 and r["text"] is not None else f"**failed** ({r['rc']})"
        lines.append(f"| {r['topic']} | {met} | {missed} | {r['seconds']:.0f} | {status} |")
    lines.append("")
    for r in results:
        if r["text"] is None:
            lines += [f"## {r['topic']}", "", f"**The benchmark failed** (exit {r['rc']}): run "
                      f"`.venv/bin/python bench/bench_{r['topic']}.py` to see why.", ""]
        else:
            lines += [r["text"].rstrip(), ""]
    return "\n".join(lines)


def count_targets(fragment: str) -> tuple[int, int]:
    met = missed = 0
    for line in fragment.splitlines():
        if line.startswith("| ") and not line.startswith("| what"):
            last = line.rstrip(" |").rsplit("|", 1)[-1].strip()
            met += last == "yes"
            missed += last == "**no**"
    return met, missed


def machine(load_before: tuple, load_after: tuple) -> list[str]:
    cpu = _cpuinfo_model() or platform.processor() or platform.machine()
    memory = _meminfo_gib()
    versions = [f"Python {platform.python_version()}", f"SQLite {sqlite3.sqlite_version}"]
    for package in PACKAGES:
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return [
        f"- CPU: {cpu}, {os.cpu_count()} cores; memory {memory}",
        f"- GPU: {_gpu()}",
        f"- OS: {platform.platform()}",
        f"- load average (1, 5, 15 min) at the start {_load(load_before)}, at the end {_load(load_after)}"
        + (" (a shared, busy machine: the ratios matter more than the absolute figures)"
           if max(load_before[0], load_after[0]) > (os.cpu_count() or 1) * 0.75 else ""),
        f"- versions: {', '.join(versions)}",
        f"- expt at commit {_commit()}",
    ]


def _cpuinfo_model() -> str | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else None


def _meminfo_gib() -> str:
    try:
        match = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.MULTILINE)
    except OSError:
        match = None
    return f"{int(match.group(1)) / 2**20:.1f} GiB" if match else "unknown"


def _gpu() -> str:
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "none"
    names = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    return "; ".join(names) if done.returncode == 0 and names else "none"


def _load(load: tuple) -> str:
    return ", ".join(f"{x:.1f}" for x in load)


def _commit() -> str:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (done.stdout.strip() or "unknown") + " (plus the working tree's changes, if any)"


if __name__ == "__main__":
    sys.exit(main())
