"""Commands about the project itself: experiments, recipes, reindex, rm."""

from typing import Annotated, Optional

import orjson
import typer
from rich.table import Table
from rich.text import Text

from expt.cli import app, console, project
from expt.cli.render import inert, number
from expt.errors import UsageError
from expt.store import open_store


@app.command()
def experiments(json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """The experiments of experiments.toml: recipe, description, number of runs."""
    from expt.config import load_config

    config = load_config(project(need_config=True).config_path)
    rows = []
    for name, experiment in config.experiments.items():
        expansion = experiment.expand()
        rows.append({"name": name, "recipe": experiment.recipe, "description": experiment.description,
                     "runs": len(expansion.points), "skipped": len(expansion.skipped),
                     "sweep": experiment.sweep, "repeat": experiment.repeat})
    if json_output:
        typer.echo(orjson.dumps(rows).decode())
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column, justify in (("experiment", "left"), ("recipe", "left"), ("runs", "right"), ("description", "left")):
        table.add_column(column, justify=justify, overflow="fold")
    for row in rows:
        runs = str(row["runs"]) + (f" (+{row['skipped']} skipped)" if row["skipped"] else "")
        table.add_row(inert(row["name"]), row["recipe"], runs, inert(row["description"]))
    console.print(table)


@app.command()
def recipes(name: Annotated[Optional[str], typer.Argument(help="A recipe to describe in full.")] = None) -> None:
    """The recipes and their parameters: type, default, allowed values, meaning."""
    from expt.core.recipes import all_recipes, get_recipe

    if name is None:
        table = Table(box=None, header_style="bold", pad_edge=False)
        for column in ("recipe", "ranks by", "parameters", "description"):
            table.add_column(column, overflow="fold")
        for recipe in all_recipes().values():
            table.add_row(recipe.name, f"{recipe.goal} {recipe.metric}", str(len(recipe.params.names())),
                          recipe.description)
        console.print(table)
        console.print(Text("`expt recipes NAME` lists a recipe's parameters", style="dim"))
        return
    recipe = get_recipe(name)
    console.print(Text.assemble((recipe.name, "bold"),
                                f": {recipe.description} (ranks runs by {recipe.goal} {recipe.metric})"))
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("parameter", "type", "default", "allowed", "meaning"):
        table.add_column(column, overflow="fold")
    for param in recipe.params:
        allowed = ", ".join(map(str, param.choices)) if param.choices else _range(param.min, param.max)
        table.add_row(param.name, Text(param.type_name()), number(param.default), allowed, param.help)
    console.print(table)


def _range(low: float | None, high: float | None) -> str:
    if low is None and high is None:
        return ""
    return f"{'' if low is None else f'{low:g}'}..{'' if high is None else f'{high:g}'}"


@app.command()
def reindex() -> None:
    """Rebuild runs.db from the run folders (runs/*/config.toml and metrics.jsonl)."""
    proj = project()
    with open_store(proj.db_path) as store:
        count = store.reindex(proj.runs_dir)
    console.print(f"reindexed {count} runs from {proj.runs_dir}")


@app.command()
def rm(
    refs: Annotated[list[str], typer.Argument(help="Run ids, prefixes or experiment names.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete runs: their rows in runs.db and their folders (asks first)."""
    with open_store(project().db_path) as store:
        runs = store.resolve(refs)
        active = [r.id for r in runs if r.active]
        if active:
            raise UsageError(f"{', '.join(active)} still queued or running: `expt stop` them first")
        console.print(f"{len(runs)} run{'s' * (len(runs) != 1)}: {', '.join(r.id for r in runs)}")
        if not yes and not typer.confirm("delete them and their folders?", default=False):
            raise typer.Exit(1)
        store.delete(runs)
        console.print(f"deleted {len(runs)} runs")
