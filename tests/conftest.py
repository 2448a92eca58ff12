"""Shared fixtures: a real project folder, the CLI through typer's runner and as a subprocess.

Nothing is mocked: runs go through the real worker processes into a real runs.db.
The models are tiny (timm's ``test_efficientnet``, 32 px, a few images) so a run
takes seconds on two cores.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import orjson
import pytest
from typer.testing import CliRunner

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


def write_project(folder: Path, text: str = TINY_TOML) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "experiments.toml").write_text(text)
    return folder


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


def expt(*args: str, cwd: Path, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """``expt`` as a real subprocess."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "100"}
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
