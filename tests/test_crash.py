"""What survives what: kill -9, a half-written line, out of memory, a full disk, two schedulers, load."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import orjson
import pytest

from expt.core import runfiles
from expt.store import Store

from conftest import TINY_TOML, dead, expt, ingested_run, wait_for, write_project

pytestmark = pytest.mark.slow


def _status(project: Path, run_id: str) -> str:
    return ingested_run(project, run_id).status


def test_kill_9_is_marked_crashed_with_every_line_kept_then_resumes(tmp_path: Path):
    project = write_project(tmp_path / "proj")
    assert expt("run", "long", "--detach", cwd=project).returncode == 0

    def two_epochs() -> int | None:
        run = ingested_run(project, "long-1")
        return run.pid if run.status == "running" and (run.epoch or 0) >= 2 else None

    pid = wait_for(two_epochs, timeout=120, interval=0.1, what="long-1 to log two epochs")
    # Frozen first, so the line cut off as the process dies is its last one: the detached scheduler, its
    # parent, notices the death at once and may record the crash before this test looks.
    os.kill(pid, signal.SIGSTOP)
    metrics = project / "runs" / "long-1" / runfiles.METRICS
    lines_written = [orjson.loads(line) for line in metrics.read_bytes().splitlines()]
    epochs_written = [r["step"] for r in lines_written if "top1" in r]  # not the sys/ samples
    with open(metrics, "ab") as handle:
        handle.write(b'{"step": 999, "top1": 12.')
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: dead(pid), timeout=10, what="the worker to die")
    killed_at = time.monotonic()
    listing = orjson.loads(expt("ls", "--json", cwd=project).stdout)
    assert listing[0]["status"] == "crashed" and time.monotonic() - killed_at < 15
    assert "died without a final status" in listing[0]["error"]
    shown = orjson.loads(expt("show", "long-1", "--json", cwd=project).stdout)
    assert [step for step, _ in shown["metrics"]["top1"]] == epochs_written
    with Store(project / "runs.db") as store:
        assert store.get("long-1").bad_lines == 1
    assert expt("resume", "long-1", "--detach", cwd=project).returncode == 0
    wait_for(lambda: _status(project, "long-1") == "running", timeout=120, what="the resumed run")
    expt("stop", "long-1", cwd=project)
    wait_for(lambda: _status(project, "long-1") == "stopped", timeout=120, what="the resumed run to stop")
    log = (project / "runs" / "long-1" / runfiles.LOG).read_text()
    assert "resuming at epoch" in log


_RUN_WORKER_WITH_LIMIT = textwrap.dedent("""
    import resource, sys
    resource.setrlimit(resource.RLIMIT_DATA, (2 << 30, 2 << 30))
    from expt.core.worker import main
    main([sys.argv[1]])
""")


def _create_run(project: Path, **params) -> Path:
    from expt.config import parse_config

    experiment = parse_config("[experiments.x]\nrecipe = 'finetune'\nmodel = 'test_efficientnet'\n"
                              "pretrained = false\nshots = 2\n" +
                              "".join(f"{k} = {v!r}\n" for k, v in params.items()).replace("'", '"'),
                              project / "experiments.toml").experiments["x"]
    point = experiment.expand().points[0]
    with Store(project / "runs.db") as store:
        run = store.create_run(project / "runs", experiment="x", recipe="finetune", params=point.params,
                               varying={}, metric="top1", goal="max")
    return run.path


def test_out_of_memory_in_a_worker_fails_the_run_with_a_clear_error(tmp_path: Path):
    project = tmp_path / "proj"
    project.mkdir()
    run_dir = _create_run(project, img_size=1536, eval_batch_size=512, epochs=1)
    result = subprocess.run([sys.executable, "-c", _RUN_WORKER_WITH_LIMIT, str(run_dir)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 1
    shown = orjson.loads(expt("show", "x-1", "--json", cwd=project).stdout)
    assert shown["status"] == "failed"
    assert shown["error"].startswith("out of memory (lower batch_size, eval_batch_size or img_size)")


_FULL_DISK = textwrap.dedent("""
    import os, subprocess, sys, orjson
    from pathlib import Path
    from expt.store import Store
    from expt.core import scheduler
    project, run_dir = Path(sys.argv[1]), Path(sys.argv[2])
    small = project / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], check=True)
    target = small / run_dir.name
    subprocess.run(["cp", "-r", str(run_dir), str(target)], check=True)
    stats = os.statvfs(small)
    free = stats.f_bavail * stats.f_frsize
    (small / "filler").write_bytes(b"x" * max(0, free - 400_000))
    code = subprocess.run([sys.executable, "-m", "expt.core.worker", str(target)]).returncode
    with Store(project / "runs.db") as store:
        store.update_run(store.get(run_dir.name), run_dir=str(target))
        run = store.get(run_dir.name)
        scheduler.reap(store)
        store.ingest_run(store.get(run.id))
        run = store.get(run.id)
        points = len(store.metrics(run).get("top1", []))
        ok = store.conn.execute("PRAGMA integrity_check").fetchone()[0]
    print(orjson.dumps({"code": code, "status": run.status, "error": run.error, "points": points,
                        "integrity": ok}).decode())
""")


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1) for a private tmpfs")
def test_a_full_disk_while_logging_fails_the_run_cleanly(tmp_path: Path):
    project = tmp_path / "proj"
    project.mkdir()
    run_dir = _create_run(project, img_size=32, epochs=3)
    result = subprocess.run(["unshare", "-rm", sys.executable, "-c", _FULL_DISK, str(project), str(run_dir)],
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0 and "mount" in result.stderr and "ermission" in result.stderr:
        pytest.skip("this machine does not allow a private tmpfs mount")
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = orjson.loads(result.stdout.splitlines()[-1])
    assert outcome["integrity"] == "ok"
    assert outcome["status"] in ("failed", "crashed"), outcome
    assert "disk" in outcome["error"] and "full" in outcome["error"], outcome
    assert outcome["points"] >= 1, outcome


def test_two_expt_runs_at_once_share_one_scheduler(tmp_path: Path):
    text = TINY_TOML.replace("[experiments.long]", "[experiments.other]\nrecipe = 'finetune'\n"
                             "model = 'test_efficientnet'\npretrained = false\nshots = 2\nimg_size = 32\n"
                             "epochs = 2\n\n[experiments.long]")
    project = write_project(tmp_path / "proj", text)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first, second = (subprocess.Popen([sys.executable, "-m", "expt", "run", name, "--jobs", "1"], cwd=project,
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for name in ("tiny", "other"))
    peak = 0
    while first.poll() is None or second.poll() is None:
        if (project / "runs.db").exists():
            with Store(project / "runs.db") as store:
                peak = max(peak, len(store.runs("status IN ('starting', 'running')")))
        time.sleep(0.05)
    assert first.returncode == 0 and second.returncode == 0, first.stderr.read() + second.stderr.read()
    assert peak == 1
    with Store(project / "runs.db") as store:
        runs = store.runs()
        assert sorted(r.status for r in runs) == ["completed"] * 3
        for run in runs:
            launches = [line for line in (run.path / runfiles.METRICS).read_bytes().splitlines()
                        if b'"launch"' in line]
            assert len(launches) == 1, run.id


_WRITER = textwrap.dedent("""
    import sys
    from expt.core.tracking import Tracker
    run_dir, n = sys.argv[1], int(sys.argv[2])
    with Tracker(run_dir, flush_interval=0.05) as tracker:
        tracker.log_status("running", pid=0, host="load")
        for step in range(n):
            tracker.log_metrics(step, loss=1.0 / (step + 1), acc=step * 0.001, lr=0.1)
        tracker.log_status("completed")
""")

_READER = textwrap.dedent("""
    import sys, time
    from expt.store import Store
    deadline = time.monotonic() + float(sys.argv[2])
    reads = 0
    while time.monotonic() < deadline:
        with Store(sys.argv[1]) as store:
            store.ingest()
            store.runs()
            reads += 1
    print(reads)
""")


def test_sixteen_workers_logging_while_readers_read_lose_and_duplicate_nothing(tmp_path: Path):
    n, workers = 3000, 16
    with Store(tmp_path / "runs.db") as store:
        runs = [store.create_run(tmp_path / "runs", experiment="load", recipe="finetune", params={"i": i},
                                 varying={}) for i in range(workers)]
    readers = [subprocess.Popen([sys.executable, "-c", _READER, str(tmp_path / "runs.db"), "8"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, str(run.path), str(n)], stderr=subprocess.PIPE,
                                text=True) for run in runs]
    for writer in writers:
        assert writer.wait(timeout=300) == 0, writer.stderr.read()
    for reader in readers:
        out, err = reader.communicate(timeout=300)
        assert reader.returncode == 0 and "locked" not in err, err
        assert int(out) > 0
    with Store(tmp_path / "runs.db") as store:
        store.ingest(store.runs())
        assert store.conn.execute("SELECT COUNT(*) FROM metrics").fetchone()[0] == workers * n * 3
        assert all(r.status == "completed" for r in store.runs())
        for run in store.runs():
            steps = [s for s, _ in store.metrics(run, ["loss"])["loss"]]
            assert steps == list(range(n))


def _listeners(pid: int) -> list:
    """The process's TCP sockets that listen and its UDP sockets (bound, so reachable), as psutil reads /proc."""
    import psutil

    return [c for c in psutil.Process(pid).net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN or c.type == socket.SOCK_DGRAM]


def test_expt_opens_no_network_listener(tmp_path: Path):
    project = write_project(tmp_path / "proj")
    assert expt("run", "long", "--detach", cwd=project).returncode == 0
    wait_for(lambda: _status(project, "long-1") == "running", timeout=120, what="long-1 to run")
    with Store(project / "runs.db") as store:
        worker = store.get("long-1").pid
    scheduler_pid = int((project / "runs" / ".scheduler.lock").read_text().split()[0])
    for pid in (worker, scheduler_pid):
        assert _listeners(pid) == [], pid
    expt("stop", "long-1", cwd=project)
    wait_for(lambda: _status(project, "long-1") == "stopped", timeout=120, what="long-1 to stop")
