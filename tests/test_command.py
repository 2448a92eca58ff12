"""The `command` recipe: the user's own script as a run, through the real CLI, scheduler and worker (issue 14).

The scripts are small Python programs written into each test's project; where a test must see something while
the script still runs, the script waits for a file that the test creates only after the CLI has shown it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import expt, screen_text, until, until_shown, wait_for, write_project

pytestmark = pytest.mark.slow

# epochs rows like timm's summary.csv (csv.DictWriter: CRLF, epoch counted from 0); waits for {run_dir}/go-N
# before epoch N when --wait N is given; saves and resumes a checkpoint; exits with --exit
SCRIPT = r'''
import argparse, csv, json, os, sys, time

parser = argparse.ArgumentParser()
parser.add_argument("--out")
parser.add_argument("--lr", type=float, default=0.1)
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--wait", type=int, action="append", default=[])
parser.add_argument("--exit", type=int, default=0)
parser.add_argument("--crash", action="store_true")
parser.add_argument("--resume")
parser.add_argument("--ignore-term", action="store_true")
args = parser.parse_args()
if args.ignore_term:
    import signal
    signal.signal(signal.SIGTERM, lambda *_: print("ignoring SIGTERM", flush=True))
with open(os.path.join(args.out, "pid"), "w") as handle:
    handle.write(str(os.getpid()))
start = 0
if args.resume:
    start = json.load(open(args.resume))["epoch"] + 1
    print(f"resumed at epoch {start}", flush=True)
path = os.path.join(args.out, "timm", "summary.csv")
os.makedirs(os.path.dirname(path), exist_ok=True)
with open(path, "a", newline="") as handle:
    writer = csv.DictWriter(handle, fieldnames=["epoch", "train_loss", "eval_loss", "eval_top1", "eval_top5", "lr"])
    if start == 0:
        writer.writeheader()
    for epoch in range(start, args.epochs):
        while epoch in args.wait and not os.path.exists(os.path.join(args.out, f"go-{epoch}")):
            time.sleep(0.05)
        writer.writerow({"epoch": epoch, "train_loss": 2.0 / (epoch + 1), "eval_loss": 1.0, "eval_top1": 40.0 + 10 * epoch,
                         "eval_top5": 90.0, "lr": args.lr})
        handle.flush()
        with open(os.path.join(args.out, "timm", "last.json"), "w") as ckpt:
            json.dump({"epoch": epoch}, ckpt)
        print(f"epoch {epoch} done", flush=True)
        if args.crash:
            os.kill(os.getpid(), 9)
print("Traceback (most recent call last):\nValueError: lr too large for this model", file=sys.stderr)
sys.exit(args.exit)
'''


def project(tmp_path: Path, extra: str = "", args: str = "", sweep: str = "") -> Path:
    folder = write_project(tmp_path / "proj", f'''\
[experiments.s]
recipe = "command"
description = "my own script"
command = "{{python}} train.py --out {{run_dir}} --lr {{lr}} --epochs {{epochs}} {args}"
python = "{sys.executable}"
lr = 0.1
epochs = 3
metrics = ["timm/summary.csv"]
{extra}
{sweep}
''')
    (folder / "train.py").write_text(SCRIPT)
    return folder


@pytest.fixture
def leave_nothing_running():
    """Projects whose runs are stopped when the test ends, passed or not: no script outlives its test."""
    folders: list[Path] = []
    yield folders.append
    for folder in folders:
        expt("stop", "s", cwd=folder, timeout=120)


def braces(code: str) -> str:
    """``code`` with its braces doubled, as a command template writes a literal brace."""
    return code.replace("{", "{{").replace("}", "}}")


def show(folder: Path, run_id: str) -> dict:
    result = expt("show", run_id, "--json", cwd=folder)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_sweep_of_a_script_runs_and_compares_like_any_run(tmp_path: Path):
    folder = project(tmp_path, sweep="[experiments.s.sweep]\nlr = [0.1, 0.05]")
    result = expt("run", "s", cwd=folder, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Best metric: 60.0 (epoch 3)" in result.stdout
    listing = expt("ls", cwd=folder)
    assert "lr=0.1" in listing.stdout and "lr=0.05" in listing.stdout and "completed" in listing.stdout
    run = show(folder, "s-2")
    assert run["status"] == "completed" and run["params"]["lr"] == 0.05 and run["varying"] == {"lr": 0.05}
    assert run["summary"]["best_eval_top1"] == 60.0 and run["summary"]["best_epoch"] == 3
    assert run["metrics"]["eval_top1"] == [[1, 40.0], [2, 50.0], [3, 60.0]]  # timm's epoch 0 is expt's step 1
    assert run["metric"] == "eval_top1" and run["epoch"] == 3 and run["epochs"] == 3
    compared = expt("compare", "s-1", "s-2", cwd=folder)
    assert compared.returncode == 0 and "lr" in compared.stdout and "eval_top1" in compared.stdout
    log = expt("logs", "s-1", cwd=folder).stdout
    assert "epoch 2 done" in log and "ValueError: lr too large" in log  # stdout and stderr, both in log.txt


def test_a_csv_row_shows_while_the_script_still_runs(tmp_path: Path, leave_nothing_running):
    folder = project(tmp_path, args="--wait 1")
    leave_nothing_running(folder)
    assert expt("run", "s", "--detach", cwd=folder).returncode == 0
    seen = wait_for(lambda: (r := show(folder, "s-1"))["status"] == "running" and r["metrics"].get("eval_top1")
                    and r, timeout=120, what="epoch 1 in `expt show` while the script runs")
    assert seen["metrics"]["eval_top1"] == [[1, 40.0]] and seen["epoch"] == 1
    (folder / "runs" / "s-1" / "go-1").touch()
    done = wait_for(lambda: (r := show(folder, "s-1"))["status"] == "completed" and r, timeout=120,
                    what="the run completed")
    assert [step for step, _ in done["metrics"]["eval_top1"]] == [1, 2, 3]


def test_a_script_that_exits_3_fails_with_its_last_stderr_line(tmp_path: Path):
    folder = project(tmp_path, args="--exit 3")
    result = expt("run", "s", cwd=folder, timeout=300)
    assert result.returncode == 1
    run = show(folder, "s-1")
    assert run["status"] == "failed"
    assert run["error"] == "exit status 3: ValueError: lr too large for this model"
    assert run["summary"]["best_eval_top1"] == 60.0  # what it logged before failing is kept


def test_a_script_killed_by_a_signal_crashes(tmp_path: Path):
    folder = project(tmp_path, args="--crash")
    expt("run", "s", cwd=folder, timeout=300)
    run = show(folder, "s-1")
    assert run["status"] == "crashed" and "killed by SIGKILL" in run["error"]
    assert run["metrics"]["eval_top1"] == [[1, 40.0]]


def test_kill_9_of_the_script_from_outside_crashes_the_run(tmp_path: Path, leave_nothing_running):
    folder = project(tmp_path, args="--wait 1")
    leave_nothing_running(folder)
    assert expt("run", "s", "--detach", cwd=folder).returncode == 0
    wait_for(lambda: show(folder, "s-1")["metrics"].get("eval_top1"), timeout=120, what="epoch 1")
    os.kill(int((folder / "runs" / "s-1" / "pid").read_text()), signal.SIGKILL)
    run = wait_for(lambda: (r := show(folder, "s-1"))["status"] not in ("running", "starting") and r, timeout=120,
                   what="the run ended")
    assert run["status"] == "crashed" and "SIGKILL" in run["error"]


def test_stop_ends_the_run_stopped_and_sigkill_follows_after_the_grace(tmp_path: Path, leave_nothing_running):
    folder = project(tmp_path, args="--wait 1 --ignore-term", extra="stop_grace = 1.0")
    leave_nothing_running(folder)
    assert expt("run", "s", "--detach", cwd=folder).returncode == 0
    wait_for(lambda: show(folder, "s-1")["metrics"].get("eval_top1"), timeout=120, what="epoch 1")
    stopped = expt("stop", "s-1", cwd=folder)
    assert stopped.returncode == 0, stopped.stderr
    run = wait_for(lambda: (r := show(folder, "s-1"))["status"] == "stopped" and r, timeout=120, what="stopped")
    log = expt("logs", "s-1", cwd=folder).stdout
    assert "ignoring SIGTERM" in log and "SIGKILL in 1 s" in log
    assert run["error"] is None


def test_resume_reruns_the_command_with_its_resume_args_in_the_same_run(tmp_path: Path, leave_nothing_running):
    folder = project(tmp_path, args="--wait 1", extra='resume_args = "--resume {checkpoint}"\n'
                                                      'checkpoint = "timm/last.json"')
    leave_nothing_running(folder)
    assert expt("run", "s", "--detach", cwd=folder).returncode == 0
    wait_for(lambda: show(folder, "s-1")["metrics"].get("eval_top1"), timeout=120, what="epoch 1")
    assert expt("stop", "s-1", cwd=folder).returncode == 0
    wait_for(lambda: show(folder, "s-1")["status"] == "stopped", timeout=120, what="stopped")
    (folder / "runs" / "s-1" / "go-1").touch()
    resumed = expt("resume", "s-1", cwd=folder, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    run = show(folder, "s-1")
    assert run["status"] == "completed"
    assert run["metrics"]["eval_top1"] == [[1, 40.0], [2, 50.0], [3, 60.0]]
    log = expt("logs", "s-1", cwd=folder).stdout
    assert "resumed at epoch 1" in log and f"--resume {folder / 'runs' / 's-1' / 'timm' / 'last.json'}" in log


def test_resume_without_resume_args_is_a_one_line_refusal(tmp_path: Path):
    folder = project(tmp_path, args="--exit 3")
    expt("run", "s", cwd=folder, timeout=300)
    result = expt("resume", "s-1", cwd=folder)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: s-1 cannot be resumed: its experiment declares no resume_args, so expt cannot tell the command to "
        "continue (add e.g. resume_args = \"--resume {checkpoint}\"); `expt rerun` starts it afresh"]


@pytest.mark.parametrize("key,template,message", [
    ("command", "{python} train.py --lr {lrr}", "{lrr} names no parameter (did you mean {lr}?)"),
    ("resume_args", "--resume {checkpiont}", "{checkpiont} names no parameter (did you mean {checkpoint}?)"),
])
def test_a_placeholder_typo_is_one_line_and_nothing_is_queued(tmp_path: Path, key, template, message):
    lines = {"command": '"{python} train.py"', "python": '"python3"', "resume_args": '"--resume {checkpoint}"'}
    lines[key] = f'"{template}"'
    folder = write_project(tmp_path / "proj", '[experiments.s]\nrecipe = "command"\nlr = 0.1\n'
                           + "".join(f"{k} = {v}\n" for k, v in lines.items()))
    result = expt("run", "s", cwd=folder)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: experiments.toml:{4 if key == 'command' else 6}: "
                                                  f"s.{key}: {message}")
    assert not (folder / "runs").exists() and not (folder / "runs.db").exists()


def test_an_unused_parameter_is_said_once_as_a_warning(tmp_path: Path):
    folder = project(tmp_path, extra='hidden = 64')
    result = expt("run", "s", "--dry-run", cwd=folder)
    assert result.returncode == 0
    assert result.stderr.count("warning:") == 1 and "hidden is never used by its command" in result.stderr


def test_the_script_runs_in_the_project_folder_with_the_slot_and_track_environment(tmp_path: Path):
    folder = write_project(tmp_path / "proj", f'''\
[experiments.e]
recipe = "command"
command = ["{sys.executable}", "-c", "import os, json; json.dump({{{{k: os.environ.get(k) for k in ('CUDA_VISIBLE_DEVICES', 'OMP_NUM_THREADS', 'EXPT_TRACK', 'EXPT_RUN_ID', 'MY_VAR')}}}} | {{{{'cwd': os.getcwd()}}}}, open('{{run_dir}}/env.json', 'w'))"]
env = {{MY_VAR = "seed {{seed}} in {{run_id}}"}}
seed = 7
''')
    result = expt("run", "e", cwd=folder, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    seen = json.loads((folder / "runs" / "e-1" / "env.json").read_text())
    assert seen["cwd"] == str(folder) and seen["CUDA_VISIBLE_DEVICES"] == "" and seen["OMP_NUM_THREADS"]
    assert seen["EXPT_TRACK"] == str(folder / "runs" / "e-1" / "track.jsonl") and seen["EXPT_RUN_ID"] == "e-1"
    assert seen["MY_VAR"] == "seed 7 in e-1"


def test_track_protocol_lines_become_metrics_summary_and_params(tmp_path: Path):
    """What expt.track writes under `expt run` (the protocol of runs/ID/track.jsonl), written here by hand."""
    lines = [{"kind": "config", "values": {"loss": "arcface"}},
             {"kind": "metrics", "step": 0, "values": {"train_loss": 2.0, "eval_top1": 30.0}},
             {"kind": "metrics", "step": 1, "values": {"train_loss": 1.0, "eval_top1": 35.0}},
             {"kind": "summary", "values": {"precision_at_1": 0.75}}, {"kind": "finish", "exit_code": 0}]
    code = ("import json, os\nwith open(os.environ['EXPT_TRACK'], 'a') as f:\n"
            f"    for line in {lines!r}:\n        f.write(json.dumps(line) + '\\n')\n")
    folder = write_project(tmp_path / "proj", f'[experiments.e]\nrecipe = "command"\n'
                                              f'command = ["{sys.executable}", "-c", {json.dumps(braces(code))}]\n')
    assert expt("run", "e", cwd=folder, timeout=300).returncode == 0
    run = show(folder, "e-1")
    assert run["metrics"]["eval_top1"] == [[0, 30.0], [1, 35.0]]
    assert run["summary"]["precision_at_1"] == 0.75 and run["summary"]["best_eval_top1"] == 35.0
    assert run["params"]["loss"] == "arcface"


def test_reindex_rebuilds_command_runs_exactly(tmp_path: Path):
    folder = project(tmp_path, sweep="[experiments.s.sweep]\nlr = [0.1, 0.05]")
    assert expt("run", "s", cwd=folder, timeout=300).returncode == 0
    before = [show(folder, f"s-{i}") for i in (1, 2)]
    (folder / "runs.db").unlink()
    assert expt("reindex", cwd=folder).returncode == 0
    assert [show(folder, f"s-{i}") for i in (1, 2)] == before
    conn = sqlite3.connect(folder / "runs.db")
    assert conn.execute("SELECT COUNT(*) FROM runs WHERE recipe = 'command'").fetchone() == (2,)


def test_the_tui_shows_command_runs_in_the_runs_table_detail_and_compare(tmp_path: Path):
    import asyncio

    from expt.project import Project
    from expt.tui.app import create_app

    folder = project(tmp_path, sweep="[experiments.s.sweep]\nlr = [0.1, 0.05]")
    assert expt("run", "s", cwd=folder, timeout=300).returncode == 0

    async def scenario():
        app = create_app(Project(folder / "experiments.toml"), interval=0.2, image_mode="halfcell")
        async with app.run_test(size=(100, 30), notifications=True) as pilot:
            await until_shown(pilot, app, "s-1", "s-2", "2 completed", "60")
            table = app.runs_screen.table
            table.move_cursor(row=0)
            await pilot.press("enter")
            await until(pilot, lambda: type(app.screen).__name__ == "RunDetailScreen" and app.screen.charts,
                        what="the run detail")
            assert {"eval_top1", "train_loss"} <= set(app.screen.charts)
            await until(pilot, lambda: "epoch 2 done" in "\n".join(app.screen.query_one("#run-log").lines),
                        what="the script's output in the log")
            await pilot.press("escape")
            await until(pilot, lambda: app.screen is app.runs_screen, what="back on the runs")
            table.move_cursor(row=0)
            await pilot.press("space", "space", "c")
            await until(pilot, lambda: type(app.screen).__name__ == "CompareScreen"
                        and "best_eval_top1" in screen_text(app) and "lr" in screen_text(app), what="compare")
            await pilot.press("q")

    asyncio.run(scenario())


def test_values_are_one_argument_each_and_quoted_for_the_shell_only_when_asked(tmp_path: Path):
    code = braces("import sys, json; json.dump(sys.argv[1:], open(sys.argv[1] + '/argv.json', 'w'))")
    folder = write_project(tmp_path / "proj", f'''\
[experiments.plain]
recipe = "command"
command = "{{python}} -c \\"{code}\\" {{run_dir}} {{msg}} --lr={{lr:.0e}} $HOME"
msg = "a b; $HOME"
lr = 0.001

[experiments.sh]
recipe = "command"
shell = true
command = "echo {{msg}} > {{run_dir}}/out.txt && echo $0 >> {{run_dir}}/out.txt"
msg = "a b; $HOME"
''')
    assert expt("run", "plain", cwd=folder, timeout=300).returncode == 0
    argv = json.loads((folder / "runs" / "plain-1" / "argv.json").read_text())
    assert argv[1:] == ["a b; $HOME", "--lr=1e-03", "$HOME"]  # no shell: nothing expanded, nothing split
    assert expt("run", "sh", cwd=folder, timeout=300).returncode == 0
    lines = (folder / "runs" / "sh-1" / "out.txt").read_text().splitlines()
    assert lines[0] == "a b; $HOME" and lines[1].endswith("sh")  # the value quoted; the shell ran the rest


EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own-script"


def test_the_shipped_example_sweeps_with_expt_run_and_records_a_run_of_its_own(tmp_path: Path):
    folder = tmp_path / "own-script"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("runs", "runs.db*"))
    toml = folder / "experiments.toml"
    toml.write_text(toml.read_text().replace("epochs = 8", "epochs = 3"))
    result = expt("run", "digits_lr", cwd=folder, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    runs = {r["id"]: r for r in json.loads(expt("ls", "--json", cwd=folder).stdout)}
    assert set(runs) == {"digits_lr-1", "digits_lr-2", "digits_lr-3"}
    assert all(r["status"] == "completed" and r["best"] > 50 for r in runs.values())  # 10 classes: chance is 10%
    run = show(folder, "digits_lr-2")
    assert [step for step, _ in run["metrics"]["eval_top1"]] == [1, 2, 3] and run["params"]["lr"] == 0.05
    assert run["summary"]["final_eval_top1"] == run["metrics"]["eval_top1"][-1][1]
    assert (folder / "runs" / "digits_lr-2" / "checkpoint.pt").is_file()  # {checkpoint} is in the run folder
    alone = subprocess.run([sys.executable, "train.py", "--epochs", "2"], cwd=folder, capture_output=True, text=True,
                           timeout=300)
    assert alone.returncode == 0, alone.stderr
    standalone = show(folder, "digits-1")
    assert standalone["status"] == "completed" and len(standalone["metrics"]["eval_top1"]) == 2
    compared = expt("compare", "digits_lr-2", "digits-1", cwd=folder, columns=160)
    assert compared.returncode == 0 and "eval_top1" in compared.stdout
