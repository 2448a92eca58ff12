"""The CLI as a user drives it: typer's runner and real subprocesses over real runs."""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from expt.store import Store

from conftest import expt, wait_for

pytestmark = pytest.mark.slow

COMMANDS = ["run", "ls", "show", "logs", "compare", "export", "experiments", "recipes", "reindex", "rm",
            "resume", "rerun", "stop", "ps"]


def test_every_command_has_complete_help(cli):
    result = cli("--help")
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.stdout
        sub = cli(command, "--help")
        assert sub.exit_code == 0, command
        assert "Usage:" in sub.stdout and len(sub.stdout.splitlines()) > 5, command


def test_run_prints_the_seeds_line_per_run(finished_project: Path):
    runs = orjson.loads(expt("ls", "--json", cwd=finished_project).stdout)
    assert [r["status"] for r in runs] == ["completed", "completed"]
    log = (finished_project / "runs" / "tiny-1" / "log.txt").read_text()
    assert "Best metric: " in log and "(epoch " in log


def test_ls_json_contract(finished_copy: Path, cli):
    runs = cli.json("ls")
    assert [r["id"] for r in runs] == ["tiny-1", "tiny-2"]
    for run in runs:
        for key in ("id", "experiment", "recipe", "status", "params", "summary", "created_at", "started_at",
                    "ended_at", "run_dir"):
            assert key in run, key
        assert run["params"]["model"] == "test_efficientnet"
        assert run["summary"]["best_top1"] >= 0 and "total_params" in run["summary"]
        assert Path(run["run_dir"]).is_dir()
    assert [r["params"]["mode"] for r in runs] == ["e2e", "fc"]


def test_ls_table_shows_differing_params(finished_copy: Path, cli):
    result = cli("ls")
    assert result.exit_code == 0
    assert "mode=e2e" in result.stdout and "mode=fc" in result.stdout
    assert "completed" in result.stdout


def test_show_json_has_per_epoch_metrics(finished_copy: Path, cli):
    run = cli.json("show", "tiny-1")
    assert run["id"] == "tiny-1"
    steps = [step for step, _ in run["metrics"]["top1"]]
    assert steps == [1, 2]
    assert set(run["metrics"]) >= {"train_loss", "eval_loss", "top1", "top5", "lr"}
    text = cli("show", "tiny-1").stdout
    assert "params" in text and "summary" in text and "best_top1" in text


def test_compare_json_contract_and_text(finished_copy: Path, cli):
    data = cli.json("compare", "tiny-1", "tiny-2")
    assert data["runs"] == ["tiny-1", "tiny-2"]
    assert data["params_diff"] == {"mode": ["e2e", "fc"]}
    assert len(data["summary"]["best_top1"]) == 2
    text = cli("compare", "tiny").stdout
    assert "config differences" in text and "best_top1" in text


def test_compare_needs_two_runs(finished_copy: Path, cli):
    result = cli("compare", "tiny-1")
    assert result.exit_code == 2 and "at least two runs" in result.stderr


@pytest.mark.parametrize("fmt", ["csv", "md", "json"])
def test_export(finished_copy: Path, cli, fmt):
    result = cli("export", "--format", fmt)
    assert result.exit_code == 0
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(result.stdout)))
        assert [r["id"] for r in rows] == ["tiny-1", "tiny-2"] and rows[0]["params.mode"] == "e2e"
        assert float(rows[0]["summary.best_top1"]) >= 0
    elif fmt == "md":
        assert result.stdout.startswith("| id |") and result.stdout.count("\n") == 4
    else:
        assert [r["id"] for r in orjson.loads(result.stdout)] == ["tiny-1", "tiny-2"]


def test_logs(finished_copy: Path, cli):
    result = cli("logs", "tiny-2", "-n", "0")
    assert "expt worker tiny-2" in result.stdout and "Best metric:" in result.stdout


def test_reindex_gives_the_same_runs_and_metrics(finished_copy: Path, cli):
    before = [cli.json("show", r["id"]) for r in cli.json("ls")]
    (finished_copy / "runs.db").unlink()
    for suffix in ("-wal", "-shm"):
        Path(f"{finished_copy / 'runs.db'}{suffix}").unlink(missing_ok=True)
    assert cli("reindex").exit_code == 0
    after = [cli.json("show", r["id"]) for r in cli.json("ls")]
    assert after == before


def test_rm_asks_then_deletes(finished_copy: Path, cli):
    result = cli("rm", "tiny-1", input="n\n")
    assert result.exit_code == 1 and (finished_copy / "runs" / "tiny-1").is_dir()
    assert cli("rm", "tiny-1", "--yes").exit_code == 0
    assert not (finished_copy / "runs" / "tiny-1").exists()
    assert [r["id"] for r in cli.json("ls")] == ["tiny-2"]


def test_unknown_run_is_exit_2_one_line(finished_copy: Path, cli):
    result = cli("show", "nope-3")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "no run or experiment 'nope-3'" in result.stderr


def test_read_commands_work_as_subprocesses_and_do_not_import_torch(finished_project: Path):
    for args in (["ls"], ["show", "tiny-1"], ["compare", "tiny-1", "tiny-2"], ["--help"], ["export"]):
        env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
        result = subprocess.run([sys.executable, "-m", "expt", *args], cwd=finished_project, capture_output=True,
                                text=True, env=env, timeout=60)
        assert result.returncode == 0, result.stderr[-2000:]
        imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "import time:" in line}
        assert "torch" not in imported and "timm" not in imported, args


def test_read_commands_do_not_import_pydantic(finished_project: Path):
    """typer would import it (0.07 s) to coerce values that need no coercion (expt.cli.coerce)."""
    probe = ("import atexit, sys; atexit.register(lambda: print('pydantic' in sys.modules, file=sys.stderr)); "
             "from expt.cli import main; main()")
    for args in (["ls"], ["ls", "-n", "5", "--status", "completed"], ["show", "tiny-1"],
                 ["compare", "tiny-1", "tiny-2"], ["export"], ["--help"], ["ls", "--help"]):
        result = subprocess.run([sys.executable, "-c", probe, *args], cwd=finished_project, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stderr.strip().splitlines()[-1] == "False", args


def test_ctrl_c_stops_runs_cleanly_and_exits_130(project_dir: Path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "expt", "run", "long"], cwd=project_dir, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    db = project_dir / "runs.db"

    def epochs_logged() -> bool:
        if not db.exists():
            return False
        with Store(db) as store:
            store.ingest()
            run = store.get("long-1")
            return run is not None and run.status == "running" and (run.epoch or 0) >= 2

    wait_for(epochs_logged, timeout=120, interval=0.5, what="two epochs of long-1")
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, out + err
    with Store(db) as store:
        run = store.get("long-1")
        assert run.status == "stopped"
        assert len(store.metrics(run, ["top1"])["top1"]) >= 2
    assert (project_dir / "runs" / "long-1" / "checkpoint.pt").is_file()
