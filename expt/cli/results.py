"""Result tables: `expt table`, a pivot of an experiment's runs (read-only: never imports torch)."""

import re
import sys
from typing import Annotated, Optional

import orjson
import typer
from rich.table import Table
from rich.text import Text

from expt import pivot
from expt.cli import app, console, project
from expt.cli.browse import TagOption, WhereOption, refresh, select_runs
from expt.cli.render import inert, plain
from expt.errors import UsageError
from expt.store import open_store

FORMATS = ("rich", "md", "latex", "csv", "json")
# what orjson leaves as it is but a terminal obeys (C1 controls, bidi overrides): written as JSON's \u escapes
_UNSAFE_IN_JSON = re.compile("[\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


@app.command("table")
def table(
    refs: Annotated[list[str], typer.Argument(metavar="EXPERIMENT...", help="Experiments (all their runs), run "
                    "ids or unique prefixes.")],
    rows: Annotated[Optional[str], typer.Option("--rows", "-r", help="Keys whose values make the rows, comma-"
                    "separated (params, experiment, recipe; default: the swept keys).", metavar="K1,K2")] = None,
    cols: Annotated[Optional[str], typer.Option("--cols", "-c", help="Keys whose values make the columns "
                    "(default: the last swept key).", metavar="K")] = None,
    metric: Annotated[Optional[list[str]], typer.Option("--metric", "-m", help="Summary key in the cells "
                      "(repeatable: one table each; default: best_<recipe metric>).")] = None,
    fmt: Annotated[str, typer.Option("--format", "-F", help="rich (the terminal), md (Markdown), latex "
                   "(booktabs), csv (one line per cell) or json.")] = "rich",
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON (same as -F json): per cell mean, std, "
                           "ci95, n, run ids, pending.")] = False,
    where: WhereOption = None,
    tag: TagOption = None,
) -> None:
    """A pivot table of runs: one cell per (row value, column value), mean ± 95% CI and n over the runs in it
    (seeds); the best cell of each column marked."""
    fmt = "json" if json_output else fmt
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if (rows is not None and not pivot.split_keys(rows)) or (cols is not None and not pivot.split_keys(cols)):
        raise UsageError("--rows/--cols: give key names, comma-separated (e.g. --rows mode,shots)")
    with open_store(project().db_path) as store:
        refresh(store)
        runs = select_runs(store, refs, where, tag)
    if not runs:
        filtered = " match --where/--tag" if where or tag else " yet (`expt run NAME` starts them)"
        raise UsageError(f"{', '.join(refs)}: no runs{filtered}")
    if rows is None and cols is not None:  # only --cols: the other swept keys are the rows
        default_rows, default_cols = pivot.default_axes(runs)
        rows = ",".join(k for k in default_rows + default_cols if k not in pivot.split_keys(cols))
    tables = pivot.build_all(runs, rows or (), cols or (), metric or ())
    if fmt == "json":
        data = orjson.dumps({"runs": len(runs), "tables": [pivot.to_json(p) for p in tables]}).decode()
        typer.echo(_UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", data))  # the same data, inert
        return
    if fmt != "rich":
        write = {"md": pivot.to_markdown, "latex": pivot.to_latex, "csv": pivot.to_csv}[fmt]
        texts = []
        for p in tables:
            if fmt == "md":
                texts.append(f"**{pivot.md_escape(pivot.title(p))}**\n\n" + write(p))
            else:
                texts.append(write(p))
        sys.stdout.write(inert(("\n" if fmt != "csv" else "").join(texts)))
        return
    for i, p in enumerate(tables):
        if i:
            console.print()
        console.print(Text(pivot.title(p) + ("   * best" if p.best else ""), style="bold"))
        console.print(rich_table(p))
        for line in pivot.notes(p):
            console.print(plain(line, "dim"))


def rich_table(p: pivot.Pivot) -> Table:
    """The pivot for the terminal: the best cell of each column bold green and marked *."""
    out = Table(box=None, header_style="bold",
                pad_edge=False, padding=(0, 2, 0, 0))
    for key in p.rows:
        out.add_column(plain(key), style="cyan", no_wrap=True)
    for col in p.col_values:
        out.add_column(plain(pivot.col_label(p, col)), justify="right", no_wrap=True)
    for labels, cells in pivot.grid(p):
        shown = [Text(f"*{text}", style="bold green") if best and text else Text(text) for text, best in cells]
        out.add_row(*(plain(x) for x in labels), *shown)
    return out
