"""Typed parameter declarations: one list per recipe validates, fills defaults and documents.

A recipe declares ``Param`` objects; ``config.py`` checks every value in experiments.toml
against them and ``expt recipes`` prints them. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

_TYPE_NAMES = {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "table"}
INT64 = (-2**63, 2**63 - 1)  # runs.db and orjson hold no wider integers
# Seeds (with repeat = N, seed + N - 1 too) fit what SQLite holds and torch.manual_seed takes (-2**63 .. 2**64 - 1);
# numpy's default_rng takes any integer >= 0, its legacy global generator gets seed % 2**32 (seed_everything).
SEED_MAX = 2**63 - 1


@dataclass(frozen=True)
class Param:
    """One recipe parameter: its type(s), default, allowed values or range, and help text."""

    name: str
    type: type | tuple[type, ...]
    default: Any
    help: str
    choices: Sequence[Any] | None = None
    min: float | None = None
    max: float | None = None
    item_type: type | None = None  # element type when ``type`` is list
    validator: Callable[[Any], str | None] | None = None  # extra check, e.g. a timm model name
    path: bool = False  # a file or folder: relative to experiments.toml's folder (config.py resolves it)

    @property
    def types(self) -> tuple[type, ...]:
        return self.type if isinstance(self.type, tuple) else (self.type,)

    def type_name(self) -> str:
        names = [_TYPE_NAMES.get(t, t.__name__) for t in self.types]
        if self.item_type is not None:
            names = [f"list[{_TYPE_NAMES[self.item_type]}]" if n == "list" else n for n in names]
        return " | ".join(names)

    def check(self, value: Any) -> str | None:
        """Return why ``value`` is not acceptable, or None when it is."""
        if value is None and self.default is None:
            return None
        if not _is_instance(value, self.types):
            return f"expected {self.type_name()}, got {_describe(value)}"
        if isinstance(value, list) and self.item_type is not None:
            for item in value:
                if not _is_instance(item, (self.item_type,)):
                    return f"expected {self.type_name()}, got an item {_describe(item)}"
        nested = list(_numbers(value))
        if (odd := next((n for n in nested if isinstance(n, float) and not math.isfinite(n)), None)) is not None:
            return f"{odd} is not a finite number"
        if self.choices is not None and isinstance(value, str) and value not in self.choices:
            close = difflib.get_close_matches(value, [str(c) for c in self.choices], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            return f"{value!r} is not one of {', '.join(map(str, self.choices))}{hint}"
        numbers = value if isinstance(value, list) else [value]
        for number in numbers:
            if isinstance(number, (int, float)) and not isinstance(number, bool):
                if self.min is not None and number < self.min:
                    return f"{number} is below the minimum {_bound(self.min)}"
                if self.max is not None and number > self.max:
                    return f"{number} is above the maximum {_bound(self.max)}"
        wide = next((n for n in nested if isinstance(n, int) and not INT64[0] <= n <= INT64[1]), None)
        if wide is not None:
            return f"{wide} does not fit in a 64-bit integer ({INT64[0]} .. {INT64[1]})"
        if self.validator is not None:
            return self.validator(value)
        return None


def free_param(name: str) -> Param:
    """A parameter that a recipe with open parameters (the ``command`` recipe) does not declare: any TOML
    value but a table or a date, finite numbers only."""
    return Param(name, (bool, int, float, str, list), None, "a parameter of the command")


def _is_instance(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in types
    if isinstance(value, int) and float in types:
        return True
    return isinstance(value, types)


def _numbers(value: Any) -> Iterator[int | float]:
    """The numbers in ``value``, its lists and its tables."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value
    elif isinstance(value, (list, dict)):
        for item in value.values() if isinstance(value, dict) else value:
            yield from _numbers(item)


def _bound(number: float) -> str:
    return str(number) if isinstance(number, int) else f"{number:g}"


def _describe(value: Any) -> str:
    kind = _TYPE_NAMES.get(type(value), type(value).__name__)
    text = repr(value)
    return f"{kind} {text[:40]}"


@dataclass(frozen=True)
class ParamSet:
    """An ordered collection of params with lookup and did-you-mean."""

    params: tuple[Param, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        names = [p.name for p in self.params]
        if len(names) != len(set(names)):
            raise ValueError(f"duplicate parameter names: {names}")

    def __iter__(self):
        return iter(self.params)

    def __contains__(self, name: object) -> bool:
        return any(p.name == name for p in self.params)

    def get(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def suggest(self, name: str) -> str | None:
        close = difflib.get_close_matches(name, self.names(), n=1, cutoff=0.6)
        return close[0] if close else None


def params(*items: Param | Sequence[Param], drop: Sequence[str] = (), **overrides: Any) -> ParamSet:
    """Build a ParamSet from params and lists of params.

    ``drop`` removes shared params a recipe does not use; ``overrides`` changes
    defaults by name (``params(COMMON, epochs=15)``), keeping one declaration per name.
    """
    flat: list[Param] = []
    for item in items:
        flat.extend([item] if isinstance(item, Param) else item)
    by_name = {p.name: p for p in flat if p.name not in drop}
    for name, default in overrides.items():
        if name not in by_name:
            raise ValueError(f"override for unknown parameter {name!r}")
        old = by_name[name]
        by_name[name] = dataclasses.replace(old, default=default)
    return ParamSet(tuple(by_name.values()))


# Every experiment accepts it, whatever its recipe (the registry adds it).
SYS_INTERVAL = Param("sys_interval", int, 10, "seconds between samples of the run's CPU, memory, I/O and GPU "
                     "(sys/ metrics, core/sysmon.py); 0 turns them off", min=0, max=3600)

# Shared by the recipes; a recipe may drop or re-default any of them.
TRAINING = (
    Param("seed", int, 0, "random seed: data sampling, initialisation, augmentation (0 to 2**63 - 1; with "
          "repeat = N the runs take seed .. seed + N - 1)", min=0, max=SEED_MAX),
    Param("epochs", int, 10, "training epochs", min=0, max=100_000),
    Param("batch_size", int, 32, "images per training step", min=1, max=65_536),
    Param("lr", float, 0.01, "peak learning rate", min=0.0),
    Param("opt", str, "sgd", "optimizer, through timm's create_optimizer_v2",
          choices=("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "lamb", "lion", "adan")),
    Param("momentum", float, 0.9, "momentum for sgd-like optimizers", min=0.0, max=1.0),
    Param("weight_decay", float, 0.0, "weight decay", min=0.0),
    Param("sched", str, "cosine", "learning-rate schedule (timm's scheduler factory)", choices=("cosine", "step", "none")),
    Param("warmup_epochs", int, 0, "linear warm-up epochs", min=0),
    Param("decay_epochs", float, 30.0, "epochs between decays for sched = 'step'", min=0.0),
    Param("img_size", int, 64, "input resolution in pixels", min=8, max=4096),
    Param("eval_batch_size", int, 256, "images per evaluation step", min=1),
    Param("workers", int, 0, "data-loading processes (0: in the worker process)", min=0, max=64),
    Param("amp", bool, True, "mixed precision on CUDA (ignored on CPU)"),
    Param("channels_last", bool, True, "channels-last memory format (faster convolutions on CPU and GPU)"),
    Param("device", str, "auto", "'auto' (the GPU the scheduler assigned, else CPU), 'cpu' or 'cuda'",
          choices=("auto", "cpu", "cuda")),
)

def data_params(*datasets: str) -> tuple[Param, ...]:
    """``dataset`` (the first is the default) and ``data_dir``, for a recipe's own data sets."""
    return (
        Param("dataset", str, datasets[0], "data set (digits: offline, bundled with scikit-learn)", choices=datasets),
        Param("data_dir", str, "", "folder of the data set on disk (all but digits); relative to "
              "experiments.toml's folder", path=True),
        Param("test_fraction", float, 0.2, "share of each class held out for testing where the data set "
              "has no split of its own", min=0.0, max=0.9),
        Param("split_seed", int, 0, "seed of that split (fixed, so every run tests on the same images)", min=0,
              max=SEED_MAX),
    )
