"""Every benchmark in bench/ starts, prints its header and writes its fragment, at tiny sizes (--quick).

The benchmarks themselves never run in the test suite, and nothing here is timed: these tests only
check that `make bench` will not fail on a script that has rotted.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(BENCH.glob("bench_*.py"))

pytestmark = pytest.mark.slow


def run_quick(args: list[str], out: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "EXPT_BENCH_OUT": str(out), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, *args], cwd=BENCH.parent, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_the_benchmarks_are_found():
    assert {"bench_ingest.py", "bench_overhead.py", "bench_scale.py", "bench_nn.py", "bench_throughput.py",
            "bench_startup.py"} <= {p.name for p in SCRIPTS}


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_benchmark_runs_quick(script: Path, tmp_path: Path):
    topic = script.stem.removeprefix("bench_")
    done = run_quick([str(script), "--quick"], tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert done.stdout.splitlines()[0] == f"# bench {topic}"
    fragment = (tmp_path / f"{topic}.md").read_text()
    lines = fragment.splitlines()
    assert lines[0].startswith("## ")
    assert "| what | result | baseline (same run) | ratio | target | met |" in lines
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| what")]
    assert rows, fragment
    assert all(line.count(" | ") >= 5 for line in rows), fragment


def test_run_assembles_results(tmp_path: Path):
    output = tmp_path / "RESULTS.md"
    done = run_quick([str(BENCH / "run.py"), "--quick", "--only", "nn", "--output", str(output)], tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    text = output.read_text()
    assert "## Machine" in text and "cores; memory" in text and "SQLite " in text
    assert re.search(r"^\| nn \| \d+ \| \d+ \| \d+ \| ok \|$", text, re.MULTILINE), text
    assert "## Nearest neighbours" in text


def test_run_rejects_an_unknown_benchmark(tmp_path: Path):
    done = run_quick([str(BENCH / "run.py"), "--only", "nope"], tmp_path)
    assert done.returncode == 2
    assert "no benchmark nope" in done.stderr
    assert "Traceback" not in done.stderr
