"""expt.track: the common subset of W&B's logging API, so that a script instrumented for W&B runs unchanged.

    import expt.track as wandb
    run = wandb.init(project="dml", name="arcface", config={"loss": "arcface", "lr": 0.1})
    for epoch in range(epochs):
        wandb.log({"train_loss": loss, "test_accuracy": acc}, step=epoch)
    run.summary["precision_at_1"] = p1
    wandb.finish()

Supported: ``init``, ``log`` (with ``step``, or W&B's own counter of one step per call; ``commit``), ``config``
(attribute and item access, ``update``, ``setdefaults``), ``summary`` (item and attribute access, ``update``),
``finish`` (``exit_code``), ``run.id``, ``run.dir``, ``run.name``, ``run.step``, module-level ``run``, ``config``,
``summary``, ``Settings``. Logged values are numbers: Python ints and floats, and anything with ``.item()`` or
``__float__`` (a numpy number, a one-element tensor; neither numpy nor torch is imported here). Other values (strings,
images) are skipped with a warning the first time per key. Any other W&B name (``watch``, ``Image``, ``Table``,
``save``, ``define_metric``, ``alert``, ``Artifact``, ``login`` ...) exists, and warns once on stderr when called.
As in W&B, the summary holds each metric's last logged value unless the script sets one.

Two modes, chosen when ``init`` is called:

**Under ``expt run``** (the ``command`` recipe's worker starts the script with ``EXPT_TRACK`` = the absolute path of a
file to append to, ``runs/<id>/track.jsonl``, and ``EXPT_RUN_DIR``, ``EXPT_RUN_ID``): ``run.id`` and ``run.dir`` are
those; ``init``'s project and name are ignored (the run exists). Nothing else is opened: the module appends these
lines to that file, the contract with the worker, which applies them to the run::

    {"kind": "metrics", "step": <int>, "values": {"name": <number>, ...}}
    {"kind": "summary", "values": {...}}    merged into the run's summary
    {"kind": "config", "values": {...}}     the config given to init, then each change: merged into the params
    {"kind": "finish", "exit_code": <int>}

A metrics line per ``log`` call that logged a number. Steps are ints and never decrease; several lines may share a step
(``commit=False``, or ``log(..., step=s)`` twice), their values merging (a later value of a name replaces an earlier
one). Names are W&B's, nested dicts flattened with ``"."``; NaN and infinities are written as null. Summary and config
values are JSON (numbers, strings, booleans, null, lists, objects). ``finish`` ends the file: its exit code is the one
given to ``finish()``, else 0 at a normal end, N after ``sys.exit(N)`` (1 for a message), 1 after an uncaught
exception, 130 after KeyboardInterrupt. Lines are buffered in memory and written whole, several at a time, each
batch with one ``os.write`` on an ``O_APPEND`` descriptor: at most every 0.5 s (from ``log`` or a background
thread), at once for summary, config and finish, and at exit (atexit). Signals are left to the worker.

**Standalone** (``python train.py`` in a project folder, or with ``EXPT_FILE``): ``init`` creates a run of its own in
that project (``Store.create_run``: experiment = ``project`` if it is a valid experiment name, else the script's file
stem made one; recipe ``script``; params = the config) and writes it through a ``Tracker`` like a worker does, with
backend ``script``, the script's pid and its start time (the reaper's guard against a reused pid), and a heartbeat.
``expt ls``, ``expt tui``, ``compare``, ``export`` and ``reindex`` treat it like any run. It ends ``completed`` at
``finish()`` or a normal exit, ``failed`` after an uncaught exception (its last line as the error, the traceback in
log.txt) or a non-zero exit code, ``stopped`` after KeyboardInterrupt or SIGTERM (``expt stop``: raised in the script
as ``Stopped``, a KeyboardInterrupt), and ``crashed`` when the reaper finds the process gone (kill -9). Outside a
project it is a one-line error and exit status 1, with nothing written.

Importing this module imports none of torch, numpy, rich, typer, textual or sqlite_utils (an import-linter contract
and a test); standalone ``init`` imports expt's store and tracker.
"""

from __future__ import annotations

import atexit
import os
import re
import signal
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Iterator

import orjson

from expt.core import runfiles
from expt.core.runfiles import RUN_DIR_ENV, RUN_ID_ENV, TRACK_ENV

__all__ = ["init", "log", "finish", "run", "config", "summary", "Run", "Config", "Summary", "Settings", "Error",
           "Stopped", "termlog", "termwarn", "termerror"]

FLUSH_INTERVAL = 0.5
# expt.config.NAME_PATTERN, copied so that importing this module stays light (a test checks they agree)
_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(-[A-Za-z_][A-Za-z0-9_]*)*$")
_MAX_NAME = 200
_RESERVED = runfiles.LINE_KEYS
_DUMPS = orjson.OPT_APPEND_NEWLINE


class Error(Exception):
    """A misuse of the API that W&B also refuses (``log`` before ``init``)."""


class Stopped(KeyboardInterrupt):
    """Raised in a standalone script's main thread on SIGTERM (``expt stop``): the run ends ``stopped``."""


# -- warnings -------------------------------------------------------------------------------------------------

_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        print(f"expt.track: {message}", file=sys.stderr, flush=True)


def _shown(text: object) -> str:
    from expt.formatting import inert  # rich-free: control codes in a user's key or path are shown escaped

    return inert(text)


def termlog(string: str = "", newline: bool = True, repeat: bool = True) -> None:
    print(f"expt.track: {_shown(string)}", file=sys.stderr, end="\n" if newline else "")


def termwarn(string: str, repeat: bool = True) -> None:
    termlog(f"warning: {string}")


def termerror(string: str, repeat: bool = True) -> None:
    termlog(f"error: {string}")


# -- values ---------------------------------------------------------------------------------------------------

def _number(value: Any) -> int | float | None:
    """``value`` as an int or a float, or None when it is not a number (duck typing: ``.item()``, ``__float__``)."""
    kind = type(value)
    if kind is float or kind is int:
        return value
    if kind is bool:
        return int(value)
    if isinstance(value, (str, bytes, Mapping)):
        return None
    item = getattr(value, "item", None)
    if callable(item):  # numpy numbers and 0-d arrays, one-element tensors (of any device)
        try:
            value = item()
        except Exception:
            return None
        kind = type(value)
        if kind is bool:
            return int(value)
        return value if kind is float or kind is int else None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return int(value) if isinstance(value, int) else float(value)
    if hasattr(kind, "__float__") and not hasattr(kind, "__array__"):
        try:
            return float(value)
        except (TypeError, ValueError, OverflowError):
            return None
    return None


def _plain(value: Any, depth: int = 0) -> Any:
    """A config or summary value as JSON and TOML can hold it: numbers, strings, booleans, None, lists, dicts."""
    if value is None or type(value) in (str, bool, float):
        return value
    if type(value) is int:
        return value if -(1 << 63) <= value < 1 << 63 else float(value)
    if depth < 20:
        if isinstance(value, Mapping):
            return {str(k): _plain(v, depth + 1) for k, v in value.items()}
        if isinstance(value, (list, tuple, set, frozenset)):
            return [_plain(v, depth + 1) for v in value]
    number = _number(value)
    if number is not None:
        return _plain(number)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    tolist = getattr(type(value), "tolist", None)  # a numpy array
    if callable(tolist) and depth < 20:
        return _plain(tolist(value), depth + 1)
    return str(value)


def _config_dict(data: Any, include: Any = None, exclude: Any = None) -> dict[str, Any]:
    """What W&B takes as a config: a mapping, or an object with a ``__dict__`` (argparse.Namespace)."""
    if data is None:
        return {}
    if isinstance(data, Config):
        data = data.as_dict()
    elif isinstance(data, str):
        _warn_once("config-file", "a config file name is not supported (pass a dict); ignored")
        return {}
    elif not isinstance(data, Mapping):
        if not hasattr(data, "__dict__"):
            raise TypeError("config must be a dict or have a __dict__ attribute")
        data = vars(data)
    values = {str(k): _plain(v) for k, v in data.items()}
    if include:
        values = {k: v for k, v in values.items() if k in include}
    if exclude:
        values = {k: v for k, v in values.items() if k not in exclude}
    return values


def _flatten(data: Mapping, prefix: str, out: dict[str, Any]) -> None:
    for key, value in data.items():
        if type(key) is not str:
            raise TypeError("Key values passed to `log` must be strings.")
        if isinstance(value, Mapping):
            _flatten(value, f"{prefix}{key}.", out)
        else:
            out[prefix + key] = value


# -- where lines go -------------------------------------------------------------------------------------------

class _Sink:
    """What a run writes to: the protocol file (under ``expt run``), a run folder (standalone), or nothing."""

    dir: str | None = None

    def metrics(self, step: int, values: dict[str, Any]) -> None: ...

    def summary(self, values: dict[str, Any]) -> None: ...

    def config(self, values: dict[str, Any]) -> None: ...

    def finish(self, status: str, exit_code: int, error: str | None, details: str | None) -> None: ...


class _ProtocolFile(_Sink):
    """The lines of the module docstring, appended to ``$EXPT_TRACK``."""

    def __init__(self, path: str):
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._buffer = bytearray()
        self._lock = threading.Lock()
        self._last_flush = time.monotonic()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._flush_loop, name="expt-track-flush", daemon=True)
        self._thread.start()

    def _flush_loop(self) -> None:
        while not self._closed.wait(FLUSH_INTERVAL):
            try:
                self.flush()
            except OSError:
                pass  # the main thread meets the same error at its next write

    def flush(self) -> None:
        with self._lock:
            if not self._buffer:
                return
            data, self._buffer = self._buffer, bytearray()
            self._last_flush = time.monotonic()
            runfiles.write_all(self._fd, data)

    def _append(self, record: dict[str, Any], now: bool) -> None:
        line = orjson.dumps(record, option=_DUMPS)
        with self._lock:
            self._buffer += line
        if now or time.monotonic() - self._last_flush >= FLUSH_INTERVAL:
            self.flush()

    def metrics(self, step: int, values: dict[str, Any]) -> None:
        self._append({"kind": "metrics", "step": step, "values": values}, False)

    def summary(self, values: dict[str, Any]) -> None:
        self._append({"kind": "summary", "values": values}, True)

    def config(self, values: dict[str, Any]) -> None:
        self._append({"kind": "config", "values": values}, True)

    def finish(self, status: str, exit_code: int, error: str | None, details: str | None) -> None:
        self._closed.set()
        self._thread.join()
        try:
            self._append({"kind": "finish", "exit_code": exit_code}, True)
        finally:
            os.close(self._fd)


class _RunFolder(_Sink):
    """A standalone run: the run folder written through expt's Tracker, as a worker writes it."""

    def __init__(self, tracker: Any, run_dir: Path):
        self._tracker = tracker
        self.dir = str(run_dir)

    def metrics(self, step: int, values: dict[str, Any]) -> None:
        if not _RESERVED.isdisjoint(values):
            values = {_unreserved(k): v for k, v in values.items()}
        self._tracker.log_metrics(step, **values)

    def summary(self, values: dict[str, Any]) -> None:
        self._tracker.log_summary(**values)

    def config(self, values: dict[str, Any]) -> None:
        self._tracker.log_params(**values)

    def finish(self, status: str, exit_code: int, error: str | None, details: str | None) -> None:
        try:
            if details:
                with open(Path(self.dir) / "log.txt", "a", encoding="utf-8") as log_file:
                    log_file.write(details)
            fields = {"error": error} if error else {}
            self._tracker.log_status(status, **fields)
        finally:
            self._tracker.close()


def _unreserved(key: str) -> str:
    if key not in _RESERVED:
        return key
    _warn_once(f"reserved:{key}", f"a metric named {key!r} is recorded as '{key}_' ('{key}' is a key of expt's "
                                  "metric lines)")
    return f"{key}_"


class _Nowhere(_Sink):
    """``mode="disabled"``: a run that records nothing."""

    @property
    def dir(self) -> str:  # type: ignore[override]
        import tempfile

        path = getattr(self, "_dir", None)
        if path is None:
            path = self._dir = tempfile.mkdtemp(prefix="expt-track-disabled-")
        return path


# -- config and summary ---------------------------------------------------------------------------------------

class Config:
    """``run.config``: attribute and item access; every change is recorded (next to the run's params)."""

    def __init__(self, items: dict[str, Any], on_change: Callable[[dict[str, Any]], None]):
        object.__setattr__(self, "_items", dict(items))
        object.__setattr__(self, "_on_change", on_change)

    def update(self, d: Any = None, allow_val_change: bool | None = None, **kwargs: Any) -> None:
        values = {**_config_dict(d), **_config_dict(kwargs)}
        self._items.update(values)
        if values:
            self._on_change(values)

    def setdefaults(self, d: Any) -> None:
        values = {k: v for k, v in _config_dict(d).items() if k not in self._items}
        self.update(values)

    def __setitem__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def __setattr__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        try:
            return self._items[key]
        except KeyError:
            raise AttributeError(f"config has no key {key!r}") from None

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str, default: Any = None) -> Any:
        return self._items.get(key, default)

    def keys(self) -> list[str]:
        return list(self._items)

    def items(self) -> list[tuple[str, Any]]:
        return list(self._items.items())

    def values(self) -> list[Any]:
        return list(self._items.values())

    def as_dict(self) -> dict[str, Any]:
        return dict(self._items)

    def __repr__(self) -> str:
        return repr(self._items)


class Summary:
    """``run.summary``: what the script sets is recorded at once; reading falls back on each metric's last value."""

    def __init__(self, last: dict[str, Any], on_change: Callable[[dict[str, Any]], None]):
        object.__setattr__(self, "_set", {})
        object.__setattr__(self, "_last", last)
        object.__setattr__(self, "_on_change", on_change)

    def update(self, d: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        values: dict[str, Any] = {}
        for key, value in {**(d or {}), **kwargs}.items():
            plain = _summary_value(str(key), value)
            if plain is not _SKIP:
                values[str(key)] = plain
        self._set.update(values)
        if values:
            self._on_change(values)

    def __setitem__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def __setattr__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def _as_dict(self) -> dict[str, Any]:
        return {**self._last, **self._set}

    def __getitem__(self, key: str) -> Any:
        return self._as_dict()[key]

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"summary has no key {key!r}") from None

    def __contains__(self, key: object) -> bool:
        return key in self._set or key in self._last

    def __iter__(self) -> Iterator[str]:
        return iter(self._as_dict())

    def __len__(self) -> int:
        return len(self._as_dict())

    def get(self, key: str, default: Any = None) -> Any:
        return self._as_dict().get(key, default)

    def keys(self) -> list[str]:
        return list(self._as_dict())

    def items(self) -> list[tuple[str, Any]]:
        return list(self._as_dict().items())

    def values(self) -> list[Any]:
        return list(self._as_dict().values())

    def __repr__(self) -> str:
        return repr(self._as_dict())


_SKIP = object()


def _summary_value(key: str, value: Any) -> Any:
    if value is None or isinstance(value, (str, bool, Mapping, list, tuple)):
        return _plain(value)
    number = _number(value)
    if number is not None:
        return number
    if callable(getattr(type(value), "tolist", None)):  # a numpy array
        return _plain(value)
    _warn_once(f"summary:{key}", f"summary[{_shown(repr(key))}]: {_shown(type(value).__name__)} is not recorded "
                                 "(numbers, strings, lists and dicts are)")
    return _SKIP


class _PreInit:
    """``config`` and ``summary`` before ``init`` (and after ``finish``): any use is an error, as in W&B."""

    def __init__(self, name: str):
        object.__setattr__(self, "_name", name)

    def _refuse(self, what: str) -> Error:
        return Error(f"call expt.track.init() before using expt.track.{self._name}{what}")

    def __getitem__(self, key: str) -> Any:
        raise self._refuse(f"[{key!r}]")

    def __setitem__(self, key: str, value: Any) -> None:
        raise self._refuse(f"[{key!r}]")

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        raise self._refuse(f".{key}")

    def __setattr__(self, key: str, value: Any) -> None:
        raise self._refuse(f".{key}")


# -- the run --------------------------------------------------------------------------------------------------

class Run:
    """What ``init`` returns (W&B's ``Run``): ``log``, ``config``, ``summary``, ``finish``, ``id``, ``dir``."""

    def __init__(self, sink: _Sink, run_id: str | None, name: str | None, project: str | None,
                 config_values: dict[str, Any]):
        self._sink = sink
        self._pid = os.getpid()
        self._step = 0
        self._last: dict[str, Any] = {}
        self._finished = False
        self._skipped: set[str] = set()
        self.id = run_id
        self.name = name or run_id
        self.project = project
        self.entity = None
        self.url = None
        self.config = Config(config_values, sink.config)
        self.summary = Summary(self._last, sink.summary)

    @property
    def dir(self) -> str | None:
        return self._sink.dir

    @property
    def path(self) -> str:
        return f"{self.project}/{self.id}"

    @property
    def step(self) -> int:
        return self._step

    def log(self, data: Mapping[str, Any], step: int | None = None, commit: bool | None = None) -> None:
        """Record numbers at ``step`` (default: W&B's counter, one step per call unless ``commit=False``)."""
        if self._finished:
            _warn_once("log-finished", f"run {_shown(self.id)} is finished: log() ignored")
            return
        if type(data) is not dict and not isinstance(data, Mapping):
            raise TypeError("log must be passed a dictionary")
        if step is not None:
            step = int(step)
            if step < self._step:
                if "\0step" not in self._skipped:  # once a run
                    self._skipped.add("\0step")
                    print(f"expt.track: log(step={step}) is below the current step {self._step}: ignored, as every "
                          "such call will be (steps must increase, as in W&B)", file=sys.stderr, flush=True)
                return
            self._step = step
        values = data
        for key, value in data.items():
            kind = type(value)
            if type(key) is not str or (kind is not float and kind is not int):
                values = self._numbers(data)
                break
        if values:
            self._last.update(values)
            self._sink.metrics(self._step, values)
        if commit or (step is None and commit is None):
            self._step += 1

    def _numbers(self, data: Mapping[str, Any]) -> dict[str, Any]:
        flat: dict[str, Any] = {}
        _flatten(data, "", flat)
        values = {}
        for key, value in flat.items():
            number = _number(value)
            if number is not None:
                values[key] = number
            elif key not in self._skipped:
                self._skipped.add(key)
                print(f"expt.track: log: {_shown(repr(key))}: {_shown(type(value).__name__)} is not a number: not "
                      "recorded (expt.track records numbers)", file=sys.stderr, flush=True)
        return values

    def finish(self, exit_code: int | None = None, quiet: bool | None = None) -> None:
        """End the run: ``completed`` (``failed`` with a non-zero ``exit_code``)."""
        self._end(code=exit_code, by_finish=True)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        self._end(exc=exc)
        return False

    def _end(self, exc: BaseException | None = None, code: Any = None, by_finish: bool = False) -> None:
        """Record the end once: from finish(), the with block, or the interpreter's exit."""
        if self._finished or os.getpid() != self._pid:
            return
        self._finished = True
        if isinstance(exc, SystemExit):  # sys.exit() inside `with wandb.init() as run:`
            exc, code = None, exc.code
        error = details = None
        if _state.stop_signal or isinstance(exc, KeyboardInterrupt):
            status, exit_code = "stopped", 130
        elif exc is not None:
            from expt.core.worker import explain

            status, exit_code, error = "failed", 1, explain(exc)
            details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        elif code is None or code == 0:
            status, exit_code = "completed", 0
        elif isinstance(code, int):
            said = f"finish(exit_code={code})" if by_finish else f"the script ended with exit code {code}"
            status, exit_code, error = "failed", code, said
        else:  # sys.exit("a message")
            lines = str(code).strip().splitlines()
            status, exit_code, error = "failed", 1, lines[0][:400] if lines else None
        try:
            last = {k: v for k, v in self._last.items() if k not in self.summary._set}
            if last:
                self._sink.summary(last)
        finally:
            try:
                self._sink.finish(status, exit_code, error, details)
            finally:
                if _module.run is self:
                    _unset_globals()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return _unsupported(f"run.{name}")

    def __repr__(self) -> str:
        return f"<expt.track.Run {self.id}>"


# -- the module's state ---------------------------------------------------------------------------------------

class _State:
    stop_signal = False
    exit_code: Any = None
    hooks_installed = False


_state = _State()
_module = sys.modules[__name__]
run: Run | None = None
config: Any = _PreInit("config")
summary: Any = _PreInit("summary")


def _set_globals(new: Run) -> None:
    global run, config, summary
    run, config, summary = new, new.config, new.summary


def _unset_globals() -> None:
    global run, config, summary
    run, config, summary = None, _PreInit("config"), _PreInit("summary")


def _install_exit_hooks() -> None:
    """Once per process: atexit ends the run (the outcome from sys.last_value and a recorded sys.exit code)."""
    if _state.hooks_installed:
        return
    _state.hooks_installed = True
    original_exit = sys.exit

    def exit(code: Any = None) -> None:  # W&B records sys.exit's code the same way
        _state.exit_code = code
        original_exit(code)

    sys.exit = exit
    atexit.register(_at_exit)


def _at_exit() -> None:
    current = run
    if current is None:
        return
    exc = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)  # an uncaught exception's
    try:
        current._end(exc=exc, code=_state.exit_code)
    except OSError as error:
        print(f"expt.track: could not record the end of run {_shown(current.id)}: {error}", file=sys.stderr)


def _on_sigterm(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    _state.stop_signal = True
    raise Stopped("SIGTERM: the run was asked to stop (expt stop)")


def _catch_sigterm() -> None:
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)


# -- init, log, finish ----------------------------------------------------------------------------------------

def init(entity: str | None = None, project: str | None = None, dir: str | None = None, id: str | None = None,
         name: str | None = None, notes: str | None = None, tags: Any = None, config: Any = None,
         config_exclude_keys: Any = None, config_include_keys: Any = None, *, mode: str | None = None,
         reinit: Any = None, **ignored: Any) -> Run:
    """Start a run (see the module docstring for where it is recorded); W&B's other arguments are accepted."""
    if run is not None:
        if reinit not in (True, "finish_previous", "create_new"):
            return run  # W&B's default in a script: the run already started
        run.finish()
    config_values = _config_dict(config, config_include_keys, config_exclude_keys)
    _state.stop_signal = False
    track = os.environ.get(TRACK_ENV)
    if track:
        run_dir = os.environ.get(RUN_DIR_ENV) or os.path.dirname(track)
        sink: _Sink = _ProtocolFile(track)
        sink.dir = run_dir
        new = Run(sink, os.environ.get(RUN_ID_ENV) or os.path.basename(run_dir), name, project, config_values)
        if config_values:
            sink.config(config_values)
    elif (mode or os.environ.get("WANDB_MODE")) == "disabled":
        new = Run(_Nowhere(), "disabled", name, project, config_values)
    else:
        new = _standalone(project, name or notes or "", config_values)
        _catch_sigterm()
    _install_exit_hooks()
    _set_globals(new)
    return new


def _standalone(project: str | None, description: str, config_values: dict[str, Any]) -> Run:
    from expt.errors import ExptError
    from expt.project import CONFIG_NAME, DB_NAME, display_path, find_project

    where = find_project()
    if not (where.config_path.is_file() or where.db_path.is_file()):
        print(f"expt.track: no expt project here (no {CONFIG_NAME} or {DB_NAME} in {_shown(where.root)}); run inside "
              "a project folder or set EXPT_FILE", file=sys.stderr, flush=True)
        raise SystemExit(1)
    experiment = _experiment_name(project, sys.argv[0] if sys.argv else "")
    try:
        tracker, created = _create_run(where, experiment, description, config_values)
    except ExptError as error:
        print(f"expt.track: {_shown(error)}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    print(f"expt.track: run {created.id} in {_shown(display_path(created.path))} (expt ls, expt show {created.id})",
          file=sys.stderr, flush=True)
    return Run(_RunFolder(tracker, created.path), created.id, description or None, created.experiment,
               config_values)


def _create_run(where: Any, experiment: str, description: str, params: dict[str, Any]) -> tuple[Any, Any]:
    """The run's folder and row, its ``launch`` and ``running`` events, and the Tracker that writes the rest."""
    from expt.core import runfiles
    from expt.core.scheduler import process_start
    from expt.core.tracking import Tracker
    from expt.store import Store, this_host

    script = sys.argv[0] if sys.argv and sys.argv[0] not in ("", "-c", "-m") else ""
    meta = {"script": str(Path(script).absolute()), "argv": list(sys.argv[1:])} if script else {}
    pid, host = os.getpid(), this_host()
    with Store(where.db_path) as store:
        created = store.create_run(where.runs_dir, experiment=experiment, recipe=runfiles.SCRIPT_RECIPE,
                                   params=params, varying={}, description=description, status="starting", meta=meta)
        started = process_start(pid)
        launch = {"pid": pid, "host": host, "backend": runfiles.SCRIPT_BACKEND}
        if started is not None:
            launch["job_id"] = str(started)
        runfiles.append_event(created.path, "launch", **launch)
        with open(created.path / runfiles.LOG, "a", encoding="utf-8") as log_file:
            log_file.write(f"expt.track: {script or 'python'} (pid {pid} on {host}) records this run; its output "
                           "goes to its own terminal\n")
        tracker = Tracker(created.path)
        tracker.start_heartbeat()
        tracker.log_status("running", pid=pid, host=host)
        store.ingest_run(created)
    return tracker, created


def _experiment_name(project: str | None, argv0: str) -> str:
    """``project`` if it is a valid experiment name, else the script's file stem made one (``script`` at worst)."""
    if isinstance(project, str) and _NAME_PATTERN.match(project) and len(project) <= _MAX_NAME:
        return project
    stem = Path(argv0).stem if argv0 not in ("", "-c", "-m") else ""
    parts = [re.sub(r"[^A-Za-z0-9_]+", "_", part) for part in stem.split("-")]
    parts = [part for part in parts if part.strip("_")]
    if not parts:
        return "script"
    if not re.match(r"[A-Za-z]", parts[0]):
        parts[0] = "script_" + parts[0].lstrip("_")
    parts = [parts[0]] + [f"_{part}" if part[0].isdigit() else part for part in parts[1:]]
    name = "-".join(parts)[:_MAX_NAME].rstrip("-")
    return name if _NAME_PATTERN.match(name) else "script"


def log(data: Mapping[str, Any], step: int | None = None, commit: bool | None = None) -> None:
    """``run.log`` of the current run."""
    if run is None:
        raise Error("call expt.track.init() before expt.track.log()")
    run.log(data, step, commit)


def finish(exit_code: int | None = None, quiet: bool | None = None) -> None:
    """Finish the current run (nothing to do without one)."""
    if run is not None:
        run.finish(exit_code)


class Settings:
    """W&B's ``Settings``: accepted (``init(settings=...)``) and ignored."""

    def __init__(self, **kwargs: Any):
        self.__dict__.update(kwargs)


# -- the rest of W&B's names: warn once, do nothing -----------------------------------------------------------

class _UnsupportedType(type):
    def __getattr__(cls, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        child = _unsupported(f"{cls._expt_name}.{name}")
        setattr(cls, name, child)
        return child


class _Unsupported(Exception, metaclass=_UnsupportedType):
    """A W&B name expt.track does not support: a class (usable in ``isinstance`` and ``except``) whose call warns
    once on stderr and returns an object on which every method does nothing."""

    _expt_name = "?"

    def __init__(self, *args: Any, **kwargs: Any):
        _warn_once(self._expt_name, f"{self._expt_name}() is not supported (expt.track records numbers, the summary "
                                    "and the config); ignored")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return _do_nothing

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> bool:
        return False

    def __repr__(self) -> str:
        return f"<expt.track: {self._expt_name}, not supported>"

    __str__ = __repr__


def _do_nothing(*args: Any, **kwargs: Any) -> None:
    return None


def _unsupported(name: str) -> type:
    return _UnsupportedType(name.rsplit(".", 1)[-1], (_Unsupported,), {"_expt_name": name, "__module__": __name__})


def __getattr__(name: str) -> Any:
    if name.startswith("_"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = _unsupported(name)
    globals()[name] = value
    return value
