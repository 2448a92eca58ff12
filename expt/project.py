"""Where an expt project lives: experiments.toml, runs.db and runs/ side by side."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from expt.errors import UsageError

CONFIG_NAME = "experiments.toml"
DB_NAME = "runs.db"
RUNS_DIR = "runs"
MAX_NAME_LENGTH = 200


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


def name_too_long(name: str) -> str | None:
    """Why ``name`` is too long to name an experiment, or None.

    Its runs' folders are ``runs/NAME-SEQ``, and a file name may have 255 bytes on every common file system
    (ext4, XFS, Btrfs, APFS, NTFS, Lustre, GPFS): 200 bytes of name leave room for '-' and any sequence number
    runs.db can hold (19 digits). Names are ASCII (``config.NAME_PATTERN``), so the limit is 200 characters.
    """
    size = len(name.encode())
    if size <= MAX_NAME_LENGTH:
        return None
    return (f"experiment names are at most {MAX_NAME_LENGTH} characters (their runs' folders are NAME-NUMBER, and "
            f"a file name may have 255 bytes); this one has {size}")


def display_path(path: Path) -> str:
    """``path`` relative to the current directory when it is inside it, else as it is."""
    try:
        return os.path.relpath(path) if Path(path).is_relative_to(Path.cwd()) else str(path)
    except ValueError:
        return str(path)
