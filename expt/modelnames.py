"""timm model names without importing timm on every call.

The list is computed once per installed timm version and cached under
``$XDG_CACHE_HOME/expt`` so that validating experiments.toml stays fast.
"""

from __future__ import annotations

import difflib
import os
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path


def _cache_file() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "expt" / f"timm-{metadata.version('timm')}-models.txt"


@lru_cache(maxsize=1)
def timm_models() -> frozenset[str]:
    path = _cache_file()
    try:
        return frozenset(path.read_text().split())
    except OSError:
        pass
    names = _list_in_subprocess()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text("\n".join(names))
        os.replace(tmp, path)
    except OSError:
        pass
    return frozenset(names)


def _list_in_subprocess() -> list[str]:
    """timm's model names, listed by a child process so this one never imports torch."""
    code = "import timm, sys; sys.stdout.write('\\n'.join(sorted(timm.list_models())))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"could not list timm's models: {result.stderr.strip()[-300:]}")
    return result.stdout.split()


def check_timm_model(name: object) -> str | None:
    """Why ``name`` is not a timm architecture (``resnet18`` or ``resnet18.a1_in1k``), or None."""
    if not isinstance(name, str):
        return None
    models = timm_models()
    if name.split(".", 1)[0] in models:
        return None
    close = difflib.get_close_matches(name, models, n=1, cutoff=0.7)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown timm model {name!r}{hint}"
