"""expt.track, W&B's logging API: a user's own script, run for real in a subprocess, seen through the real CLI.

Standalone (a project folder): the run is listed while the script runs, its metrics reach `expt show`, and the way
the script ends is the run's status. Under `expt run` (EXPT_TRACK set): exactly the protocol lines, nothing else.
The scripts wait on files the tests create after seeing what the CLI prints, never on a bare sleep.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

from expt.core import scheduler
from expt.store import Run

from conftest import expt, wait_for

pytestmark = pytest.mark.slow

WAIT = 180  # seconds: generous, for a loaded 2-core machine

SCRIPT_HEAD = """\
import pathlib, signal, sys, time
import expt.track as wandb

class Scalar:  # what a 0-d tensor looks like to expt.track: something with .item()
    def __init__(self, value):
        self.value = value
    def item(self):
        return self.value

def wait_for(name):
    path = pathlib.Path(name)
    while not path.exists():
        time.sleep(0.05)
"""


def write_script(folder: Path, body: str, name: str = "train.py") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(SCRIPT_HEAD + textwrap.dedent(body))
    return path


def script_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **extra}
    for key in ("EXPT_FILE", "EXPT_TRACK", "EXPT_RUN_DIR", "EXPT_RUN_ID", "WANDB_MODE"):
        if key not in extra:
            env.pop(key, None)
    return env


def start(script: Path, *args: str, cwd: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(script), *args], cwd=cwd, env=script_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_script(script: Path, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, env=script_env(**env), capture_output=True,
                          text=True, timeout=WAIT)


def listing(project: Path) -> list[dict]:
    done = expt("ls", "--json", cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    return orjson.loads(done.stdout)


def shown(project: Path, run_id: str) -> dict:
    done = expt("show", run_id, "--json", cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    return orjson.loads(done.stdout)


def listed_running(project: Path) -> dict | None:
    return next((r for r in listing(project) if r["status"] == "running"), None)


def status_of(project: Path, run_id: str) -> str:
    return next(r["status"] for r in listing(project) if r["id"] == run_id)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "experiments.toml").write_text("# experiments of this project (none needed for expt.track)\n")
    return folder


def _finish(process: subprocess.Popen) -> tuple[str, str]:
    try:
        return process.communicate(timeout=WAIT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


# -- standalone -----------------------------------------------------------------------------------------------

LIVE = """
import numpy as np
run = wandb.init(project="dml", name="arcface", config={"loss": "arcface", "lr": 0.1})
for epoch in range(3):
    wandb.log({"train_loss": 1.0 / (epoch + 1), "test_accuracy": np.float32(50 + epoch), "p": Scalar(epoch)},
              step=epoch)
wait_for(sys.argv[1])
run.summary["precision_at_1"] = 0.75
wandb.config.update({"batch_size": 32})
wandb.finish()
"""


def test_a_script_is_listed_while_it_runs_and_its_metrics_reach_show(project: Path):
    script = write_script(project, LIVE)
    go = project / "go"
    process = start(script, str(go), cwd=project)
    try:
        running = wait_for(lambda: listed_running(project), timeout=WAIT, interval=0.2, what="the run listed running")
        assert running["id"] == "dml-1" and running["pid"] == process.pid
        assert running["experiment"] == "dml" and running["recipe"] == "script" and running["description"] == "arcface"
        table = expt("ls", cwd=project).stdout
        assert "dml-1" in table and "running" in table
        live = wait_for(lambda: (m := shown(project, "dml-1")["metrics"]) and len(m.get("train_loss", [])) == 3 and m,
                        timeout=WAIT, interval=0.2, what="three epochs in expt show")
        assert live["test_accuracy"] == [[0, 50.0], [1, 51.0], [2, 52.0]] and live["p"] == [[0, 0], [1, 1], [2, 2]]
        go.touch()
        out, err = _finish(process)
    finally:
        go.touch()
    assert process.returncode == 0, out + err
    assert "expt.track: run dml-1 in runs/dml-1" in err
    run = shown(project, "dml-1")
    assert run["status"] == "completed" and run["error"] is None and run["ended_at"] >= run["started_at"]
    assert run["params"] == {"loss": "arcface", "lr": 0.1, "batch_size": 32}
    assert run["summary"] == {"precision_at_1": 0.75, "train_loss": 1 / 3, "test_accuracy": 52.0, "p": 2}
    assert run["metrics"]["train_loss"] == [[0, 1.0], [1, 0.5], [2, 1 / 3]]


def test_the_tui_shows_a_script_run_live_until_it_completes(project: Path):
    import asyncio

    from conftest import until
    from expt.project import Project
    from expt.tui.app import create_app

    script = write_script(project, LIVE)
    go = project / "go"
    process = start(script, str(go), cwd=project)

    def shown_status(app) -> str | None:  # dml-1's status cell in the runs table, as on the screen
        table = app.runs_screen.table
        for row in table.ordered_rows:
            cells = dict(zip((str(c.key.value) for c in table.ordered_columns), table.get_row(row.key)))
            if str(getattr(cells["id"], "plain", cells["id"])) == "dml-1":
                return str(getattr(cells["status"], "plain", cells["status"]))
        return None

    async def scenario():
        app = create_app(Project(project / "experiments.toml"), interval=0.2, image_mode="halfcell")
        async with app.run_test(size=(100, 30)) as pilot:
            await until(pilot, lambda: shown_status(app) == "running", timeout=WAIT, what="dml-1 shown running")
            go.touch()
            await until(pilot, lambda: shown_status(app) == "completed", timeout=WAIT, what="dml-1 completed")

    try:
        asyncio.run(scenario())
        out, err = _finish(process)
    finally:
        go.touch()
        process.kill()
    assert process.returncode == 0, out + err


@pytest.mark.parametrize("ending, error", [
    ("raise ValueError('boom 42')", "ValueError: boom 42"),
    ("sys.exit(3)", "the script ended with exit code 3"),
    ("wandb.finish(exit_code=2)", "finish(exit_code=2)"),
])
def test_an_exception_or_an_exit_code_fails_the_run_with_its_last_line(project: Path, ending: str, error: str):
    script = write_script(project, f"""
        run = wandb.init(config={{"lr": 0.1}})        # no project: the experiment is the script's name
        wandb.log({{"loss": 0.5}})
        {ending}
        """, name="bad train.py")
    done = run_script(script, cwd=project)
    assert done.returncode == (1 if "raise" in ending else 3 if "exit(3)" in ending else 0), done.stderr
    [run] = listing(project)
    assert run["id"] == "bad_train-1" and run["status"] == "failed" and run["error"] == error
    assert shown(project, run["id"])["metrics"] == {"loss": [[0, 0.5]]}
    if "raise" in ending:
        log = (project / "runs" / run["id"] / "log.txt").read_text()
        assert "Traceback (most recent call last)" in log and "ValueError: boom 42" in log
    resumed = expt("resume", run["id"], cwd=project)
    assert resumed.returncode == 2 and "recorded by its own script (expt.track)" in resumed.stderr


WAITING = """
run = wandb.init(project="long", config={"lr": 0.1})
step = 0
while True:  # logs until it is stopped
    wandb.log({"loss": 1.0 / (step + 1)}, step=step)
    step += 1
    if pathlib.Path(sys.argv[1]).exists():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a script that leaves SIGTERM to the system
    time.sleep(0.02)
"""


def _running(project: Path, process: subprocess.Popen) -> dict:
    run = wait_for(lambda: listed_running(project), timeout=WAIT, interval=0.2, what="the run listed running")
    assert run["pid"] == process.pid
    wait_for(lambda: shown(project, run["id"])["metrics"].get("loss"), timeout=WAIT, interval=0.2,
             what="its first metrics")
    return run


def test_ctrl_c_stops_the_run(project: Path):
    process = start(write_script(project, WAITING), str(project / "never"), cwd=project)
    try:
        run = _running(project, process)
        os.kill(process.pid, signal.SIGINT)
        out, err = _finish(process)
    finally:
        process.kill()
    assert "KeyboardInterrupt" in err
    assert status_of(project, run["id"]) == "stopped"
    assert shown(project, run["id"])["error"] is None


def test_kill_9_is_crashed_once_the_reaper_runs(project: Path):
    process = start(write_script(project, WAITING), str(project / "never"), cwd=project)
    try:
        run = _running(project, process)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=WAIT)
    finally:
        process.kill()
    [listed] = listing(project)  # `expt ls` reaps
    assert listed["status"] == "crashed"
    assert listed["error"].startswith("the script process died without a final status")
    assert shown(project, run["id"])["metrics"]["loss"][0] == [0, 1.0]


@pytest.mark.parametrize("sigterm", ["caught by expt.track", "left to the system"])
def test_expt_stop_stops_the_run(project: Path, sigterm: str):
    flag = project / "default-sigterm"
    if sigterm == "left to the system":
        flag.touch()
    process = start(write_script(project, WAITING), str(flag), cwd=project)
    try:
        run = _running(project, process)
        stopping = expt("stop", run["id"], cwd=project)
        assert stopping.returncode == 0, stopping.stderr
        assert f"{run['id']}: stopping (SIGTERM to its script, pid {process.pid})" in stopping.stdout
        out, err = _finish(process)
    finally:
        process.kill()
    if sigterm == "caught by expt.track":
        assert "expt.track.Stopped: SIGTERM" in err and process.returncode == 1
    else:
        assert process.returncode == -signal.SIGTERM
    assert status_of(project, run["id"]) == "stopped"  # the reaper, in `expt ls`, for a script killed by SIGTERM
    assert shown(project, run["id"])["error"] is None


def test_reindex_rebuilds_a_script_run_exactly(project: Path, tmp_path: Path):
    script = write_script(tmp_path / "elsewhere", """
        run = wandb.init(project="dml", name="n", config={"lr": 0.1, "layers": [64, 64], "opt": {"name": "sgd"}})
        for step in range(5):
            wandb.log({"loss": 1.0 / (step + 1), "acc": Scalar(step * 10)})
        wandb.config.lr = 0.05
        run.summary.update({"best_acc": 40, "note": "fine"})
        """)
    done = run_script(script, cwd=script.parent, EXPT_FILE=str(project / "experiments.toml"))
    assert done.returncode == 0, done.stderr
    before = (listing(project), shown(project, "dml-1"))
    assert before[1]["params"] == {"lr": 0.05, "layers": [64, 64], "opt": {"name": "sgd"}}
    assert before[1]["summary"]["note"] == "fine" and before[1]["metrics"]["acc"][-1] == [4, 40]
    (project / "runs.db").unlink()
    assert expt("reindex", cwd=project).returncode == 0
    assert (listing(project), shown(project, "dml-1")) == before


def test_outside_a_project_is_one_line_and_exit_1_with_nothing_written(tmp_path: Path):
    folder = tmp_path / "not-a-project"
    script = write_script(folder, """
        wandb.init(project="dml", config={"lr": 0.1})
        print("never here")
        """)
    done = run_script(script, cwd=folder)
    assert done.returncode == 1 and "never here" not in done.stdout
    [line] = done.stderr.splitlines()
    assert line.startswith("expt.track: no expt project here (no experiments.toml or runs.db in ")
    assert line.endswith("); run inside a project folder or set EXPT_FILE")
    assert sorted(p.name for p in folder.iterdir()) == ["train.py"]


def test_mode_disabled_records_nothing(tmp_path: Path):
    folder = tmp_path / "anywhere"
    script = write_script(folder, """
        run = wandb.init(project="dml", mode="disabled", config={"lr": 0.1})
        wandb.log({"loss": 1.0})
        print(run.config.lr, wandb.run is run)
        """)
    done = run_script(script, cwd=folder)
    assert done.returncode == 0 and done.stdout.split() == ["0.1", "True"], done.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["train.py"]


# -- under `expt run`: the protocol -------------------------------------------------------------------------

PROTOCOL = """
import numpy as np, torch
run = wandb.init(project="ignored", name="ignored", config={"lr": 0.1, "layers": [64, 64]})
print(run.id, run.dir, wandb.run is run, wandb.config.lr, sep="\\n")
wandb.log({"loss": 1.0, "acc": np.float32(0.5), "temp": torch.tensor(2.0)}, step=np.int64(3))
wandb.log({"loss": 0.5, "note": "text"}, step=4.0)
wandb.log({"loss": 0.25, "note": "again"})           # at step 4, then the counter moves to 5
wandb.log({"lr": 0.01}, commit=False)                # at step 5
wandb.log({"grad": torch.tensor([1.5]), "nested": {"a": 1}})  # at step 5, then 6
wandb.log({"image": wandb.Image(np.zeros((2, 2)))})  # nothing numeric: no line; the counter moves to 7
wandb.log({"loss": 9.0}, step=2)                     # below the current step: dropped, as in W&B
wandb.watch(None)
wandb.watch(None)
run.define_metric("loss", summary="min")
table = wandb.Table(columns=["a"])
table.add_data(1)
assert isinstance(table, wandb.Table) and run.step == 7
wandb.config.update({"batch_size": 32})
run.summary["best"] = np.float64(0.9)
wandb.finish()
assert wandb.run is None
"""


def test_under_expt_run_exactly_the_protocol_lines_are_written(tmp_path: Path):
    run_dir, work = tmp_path / "run", tmp_path / "work"
    run_dir.mkdir()
    track = run_dir / "track.jsonl"
    script = write_script(work, PROTOCOL)
    done = run_script(script, cwd=work, EXPT_TRACK=str(track), EXPT_RUN_DIR=str(run_dir), EXPT_RUN_ID="job-7")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:4] == ["job-7", str(run_dir), "True", "0.1"]
    lines = [orjson.loads(line) for line in track.read_bytes().splitlines()]
    assert lines == [
        {"kind": "config", "values": {"lr": 0.1, "layers": [64, 64]}},
        {"kind": "metrics", "step": 3, "values": {"loss": 1.0, "acc": 0.5, "temp": 2.0}},
        {"kind": "metrics", "step": 4, "values": {"loss": 0.5}},
        {"kind": "metrics", "step": 4, "values": {"loss": 0.25}},
        {"kind": "metrics", "step": 5, "values": {"lr": 0.01}},
        {"kind": "metrics", "step": 5, "values": {"grad": 1.5, "nested.a": 1}},
        {"kind": "config", "values": {"batch_size": 32}},
        {"kind": "summary", "values": {"best": 0.9}},
        {"kind": "summary", "values": {"loss": 0.25, "acc": 0.5, "temp": 2.0, "lr": 0.01, "grad": 1.5, "nested.a": 1}},
        {"kind": "finish", "exit_code": 0},
    ]
    assert all(type(line["step"]) is int for line in lines if line["kind"] == "metrics")
    warnings = done.stderr.splitlines()
    assert len(warnings) == 7, done.stderr  # one per unsupported name, non-numeric key or step back, the first time
    assert sum("'note'" in w for w in warnings) == 1 and sum("'image'" in w for w in warnings) == 1
    assert sum("watch()" in w for w in warnings) == 1 and sum("run.define_metric()" in w for w in warnings) == 1
    assert sum("Image()" in w for w in warnings) == 1 and sum("Table()" in w for w in warnings) == 1
    assert sum("log(step=2) is below the current step 7" in w for w in warnings) == 1
    assert sorted(p.name for p in run_dir.iterdir()) == ["track.jsonl"]  # nothing else opened
    assert sorted(p.name for p in work.iterdir()) == ["train.py"]


@pytest.mark.parametrize("ending, exit_code", [
    ("", 0), ("sys.exit(3)", 3), ("raise ValueError('x')", 1), ("raise KeyboardInterrupt", 130),
])
def test_under_expt_run_the_exit_is_the_last_line(tmp_path: Path, ending: str, exit_code: int):
    track = tmp_path / "track.jsonl"
    script = write_script(tmp_path / "work", f"""
        wandb.init()
        wandb.log({{"loss": 1}})
        {ending}
        """)
    run_script(script, cwd=tmp_path / "work", EXPT_TRACK=str(track), EXPT_RUN_DIR=str(tmp_path), EXPT_RUN_ID="r-1")
    lines = [orjson.loads(line) for line in track.read_bytes().splitlines()]
    assert lines == [{"kind": "metrics", "step": 0, "values": {"loss": 1}},
                     {"kind": "summary", "values": {"loss": 1}}, {"kind": "finish", "exit_code": exit_code}]


# -- what it imports, names, liveness -------------------------------------------------------------------------

def test_importing_expt_track_imports_nothing_heavy():
    code = ("import sys, expt.track; heavy = ('torch', 'timm', 'rich', 'typer', 'sqlite_utils', 'textual', 'numpy', "
            "'expt.store'); print([m for m in heavy if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=WAIT,
                          env=script_env())
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def test_experiment_names_follow_the_config_pattern():
    from expt.config import NAME_PATTERN
    from expt.track import _NAME_PATTERN, _experiment_name

    assert _NAME_PATTERN.pattern == NAME_PATTERN.pattern
    assert _experiment_name("dml", "/x/train.py") == "dml"
    cases = {"/x/train.py": "train", "my train.py": "my_train", "2-step.py": "script_2-step", "-c": "script",
             "": "script", "a--b.py": "a-b", "x-1.py": "x-_1", "été.py": "script_t_"}
    for argv0, name in cases.items():
        assert _experiment_name("not a name!", argv0) == name and NAME_PATTERN.match(name), argv0


def test_a_script_run_is_alive_only_as_the_process_that_started_it():
    pid = os.getpid()
    started = scheduler.process_start(pid)
    assert started is not None
    assert scheduler.process_alive(pid, started)
    assert not scheduler.process_alive(pid, started + 1)  # the same pid, another process: reused

    def script_run(**columns) -> Run:
        return Run(rid=1, id="s-1", experiment="s", seq=1, recipe="script", description="", status="running",
                   params={}, varying={}, summary={}, metric=None, goal=None, origin="expt", created_at=None,
                   started_at=None, ended_at=None, run_dir="/nonexistent", host="here", **columns)

    assert scheduler.run_process_alive(script_run(pid=pid, backend="script", job_id=str(started)))
    assert not scheduler.run_process_alive(script_run(pid=pid, backend="script", job_id=str(started + 1)))
    assert not scheduler.run_process_alive(script_run(pid=pid, backend="local"))  # not an expt worker
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert not scheduler.run_process_alive(script_run(pid=dead.pid, backend="script", job_id=str(started)))
