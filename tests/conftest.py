"""Shared fixtures: a real project folder, the CLI through typer's runner and as a subprocess.

Nothing is mocked: runs go through the real worker processes into a real runs.db.
The models are tiny (timm's ``test_efficientnet``, 32 px, a few images) so a run
takes seconds on two cores.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import orjson
import pytest
from rich.console import Console
from typer.testing import CliRunner

# Two test workers on two cores: the tests that train in-process take one torch thread each. With a thread per
# core each, OpenMP's spinning threads fight over the cores: a 2 s test took a minute on the loaded machine.
# Run workers are unaffected: each gets its slot's OMP_NUM_THREADS.
os.environ.setdefault("OMP_NUM_THREADS", "1")

TINY_TOML = """\
[experiments.tiny]
recipe = "finetune"
description = "a tiny test experiment"
model = "test_efficientnet"
pretrained = false
shots = 2
img_size = 32
epochs = 2
batch_size = 8
lr = 0.05
eval_batch_size = 512

[experiments.tiny.sweep]
mode = ["e2e", "fc"]

[experiments.long]
recipe = "finetune"
description = "long enough to be stopped"
model = "test_efficientnet"
pretrained = false
shots = 5
img_size = 32
epochs = 200
batch_size = 10
lr = 0.05
"""


MARKUP = "[/] [bold red]loud[/] [link=file:///etc/passwd]x[/link]"  # what rich or Textual could take for markup
CONTROL = "\x1b[31mred \x1b]8;;http://evil\x07link over\rwrite nul\x00 \u202eevil\u200f"  # and for the terminal


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string, every character that is not printable as its \\u escape."""
    return '"' + "".join(c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}" for c in text) + '"'


def write_project(folder: Path, text: str = TINY_TOML) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "experiments.toml").write_text(text)
    return folder


def digit_folders(root: Path, classes: int = 5, per_class: int = 8) -> None:
    """An image folder data set (``root/digit<N>/<i>.png``) of scikit-learn's digits, for the imagefolder data set."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for label in range(classes):
        folder = root / f"digit{label}"
        folder.mkdir(parents=True)
        for n, i in enumerate(np.flatnonzero(digits.target == label)[:per_class]):
            Image.fromarray((digits.images[i] * 255 / 16).astype(np.uint8)).save(folder / f"{n}.png")


@pytest.fixture
def project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh project (experiments.toml only) as the current directory."""
    monkeypatch.delenv("EXPT_FILE", raising=False)
    monkeypatch.chdir(write_project(tmp_path / "proj"))
    return tmp_path / "proj"


class Cli:
    """``expt`` through typer's CliRunner, in the current directory."""

    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None):
        from expt.cli import app

        return self.runner.invoke(app, list(args), input=input)

    def json(self, *args: str):
        result = self(*args, "--json")
        assert result.exit_code == 0, result.output
        return orjson.loads(result.stdout)


@pytest.fixture
def cli() -> Cli:
    return Cli()


def expt(*args: str, cwd: Path, timeout: float = 300, columns: int = 100, **kwargs) -> subprocess.CompletedProcess:
    """``expt`` as a real subprocess in a terminal ``columns`` wide."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": str(columns)}
    env.pop("EXPT_FILE", None)
    return subprocess.run([sys.executable, "-m", "expt", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env, **kwargs)


def wait_for(predicate: Callable[[], object], timeout: float = 60, interval: float = 0.1, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")


def dead(pid: int) -> bool:
    """The process has exited: gone, or a zombie its parent has not reaped yet (psutil reads /proc without the race
    of a process that exits between two reads)."""
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def training_metrics(store, run) -> dict:
    """A run's metrics without its system samples (sys/: CPU, memory, which no two runs share)."""
    from expt.core.runfiles import is_sys_key

    return {k: v for k, v in store.metrics(run).items() if not is_sys_key(k)}


def ingested_run(project: Path, run_id: str):
    """The run as runs.db has it once everything its worker wrote is ingested."""
    from expt.store import Store

    with Store(project / "runs.db") as store:
        store.ingest()
        return store.get(run_id)


def ended(project: Path, run_id: str) -> str | None:
    """'stopped' or 'completed' once the run has ended so, else None (for ``wait_for``)."""
    status = ingested_run(project, run_id).status
    return status if status in ("stopped", "completed") else None


@pytest.fixture(scope="session")
def finished_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project where `expt run tiny` has completed (two real runs); copy it before changing it."""
    folder = write_project(tmp_path_factory.mktemp("finished") / "proj")
    result = expt("run", "tiny", cwd=folder)
    assert result.returncode == 0, result.stdout + result.stderr
    return folder


FEWSHOT_TOML = """\
[experiments.fewshot]
recipe = "finetune"
description = "tiny few-shot study: mode x shots, two draws each"
model = "test_efficientnet"
pretrained = false
img_size = 32
epochs = 2
batch_size = 8
lr = 0.05
eval_batch_size = 512
repeat = 2

[experiments.fewshot.sweep]
mode = ["e2e", "fc"]
shots = [1, 2]
"""


@pytest.fixture(scope="session")
def fewshot_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project where `expt run fewshot` has completed: 2 modes x 2 shots x 2 seeds, eight real runs (the shape
    of seed 000's study, for pivot tables and reports); copy it before changing it."""
    folder = write_project(tmp_path_factory.mktemp("fewshot") / "proj", FEWSHOT_TOML)
    result = expt("run", "fewshot", "--jobs", "2", cwd=folder)
    assert result.returncode == 0, result.stdout + result.stderr
    return folder


@pytest.fixture
def finished_copy(finished_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of ``finished_project`` as the current directory (run_dir paths rebuilt)."""
    target = tmp_path / "copy"
    shutil.copytree(finished_project, target, ignore=shutil.ignore_patterns("runs.db*"))
    monkeypatch.delenv("EXPT_FILE", raising=False)
    monkeypatch.chdir(target)
    from expt.store import Store

    with Store(target / "runs.db") as store:
        store.reindex(target / "runs")
    return target


# -- the TUI as the user sees it -----------------------------------------------------------------------------

async def until(pilot, predicate: Callable[[], object], timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await pilot.pause(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")


def screen_text(app) -> str:
    """The terminal as the user sees it now: the composed screen (toasts and dialogs included) as plain text."""
    console = Console(width=app.size.width, height=app.size.height, file=io.StringIO(), force_terminal=True,
                      color_system="truecolor", record=True, legacy_windows=False, safe_box=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text(styles=False)


async def until_shown(pilot, app, *texts: str, timeout: float = 30) -> None:
    try:
        await until(pilot, lambda: all(t in screen_text(app) for t in texts), timeout=timeout)
    except AssertionError:
        raise AssertionError(f"timed out after {timeout}s waiting for {texts}; the screen:\n{screen_text(app)}")
