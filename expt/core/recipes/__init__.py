"""The recipe registry: a recipe is a function registered by name with its parameters.

Importing a recipe module must stay cheap (no torch at module level): the CLI and
the TUI import them to validate experiments.toml and document parameters; the
worker calls ``Recipe.run`` which imports the heavy modules.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from expt.errors import UsageError
from expt.params import SYS_INTERVAL, ParamSet
from expt.project import display_path

if TYPE_CHECKING:
    from expt.core.tracking import Tracker

RunFn = Callable[[dict[str, Any], "Tracker"], None]
CheckFn = Callable[[dict[str, Any]], "str | None"]
# a problem of a point: a message about the experiment, or (key, message) about one of its keys
Problem = "str | tuple[str, str]"


@dataclass(frozen=True)
class Recipe:
    """A registered recipe.

    ``metric`` is the per-epoch metric that ranks runs (``goal`` max or min); the
    recipe records its best value in the summary as ``best_<metric>``.
    ``skip`` returns a reason when a sweep point should not become a run.
    ``validate`` returns problems that involve several params together (checked when
    experiments.toml is read); ``preflight`` returns problems with what must exist on
    disk (checked before a run is queued). ``columns`` are summary keys that ``expt compare``
    shows first (the recipe's results table); ``sort`` is the summary key it orders runs by
    (best first) when no ``--sort`` is given. ``open_params``: every key the recipe does not declare is a
    parameter too (the ``command`` recipe's). ``resumable`` returns why a run cannot be resumed, or None;
    ``ranking`` the (metric, goal) of a run from its params, where the experiment chooses them.
    """

    name: str
    params: ParamSet
    run: RunFn
    description: str
    metric: str
    goal: str = "max"
    skip: CheckFn | None = None
    validate: Callable[[dict[str, Any]], list[Problem]] | None = None
    preflight: Callable[[dict[str, Any]], list[str]] | None = None
    columns: tuple[str, ...] = ()
    sort: str | None = None
    open_params: bool = False
    resumable: CheckFn | None = None
    ranking: Callable[[dict[str, Any]], tuple[str, str]] | None = None

    def metric_and_goal(self, params: dict[str, Any]) -> tuple[str, str]:
        return self.ranking(params) if self.ranking else (self.metric, self.goal)

    @property
    def summary_metric(self) -> str:
        return f"best_{self.metric}"


_REGISTRY: dict[str, Recipe] = {}


def recipe(name: str, params: ParamSet, *, metric: str, goal: str = "max", skip: CheckFn | None = None,
           validate: Callable[[dict[str, Any]], list[Problem]] | None = None,
           preflight: Callable[[dict[str, Any]], list[str]] | None = None, columns: tuple[str, ...] = (),
           sort: str | None = None, open_params: bool = False, resumable: CheckFn | None = None,
           ranking: Callable[[dict[str, Any]], tuple[str, str]] | None = None) -> Callable[[RunFn], RunFn]:
    """Register ``fn`` as the recipe ``name``; its docstring's first line is the description."""

    if SYS_INTERVAL.name not in params:
        params = ParamSet(params.params + (SYS_INTERVAL,))

    def register(fn: RunFn) -> RunFn:
        description = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else name
        _REGISTRY[name] = Recipe(name, params, fn, description, metric, goal, skip, validate, preflight,
                                 tuple(columns), sort, open_params, resumable, ranking)
        return fn

    return register


def _load_all() -> None:
    """Import every module of this package: a new recipe is one new file."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def all_recipes() -> dict[str, Recipe]:
    _load_all()
    return dict(sorted(_REGISTRY.items()))


def get_recipe(name: str) -> Recipe:
    recipes = all_recipes()
    if name not in recipes:
        raise UsageError(unknown_recipe_message(name, list(recipes)))
    return recipes[name]


def unknown_recipe_message(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown recipe {name!r}{hint}; recipes: {', '.join(known)}"


DATA_LAYOUTS = {
    "imagefolder": "class sub-folders of images, or train/ and val/ folders of them",
    "oxford_pets": "oxford-iiit-pet/images and oxford-iiit-pet/annotations; or download = true on a machine "
                   "with a network",
    "flowers102": "flowers-102/jpg, imagelabels.mat and setid.mat; or download = true on a machine with a network",
    "cub200": "the CUB_200_2011 release: images.txt, image_class_labels.txt, classes.txt and images/",
}


def check_data(p: dict[str, Any]) -> list[str]:
    """The data set's files are where ``data_dir`` says (digits needs nothing)."""
    dataset = p.get("dataset", "digits")
    if dataset == "digits":
        return []
    data_dir = p.get("data_dir") or ""
    if dataset in ("oxford_pets", "flowers102") and p.get("download"):
        return []
    if not data_dir:
        return [f"dataset {dataset!r} needs data_dir = \"PATH\" (the folder that holds it)"]
    path = Path(data_dir).expanduser()
    shown, expected = display_path(path), f"; expected {DATA_LAYOUTS[dataset]}" if dataset in DATA_LAYOUTS else ""
    if not path.is_dir():
        return [f"data_dir {shown!r}: no such folder (dataset {dataset!r}{expected})"]
    if not any(path.iterdir()):
        return [f"data_dir {shown!r} is empty (dataset {dataset!r}{expected})"]
    return []
