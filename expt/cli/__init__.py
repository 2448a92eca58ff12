"""The ``expt`` command line: a thin typer front end over expt's library functions.

Every command turns an ExptError into its one-line message on stderr and the error's
exit status (2 for usage errors), never a traceback.

Start-up is part of the interface (`expt ls` in well under 0.3 s): the command modules import what only some
commands need inside those commands, values that need no coercion skip typer's pydantic adapters (expt.cli.coerce),
and the modules declaring commands do without ``from __future__ import annotations``, since typer evaluates every
command's annotations twice at each start, and strings would have to be compiled first.
"""

import sys
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from expt.cli.coerce import Group, Typer
from expt.errors import ExptError
from expt.formatting import inert
from expt.project import Project, find_project

console = Console(highlight=False, markup=False)  # user text is data: style with Text, never markup
err_console = Console(stderr=True, highlight=False)


class _Group(Group):
    """Prints ExptError as text and exits with its status."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except ExptError as error:
            for line in str(error).splitlines() or ["unknown error"]:
                err_console.print(f"[bold red]error:[/] {escape(inert(line))}", soft_wrap=True)
            caret = getattr(error, "caret", None)  # a QueryError: the expression, and a caret under the problem
            if callable(caret):
                for line in caret().splitlines():
                    err_console.print(Text("  " + line), soft_wrap=True)
            raise typer.Exit(error.exit_code) from None


app = Typer(
    cls=_Group, no_args_is_help=True, add_completion=False, rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
    help="expt: run, track and compare image-classification experiments from the terminal.\n\n"
         "Declare experiments in experiments.toml, then [bold]expt run NAME[/], [bold]expt tui[/], "
         "[bold]expt compare A B[/]. runs.db and runs/ live beside experiments.toml.",
)

_state: dict[str, Any] = {"file": None}


@app.callback()
def _options(
    file: Annotated[Optional[str], typer.Option("--file", "-f", help="experiments.toml to use (default: "
                    "./experiments.toml or $EXPT_FILE); runs.db and runs/ sit beside it.",
                    metavar="PATH")] = None,
) -> None:
    _state["file"] = file


def project(need_config: bool = False) -> Project:
    return find_project(_state["file"], need_config=need_config)


def main() -> None:
    try:
        app()
    except BrokenPipeError:
        sys.stderr.close()
        raise SystemExit(0)


from expt.cli import (  # noqa: E402,F401  (they register their commands)
    browse, manage, notes, report, research, results, runs, study, tui)
