"""``expt report EXPERIMENT...``: a Markdown page with PNG figures (expt.report builds it)."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from expt.cli import app, console, project
from expt.cli.browse import TagOption, WhereOption, refresh, run_query
from expt.store import open_store


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("expt")
    except metadata.PackageNotFoundError:
        return "unknown"


@app.command()
def report(
    experiments: Annotated[list[str], typer.Argument(metavar="EXPERIMENT...", help="Experiments to report on "
                           "(several: one page over all their runs).")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for README.md and the PNGs "
                   "(default: reports/<EXPERIMENT>[+<EXPERIMENT2>...] beside experiments.toml).",
                   metavar="DIR")] = None,
    where: WhereOption = None,
    tag: TagOption = None,
) -> None:
    """Write a report: what ran, the pivot tables, curves, the recipes' tables, few-shot samples."""
    from expt import report as reporting

    query = run_query(where, tag)  # the empty Query keeps every run
    here = project()
    folder = out if out is not None else reporting.default_out(here.root, experiments)
    with open_store(here.db_path) as store:
        refresh(store)
        path = reporting.write(store, experiments, folder, _version(), query)
    console.print(str(path), soft_wrap=True)  # one line, whatever the width: a path to copy
