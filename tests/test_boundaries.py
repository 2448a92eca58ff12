"""Architecture rules that must not erode: core never imports the UI; read paths never import torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" not in result.stdout.split("Contracts:")[-1].replace("0 broken", "")


def test_validating_experiments_does_not_import_torch(tmp_path):
    """Even on a fresh machine, where timm's model names are listed once (in a child process)."""
    code = ("import sys; from expt.config import load_config; load_config(sys.argv[1]); "
            "from expt.core.recipes import all_recipes; all_recipes(); import expt.cli; "
            "bad = [m for m in ('torch', 'timm', 'faiss', 'textual') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code, str(ROOT / "experiments.toml")], capture_output=True,
                            text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
