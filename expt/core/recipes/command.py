"""The `command` recipe: the user's own training script as a run (issue 14).

The worker starts the command in a session of its own with the slot's environment, its stdout and stderr in
log.txt, and turns what the script reports into the run's metric lines: the `expt.track` protocol lines of
``track.jsonl`` (the logging API) and the rows of the files listed in ``metrics`` (CSV with a header, timm's
summary.csv as `expt import timm` reads it, or JSON lines), followed while the script runs. Exit 0 ends the run
``completed``, any other status ``failed`` with the last line of stderr; a script killed by a signal it was not
sent by expt ends ``crashed``. Every key the recipe does not declare is a parameter of the command.
"""

from __future__ import annotations

import collections
import ctypes
import os
import shlex
import signal
import string
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from expt.core.recipes import recipe
from expt.params import SEED_MAX, SYS_INTERVAL, Param, params

if TYPE_CHECKING:
    from expt.core.tracking import Tracker

ALWAYS = ("run_dir", "run_id", "seed", "checkpoint", "python")  # placeholders every command may use
TEMPLATES = ("command", "resume_args")  # the params whose {name} placeholders are filled

PARAMS = params(
    Param("command", (str, list), "", "the command: a string (split like a shell would, not run by one unless "
          "shell = true) or a list of arguments; {name} is a parameter's value, and {run_dir}, {run_id}, {seed}, "
          "{checkpoint} and {python} (expt's own interpreter) are always there", item_type=str),
    Param("shell", bool, False, "run the command through /bin/sh (values are quoted for it)"),
    Param("cwd", str, "", "folder the command runs in (default: experiments.toml's folder); relative to it",
          path=True),
    Param("env", dict, {}, "environment variables for the command, e.g. {WANDB_MODE = 'offline'}; "
          "values may hold {name} placeholders"),
    Param("metrics", list, [], "files in the run folder to follow as metric lines: CSV with a header (timm's "
          "summary.csv understood as `expt import timm` does) or JSON lines (.jsonl)", item_type=str),
    Param("metric", str, "eval_top1", "the per-epoch metric that ranks runs (best_<metric> in the summary)"),
    Param("goal", str, "max", "whether a higher or a lower metric is better", choices=("max", "min")),
    Param("checkpoint", str, "checkpoint.pt", "where the command saves its checkpoint, relative to the run "
          "folder ({checkpoint} is that path)"),
    Param("resume_args", (str, list), "", "arguments added on `expt resume`, e.g. '--resume {checkpoint}'; "
          "without them a command run cannot be resumed", item_type=str),
    Param("stop_grace", float, 30.0, "seconds between SIGTERM and SIGKILL when the run is stopped", min=0.0,
          max=86_400.0),
    Param("seed", int, 0, "random seed, for the command as {seed} (with repeat = N: seed .. seed + N - 1)",
          min=0, max=SEED_MAX),
)

def placeholders(template: str | list[str]) -> list[str]:
    """The parameter names a template's ``{name}`` fields use, in order (``{{`` is a literal brace)."""
    names: list[str] = []
    for part in [template] if isinstance(template, str) else template:
        for _, field, _, _ in string.Formatter().parse(part):
            if field is not None:
                base = field.split(".", 1)[0].split("[", 1)[0]
                if base not in names:
                    names.append(base)
    return names


def _templates(p: dict[str, Any]) -> list[tuple[str, str | list[str]]]:
    found: list[tuple[str, str | list[str]]] = [(key, p[key]) for key in TEMPLATES if p.get(key)]
    found += [(f"env.{name}", value) for name, value in (p.get("env") or {}).items() if isinstance(value, str)]
    return found


def _validate(p: dict[str, Any]) -> list[str | tuple[str, str]]:
    """Every placeholder names a parameter with a value; the command is there and can be split."""
    import difflib

    if not p.get("command"):
        return [("command", "the command recipe needs command = \"python train.py ...\" (a string or a list)")]
    problems: list[str | tuple[str, str]] = []
    known = [name for name in p if name not in TEMPLATES] + [n for n in ALWAYS if n not in p]
    for key, template in _templates(p):
        try:
            names = placeholders(template)
            if isinstance(template, str) and key in TEMPLATES and not p.get("shell"):
                shlex.split(template)
        except ValueError as error:
            problems.append((key, f"cannot be read: {error} (a literal brace is written {{{{ or }}}})"))
            continue
        for name in names:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {{{close[0]}}}?)" if close else ""
                own = sorted(n for n in known if n not in PARAMS and n not in ALWAYS and n != SYS_INTERVAL.name)
                problems.append((key, f"{{{name}}} names no parameter{hint}; parameters: "
                                      + (", ".join(own) or "none") + f"; always there: {', '.join(ALWAYS)}"))
            elif name not in ALWAYS and p.get(name) is None:
                problems.append((key, f"{{{name}}} has no value in every run: give {name} a value in the "
                                      "experiment's table"))
        if not problems:
            values = placeholder_values({**p, "checkpoint": p.get("checkpoint") or ""}, Path("RUN_DIR"), "RUN_ID")
            for part in [template] if isinstance(template, str) else template:
                try:
                    fill(part, values)
                except (ValueError, KeyError, IndexError, AttributeError, TypeError) as error:
                    problems.append((key, f"cannot be filled in: {error}"))
                    break
    env = p.get("env") or {}
    for name, value in env.items():
        if not isinstance(value, (str, int, float, bool)):
            problems.append((f"env.{name}", f"expected a string or a number, got {type(value).__name__}"))
    return problems


def unused(p: dict[str, Any], names: list[str]) -> list[str]:
    """Which of ``names`` (the command's own parameters) no template uses."""
    used = {n for _, template in _templates(p) for n in placeholders(template)}
    return [name for name in names if name not in used]


def _resumable(p: dict[str, Any]) -> str | None:
    if p.get("resume_args"):
        return None
    return ("its experiment declares no resume_args, so expt cannot tell the command to continue "
            "(add e.g. resume_args = \"--resume {checkpoint}\"); `expt rerun` starts it afresh")


# -- the worker's side ----------------------------------------------------------------------------------


class _Filler(string.Formatter):
    """str.format for templates: a format spec applies to the value as it is (``{lr:.0e}``), without one a
    value is written as TOML would (true, not True; a list as a,b,c); for the shell each field is quoted."""

    def __init__(self, quote: bool) -> None:
        self.quote = quote

    def format_field(self, value: Any, format_spec: str) -> str:
        text = format(value, format_spec) if format_spec else _text(value)
        return shlex.quote(text) if self.quote else text


def fill(template: str, values: dict[str, Any], quote: bool = False) -> str:
    return _Filler(quote).vformat(template, (), values)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_text(v) for v in value)
    return str(value)


def placeholder_values(p: dict[str, Any], run_dir: Path, run_id: str) -> dict[str, Any]:
    return {"python": sys.executable, **p, "run_dir": str(run_dir), "run_id": run_id,
            "checkpoint": str(run_dir / p["checkpoint"])}


def argv(p: dict[str, Any], run_dir: Path, run_id: str, resume: bool) -> list[str] | str:
    """The command to start, placeholders filled: a list of arguments, or one string for the shell."""
    values = placeholder_values(p, run_dir, run_id)
    parts = [p["command"]] + ([p["resume_args"]] if resume and p.get("resume_args") else [])
    if p.get("shell"):
        return " ".join(fill(part if isinstance(part, str) else shlex.join(part), values, quote=True)
                        for part in parts)
    words: list[str] = []
    for part in parts:
        words += [fill(word, values) for word in (shlex.split(part) if isinstance(part, str) else part)]
    return words


@recipe("command", PARAMS, metric="eval_top1", validate=_validate, open_params=True, resumable=_resumable,
        ranking=lambda p: (p.get("metric") or "eval_top1", p.get("goal") or "max"))
def command(p: dict[str, Any], tracker: Tracker) -> None:
    """Your own training command (a script, timm's train.py ...): its exit status, log and metrics."""
    from expt.core import runfiles
    from expt.core.follow import Follower
    from expt.core.tracking import RunCrashed, StopRequested
    from expt.errors import ExptError

    run_dir = tracker.run_dir.absolute()
    config = runfiles.read_config(run_dir)
    resume = runfiles.count_status(run_dir, "running") > 1 and bool(p.get("resume_args"))
    cmd = argv(p, run_dir, config["id"], resume)
    values = placeholder_values(p, run_dir, config["id"])
    env = {**os.environ, **{k: fill(v, values) if isinstance(v, str) else _text(v) for k, v in p["env"].items()},
           runfiles.TRACK_ENV: str(run_dir / runfiles.TRACK), runfiles.RUN_DIR_ENV: str(run_dir),
           runfiles.RUN_ID_ENV: config["id"]}
    cwd = p.get("cwd") or os.getcwd()
    if not Path(cwd).is_dir():
        raise ExptError(f"cwd {cwd!r}: no such folder")
    follower = Follower(run_dir, [runfiles.TRACK, *p["metrics"]], tracker, metric=p["metric"], goal=p["goal"],
                        epochs=p.get("epochs") if type(p.get("epochs")) is int else None)
    shown = cmd if isinstance(cmd, str) else shlex.join(cmd)
    tracker.log(f"{'resuming' if resume else 'starting'}: {shown}  (in {cwd})")
    try:
        process = subprocess.Popen(cmd, cwd=cwd, env=env, shell=bool(p.get("shell")), stdin=subprocess.DEVNULL,
                                   stdout=sys.stdout.fileno(), stderr=subprocess.PIPE, start_new_session=True,
                                   preexec_fn=_parent_death_signal())
    except OSError as error:
        raise ExptError(f"cannot start {shown!r}: {error.strerror or error}") from None
    tail = _StderrTail(process)
    stop_sent: float | None = None
    try:
        while process.poll() is None:
            follower.poll()
            if tracker.stop_requested and stop_sent is None:
                _signal_group(process, signal.SIGTERM)
                stop_sent = time.monotonic()
                tracker.log(f"stop: SIGTERM to the command; SIGKILL in {p['stop_grace']:g} s if it is still there")
            if stop_sent is not None and time.monotonic() - stop_sent > p["stop_grace"]:
                _signal_group(process, signal.SIGKILL)
            try:
                process.wait(timeout=0.25)
            except subprocess.TimeoutExpired:
                pass
    finally:
        if process.poll() is None:  # the worker itself fails: never leave the command behind
            _signal_group(process, signal.SIGKILL)
            process.wait()
        tail.join()
        follower.poll()
        follower.finish()
    code = process.returncode
    if stop_sent is not None or tracker.stop_requested:
        raise StopRequested()
    if code == 0:
        return
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        raise RunCrashed(f"the command was killed by {name} (not by expt){tail.last_words(': ')}")
    raise ExptError(f"exit status {code}{tail.last_words(': ')}")


class _StderrTail:
    """Copies the command's stderr into log.txt as it comes, keeping its last lines for the run's error."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.lines: collections.deque[bytes] = collections.deque(maxlen=20)
        self._thread = threading.Thread(target=self._copy, args=(process.stderr,), daemon=True)
        self._thread.start()

    def _copy(self, stream: Any) -> None:
        out = sys.stdout.fileno()
        for line in iter(stream.readline, b""):
            try:
                os.write(out, line)
            except OSError:
                pass
            if line.strip():
                self.lines.append(line)
        stream.close()

    def join(self) -> None:
        self._thread.join(timeout=5)

    def last_words(self, prefix: str = "") -> str:
        if not self.lines:
            return ""
        return prefix + self.lines[-1].decode("utf-8", "replace").strip()[:400]


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


_PR_SET_PDEATHSIG = 1


def _parent_death_signal() -> Any:
    """What the child runs before exec: ask Linux for SIGTERM when the worker dies (kill -9 included), so no
    command outlives its run. libc is looked up here, in the parent: the child after fork only makes the call."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
