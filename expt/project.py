"""Where an expt project lives: experiments.toml, runs.db and runs/ side by side."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from expt.errors import UsageError

CONFIG_NAME = "experiments.toml"
DB_NAME = "runs.db"
RUNS_DIR = "runs"


@dataclass(frozen=True)
class Project:
    """The three paths every command needs. ``config_path`` may not exist (read-only use)."""

    config_path: Path

    @property
    def root(self) -> Path:
        return self.config_path.parent

    @property
    def db_path(self) -> Path:
        return self.root / DB_NAME

    @property
    def runs_dir(self) -> Path:
        return self.root / RUNS_DIR

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id


def find_project(file: str | os.PathLike | None = None, *, need_config: bool = False) -> Project:
    """Locate the project: ``file`` (``-f``), else ``$EXPT_FILE``, else ./experiments.toml."""
    chosen = file or os.environ.get("EXPT_FILE")
    path = Path(chosen) if chosen else Path.cwd() / CONFIG_NAME
    path = path.expanduser().absolute()
    if path.is_dir():
        path = path / CONFIG_NAME
    if need_config and not path.is_file():
        hint = "" if chosen else " (use -f PATH or set EXPT_FILE)"
        raise UsageError(f"{path}: no such file{hint}")
    return Project(path)
